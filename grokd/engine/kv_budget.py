"""How many KV blocks the pool gets: a pure function of the model's sizes, the limits it is served
with and the memory the machine has, so the choice can be tested and logged.

An explicit ``num_kv_blocks`` or ``--kv-cache-memory`` is taken as given, but checked against the
memory available (minus a headroom kept for activations, the allocator and the rest of the
process): a pool that cannot fit fails at start-up with the sizes named, instead of the process
being killed hours later when the lazily written pages finally fill.

Without either, the pool is the smallest of

- the machine's share: ``kv_cache_fraction`` of what is available after the headroom (read after
  the weights are loaded, so resident weights are already out of it);
- what the scheduler can fill: ``max_num_seqs`` sequences of ``max_model_len`` tokens, plus
  ``PREFIX_HEADROOM`` more for cached prefixes to outlive their requests;
- on the CPU, ``CPU_KV_PER_WEIGHT`` times the weights' bytes (never less than one full-length
  sequence plus its prefix headroom). A CPU decode step reads the weights once and the KV of every
  running sequence, both from memory: with the pool full of live sequences a step reads three
  times the bytes of a weights-only one, so more blocks would mostly make every stream slower;
  longer or more contexts still run, by preemption, and ``--kv-cache-memory`` lifts the cap. This
  bound is what keeps a small model's default pool small: SmolLM2-135M's is about twice its weights
  rather than a fifth of the machine.
"""

from __future__ import annotations

from dataclasses import dataclass

PREFIX_HEADROOM = 0.25  # extra blocks, as a fraction of the scheduler's worst case, for cached prefixes
CPU_KV_PER_WEIGHT = 2.0  # default CPU pool bytes per weight byte (see the module docstring)
MIN_HEADROOM = 512 << 20  # memory left free beside the pool, at least ...
HEADROOM_FRACTION = 0.1  # ... or this share of what is available, whichever is more

MIB = 1 << 20


class KVPoolTooLarge(ValueError):
    """The requested KV pool does not fit in the memory available."""


@dataclass(frozen=True)
class PoolInputs:
    """What the pool size depends on, in blocks of ``bytes_per_block``. ``available_bytes``: MemAvailable (CPU) or free device memory,
    read after the weights are loaded; ``weights_bytes``: the loaded model's parameters and packed
    weights."""

    bytes_per_block: int
    scheduler_blocks: int  # max_num_seqs x blocks_per_seq: what the running batch could hold
    blocks_per_seq: int  # one max_model_len sequence
    available_bytes: int
    weights_bytes: int
    on_cpu: bool = True
    kv_cache_memory: int | None = None
    num_blocks: int | None = None
    kv_cache_fraction: float = 0.2
    prefix_caching: bool = True


@dataclass(frozen=True)
class PoolPlan:
    """The chosen size and why (``source``: ``num_kv_blocks``, ``kv_cache_memory``, ``machine``,
    ``scheduler`` or ``weights``: the bound that decided it)."""

    num_blocks: int
    bytes_per_block: int
    source: str
    headroom_bytes: int

    @property
    def num_bytes(self) -> int:
        return self.num_blocks * self.bytes_per_block

    def describe(self) -> str:
        return (f"{self.num_blocks} blocks x {self.bytes_per_block} bytes = {self.num_bytes / MIB:.0f} MiB "
                f"(sized by {self.source})")


def headroom(available_bytes: int) -> int:
    """Bytes kept free beside the pool."""
    return max(MIN_HEADROOM, int(available_bytes * HEADROOM_FRACTION))


def plan_pool(p: PoolInputs) -> PoolPlan:
    """The pool for ``p`` (see the module docstring); ``KVPoolTooLarge`` when an explicit size does
    not fit, or when not even one block does."""
    if p.bytes_per_block < 1 or p.scheduler_blocks < 1 or p.blocks_per_seq < 1:
        raise ValueError(f"KV pool sizing: sizes must be >= 1, got {p}")
    room = headroom(p.available_bytes)
    usable = p.available_bytes - room
    if p.num_blocks is not None or p.kv_cache_memory is not None:
        if p.num_blocks is not None:
            blocks, source = int(p.num_blocks), "num_kv_blocks"
        else:
            blocks, source = max(1, int(p.kv_cache_memory or 0) // p.bytes_per_block), "kv_cache_memory"
        plan = PoolPlan(blocks, p.bytes_per_block, source, room)
        if plan.num_bytes > usable:
            raise KVPoolTooLarge(
                f"{source}: a KV pool of {plan.describe()} does not fit: {p.available_bytes / MIB:.0f} MiB "
                f"available, {room / MIB:.0f} MiB of it kept free, leaves {max(usable, 0) / MIB:.0f} MiB; "
                f"lower --kv-cache-memory or --num-kv-blocks")
        return plan
    per_seq = p.blocks_per_seq
    extra = PREFIX_HEADROOM if p.prefix_caching else 0.0
    bounds = {
        "machine": int(max(usable, 0) * p.kv_cache_fraction) // p.bytes_per_block,
        "scheduler": int(p.scheduler_blocks * (1 + extra)),
    }
    if p.on_cpu:
        bounds["weights"] = max(int(per_seq * (1 + extra)),
                                int(p.weights_bytes * CPU_KV_PER_WEIGHT) // p.bytes_per_block)
    source = min(bounds, key=lambda k: bounds[k])
    if bounds[source] < 1:
        raise KVPoolTooLarge(
            f"KV pool: not one block of {p.bytes_per_block} bytes fits: {p.available_bytes / MIB:.0f} MiB "
            f"available, {room / MIB:.0f} MiB of it kept free")
    return PoolPlan(bounds[source], p.bytes_per_block, source, room)
