"""The CPU tier table: detection from the CPU's flags, the caps that lower it, one C library per
tier built with that tier's flags, and each tier's projection kernels against their PyTorch twins
in one process (``make test`` reruns the CPU-tier tests in processes capped at each lower tier)."""

from __future__ import annotations

import logging
import os
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F

from grokd.kernels import cpu_build, cpu_linear, cpu_tier, linear

AVX2_FLAGS = frozenset({"sse4_2", "avx", "avx2", "fma", "f16c", "bmi1", "bmi2"})
AVX512_FLAGS = AVX2_FLAGS | {"avx512f", "avx512bw", "avx512vl", "avx512dq", "avx512cd"}
ZEN5_FLAGS = AVX512_FLAGS | {"avx512_vnni", "avx512_bf16", "avx512_vbmi"}
TIERS_HERE = [t for t in cpu_tier.TIERS if t.has_c_kernels and t.rank <= cpu_tier.this_machine().rank]


@pytest.mark.parametrize("flags, machine, expected", [
    (ZEN5_FLAGS, "x86_64", "avx512_bf16"),
    (AVX512_FLAGS | {"avx512_vnni"}, "x86_64", "avx512_vnni"),  # Cascade Lake
    (AVX512_FLAGS, "x86_64", "avx512"),  # Skylake-SP
    (AVX2_FLAGS, "x86_64", "avx2"),  # Zen 3
    (AVX2_FLAGS - {"fma"}, "x86_64", "generic"),  # AVX2 without FMA: the kernels need both
    (frozenset({"sse2"}), "x86_64", "generic"),
    (ZEN5_FLAGS, "aarch64", "generic"),  # whatever the flags say: the kernels are x86 code
])
def test_machine_tier_is_the_highest_whose_flags_are_all_there(flags, machine, expected):
    assert cpu_tier.machine_tier(flags, machine).name == expected


def test_caps_lower_the_tier_and_never_raise_it(caplog):
    zen5, zen3 = cpu_tier.BY_NAME["avx512_bf16"], cpu_tier.BY_NAME["avx2"]
    assert cpu_tier.resolve(zen5, None, None) is zen5
    assert cpu_tier.resolve(zen5, "avx2", None) is zen3
    assert cpu_tier.resolve(zen5, None, "AVX2") is zen3  # oneDNN capped: nothing may hand it bf16
    assert cpu_tier.resolve(zen5, None, "avx512_core_vnni").name == "avx512_vnni"
    assert cpu_tier.resolve(zen5, "avx512", "AVX2") is zen3  # the lower of the two
    assert cpu_tier.resolve(zen5, None, "ALL") is zen5  # oneDNN's own "no cap"
    with caplog.at_level(logging.WARNING, logger="grokd.kernels"):
        assert cpu_tier.resolve(zen3, "avx512_bf16", None) is zen3
    assert "above this CPU's tier" in caplog.text
    with pytest.raises(ValueError, match="GROKD_CPU_ISA='avx3' is not a CPU tier; choose one of generic, avx2"):
        cpu_tier.resolve(zen5, "avx3", None)


def test_a_onednn_cap_below_avx512_on_an_avx512_cpu_turns_torchs_onednn_paths_off():
    """torch picks oneDNN for bf16 matmuls by the CPU's flags; a capped oneDNN would refuse them."""
    zen5, zen3 = cpu_tier.BY_NAME["avx512_bf16"], cpu_tier.BY_NAME["avx2"]
    assert cpu_tier.onednn_capped_below_torch(zen5, "AVX2")
    assert cpu_tier.onednn_capped_below_torch(zen5, "sse41")
    assert not cpu_tier.onednn_capped_below_torch(zen5, "AVX512_CORE")  # oneDNN keeps bf16 there
    assert not cpu_tier.onednn_capped_below_torch(zen5, None)
    assert not cpu_tier.onednn_capped_below_torch(zen3, "AVX2")  # torch never routes bf16 to oneDNN here


def test_each_tier_caps_a_fresh_process_at_itself():
    """The environment a tier prints makes a new process run exactly that tier, and log it once."""
    for tier in [cpu_tier.BY_NAME["generic"], *TIERS_HERE]:
        code = ("import torch; from grokd.kernels import cpu_tier; print(cpu_tier.active().name)\n"
                "x = torch.randn(5, 64).bfloat16(); w = torch.randn(32, 64).bfloat16()\n"
                "torch.testing.assert_close(torch.nn.functional.linear(x, w).float(), x.float() @ w.float().T,"
                " atol=0.1, rtol=0.02)\n")  # torch's own bf16 matmul works under the tier's caps
        proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                              env={**os.environ, **tier.env()})
        assert proc.returncode == 0, proc.stderr
        assert proc.stdout.strip() == tier.name


