"""The kernels compile for an sm_90 GPU here too, without one (``gpu_compile.py`` in a process
without ``TRITON_INTERPRET``): the interpreter accepts code the compiler rejects, so this catches
what only a GPU run would otherwise. Where CUDA is present the other tests run compiled anyway."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[3]


@pytest.mark.skipif(torch.cuda.is_available(), reason="the kernel tests run compiled on this machine")
def test_kernels_compile_for_sm90(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env.update(TRITON_CACHE_DIR=str(tmp_path), TRITON_DEFAULT_FP_FUSION="1", PYTHONPATH=str(REPO))
    out = subprocess.run([sys.executable, str(Path(__file__).with_name("gpu_compile.py"))], env=env,
                         capture_output=True, text=True, timeout=300, cwd=REPO)
    assert out.returncode == 0, out.stdout + out.stderr[-3000:]
    assert out.stdout.count(": cubin") == 7, out.stdout  # 4 kernels, and the 3 weight GEMMs over fp8
