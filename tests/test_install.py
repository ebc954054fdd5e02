"""grokd installed from its built wheel, beside transformers: nothing of grokd lands outside the
``grokd`` package, so Hugging Face's ``kernels`` (which ``import transformers`` imports) and
grokd's own ``grokd.kernels`` both import, from any working directory, the repository's root
included, and ``grokd serve`` answers after ``import transformers``."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import sysconfig
import time
import zipfile
from pathlib import Path

import httpx
import pytest

from grokd.kernels import cpu_tier
from tests.server.serving import free_port

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def wheel_python(tmp_path_factory) -> Path:
    """A fresh venv with grokd installed by pip from the wheel built from this tree; its
    dependencies (torch, transformers, Hugging Face's ``kernels``) come from this environment's
    site-packages as a plain path entry, whose own ``.pth`` files (grokd's editable install among
    them) Python does not process."""
    out = tmp_path_factory.mktemp("wheel")
    build = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                            "-w", str(out), str(REPO)], capture_output=True, text=True, timeout=600)
    assert build.returncode == 0, build.stderr
    wheel = next(out.glob("grokd-*.whl"))
    tops = {name.split("/")[0] for name in zipfile.ZipFile(wheel).namelist()}
    assert tops == {"grokd", wheel.name.split("-")[0] + "-" + wheel.name.split("-")[1] + ".dist-info"}, tops
    venv = out / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    site = next((venv / "lib").glob("python3*/site-packages"))
    (site / "dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    install = subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "--no-index", "-q",
                              "--target", str(site), str(wheel)], capture_output=True, text=True, timeout=600)
    assert install.returncode == 0, install.stderr
    assert (site / "grokd" / "kernels" / "csrc" / "linear.c").is_file()  # the C sources travel with the wheel
    static = site / "grokd" / "server" / "ui" / "static"  # and so does the sampler lab page
    assert {p.name for p in static.iterdir()} >= {"index.html", "lab.js", "lab.css"}
    assert not (site / "kernels").exists() and not (site / "engine").exists()
    return venv / "bin" / "python"


PROBE = (
    "import transformers, kernels\n"
    "import grokd.kernels.dispatch, grokd.kernels.cpu_tier, grokd.server.app\n"
    "assert hasattr(kernels, 'CUDAProperties'), kernels.__file__  # Hugging Face's, not ours\n"
    "print(kernels.__file__)\n"
    "print(grokd.__file__)\n"
)


@pytest.mark.parametrize("where", ["repository root", "elsewhere"])
def test_grokd_and_transformers_both_import(wheel_python, where, tmp_path):
    cwd = REPO if where == "repository root" else tmp_path
    proc = subprocess.run([str(wheel_python), "-c", PROBE], cwd=cwd, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    hf_kernels, grokd_file = proc.stdout.split()
    assert Path(hf_kernels).parent.parent == Path(sysconfig.get_paths()["purelib"])
    # from the root the checkout shadows the wheel (the working directory comes first), elsewhere the wheel runs
    expected = REPO if where == "repository root" else wheel_python.parents[1]
    assert Path(grokd_file).resolve().is_relative_to(expected.resolve())


def test_serve_starts_after_import_transformers(wheel_python, tmp_path):
    port = free_port()
    code = ("import sys, transformers\n"
            "from grokd.server.cli import main\n"
            f"sys.exit(main(['serve', '--host', '127.0.0.1', '--port', '{port}']))\n")
    proc = subprocess.Popen([str(wheel_python), "-c", code], cwd=REPO, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    try:
        deadline, status = time.monotonic() + 300, None
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                status = httpx.get(f"http://127.0.0.1:{port}/ready", timeout=2).status_code
            except httpx.HTTPError:
                status = None
            if status == 200:
                break
            time.sleep(0.2)
        assert status == 200, proc.stdout.read().decode(errors="replace")[-4000:] if proc.poll() is not None else status
        models = httpx.get(f"http://127.0.0.1:{port}/v1/models", timeout=10).json()
        assert models["data"][0]["id"] == "smollm2-135m-instruct"
        metrics = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10).text
        tier = re.search(r'^grokd_cpu_kernels_info\{[^}]*\btier="(\w+)"', metrics, re.M)
        assert tier is not None and tier.group(1) == cpu_tier.active().name
    finally:
        proc.kill()
        proc.wait(timeout=30)
