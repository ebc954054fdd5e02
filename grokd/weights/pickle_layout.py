"""Where the arrays of a release tensor pickle lie in the file, found without unpickling it.

A release file is one pickle of a numpy array, or of a ``QuantizedWeight8bit`` record holding two.
numpy pickles an array as ``_reconstruct(ndarray, (0,), b'b')`` followed by ``BUILD`` with the
state ``(1, shape, dtype, fortran_order, raw_bytes)``, where ``raw_bytes`` is a ``BINBYTES``
opcode: a length, then the array's bytes verbatim. So the array is a plain C-order block at a
known offset, and ``np.memmap`` can map any slice of it.

``read_layout`` walks the opcode stream with ``pickletools``' opcode table, skipping the payload of
every bytes opcode with a seek (so it reads a few hundred bytes, never the data), and evaluates
the stream symbolically: globals become names checked against the same short list the restricted
unpickler accepts, calls become inert records, and nothing is imported or executed. Any opcode or
global outside what a release file contains is an error.
"""

from __future__ import annotations

import pickletools
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import ml_dtypes
import numpy as np
import torch

from grokd.weights.checkpoint import CheckpointError
from grokd.weights.lazy import ReadLog

_RECONSTRUCT = {("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct")}
_GLOBALS = _RECONSTRUCT | {("numpy", "ndarray"), ("numpy", "dtype"), ("ml_dtypes", "bfloat16"),
                           ("__main__", "QuantizedWeight8bit")}
_DTYPES = {"f2", "f4", "f8", "i1", "i2", "i4", "i8", "u1", "u2", "u4", "u8", "b1"}
# bytes opcodes: their length prefix in bytes; payloads longer than _INLINE are skipped, not read
_BYTES_OPS = {"SHORT_BINBYTES": 1, "BINBYTES": 4, "BINBYTES8": 8, "BYTEARRAY8": 8}
_INLINE = 64


@dataclass(frozen=True)
class _Global:
    module: str
    name: str


@dataclass
class _Call:
    func: Any
    args: tuple
    state: Any = None


@dataclass(frozen=True)
class _Payload:
    offset: int
    length: int
    value: bytes | None  # the bytes themselves when short


class _Mark:
    pass


@dataclass(frozen=True)
class ArrayLayout:
    """A C-order array of ``shape`` and ``dtype`` at byte ``offset`` of ``path``."""

    path: Path
    offset: int
    shape: tuple[int, ...]
    dtype: np.dtype

    @property
    def nbytes(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64)) * self.dtype.itemsize


_OPCODES = {op.code: op for op in pickletools.opcodes}  # read-only: opcode byte -> its description


def _walk(f: BinaryIO, where: str) -> Iterator[tuple[str, Any]]:
    """``(opcode name, argument)`` in stream order; bytes arguments become ``_Payload``."""
    while True:
        code = f.read(1)
        if not code:
            raise CheckpointError(f"{where}: pickle ends before STOP")
        op = _OPCODES.get(code.decode("latin-1"))
        if op is None:
            raise CheckpointError(f"{where}: invalid pickle opcode {code!r}")
        if op.name in _BYTES_OPS:
            width = _BYTES_OPS[op.name]
            length = int.from_bytes(f.read(width), "little")
            offset = f.tell()
            value = f.read(length) if length <= _INLINE else None
            if value is None:
                f.seek(offset + length)
            yield op.name, _Payload(offset, length, value)
        else:
            yield op.name, (op.arg.reader(f) if op.arg is not None else None)
        if op.name == "STOP":
            return


def _evaluate(f: BinaryIO, where: str) -> tuple[Any, int]:
    """The pickle's top object, symbolically, and how many payload bytes were skipped unread."""
    stack: list[Any] = []
    skipped = 0
    memo: dict[int, Any] = {}

    def pop_mark() -> list[Any]:
        for i in range(len(stack) - 1, -1, -1):
            if isinstance(stack[i], _Mark):
                items = stack[i + 1:]
                del stack[i:]
                return items
        raise CheckpointError(f"{where}: pickle MARK missing")

    for name, arg in _walk(f, where):
        if name in ("PROTO", "FRAME"):
            continue
        if name == "STOP":
            return stack.pop(), skipped
        if name in ("SHORT_BINUNICODE", "BINUNICODE", "BININT", "BININT1", "BININT2", "LONG1", "BINFLOAT"):
            stack.append(arg)
        elif name in _BYTES_OPS:
            skipped += arg.length if arg.value is None else 0
            stack.append(arg)
        elif name in ("NONE", "NEWTRUE", "NEWFALSE"):
            stack.append({"NONE": None, "NEWTRUE": True, "NEWFALSE": False}[name])
        elif name == "MEMOIZE":
            memo[len(memo)] = stack[-1]
        elif name in ("BINPUT", "LONG_BINPUT"):
            memo[arg] = stack[-1]
        elif name in ("BINGET", "LONG_BINGET"):
            stack.append(memo[arg])
        elif name == "MARK":
            stack.append(_Mark())
        elif name == "EMPTY_TUPLE":
            stack.append(())
        elif name in ("TUPLE1", "TUPLE2", "TUPLE3"):
            n = int(name[-1])
            items = tuple(stack[-n:])
            del stack[-n:]
            stack.append(items)
        elif name == "TUPLE":
            stack.append(tuple(pop_mark()))
        elif name == "EMPTY_DICT":
            stack.append({})
        elif name == "SETITEMS":
            pairs = pop_mark()
            stack[-1].update(zip(pairs[::2], pairs[1::2], strict=True))
        elif name == "SETITEM":
            value, key = stack.pop(), stack.pop()
            stack[-1][key] = value
        elif name in ("STACK_GLOBAL", "GLOBAL"):
            if name == "GLOBAL":
                module, qual = arg.split(" ", 1)
            else:
                qual, module = stack.pop(), stack.pop()
            if (module, qual) not in _GLOBALS:
                raise CheckpointError(f"{where}: refusing global {module}.{qual} in a release tensor file")
            stack.append(_Global(module, qual))
        elif name in ("REDUCE", "NEWOBJ"):
            args, func = stack.pop(), stack.pop()
            stack.append(_Call(func, args))
        elif name == "BUILD":
            state = stack.pop()
            if not isinstance(stack[-1], _Call):
                raise CheckpointError(f"{where}: BUILD on {type(stack[-1]).__name__}")
            stack[-1].state = state
        else:
            raise CheckpointError(f"{where}: pickle opcode {name} is not used by release tensor files")
    raise CheckpointError(f"{where}: pickle ends before STOP")


