"""ParallelGroup collectives over real gloo process groups, and the one-rank group."""

from __future__ import annotations

import time

import torch
from tp_harness import run_ranks

from grokd.engine.parallel.group import DistGroup, ParallelGroup, SingleGroup


def _collectives(world: DistGroup) -> dict:
    r = world.rank
    pair = world.split(2)
    x = torch.full((3,), float(r + 1))
    return {
        "rank": r, "size": world.world_size,
        "sum": world.all_reduce(x.clone()).tolist(),
        "sum_bf16": world.all_reduce(torch.full((2,), r + 0.5, dtype=torch.bfloat16)).float().tolist(),
        "gather_all": world.all_gather(torch.tensor([[r, 10 * r]]), dim=-1).tolist(),
        "gather_rows": world.all_gather(torch.tensor([[r]]), dim=0).tolist(),
        "gather0": None if (g := world.gather(torch.tensor([r]), dst=0)) is None else g.tolist(),
        "bcast": world.broadcast(torch.tensor([r * 7]), src=1).tolist(),
        "obj": world.broadcast_object({"step": 3, "ids": [r]} if r == 0 else None),
        "pair": (pair.rank, pair.world_size, pair.all_reduce(torch.tensor([float(r)])).item(),
                 pair.broadcast_object(f"from {r}", src=1)),
    }


def test_dist_group_collectives_on_four_gloo_ranks(tmp_path):
    out = run_ranks(4, _collectives, tmp_path)
    for r, res in enumerate(out):
        assert (res["rank"], res["size"]) == (r, 4)
        assert res["sum"] == [10.0] * 3
        assert res["sum_bf16"] == [8.0, 8.0]
        assert res["gather_all"] == [[0, 0, 1, 10, 2, 20, 3, 30]]
        assert res["gather_rows"] == [[0], [1], [2], [3]]
        assert res["gather0"] == ([0, 1, 2, 3] if r == 0 else None)
        assert res["bcast"] == [7]
        assert res["obj"] == {"step": 3, "ids": [0]}
        first = r - r % 2
        assert res["pair"] == (r % 2, 2, float(2 * first + 1), f"from {first + 1}")


def _late_loader(world: DistGroup) -> dict:
    """Rank 1 "loads" 3 s longer than rank 0, then stalls 3 s in a step, with a 1 s step timeout."""
    out: dict = {}
    if world.rank == 1:
        time.sleep(3)
    t0 = time.monotonic()
    world.wait_for_all()  # the start-up bound (60 s) applies
    out["waited"] = time.monotonic() - t0
    out["agreed"] = world.all_reduce(torch.ones(1)).item()
    if world.rank == 1:
        time.sleep(3)
    try:
        world.all_reduce(torch.ones(1))
        out["step"] = "ok"
    except RuntimeError as e:  # gloo's timeout, or the peer's closed connection after it
        out["step"] = f"failed: {e}"
    return out


def test_loading_is_bounded_by_the_startup_timeout_and_steps_by_the_step_timeout(tmp_path):
    out = run_ranks(2, _late_loader, tmp_path, timeout_s=1, startup_timeout_s=60)
    assert out[0]["waited"] > 2.5 and out[0]["agreed"] == 2.0
    assert out[0]["step"].startswith("failed"), out[0]
    assert "timed out" in out[0]["step"].lower() or "timeout" in out[0]["step"].lower(), out[0]["step"]


def test_single_group_is_the_identity():
    g = SingleGroup()
    assert isinstance(g, ParallelGroup) and (g.rank, g.world_size) == (0, 1)
    x = torch.randn(2, 3)
    for y in (g.all_reduce(x), g.all_gather(x, dim=0), g.gather(x), g.broadcast(x)):
        assert y is x
    obj = {"a": [1]}
    assert g.broadcast_object(obj) is obj
