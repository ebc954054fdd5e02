"""How rank 0 of a tensor-parallel engine drives the other ranks, one message per step.

Every message is one ``broadcast_object`` from rank 0: a step's inputs (the model runner's
``StepInputs``: token ids, positions, query and sequence lengths, block tables, the rows to
project), ``KEEPALIVE`` or ``STOP``. The other ranks block in ``receive`` between steps. A
broadcast, like every collective of the group, fails after the group's timeout, so an idle
leader sends ``KEEPALIVE`` more often than that (``keepalive_interval``): the workers' wait
never times out while rank 0 lives, and a worker that died is noticed even when no request
comes. ``STOP`` ends the workers' loop, after which they leave the process group and exit.
"""

from __future__ import annotations

from typing import Any

from grokd.engine.parallel.group import ParallelGroup

KEEPALIVE = "keepalive"
STOP = "stop"


def keepalive_interval(timeout_s: float) -> float:
    """Seconds an idle leader waits between keep-alives: a quarter of the collective timeout,
    at most 30 s."""
    return min(30.0, timeout_s / 4)


class StepChannel:
    """Rank 0's sending side (``send_*``) and the other ranks' receiving side (``receive``)."""

    def __init__(self, group: ParallelGroup) -> None:
        self.group = group

    def _send(self, message: Any) -> None:
        if self.group.rank != 0:
            raise RuntimeError(f"only rank 0 sends steps (this is rank {self.group.rank})")
        self.group.broadcast_object(message, src=0)

    def send_step(self, inputs: Any) -> None:
        self._send(inputs)

    def send_keepalive(self) -> None:
        self._send(KEEPALIVE)

    def send_stop(self) -> None:
        self._send(STOP)

    def receive(self) -> Any | None:
        """The next step's inputs, skipping keep-alives; ``None`` once rank 0 sent ``STOP``."""
        while True:
            message = self.group.broadcast_object(None, src=0)
            if isinstance(message, str):
                if message == STOP:
                    return None
                if message == KEEPALIVE:
                    continue
                raise RuntimeError(f"unknown message from rank 0: {message!r}")
            return message
