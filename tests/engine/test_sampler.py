"""Sampler and logits processors on a small vocabulary."""

import math

import pytest
import torch

from grokd.engine.logits_processors import (
    DEFAULT_ORDER,
    LogitsProcessor,
    ProcessorRegistry,
    SamplerParam,
    SamplingRow,
    sampler,
)
from grokd.engine.request import make_generator
from grokd.engine.sampler import Sampler
from grokd.engine.sampling_params import SamplingParams

V = 8


def row(prompt=(), output=(), seed=None, eos=(), bad=(), state=None, **kw) -> SamplingRow:
    return SamplingRow(
        params=SamplingParams(**kw),
        prompt_ids=list(prompt),
        output_ids=list(output),
        eos_ids=list(eos),
        bad_words_ids=[list(b) for b in bad],
        generator=make_generator(seed, 0, "cpu"),
        structured_state=state,
    )


@pytest.fixture
def smp() -> Sampler:
    gen = torch.Generator().manual_seed(0)
    return Sampler(ProcessorRegistry(), gen)


def logits_of(probs: list[float]) -> torch.Tensor:
    return torch.tensor(probs).log()[None, :]


def kept(smp: Sampler, logits: torch.Tensor, r: SamplingRow) -> set[int]:
    out = smp.process(logits, [r])[0]
    return {i for i in range(out.shape[0]) if math.isfinite(out[i].item())}


PROBS = [0.4, 0.25, 0.15, 0.1, 0.05, 0.03, 0.015, 0.005]


def test_greedy_is_argmax_after_penalties(smp):
    logits = logits_of(PROBS)
    assert smp(logits, [row(temperature=0)]).token_ids == [0]
    # a presence penalty on token 0 makes token 1 the argmax
    assert smp(logits, [row(output=[0], temperature=0, presence_penalty=2.0)]).token_ids == [1]


@pytest.mark.parametrize("k,expect", [(1, {0}), (3, {0, 1, 2}), (100, set(range(V)))])
def test_top_k_keeps_k_most_likely(smp, k, expect):
    assert kept(smp, logits_of(PROBS), row(top_k=k)) == expect


@pytest.mark.parametrize("p,expect", [(0.3, {0}), (0.41, {0, 1}), (0.6, {0, 1}), (0.66, {0, 1, 2})])
def test_top_p_keeps_smallest_set_reaching_mass(smp, p, expect):
    assert kept(smp, logits_of(PROBS), row(top_p=p)) == expect


@pytest.mark.parametrize("m,expect", [(0.5, {0, 1}), (0.3, {0, 1, 2}), (0.015, set(range(V)) - {7})])
def test_min_p_keeps_tokens_above_fraction_of_max(smp, m, expect):
    assert kept(smp, logits_of(PROBS), row(min_p=m)) == expect


def typical_reference(probs: list[float], mass: float) -> set[int]:
    ent = -sum(p * math.log(p) for p in probs)
    order = sorted(range(len(probs)), key=lambda i: abs(-math.log(probs[i]) - ent))
    out, cum = set(), 0.0
    for i in order:
        out.add(i)
        cum += probs[i]
        if cum >= mass:
            break
    return out


@pytest.mark.parametrize("mass", [0.2, 0.5, 0.85, 0.93])
def test_typical_p_matches_definition(smp, mass):
    assert kept(smp, logits_of(PROBS), row(typical_p=mass)) == typical_reference(PROBS, mass)


def test_penalties_follow_openai_and_ctrl_definitions(smp):
    logits = torch.tensor([[2.0, -1.0, 0.5, 3.0, 0.0, 1.0, -2.0, 0.25]])
    r = row(
        prompt=[5], output=[0, 0, 1, 3], frequency_penalty=0.5, presence_penalty=0.3, repetition_penalty=1.3
    )
    got = smp.process(logits, [r])[0]
    expect = logits[0].clone()
    counts = {0: 2, 1: 1, 3: 1}
    for t in {0, 1, 3, 5}:  # CTRL: seen in prompt or output
        expect[t] = expect[t] / 1.3 if expect[t] > 0 else expect[t] * 1.3
    for t, c in counts.items():  # OpenAI: generated tokens only
        expect[t] -= c * 0.5 + 0.3
    torch.testing.assert_close(got, expect)


