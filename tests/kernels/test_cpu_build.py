"""Building and loading the C kernels: the cache location, and the fallbacks that must cost only
speed (no compiler, a failed build, or GROKD_CPU_KERNELS=0): the PyTorch paths, with prefill
attention still on torch's fused SDPA, which needs no build."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from grokd.kernels import cpu_build

_PROBE = (
    "import torch\n"
    "from grokd.kernels import cpu_build\n"
    "from grokd.kernels.dispatch import Kernels, select_kernels\n"
    "from grokd.kernels.norm import rms_norm, rms_norm_cpu\n"
    "x = torch.randn(3, 64).bfloat16(); w = torch.ones(64).bfloat16()\n"
    "assert torch.equal(rms_norm_cpu(x, w, 1e-5), rms_norm(x, w, 1e-5))\n"
    "from grokd.kernels.prefill_attention import paged_prefill_attention\n"
    "k = select_kernels('cpu')\n"
    "plain = Kernels()\n"
    "print(cpu_build.library() is None, k.decoder_layer is None and k.decoder_stack is None\n"
    "      and k.rms_norm is plain.rms_norm and k.rope_write_kv is plain.rope_write_kv\n"
    "      and k.attention.keywords == {'prefill': paged_prefill_attention})\n"
)


def _probe(**env: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", _PROBE], capture_output=True, text=True, timeout=300,
                          env={**os.environ, **env}, cwd=Path(__file__).resolve().parents[2])


@pytest.mark.c_kernels
def test_cache_location_follows_the_grokd_convention(monkeypatch, tmp_path):
    monkeypatch.setenv("GROKD_CACHE_DIR", str(tmp_path / "grokd"))
    assert cpu_build.cache_root() == tmp_path / "grokd" / "kernels" and cpu_build.cache_root().is_dir()
    monkeypatch.delenv("GROKD_CACHE_DIR")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cpu_build.cache_root() == tmp_path / "xdg" / "grokd" / "kernels"
    (tmp_path / "a-file").write_text("")
    monkeypatch.setenv("GROKD_CACHE_DIR", str(tmp_path / "a-file"))  # cannot hold a directory
    fallback = cpu_build.cache_root()
    assert fallback.name == f"grokd-kernels-{os.getuid()}" and fallback.stat().st_uid == os.getuid()
    library = cpu_build.library()  # built once per process, wherever the cache was then
    assert library is not None and library.path.name == "libgrokd_cpu.so" and library.path.stat().st_size > 0


@pytest.mark.c_kernels
def test_switched_off_or_no_compiler_means_the_pytorch_paths():
    off = _probe(GROKD_CPU_KERNELS="0")
    assert off.returncode == 0, off.stderr
    assert off.stdout.split() == ["True", "True"]
    broken = _probe(CC="/nonexistent/gcc")  # the build fails: a warning, then the PyTorch paths
    assert broken.returncode == 0, broken.stderr
    assert broken.stdout.split() == ["True", "True"]
    assert "building the CPU kernels failed" in broken.stderr
