"""The activation dtype ``auto`` resolves once, when the config is built, by device and CPU tier."""

from __future__ import annotations

import logging

import pytest

from grokd.engine.config import ModelLoadConfig, resolve_dtype
from grokd.kernels import cpu_tier


@pytest.fixture
def tier(monkeypatch):
    """Caps this process's CPU tier for one test (``GROKD_CPU_ISA``)."""

    def cap(name: str) -> None:
        monkeypatch.setenv(cpu_tier.ENV, name)
        cpu_tier.active.cache_clear()

    yield cap
    cpu_tier.active.cache_clear()


def test_auto_is_float32_where_the_cpu_tier_has_no_kernels(tier, caplog):
    tier("generic")
    with caplog.at_level(logging.INFO, logger="grokd.engine.config"):
        assert ModelLoadConfig(dtype="auto").dtype == "float32"
    assert "dtype auto: float32 (cpu kernels: generic)" in caplog.text
    assert resolve_dtype("auto", "cuda:1") == "bfloat16"  # the GPU path is bf16 whatever the CPU
    assert resolve_dtype("bfloat16", "cpu") == "bfloat16"  # a named dtype is kept as it is


@pytest.mark.c_kernels
def test_auto_is_bfloat16_from_avx2_up(tier):
    tier("avx2")
    assert ModelLoadConfig().dtype == "bfloat16"
    assert ModelLoadConfig(dtype="float32").dtype == "float32"


def test_speculative_config_parses_vllm_json():
    from grokd.engine.config import SpeculativeConfig

    cfg = SpeculativeConfig.parse(
        '{"method": "ngram", "num_speculative_tokens": 5, "prompt_lookup_max": 6, "prompt_lookup_min": 3}'
    )
    assert cfg == SpeculativeConfig("ngram", 5, 6, 3)
    assert SpeculativeConfig.parse(None) is None and SpeculativeConfig.parse("  ") is None
    assert SpeculativeConfig.parse({"method": "draft_model", "model": "/m"}).model == "/m"
    assert SpeculativeConfig.parse('{"plan_by_step_cost": false}').plan_by_step_cost is False


@pytest.mark.parametrize(("text", "message"), [
    ('{"method": "eagle"}', "method: expected one of ngram, draft_model"),
    ('{"num_speculative_tokens": 0}', "num_speculative_tokens: expected 1..16"),
    ('{"prompt_lookup_min": 5, "prompt_lookup_max": 2}', "1 <= min <= max"),
    ('{"method": "draft_model"}', "needs a model path"),
    ('{"num_speculative_tokens": "4"}', "num_speculative_tokens: expected int"),
    ('{"lookahead": 3}', "unknown key"),
    ('{"num_speculative_tokens": true}', "num_speculative_tokens: expected int"),
    ('{"plan_by_step_cost": 1}', "plan_by_step_cost: expected bool"),
    ('{"retry_after_steps": 0}', "retry_after_steps: expected >= 1"),
    ("[1]", "expected a JSON object"),
    ("{", "not valid JSON"),
])
def test_speculative_config_names_the_problem(text, message):
    from grokd.engine.config import SpeculativeConfig

    with pytest.raises(ValueError, match=message):
        SpeculativeConfig.parse(text)
