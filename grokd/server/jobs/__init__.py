"""Durable jobs: OpenAI-format Files and Batches plus xAI deferred completions.

Everything here survives a restart: state lives in one SQLite file and a files directory under
``--state-dir``. Requests are executed through one injected coroutine
``execute(url, body, priority) -> (status_code, response_body)`` so this package never talks to
the engine directly and a batch line gets exactly the answer the HTTP route would give.
"""

from grokd.server.jobs.config import JobsConfig
from grokd.server.jobs.service import JobsService

__all__ = ["JobsConfig", "JobsService"]
