"""``load(path)``: detect a checkpoint's layout and open it with the matching reader."""

from __future__ import annotations

from pathlib import Path

from grokd.weights.checkpoint import Checkpoint, CheckpointError, TokenizerSource


def tokenizer_source(path: str | Path) -> TokenizerSource:
    """A tokenizer given explicitly: a ``tokenizer.model``/``tokenizer.json`` file or a directory."""
    p = Path(path)
    if p.is_dir():
        for name, kind in (("tokenizer.model", "sentencepiece"), ("tokenizer.json", "hf"),
                           ("tokenizer.tok.json", "tiktoken")):
            if (p / name).is_file():
                return TokenizerSource(kind=kind, path=p / name)
        raise CheckpointError(f"{p}: no tokenizer.model, tokenizer.json or tokenizer.tok.json")
    if not p.is_file():
        raise CheckpointError(f"{p}: tokenizer file not found")
    if p.name.endswith(".tok.json"):
        return TokenizerSource(kind="tiktoken", path=p)
    return TokenizerSource(kind="hf" if p.suffix == ".json" else "sentencepiece", path=p)


def detect_format(path: Path) -> str:
    """``release`` | ``tp-release`` | ``safetensors`` | ``gguf`` for ``path``, or a CheckpointError
    saying why not (``tp-release``: Grok-2's ``pytorch_model-NNNNN-TP-*.safetensors`` files)."""
    from grokd.weights.tp_release import is_tp_release

    if path.is_file():
        if path.suffix == ".gguf":
            return "gguf"
        if path.suffix == ".safetensors":
            return "safetensors"
        raise CheckpointError(f"{path}: unknown checkpoint file type")
    if not path.is_dir():
        raise CheckpointError(f"{path}: no such file or directory")
    if (path / "ckpt-0").is_dir() or path.name == "ckpt-0":
        return "release"
    if is_tp_release(path):
        return "tp-release"
    if any(path.glob("*.safetensors")):
        return "safetensors"
    ggufs = sorted(path.glob("*.gguf"))
    if len(ggufs) == 1:
        return "gguf"
    raise CheckpointError(f"{path}: no ckpt-0/, *.safetensors or single *.gguf: unknown layout")


def load(path: str | Path, tokenizer: str | Path | None = None) -> Checkpoint:
    """Open the checkpoint at ``path``; ``tokenizer`` overrides where the tokenizer comes from."""
    p = Path(path)
    fmt = detect_format(p)
    if fmt == "release":
        from grokd.weights.release import read_release

        ckpt = read_release(p)
    elif fmt == "tp-release":
        from grokd.weights.tp_release import read_tp_release

        ckpt = read_tp_release(p)
    elif fmt == "safetensors":
        from grokd.weights.safetensors_reader import read_safetensors

        ckpt = read_safetensors(p)
    else:
        try:
            from grokd.weights.gguf_reader import read_gguf
        except ImportError as exc:
            raise CheckpointError(f"{p}: GGUF support is not available ({exc})") from exc
        ckpt = read_gguf(p if p.is_file() else sorted(p.glob("*.gguf"))[0])
    if tokenizer is not None:
        ckpt.tokenizer = tokenizer_source(tokenizer)
    return ckpt
