"""Which CPU kernels this machine runs: the one tier table, read at run time, never at build time.

A tier names a set of instruction-set extensions, the compiler flags that build grokd's C kernels
for exactly that set (``grokd.kernels.cpu_build`` compiles one library per tier), and the caps
that make oneDNN and ATen behave as on such a CPU. The machine's tier is the highest whose
``/proc/cpuinfo`` flags are all present; ``GROKD_CPU_ISA`` (a tier name) and ``ONEDNN_MAX_CPU_ISA``
lower it, never raise it, so one AVX-512 machine can run, and test, every tier below its own:

- ``avx512_bf16``: bf16 projections and attention on ``vdpbf16ps``, int8 on ``vpdpwssd`` (Zen 4/5,
  Sapphire Rapids, Cooper Lake);
- ``avx512_vnni``: bf16 widened to float32 in registers (the avx2 kernel), int8 on ``vpdpwssd``
  (Cascade Lake, Ice Lake);
- ``avx512``: int8 widened to float32 for 512-bit FMAs instead (Skylake-SP);
- ``avx2``: bf16 and int8 widened to float32 in 256-bit registers (Zen 2/3, Haswell and later client
  parts); oneDNN has no bf16 GEMM there, so nothing may hand it one;
- ``generic``: no C kernels, the PyTorch paths (every other architecture, aarch64 included).

``python -m grokd.kernels.cpu_tier`` prints the active tier; ``--below`` the names of the tiers
under it, one per line, and ``--env NAME`` the environment that caps a process at tier NAME
(``make test`` runs the CPU-tier tests again under each).
"""

from __future__ import annotations

import functools
import logging
import os
import platform
import sys
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger("grokd.kernels")

ENV = "GROKD_CPU_ISA"
ONEDNN_ENV = "ONEDNN_MAX_CPU_ISA"


@dataclass(frozen=True, eq=False)  # compared and hashed by identity: the table's entries are the only ones
class Tier:
    """One rung of the table: what it needs, how its kernels are built, how the libraries are capped."""

    name: str
    rank: int
    needs: tuple[str, ...]  # /proc/cpuinfo flags, all required
    cflags: tuple[str, ...]  # gcc flags for this tier's library; () builds none (the PyTorch paths)
    onednn_isa: str  # ONEDNN_MAX_CPU_ISA that caps oneDNN here
    aten_capability: str  # ATEN_CPU_CAPABILITY that caps ATen's vectorised kernels here

    @property
    def has_c_kernels(self) -> bool:
        return bool(self.cflags)

    def env(self) -> dict[str, str]:
        """The environment that makes a fresh process behave as on a CPU of this tier."""
        return {ENV: self.name, ONEDNN_ENV: self.onednn_isa, "ATEN_CPU_CAPABILITY": self.aten_capability}


# each tier's cpuinfo flags and the gcc flags that enable exactly those (named one by one, not
# -march=x86-64-v3/v4, so that compilers older than gcc 11 build them too)
_AVX2 = ("avx2", "fma", "f16c", "bmi1", "bmi2")
_AVX2_CFLAGS = ("-mavx2", "-mfma", "-mf16c", "-mbmi", "-mbmi2")
_AVX512 = (*_AVX2, "avx512f", "avx512bw", "avx512vl", "avx512dq", "avx512cd")
_AVX512_CFLAGS = (*_AVX2_CFLAGS, "-mavx512f", "-mavx512bw", "-mavx512vl", "-mavx512dq", "-mavx512cd")
TIERS: tuple[Tier, ...] = (
    Tier("generic", 0, (), (), "SSE41", "default"),
    Tier("avx2", 1, _AVX2, _AVX2_CFLAGS, "AVX2", "avx2"),
    Tier("avx512", 2, _AVX512, _AVX512_CFLAGS, "AVX512_CORE", "avx512"),
    Tier("avx512_vnni", 3, (*_AVX512, "avx512_vnni"), (*_AVX512_CFLAGS, "-mavx512vnni"), "AVX512_CORE_VNNI",
         "avx512"),
    Tier("avx512_bf16", 4, (*_AVX512, "avx512_vnni", "avx512_bf16"),
         (*_AVX512_CFLAGS, "-mavx512vnni", "-mavx512bf16"), "AVX512_CORE_BF16", "avx512"),
)
BY_NAME = {tier.name: tier for tier in TIERS}

# ONEDNN_MAX_CPU_ISA values (oneDNN's names) and the highest tier each leaves oneDNN able to serve
_ONEDNN_CAPS = {"SSE41": "generic", "AVX": "generic", "AVX2": "avx2", "AVX2_VNNI": "avx2", "AVX2_VNNI_2": "avx2",
                "AVX512_CORE": "avx512", "AVX512_CORE_VNNI": "avx512_vnni"}


