"""``grokd plan``: how a Grok-1 or Grok-2 model fits on N GPUs: weights, free KV cache, tokens and contexts per GPU.

The model comes from a checkpoint's config, read as the loaders read it (``weights.load``: the
release's ``ckpt-0/`` with its ``config.json`` or the built-in Grok-1 config, a safetensors
directory's ``config.json`` and tensor headers, a GGUF file's metadata), or the built-in name
``grok-1`` or ``grok-2`` (the xai-org releases' architectures, nothing downloaded; Grok-2's release
layout, ``pytorch_model-NNNNN-TP-*.safetensors``, is read from its config and headers). Exits 1 when the model
does not fit, 2 for a model or layout that cannot be planned.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from dataclasses import asdict
from pathlib import Path

from grokd.engine.plan import (
    KV_CACHE_DTYPES,
    WEIGHTS_DTYPES,
    GiB,
    MemoryPlan,
    ModelShape,
    PlanError,
    PlanRequest,
    plan,
)

BUILTIN = "grok-1"
BUILTIN_GROK2 = "grok-2"
_UNITS = {"": 1, "b": 1, "k": 10**3, "kb": 10**3, "m": 10**6, "mb": 10**6, "g": 10**9, "gb": 10**9,
          "t": 10**12, "tb": 10**12, "kib": 2**10, "mib": 2**20, "gib": 2**30, "tib": 2**40}
_SIZE = re.compile(r"\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*")
_ST_DTYPES = {"F32": "float32", "BF16": "bfloat16", "F16": "float16", "I8": "int8"}


def parse_size(text: str) -> int:
    """Bytes in ``80GiB``, ``141GB``, ``80G`` (decimal: GB = 1e9), ``85899345920``."""
    m = _SIZE.fullmatch(text)
    unit = m.group(2).lower() if m else ""
    if not m or unit not in _UNITS:
        raise argparse.ArgumentTypeError(f"expected a size such as 80GiB or 141GB, got {text!r}")
    return int(float(m.group(1)) * _UNITS[unit])


def _safetensors_shape(root: Path, name: str, config: dict) -> ModelShape:
    """Whether the linears are stored int8 (grokd's conversion: ``X.qweight`` + ``X.scales``) and the
    dtypes of the embedding and of a query projection, from the shards' headers."""
    from safetensors import safe_open

    from grokd.weights.safetensors_reader import QWEIGHT_SUFFIX, shard_files

    int8_stored, dtypes = False, {}
    for path in shard_files(root):
        with safe_open(str(path), framework="pt") as f:
            for key in f.keys():
                int8_stored |= key.endswith(QWEIGHT_SUFFIX)
                if key == "model.embed_tokens.weight" or (key.endswith("q_proj.weight") and "q" not in dtypes):
                    dtypes["embed" if "embed" in key else "q"] = _ST_DTYPES.get(f.get_slice(key).get_dtype(), "")
    embedding = dtypes.get("embed") or "bfloat16"
    q = dtypes.get("q", "")
    linear = q if q in ("bfloat16", "float32") else "bfloat16"
    return ModelShape.from_config(name, config, int8_stored=int8_stored, embedding_dtype=embedding,
                                  linear_dtype=linear)


def model_shape(model: str) -> ModelShape:
    """The plan's view of ``model``: the built-in ``grok-1`` or ``grok-2``, or a checkpoint path."""
    from grokd.weights.checkpoint import CheckpointError
    from grokd.weights.load import detect_format
    from grokd.weights.release import GROK1_RELEASE_CONFIG, read_release
    from grokd.weights.tp_release import GROK2_RELEASE_CONFIG

    if model == BUILTIN and not Path(model).exists():
        return ModelShape.from_config("grok-1 (built-in: the xai-org/grok-1 release)", GROK1_RELEASE_CONFIG,
                                      int8_stored=True, embedding_dtype="float32")
    if model == BUILTIN_GROK2 and not Path(model).exists():
        return ModelShape.from_config("grok-2 (built-in: the xai-org/grok-2 release)", GROK2_RELEASE_CONFIG,
                                      int8_stored=False, embedding_dtype="bfloat16")
    path = Path(model)
    try:
        fmt = detect_format(path)
        if fmt == "release":
            ckpt = read_release(path)  # checks that every tensor file the config implies is there
            return ModelShape.from_config(f"{ckpt.path} (release ckpt-0)", ckpt.config, int8_stored=True,
                                          embedding_dtype="float32")
        if fmt == "tp-release":
            from grokd.weights.tp_release import read_tp_release

            ckpt = read_tp_release(path)  # headers only: checks the rank files are complete
            if ckpt.architecture != "grok-2":
                raise PlanError(f"{path}: architecture {ckpt.architecture!r} in the Grok-2 release layout")
            return ModelShape.from_config(f"{ckpt.path} (Grok-2 release)", ckpt.config, int8_stored=False,
                                          embedding_dtype="bfloat16")
        if fmt == "safetensors":
            from grokd.weights.safetensors_reader import architecture_of

            root = path.parent if path.is_file() else path
            config = json.loads((root / "config.json").read_text())
            arch = architecture_of(config)
            if arch != "grok-1":
                raise PlanError(f"{path}: architecture {arch!r}; grokd plan covers Grok-1 checkpoints")
            return _safetensors_shape(root, f"{root} (safetensors)", config)
        from grokd.weights.gguf_reader import _open

        gguf = path if path.is_file() else sorted(path.glob("*.gguf"))[0]
        arch = _open(gguf).meta.get("general.architecture", "llama")
        raise PlanError(f"{gguf}: GGUF architecture {arch!r}; grokd loads Grok-1 from the release or "
                        f"safetensors layouts only")
    except CheckpointError as exc:
        raise PlanError(str(exc)) from exc


def _size(n: int) -> str:
    """``n`` bytes in GiB, or MiB/KiB below a GiB (the tiny test models)."""
    if n < 1024:
        return f"{n} B"
    for unit, scale in (("GiB", GiB), ("MiB", 1 << 20)):
        if n >= scale:
            return f"{n / scale:.2f} {unit}"
    return f"{n / 1024:.2f} KiB"


def _gib(n: int) -> str:
    return f"{_size(n):>12}"


def render(p: MemoryPlan) -> str:
    """The plan as the command prints it: one GPU's bill, then the verdict."""
    m, r = p.model, p.request
    if r.enable_expert_parallel:
        mode = f"whole experts ({p.experts_per_rank} of {m.num_experts} per GPU, expert parallel)"
    else:
        f_rank = m.intermediate_size // r.tensor_parallel_size
        mode = f"every expert split on the intermediate dim ({f_rank} of {m.intermediate_size} per GPU)"

    kv_row = (f"{m.head_dim} int8 + 4 B scale" if p.kv_cache_dtype == "int8"
              else f"{m.head_dim} × {2 if p.kv_cache_dtype == 'bfloat16' else 4} B")
    w = p.weights
    lines = [
        f"model          {m.name}",
        f"               {m.num_layers} layers, hidden {m.hidden_size}, {m.num_q_heads} q / {m.num_kv_heads} kv heads "
        f"× {m.head_dim}, {m.num_experts} experts top-{m.experts_per_token} × {m.intermediate_size}, "
        + (f"dense MLP × {m.dense_intermediate_size}, " if m.dense_intermediate_size else "")
        + f"vocab {m.vocab_size}",
        f"layout         TP={r.tensor_parallel_size}: {p.q_heads_per_rank} q / {p.kv_heads_per_rank} kv heads "
        f"per GPU, {mode}",
        f"dtypes         weights {p.weights_dtype}, KV cache {p.kv_cache_dtype}, activations {r.activation_dtype}",
        f"per GPU        {_size(r.gpu_memory_bytes)} × {r.gpu_memory_utilization:g} = "
        f"{_size(p.budget_bytes)} budget",
        f"  weights      {_gib(w.total)}  (experts {_size(w.experts)}, attention {_size(w.attention)}, "
        + (f"dense MLP {_size(w.dense)}, " if w.dense else "") +
        f"embedding+head {_size(w.embedding)}, router+norms {_size(w.replicated)}; "
        f"{_size(p.weights_all_ranks)} on all GPUs)",
        f"  activations  {_gib(p.activation_bytes)}  ({r.max_num_batched_tokens} tokens per step, "
        f"{r.max_num_seqs} sequences)",
        f"  reserve      {_gib(p.reserve_bytes)}  (CUDA context, cuBLAS, NCCL, allocator)",
        f"  KV cache     {_gib(p.kv_free_bytes)}  free",
        f"KV per token   {p.kv_bytes_per_token / 1024:.2f} KiB per GPU ({m.num_layers} layers × 2 × "
        f"{p.kv_heads_per_rank} kv heads × {kv_row})",
        f"KV tokens      {p.kv_tokens:,} per GPU ({p.kv_blocks:,} blocks of {r.block_size})",
        f"contexts       {p.full_contexts:,} concurrent {p.max_model_len}-token contexts",
    ]
    lines.append("fits" if p.fits else f"does not fit: {p.reason}")
    return "\n".join(lines)


def add_cli(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("plan", help="per-GPU memory plan: weights, KV cache, contexts that fit",
                              description=__doc__.splitlines()[0])
    p.add_argument("--model", required=True,
                   help=f"checkpoint path, or {BUILTIN!r} / {BUILTIN_GROK2!r} for a release's architecture")
    p.add_argument("--tensor-parallel-size", "-tp", type=int, default=1, help="GPUs (default 1)")
    p.add_argument("--gpu-memory", type=parse_size, required=True,
                   help="memory of one GPU, e.g. 80GiB (GiB = 2^30, GB = 10^9)")
    p.add_argument("--weights-dtype", choices=WEIGHTS_DTYPES, default="auto",
                   help="auto keeps what the checkpoint stores (int8 for the release)")
    p.add_argument("--kv-cache-dtype", choices=KV_CACHE_DTYPES, default="auto",
                   help="auto: the activation dtype (bfloat16 on CUDA)")
    p.add_argument("--gpu-memory-utilization", type=float, default=0.9,
                   help="fraction of each GPU's memory this instance may use (default 0.9)")
    p.add_argument("--max-model-len", type=int, default=None, help="context length (default: the model's)")
    p.add_argument("--enable-expert-parallel", action="store_true",
                   help="whole experts per GPU instead of splitting every expert")
    p.add_argument("--block-size", type=int, default=16, help="KV cache block size in tokens")
    p.add_argument("--max-num-batched-tokens", type=int, default=2048, help="tokens per step (activations)")
    p.add_argument("--max-num-seqs", type=int, default=64, help="sequences per step (logits)")
    p.add_argument("--json", action="store_true", help="print the plan as one JSON object")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    try:
        shape = model_shape(args.model)
        result = plan(shape, PlanRequest(
            tensor_parallel_size=args.tensor_parallel_size, gpu_memory_bytes=args.gpu_memory,
            weights_dtype=args.weights_dtype, kv_cache_dtype=args.kv_cache_dtype,
            gpu_memory_utilization=args.gpu_memory_utilization, max_model_len=args.max_model_len,
            enable_expert_parallel=args.enable_expert_parallel, block_size=args.block_size,
            max_num_batched_tokens=args.max_num_batched_tokens, max_num_seqs=args.max_num_seqs,
        ))
    except PlanError as exc:
        print(f"grokd plan: error: {exc}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps({**asdict(result), "weights_per_gpu": result.weights.total}, indent=1))
    else:
        print(render(result))
    return 0 if result.fits else 1