def test_logit_bias_bad_words_min_tokens(smp):
    logits = torch.zeros(1, V)
    got = smp.process(logits, [row(logit_bias={3: 5.0, 4: -100.0})])[0]
    assert got[3] == 5.0 and got[4] == -100.0 and got[0] == 0.0
    r = row(output=[1, 2], bad=[[6], [2, 5], [1, 7]])
    assert kept(smp, logits, r) == set(range(V)) - {6, 5}  # [1, 7] needs output ending with 1
    r = row(output=[1], eos=[2], min_tokens=2, stop_token_ids=[4])
    assert kept(smp, logits, r) == set(range(V)) - {2, 4}
    r = row(output=[1, 1], eos=[2], min_tokens=2, stop_token_ids=[4])
    assert kept(smp, logits, r) == set(range(V))


def test_sampling_frequencies_match_distribution(smp):
    n = 6000
    probs = torch.tensor([0.5, 0.3, 0.15, 0.05, 0, 0, 0, 0]) + 1e-12
    logits = probs.log().expand(n, V).clone()
    toks = torch.tensor(smp(logits, [row() for _ in range(n)]).token_ids)
    freq = torch.bincount(toks, minlength=V).float() / n
    assert (freq - probs).abs().max() < 0.03
    # temperature 0.5 squares-and-renormalises the distribution
    toks = torch.tensor(smp(logits, [row(temperature=0.5) for _ in range(n)]).token_ids)
    freq = torch.bincount(toks, minlength=V).float() / n
    sq = probs**2 / (probs**2).sum()
    assert (freq - sq).abs().max() < 0.03
    # top_k=2 renormalises over the two kept tokens
    toks = torch.tensor(smp(logits, [row(top_k=2) for _ in range(n)]).token_ids)
    assert set(toks.tolist()) <= {0, 1}
    assert abs((toks == 0).float().mean().item() - 0.5 / 0.8) < 0.03


def test_seeded_rows_do_not_depend_on_the_batch(smp):
    torch.manual_seed(1)
    logits = torch.randn(1, V)
    others = torch.randn(5, V)
    r = row(seed=42)
    alone = [smp(logits, [r]).token_ids[0] for _ in range(20)]
    r2 = row(seed=42)
    batched = []
    for step in range(20):
        mixed = torch.cat([others[: step % 5], logits, others[step % 5 :]])
        rows = [row(seed=s) if s % 2 else row() for s in range(step % 5)] + [r2]
        rows += [row() for _ in range(5 - step % 5)]
        batched.append(smp(mixed, rows).token_ids[step % 5])
    assert alone == batched
    assert len(set(alone)) > 1  # really sampling


def test_logprobs_are_raw_model_logprobs(smp):
    logits = torch.tensor([[3.0, 1.0, 0.5, 0.0, -1.0, -2.0, -3.0, -4.0]])
    out = smp(logits, [row(temperature=0, logprobs=3, presence_penalty=2.5, output=[0])])
    lp = out.logprobs[0]
    raw = logits[0].log_softmax(-1)
    assert lp.token_id == 1 == out.token_ids[0]
    assert lp.logprob == pytest.approx(raw[1].item())
    assert [t for t, _ in lp.top] == [0, 1, 2]
    assert [v for _, v in lp.top] == pytest.approx(raw[:3].tolist())
    assert smp(logits, [row(logprobs=0)]).logprobs[0].top == []
    assert smp(logits, [row()]).logprobs == [None]


def test_order_of_processors_is_per_request(smp):
    logits = logits_of(PROBS)
    # top_p 0.5 before temperature keeps {0, 1}; after temperature 2.0 (flatter) it keeps more
    before = row(temperature=2.0, top_p=0.5, samplers=["top_p", "temperature"])
    after = row(temperature=2.0, top_p=0.5, samplers=["temperature", "top_p"])
    assert kept(smp, logits, before) == {0, 1}
    assert len(kept(smp, logits, after)) > 2
    # a processor left out of the list does not run
    assert kept(smp, logits, row(top_k=1, samplers=["temperature"])) == set(range(V))
    with pytest.raises(ValueError, match="unknown sampler"):
        smp.registry.validate(SamplingParams(samplers=["nope"]))