def test_active_tier_is_logged_once(monkeypatch, caplog):
    monkeypatch.setenv(cpu_tier.ENV, "generic")
    cpu_tier.active.cache_clear()
    try:
        with caplog.at_level(logging.INFO, logger="grokd.kernels"):
            assert cpu_tier.active().name == "generic" and cpu_tier.active().name == "generic"
    finally:
        cpu_tier.active.cache_clear()
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("cpu kernels:")]
    expected = "cpu kernels: generic" if cpu_tier.this_machine().name == "generic" else (
        f"cpu kernels: generic (capped; the CPU has {cpu_tier.this_machine().name})")
    assert lines == [expected]


def test_cli_lists_the_tiers_below_and_their_environments():
    below = subprocess.run([sys.executable, "-m", "grokd.kernels.cpu_tier", "--below"], capture_output=True,
                           text=True, timeout=120, env={**os.environ, **cpu_tier.BY_NAME["avx2"].env()})
    assert below.stdout.split() == (["generic"] if cpu_tier.this_machine().rank >= 1 else [])
    env = subprocess.run([sys.executable, "-m", "grokd.kernels.cpu_tier", "--env", "avx2"], capture_output=True,
                         text=True, timeout=120)
    assert env.stdout.split() == ["GROKD_CPU_ISA=avx2", "ONEDNN_MAX_CPU_ISA=AVX2", "ATEN_CPU_CAPABILITY=avx2"]
    bad = subprocess.run([sys.executable, "-m", "grokd.kernels.cpu_tier", "--env", "avx3"], capture_output=True,
                         text=True, timeout=120)
    assert bad.returncode == 2 and "usage:" in bad.stderr


def test_the_kernel_cache_is_keyed_by_the_cpu(monkeypatch):
    """A cache directory made on another CPU (other flags, another model) is never loaded here."""
    tier = cpu_tier.BY_NAME["avx2"]
    here = cpu_build.cache_key("gcc 12", tier, None)
    assert cpu_build.cache_key("gcc 12", tier, None) == here
    assert cpu_build.cache_key("gcc 12", cpu_tier.BY_NAME["avx512"], None) != here
    monkeypatch.setattr(cpu_tier, "cpu_flags", lambda: ZEN5_FLAGS | {"amx_tile"})
    other_flags = cpu_build.cache_key("gcc 12", tier, None)
    monkeypatch.setattr(cpu_tier, "cpu_model", lambda: "Another CPU")
    assert len({here, other_flags, cpu_build.cache_key("gcc 12", tier, None)}) == 3


def test_a_tier_above_this_cpu_is_refused():
    above = [t for t in cpu_tier.TIERS if t.rank > cpu_tier.this_machine().rank]
    for tier in above:
        with pytest.raises(ValueError, match="above this CPU's"):
            cpu_build.library(tier)
    assert cpu_build.library(cpu_tier.BY_NAME["generic"]) is None  # the PyTorch paths: nothing to build


@pytest.mark.c_kernels
@pytest.mark.parametrize("tier", TIERS_HERE, ids=lambda t: t.name)
def test_each_tiers_projections_match_their_twins(tier, monkeypatch):
    """Every tier with C kernels, up to this CPU's, in this process: its own library (built with
    only its flags) runs the bf16 and int8 projections within rounding of F.linear and of
    ``per_channel_int8_reference``, at decode and prefill row counts."""
    monkeypatch.setenv(cpu_tier.ENV, tier.name)
    cpu_tier.active.cache_clear()
    try:
        library = cpu_build.library()
        assert library is not None and library.tier is tier
        assert library.path.exists()
        g = torch.Generator().manual_seed(tier.rank)
        w = (torch.randn(96, 200, generator=g) / 200**0.5).bfloat16()
        q = linear.quantize_per_channel_int8(w.float(), torch.bfloat16)
        packed, packed_q = cpu_linear.pack(w), cpu_linear.pack_int8(q.qweight, q.scales)
        assert packed_q.vnni == (tier.rank >= cpu_tier.BY_NAME["avx512_vnni"].rank)
        for rows in (1, 3, 9, 70):
            x = torch.randn(rows, 200, generator=g).bfloat16()
            got = cpu_linear.linear_bf16(x, packed)
            torch.testing.assert_close(got.float(), F.linear(x.float(), w.float()), atol=1e-2, rtol=8e-3)
            got_q = cpu_linear.linear_int8(x, packed_q)
            torch.testing.assert_close(got_q.float(), linear.per_channel_int8_reference(x, q).float(), atol=2e-2, rtol=1e-2)
        # below avx512 oneDNN has no bf16 GEMM: pack_weight must never hand it one
        assert linear.can_pack(w) == (tier.rank >= cpu_tier.BY_NAME["avx512"].rank)
    finally:
        cpu_tier.active.cache_clear()