def cpu_flags() -> frozenset[str]:
    """The CPU's feature flags as Linux lists them (``/proc/cpuinfo``); empty where it cannot be read."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return frozenset()
    line = next((line for line in text.splitlines() if line.startswith(("flags", "Features"))), "")
    return frozenset(line.partition(":")[2].split())


def cpu_model() -> str:
    """The CPU's model name (``/proc/cpuinfo``), for logs and benchmark records."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return platform.processor() or platform.machine()
    line = next((line for line in text.splitlines() if line.startswith("model name")), "")
    return line.partition(":")[2].strip() or platform.processor() or platform.machine()


def machine_tier(flags: frozenset[str] | None = None, machine: str | None = None) -> Tier:
    """The highest tier this CPU can run (x86-64 only: the C kernels use x86 intrinsics)."""
    if (machine or platform.machine()).lower() not in ("x86_64", "amd64"):
        return BY_NAME["generic"]
    flags = cpu_flags() if flags is None else flags
    return max((tier for tier in TIERS if set(tier.needs) <= flags), key=lambda tier: tier.rank)


@functools.cache
def this_machine() -> Tier:
    """``machine_tier()`` of the CPU this process runs on, read once."""
    return machine_tier()


def resolve(machine: Tier, requested: str | None, onednn_cap: str | None) -> Tier:
    """``machine`` lowered by a ``GROKD_CPU_ISA`` value and an ``ONEDNN_MAX_CPU_ISA`` value.
    An unknown ``GROKD_CPU_ISA`` is an error (a typo must not silently run another tier); a request
    above the machine's tier runs the machine's."""
    tier = machine
    if requested:
        if requested not in BY_NAME:
            raise ValueError(f"{ENV}={requested!r} is not a CPU tier; choose one of {', '.join(BY_NAME)}")
        if BY_NAME[requested].rank > machine.rank:
            log.warning("%s=%s is above this CPU's tier (%s): using %s", ENV, requested, machine.name, machine.name)
        tier = min(tier, BY_NAME[requested], key=lambda t: t.rank)
    cap = _ONEDNN_CAPS.get((onednn_cap or "").upper())
    if cap is not None:
        tier = min(tier, BY_NAME[cap], key=lambda t: t.rank)
    return tier


def onednn_capped_below_torch(machine: Tier, onednn_cap: str | None) -> bool:
    """Whether ``ONEDNN_MAX_CPU_ISA`` takes oneDNN below AVX-512 on a CPU that has it. torch sends
    bf16 matmuls to oneDNN by the CPU's own flags (AVX-512 BW/VL/DQ), not by that cap, and a capped
    oneDNN refuses every bf16 primitive: such a process must turn torch's oneDNN paths off."""
    cap = _ONEDNN_CAPS.get((onednn_cap or "").upper())
    avx512 = BY_NAME["avx512"].rank
    return cap is not None and BY_NAME[cap].rank < avx512 <= machine.rank


@functools.cache
def active() -> Tier:
    """The tier this process runs, decided once and logged once: the machine's, lowered by
    ``GROKD_CPU_ISA`` and ``ONEDNN_MAX_CPU_ISA`` (which also turns torch's oneDNN paths off where
    ``onednn_capped_below_torch``, so that torch runs its own kernels, as on a CPU without AVX-512).
    Tests that switch tiers clear this cache."""
    machine = this_machine()
    if onednn_capped_below_torch(machine, os.environ.get(ONEDNN_ENV)):
        import torch

        torch.backends.mkldnn.enabled = False  # type: ignore[assignment]  # torch types the flag as its ContextProp
        log.info("%s=%s is below this CPU's AVX-512: torch's oneDNN paths are off", ONEDNN_ENV,
                 os.environ.get(ONEDNN_ENV))
    tier = resolve(machine, os.environ.get(ENV), os.environ.get(ONEDNN_ENV))
    if tier is not machine:
        detail = f" (capped; the CPU has {machine.name})"
    else:
        detail = "" if tier is TIERS[-1] else f" (no {TIERS[-1].name})"
    log.info("cpu kernels: %s%s", tier.name, detail)
    return tier


def below(tier: Tier) -> list[Tier]:
    """The tiers under ``tier``, lowest first."""
    return [t for t in TIERS if t.rank < tier.rank]


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if args == ["--below"]:
        print("\n".join(t.name for t in below(active())))
    elif len(args) in (1, 2) and args[0] == "--env" and (len(args) == 1 or args[1] in BY_NAME):
        print(" ".join(f"{k}={v}" for k, v in (BY_NAME[args[1]] if len(args) == 2 else active()).env().items()))
    elif not args:
        print(active().name)
    else:
        print(f"usage: python -m grokd.kernels.cpu_tier [--below | --env [{'|'.join(BY_NAME)}]]", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
