"""Errors the engine reports to its callers (the server maps them to HTTP statuses)."""


class EngineError(Exception):
    """Base class for engine errors."""


class QueueFullError(EngineError):
    """The waiting queue is at ``max_queued_requests``; the caller should retry later (HTTP 429)."""


class ContextLengthError(EngineError, ValueError):
    """Prompt plus requested tokens exceed the model's context window (HTTP 400)."""


class EngineDeadError(EngineError):
    """The engine loop has stopped (crashed or shut down); no request can be served (HTTP 503)."""


class ParallelFailure(EngineDeadError):
    """A rank of a tensor-parallel engine died, timed out or fell out of step: the ranks can no
    longer run a forward together, so the engine stops (HTTP 503) and the server exits."""