def _dtype(obj: Any, where: str) -> np.dtype:
    if not (isinstance(obj, _Call) and obj.func == _Global("numpy", "dtype") and obj.args):
        raise CheckpointError(f"{where}: array dtype is not a numpy dtype")
    spec = obj.args[0]
    order = obj.state[1] if isinstance(obj.state, tuple) and len(obj.state) > 1 else "|"
    if order not in ("<", "|", "="):
        raise CheckpointError(f"{where}: big-endian arrays are not supported")
    if spec == _Global("ml_dtypes", "bfloat16"):
        return np.dtype(ml_dtypes.bfloat16)
    if isinstance(spec, str) and spec in _DTYPES:
        return np.dtype(spec)
    raise CheckpointError(f"{where}: refusing dtype {spec!r}")


def _array(obj: Any, path: Path, where: str) -> ArrayLayout:
    ok = (isinstance(obj, _Call) and isinstance(obj.func, _Global)
          and (obj.func.module, obj.func.name) in _RECONSTRUCT and len(obj.args) == 3
          and obj.args[0] == _Global("numpy", "ndarray") and isinstance(obj.args[2], _Payload)
          and obj.args[2].value == b"b")
    state = obj.state if ok else None
    if not (isinstance(state, tuple) and len(state) == 5 and isinstance(state[4], _Payload)):
        raise CheckpointError(f"{where}: not a numpy array pickle")
    _, shape, dtype, fortran, raw = state
    dtype = _dtype(dtype, where)
    if fortran:
        raise CheckpointError(f"{where}: Fortran-order arrays are not supported")
    layout = ArrayLayout(path, raw.offset, tuple(int(s) for s in shape), dtype)
    if layout.nbytes != raw.length:
        raise CheckpointError(f"{where}: array of {shape} {dtype} needs {layout.nbytes} bytes, file has {raw.length}")
    return layout


def read_layout(path: Path, where: str, log: ReadLog | None = None) -> ArrayLayout | dict[str, ArrayLayout]:
    """One array's layout, or ``{"weight": ..., "scales": ...}`` for a ``QuantizedWeight8bit``."""
    try:
        with open(path, "rb") as f:
            obj, skipped = _evaluate(f, where)
            if log is not None:
                log.add(f.tell() - skipped)
    except CheckpointError:
        raise
    except Exception as exc:  # truncated file, malformed opcode arguments
        raise CheckpointError(f"{where}: truncated or corrupt tensor file: {exc!r}") from exc
    if isinstance(obj, _Call) and obj.func == _Global("__main__", "QuantizedWeight8bit"):
        state = obj.state
        if not isinstance(state, dict) or set(state) != {"weight", "scales"}:
            raise CheckpointError(f"{where}: QuantizedWeight8bit state must be {{weight, scales}}")
        return {k: _array(v, path, f"{where} {k}") for k, v in state.items()}
    return _array(obj, path, where)


class MemmapArray:
    """An ``ArraySource`` over an ``ArrayLayout``: each read maps the file and copies the slice."""

    def __init__(self, layout: ArrayLayout, log: ReadLog | None = None) -> None:
        self.layout = layout
        self.log = log

    @property
    def shape(self) -> tuple[int, ...]:
        return self.layout.shape

    def read(self, index: tuple[slice | int, ...]) -> torch.Tensor:
        lay = self.layout
        mm = np.memmap(lay.path, dtype=lay.dtype, mode="r", offset=lay.offset, shape=lay.shape)
        out = np.array(mm[index], copy=True, order="C")
        del mm
        if self.log is not None:
            self.log.add(out.nbytes)
        if out.dtype == ml_dtypes.bfloat16:
            return torch.from_numpy(out.view(np.int16)).view(torch.bfloat16)
        return torch.from_numpy(out)
