"""Building and loading the C kernels: the cache location, and the fallbacks that must cost only
speed (no compiler, a failed build, or GROKD_CPU_KERNELS=0)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from kernels import cpu_build

_PROBE = (
    "import torch\n"
    "from kernels import cpu_build\n"
    "from kernels.dispatch import Kernels, select_kernels\n"
    "from kernels.norm import rms_norm, rms_norm_cpu\n"
    "x = torch.randn(3, 64).bfloat16(); w = torch.ones(64).bfloat16()\n"
    "assert torch.equal(rms_norm_cpu(x, w, 1e-5), rms_norm(x, w, 1e-5))\n"
    "print(cpu_build.library() is None, select_kernels('cpu') == Kernels())\n"
)


def _probe(**env: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", _PROBE], capture_output=True, text=True, timeout=300,
                          env={**os.environ, **env}, cwd=Path(__file__).resolve().parents[2])


def test_built_under_the_grokd_cache_dir():
    library = cpu_build.library()
    assert library is not None
    assert library.path.is_relative_to(Path(os.environ["GROKD_CACHE_DIR"]) / "kernels")  # tests/conftest.py
    assert library.path.name == "libgrokd_cpu.so" and library.path.stat().st_size > 0


def test_switched_off_or_no_compiler_means_the_pytorch_paths():
    off = _probe(GROKD_CPU_KERNELS="0")
    assert off.returncode == 0, off.stderr
    assert off.stdout.split() == ["True", "True"]
    broken = _probe(CC="/nonexistent/gcc")  # the build fails: a warning, then the PyTorch paths
    assert broken.returncode == 0, broken.stderr
    assert broken.stdout.split() == ["True", "True"]
    assert "building the CPU kernels failed" in broken.stderr
