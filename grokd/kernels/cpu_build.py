"""Builds the C kernels in ``kernels/csrc`` into one shared library, once per machine, and loads it.

Why plain C through the system compiler: PyTorch has no fused paged-decode op, no cheap small-batch
norm and no bf16 GEMM that reaches this machine's peak at decode batch sizes on the CPU
(benchmarks/RESULTS.md#cpu-decode-kernels, #cpu-projections). A torch C++ extension would compile for a minute
against torch's headers; these files compile in about a second with gcc, which every machine that
installs Python packages from source has. Each CPU tier (``grokd.kernels.cpu_tier``) gets its own
library, compiled with that tier's flags and no more (``-mavx2 -mfma ...`` for AVX2, not
``-march=native``), so a cap such as ``GROKD_CPU_ISA=avx2`` runs exactly what an AVX2 CPU would.
Attention, norm and RoPE use gcc's vector extensions and serve every tier; the projection kernels
use each tier's intrinsics and report themselves unavailable where a tier has none. The cache is
keyed by the CPU's model and feature flags as well as the sources: a cache directory carried to
another CPU is rebuilt, never loaded. The ``generic`` tier (aarch64 and every other architecture)
builds nothing.

Why OpenMP linked to torch's runtime: the library's ``omp parallel`` regions must run on the thread
team torch already keeps spinning for its own ops. A second runtime would start a second team,
and on a 2-core machine the two would take turns. So the build links the exact libgomp file torch
loaded (other packages, sentencepiece for one, bring their own), and after loading checks where
the library's OpenMP functions resolved; anywhere else, the kernels run on one thread.

A missing compiler, a failed build or ``GROKD_CPU_KERNELS=0`` costs only speed: ``library()`` is
then ``None`` and dispatch keeps the PyTorch paths. Dispatch calls it while a model loads, so no
request pays for a build.
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import logging
import os
import platform
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

import torch

from grokd.kernels import c_abi, cpu_tier

log = logging.getLogger("grokd.kernels")

SOURCE_DIR = Path(__file__).parent / "csrc"
SOURCES = ("abi.c", "argmax.c", "decode_attention.c", "decode_attention_avx512.c", "decode_attention_portable.c",
           "decoder_layer.c", "linear.c", "rms_norm.c", "rope_write_kv.c")
CFLAGS = ("-O3", "-mtune=native", "-fPIC", "-fno-math-errno", "-fno-trapping-math", "-Wall")  # + the tier's
_OPENMP_RUNTIMES = ("libgomp", "libiomp5", "libomp")


@dataclass(frozen=True)
class CpuLibrary:
    """The loaded library, and how many threads its parallel regions may use."""

    lib: ctypes.CDLL
    path: Path
    shares_torch_threads: bool
    tier: cpu_tier.Tier

    def threads(self) -> int:
        return torch.get_num_threads() if self.shares_torch_threads else 1


def openmp_runtimes() -> list[str]:
    """Paths of the OpenMP runtimes mapped into this process."""
    try:
        maps = Path("/proc/self/maps").read_text()
    except OSError:
        return []
    found = {line.split()[-1] for line in maps.splitlines() if "/" in line}
    return sorted(p for p in found if Path(p).name.startswith(_OPENMP_RUNTIMES))


def torch_openmp_runtime() -> str | None:
    """The OpenMP runtime torch runs its ops on: the one inside torch's package, else the only one
    mapped; ``None`` when that cannot be told."""
    runtimes = openmp_runtimes()
    torch_dir = Path(torch.__file__).resolve().parent
    inside = [r for r in runtimes if Path(r).resolve().is_relative_to(torch_dir)]
    if len(inside) == 1:
        return inside[0]
    return runtimes[0] if len(runtimes) == 1 else None


class _DlInfo(ctypes.Structure):
    _fields_ = [("fname", ctypes.c_char_p), ("fbase", ctypes.c_void_p), ("sname", ctypes.c_char_p),
                ("saddr", ctypes.c_void_p)]


def resolved_openmp_file(lib: ctypes.CDLL) -> str | None:
    """The file that provides the built library's OpenMP functions (glibc's ``dladdr``)."""
    address = lib.grokd_omp_function()
    if not address:
        return None
    info = _DlInfo()
    libc = ctypes.CDLL(None)
    libc.dladdr.argtypes = [ctypes.c_void_p, ctypes.POINTER(_DlInfo)]
    if not libc.dladdr(address, ctypes.byref(info)) or not info.fname:
        return None
    return os.fsdecode(info.fname)


def cache_root() -> Path:
    """``$GROKD_CACHE_DIR/kernels``, else ``$XDG_CACHE_HOME/grokd/kernels``, else
    ``~/.cache/grokd/kernels`` (the convention of ``weights.load_cache``); a temporary directory
    when that cannot be created (a read-only home)."""
    explicit = os.environ.get("GROKD_CACHE_DIR")
    base = Path(explicit) if explicit else Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "grokd"
    root = base / "kernels"
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError:
        root = Path(tempfile.gettempdir()) / f"grokd-kernels-{os.getuid()}"
        root.mkdir(mode=0o700, exist_ok=True)
        if root.stat().st_uid != os.getuid():  # never load a library someone else could have put there
            raise PermissionError(f"{root} belongs to another user") from None
    return root


def build(cc: str, out_dir: Path, runtime: str | None, libmvec: bool, tier: cpu_tier.Tier) -> Path:
    """Compiles ``SOURCES`` with ``tier``'s flags into ``out_dir/libgrokd_cpu.so`` (atomically:
    concurrent builders each write a private file, then rename) and returns its path."""
    out_dir.mkdir(parents=True, exist_ok=True)
    target = out_dir / "libgrokd_cpu.so"
    with tempfile.TemporaryDirectory(dir=out_dir) as tmp:
        objects = []
        for name in SOURCES:
            obj = Path(tmp) / (name + ".o")
            cmd = [cc, *CFLAGS, *tier.cflags, "-c", str(SOURCE_DIR / name), "-o", str(obj)]
            cmd.insert(1, "-fopenmp" if runtime else "-fopenmp-simd")  # the simd loops either way
            if libmvec:
                cmd.insert(1, "-DGROKD_LIBMVEC")
            subprocess.run(cmd, check=True, capture_output=True, text=True, timeout=120)
            objects.append(str(obj))
        link = [cc, "-shared", *objects, "-o", str(Path(tmp) / target.name)]
        if runtime:  # the runtime torch loaded, by file: not -fopenmp, which would add the system's
            link += [f"-L{Path(runtime).parent}", f"-l:{Path(runtime).name}", f"-Wl,-rpath,{Path(runtime).parent}"]
        link += ["-lmvec"] if libmvec else []
        subprocess.run([*link, "-lm"], check=True, capture_output=True, text=True, timeout=120)
        os.replace(Path(tmp) / target.name, target)
    return target


def _declare(lib: ctypes.CDLL) -> None:
    p, i64, f32, i32 = ctypes.c_void_p, ctypes.c_int64, ctypes.c_float, ctypes.c_int
    lib.grokd_omp_function.argtypes, lib.grokd_omp_function.restype = [], p
    lib.grokd_argmax_f32.argtypes, lib.grokd_argmax_f32.restype = [p, i64, i64, i64, p, i32], None
    for name in ("grokd_decode_attention_bf16", "grokd_decode_attention_f32", "grokd_decode_attention_bf16_i8",
                 "grokd_decode_attention_f32_i8"):
        fn = getattr(lib, name)
        fn.argtypes, fn.restype = [p, p, p, p, c_abi.Shape, p, i32], i32
    lib.grokd_linear_bf16_available.argtypes, lib.grokd_linear_bf16_available.restype = [], i32
    lib.grokd_linear_bf16.argtypes, lib.grokd_linear_bf16.restype = [p, i64, i64, p, i64, i64, p, i32], i32
    lib.grokd_linear_int8_available.argtypes, lib.grokd_linear_int8_available.restype = [], i32
    lib.grokd_linear_int8.argtypes, lib.grokd_linear_int8.restype = [p, i64, i64, p, p, i64, i64, p, i32], i32
    lib.grokd_linear_int8_vnni_available.argtypes, lib.grokd_linear_int8_vnni_available.restype = [], i32
    lib.grokd_linear_int8_vnni.argtypes, lib.grokd_linear_int8_vnni.restype = [p, i64, i64, p, p, i64, i64, p, i32], i32
    for name in ("grokd_rope_write_kv_bf16", "grokd_rope_write_kv_f32", "grokd_rope_write_kv_bf16_i8",
                 "grokd_rope_write_kv_f32_i8"):
        fn = getattr(lib, name)
        fn.argtypes, fn.restype = [p, i64, i64, i64, i64, i64, p, p, p, i64, i64, p, i32], i32
    lib.grokd_struct_layout.argtypes, lib.grokd_struct_layout.restype = [i32, p], i64
    lib.grokd_struct_fields.argtypes, lib.grokd_struct_fields.restype = [i32], ctypes.c_char_p
    fn = lib.grokd_decoder_layer_bf16
    fn.argtypes, fn.restype = [p, i64, c_abi.LayerWeights, c_abi.StepKV, i32], i32
    fn = lib.grokd_decoder_layers_bf16
    fn.argtypes, fn.restype = [p, i64, p, p, i64, c_abi.StepKV, p, f32, p, i32], i64
    for name in ("grokd_rms_norm_bf16", "grokd_rms_norm_f32"):
        fn = getattr(lib, name)
        fn.argtypes, fn.restype = [p, i64, i64, i64, p, f32, p, i32], None


def cache_key(compiler_version: str, tier: cpu_tier.Tier, runtime: str | None) -> str:
    """The cache directory's name for a build: everything the library's code depends on, the CPU's
    model and feature flags included, so that a cache carried to another CPU is rebuilt there."""
    key = hashlib.sha256()
    for part in (compiler_version, cpu_tier.cpu_model(), " ".join(sorted(cpu_tier.cpu_flags())), " ".join(CFLAGS),
                 tier.name, " ".join(tier.cflags), str(runtime), platform.machine()):
        key.update(part.encode() + b"\0")
    for source in sorted(SOURCE_DIR.glob("*.[ch]")):  # the sources and the headers they include
        key.update(source.name.encode() + source.read_bytes())
    return key.hexdigest()[:16]


def library(tier: cpu_tier.Tier | None = None) -> CpuLibrary | None:
    """The kernels for ``tier`` (default: the process's, ``cpu_tier.active()``), built on first use
    (about 1 s) or loaded from the per-machine cache; ``None`` where that tier has no C kernels.
    A tier above this CPU's is refused: its instructions would fault here."""
    tier = tier or cpu_tier.active()
    if tier.rank > cpu_tier.this_machine().rank:
        raise ValueError(f"CPU tier {tier.name} is above this CPU's ({cpu_tier.this_machine().name})")
    return _library(tier)


@functools.cache
def _library(tier: cpu_tier.Tier) -> CpuLibrary | None:
    if os.environ.get("GROKD_CPU_KERNELS", "1") == "0" or not tier.has_c_kernels:
        return None
    cc = os.environ.get("CC") or shutil.which("gcc") or shutil.which("cc")
    if cc is None or platform.system() != "Linux":
        log.warning("no C compiler (gcc) found: CPU kernels unavailable, using the PyTorch paths")
        return None
    runtime = torch_openmp_runtime()
    try:
        version = subprocess.run([cc, "--version"], capture_output=True, text=True, timeout=30).stdout
        out_dir = cache_root() / cache_key(version, tier, runtime)  # may raise OSError: caught below
        path = out_dir / "libgrokd_cpu.so"
        if not path.exists():
            try:
                path = build(cc, out_dir, runtime, libmvec=platform.machine() == "x86_64", tier=tier)
            except subprocess.CalledProcessError:  # no libmvec (not glibc): scalar expf
                path = build(cc, out_dir, runtime, libmvec=False, tier=tier)
        lib = ctypes.CDLL(str(path))
        _declare(lib)
    except (OSError, subprocess.SubprocessError) as exc:
        detail = getattr(exc, "stderr", "") or exc
        log.warning("building the CPU kernels failed, using the PyTorch paths: %s", detail)
        return None
    resolved = resolved_openmp_file(lib)
    shared = runtime is not None and resolved is not None and Path(resolved).resolve() == Path(runtime).resolve()
    if not shared:
        log.warning("CPU kernels run on one thread: their OpenMP runtime (%s) is not torch's (%s)", resolved, runtime)
    return CpuLibrary(lib, path, shared, tier)


def available(tier: cpu_tier.Tier | None = None) -> bool:
    return library(tier) is not None
