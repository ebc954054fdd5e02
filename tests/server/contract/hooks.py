"""schemathesis hooks for the contract run (loaded through ``SCHEMATHESIS_HOOKS``).

A positive upload to ``POST /v1/files`` is schema-valid whatever its bytes, but the server takes
only UTF-8 JSONL batch input: those cases upload a real two-line batch file instead, so the
stateful phase can go on from the file to a batch over it and to the batch's output. Negative
cases keep their generated bodies, so their rejection is still checked.
"""

from __future__ import annotations

import json
import os
from typing import Any

import schemathesis
from schemathesis.core.parameters import ParameterLocation
from schemathesis.generation import GenerationMode

MODEL_ENV = "GROKD_CONTRACT_MODEL"


def batch_file(model: str) -> bytes:
    """Two chat completions of at most two tokens each, as a batch input file."""
    lines = [{"custom_id": f"contract-{i}", "method": "POST", "url": "/v1/chat/completions",
              "body": {"model": model, "max_tokens": 2, "messages": [{"role": "user", "content": f"Say {i}."}]}}
             for i in range(2)]
    return "".join(json.dumps(line) + "\n" for line in lines).encode()


@schemathesis.hook
def before_call(context: Any, case: Any, kwargs: dict[str, Any]) -> None:
    operation = context.operation or case.operation
    if (operation.method.upper(), operation.path) != ("POST", "/v1/files"):
        return
    if case.meta is None or case.meta.generation.mode != GenerationMode.POSITIVE:
        return
    body = case.meta.components.get(ParameterLocation.BODY)
    if body is not None and body.mode != GenerationMode.POSITIVE:
        return
    if isinstance(case.body, dict) and isinstance(case.body.get("file"), (bytes, str)):
        case.body = {**case.body, "file": batch_file(os.environ[MODEL_ENV])}

