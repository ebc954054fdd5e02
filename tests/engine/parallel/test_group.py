"""ParallelGroup collectives over real gloo process groups, and the one-rank group."""

from __future__ import annotations

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


def test_single_group_is_the_identity():
    g = SingleGroup()
    assert isinstance(g, ParallelGroup) and (g.rank, g.world_size) == (0, 1)
    x = torch.randn(2, 3)
    for y in (g.all_reduce(x), g.all_gather(x, dim=0), g.gather(x), g.broadcast(x)):
        assert y is x
    obj = {"a": [1]}
    assert g.broadcast_object(obj) is obj
