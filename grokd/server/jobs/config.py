"""Configuration of the job store, batch runner and deferred completions."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

# The one way this package runs a request: (url, body, priority) -> (status code, body).
Execute = Callable[[str, dict, int], Awaitable[tuple[int, dict]]]

BATCH_ENDPOINTS = ("/v1/chat/completions", "/v1/completions")
COMPLETION_WINDOWS = {"24h": 24 * 3600.0}  # accepted completion_window -> seconds, by default
INTERACTIVE_PRIORITY = 0
BATCH_PRIORITY = 1


@dataclass
class JobsConfig:
    """Limits and durations; built once from CLI flags and passed down.

    ``max_in_flight`` caps how many batch lines are inside the engine at once (summed over all
    batches) while interactive requests are around, so their time-to-first-token holds; after
    ``idle_after_s`` without interactive work the cap rises to ``idle_max_in_flight`` for
    throughput. ``completion_windows`` maps accepted ``completion_window`` strings to seconds.
    """

    state_dir: Path
    max_upload_bytes: int = 50 * 1024 * 1024
    max_in_flight: int = 2
    idle_max_in_flight: int = 16
    idle_after_s: float = 2.0
    deferred_max_in_flight: int = 16
    deferred_retention_s: float = 24 * 3600.0
    poll_interval_s: float = 1.0
    cancel_poll_s: float = 0.2  # how soon a cancel aborts a running batch's in-flight lines
    sqlite_synchronous: str = "FULL"  # FULL survives power loss; NORMAL survives process crashes
    completion_windows: dict[str, float] = field(default_factory=lambda: dict(COMPLETION_WINDOWS))

    def __post_init__(self) -> None:
        self.state_dir = Path(self.state_dir)
        if self.max_in_flight < 1:
            raise ValueError("max_in_flight: must be >= 1")
        if self.idle_max_in_flight < 1:
            raise ValueError("idle_max_in_flight: must be >= 1")
        if self.max_upload_bytes < 1:
            raise ValueError("max_upload_bytes: must be >= 1")
        if self.deferred_retention_s <= 0:
            raise ValueError("deferred_retention_s: must be > 0")