@sampler("ban_even")
class BanEven(LogitsProcessor):
    """A researcher's sampler: bans even token ids above ``extra['ban_even']['above']``."""

    def apply(self, logits, rows):
        for i, r in enumerate(rows):
            above = r.params.extra["ban_even"]["above"]
            for t in range(above + 1, logits.shape[1]):
                if t % 2 == 0:
                    logits[i, t] = float("-inf")
        return logits


def test_registered_custom_sampler_takes_params_from_extra():
    smp = Sampler(ProcessorRegistry(extra=[BanEven]))
    logits = torch.zeros(2, V)
    out = smp.process(logits, [row(extra={"ban_even": {"above": 3}}), row()])
    assert torch.isinf(out[0]).nonzero().flatten().tolist() == [4, 6]
    assert torch.isfinite(out[1]).all()


def test_processed_logprobs_are_the_distribution_the_draw_used(smp):
    probs = [0.4, 0.3, 0.2, 0.05, 0.03, 0.01, 0.005, 0.005]
    out = smp(logits_of(probs).repeat(2, 1), [row(seed=1, top_k=2, logprobs=3, processed_logprobs=True),
                                 row(seed=1, top_k=2, logprobs=3)])
    lp, plain = out.logprobs
    assert [t for t, _ in lp.top] == [0, 1, 2]  # raw: the model's three best
    assert math.isclose(math.exp(lp.top[2][1]), 0.2, rel_tol=1e-5)
    assert lp.processed_top is not None and [t for t, _ in lp.processed_top] == [0, 1]  # top_k dropped 2
    assert [round(math.exp(v), 5) for _, v in lp.processed_top] == [round(0.4 / 0.7, 5), round(0.3 / 0.7, 5)]
    assert lp.token_id in (0, 1) and lp.processed_logprob == dict(lp.processed_top)[lp.token_id]
    assert plain.processed_top is None and plain.processed_logprob is None


@sampler("nudge")
class Nudge(LogitsProcessor):
    """Adds ``extra['nudge']['amount']`` to token 0.

    Second paragraph: not part of the description."""

    params = (SamplerParam("amount", "number", 0.0, -10.0, 10.0, description="added to token 0"),)

    def apply(self, logits, rows):
        for i, r in enumerate(rows):
            logits[i, 0] += r.params.extra["nudge"]["amount"]
        return logits


def test_registry_describes_every_processor_and_its_params():
    infos = {i.name: i for i in ProcessorRegistry(extra=[Nudge, BanEven], load_entry_points=False).describe()}
    assert list(infos)[: len(DEFAULT_ORDER)] == list(DEFAULT_ORDER)
    top_p = infos["top_p"].params[0]
    assert (top_p.name, top_p.type, top_p.default, top_p.minimum, top_p.maximum, top_p.exclusive_minimum) == (
        "top_p", "number", 1.0, 0.0, 1.0, True)
    assert [p.name for p in infos["penalties"].params] == ["repetition_penalty", "frequency_penalty", "presence_penalty"]
    assert infos["structured"].params == () and infos["temperature"].builtin
    nudge = infos["nudge"].describe()
    assert nudge["builtin"] is False and nudge["in_default_order"] is False
    assert nudge["description"] == "Adds ``extra['nudge']['amount']`` to token 0."
    assert nudge["params"] == [{"name": "amount", "type": "number", "default": 0.0, "minimum": -10.0, "maximum": 10.0,
                                "exclusive_minimum": False, "description": "added to token 0"}]
    # a plugin's own docstring only, never the base class's
    assert infos["ban_even"].description.startswith("A researcher's sampler")


class OnlyTokens:
    """Stand-in for a grammar backend's state (the real one is an external library)."""

    def __init__(self, allowed):
        self.allowed = allowed
        self.seen = []

    def allowed_mask(self, vocab_size):
        m = torch.zeros(vocab_size, dtype=torch.bool)
        m[self.allowed] = True
        return m

    def accept(self, token_id):
        self.seen.append(token_id)

    def is_terminated(self):
        return False


def test_structured_mask_applies_even_with_custom_order(smp):
    logits = logits_of(PROBS)
    assert kept(smp, logits, row(state=OnlyTokens([5, 6]))) == {5, 6}
    assert kept(smp, logits, row(state=OnlyTokens([5]), samplers=["temperature"])) == {5}
    assert smp(logits, [row(temperature=0, state=OnlyTokens([3, 6]))]).token_ids == [3]


def test_samplers_are_discovered_from_entry_points(monkeypatch):
    import grokd.engine.logits_processors as lp

    class EP:
        def load(self):
            return BanEven

    seen = []

    def fake_entry_points(group):
        seen.append(group)
        return [EP()]

    monkeypatch.setattr(lp, "entry_points", fake_entry_points)
    reg = ProcessorRegistry()
    assert seen == ["grokd.samplers"] and "ban_even" in reg
    assert reg.order_for(SamplingParams(extra={"ban_even": {"above": 1}}))[-1] == "ban_even"


def test_plain_rows_cost_no_copy_and_the_input_is_never_modified(smp):
    logits = torch.randn(2, V)
    before = logits.clone()
    assert smp.process(logits, [row(), row()]) is logits  # greedy, nothing active: no copy
    out = smp.process(logits, [row(logit_bias={3: 5.0}), row()])
    assert out is not logits and torch.equal(logits, before)
    assert out[0, 3] == before[0, 3] + 5.0 and torch.equal(out[1], before[1])


@sampler("fragile")
class Fragile(LogitsProcessor):
    """Raises on any row that asks for it (a broken custom processor)."""

    def apply(self, logits, rows):
        raise RuntimeError("fragile processor broke")


def test_a_raising_processor_fails_its_row_alone():
    smp = Sampler(ProcessorRegistry([Fragile]), torch.Generator().manual_seed(0))
    logits = logits_of([0.1, 0.6, 0.1, 0.1, 0.05, 0.05, 0.0, 0.0]).repeat(3, 1)
    rows = [row(temperature=0), row(temperature=0, extra={"fragile": {}}), row(temperature=0.0, seed=5)]
    out = smp(logits, rows)
    assert set(out.failed) == {1} and "fragile processor broke" in out.failed[1]
    assert out.token_ids[0] == out.token_ids[2] == 1


class NoiseArgmaxBreaksOnTwoRows:
    """An argmax that raises on the exponential race of a batch attempt of two rows (every second
    call with two rows), after the seeded rows drew their noise: the retry has to redraw it."""

    def __init__(self) -> None:
        self.calls = 0

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        if x.shape[0] == 2 and self.calls % 2 == 0:
            raise RuntimeError("argmax broke")
        return x.argmax(-1)


def test_a_retried_seeded_row_draws_the_tokens_of_an_undisturbed_run():
    logits = torch.randn(2, V, generator=torch.Generator().manual_seed(3))
    clean = Sampler(ProcessorRegistry(), torch.Generator().manual_seed(0))
    broken = Sampler(ProcessorRegistry(), torch.Generator().manual_seed(0), argmax=NoiseArgmaxBreaksOnTwoRows())
    runs = []
    for smp in (clean, broken):
        rows = [row(seed=11), row(seed=12)]
        outs = [smp(logits, rows) for _ in range(20)]
        assert not any(o.failed for o in outs)
        runs.append([o.token_ids for o in outs])
    assert runs[0] == runs[1]
    assert len({t for step in runs[0] for t in step}) > 1  # really sampling


def test_non_finite_logits_fail_their_row_and_are_never_sampled(smp):
    good = logits_of([0.1, 0.1, 0.7, 0.1, 0.0, 0.0, 0.0, 0.0])[0]
    logits = torch.stack([good, torch.full((V,), float("nan")), good.clone(), torch.full((V,), float("-inf"))])
    logits[2, 5] = float("inf")
    out = smp(logits, [row(temperature=0, logprobs=1) for _ in range(4)])
    assert set(out.failed) == {1, 2, 3} and all("non-finite logits" in why for why in out.failed.values())
    assert out.token_ids[0] == 2 and out.logprobs[0] is not None and out.logprobs[1] is None
