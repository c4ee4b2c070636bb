"""The core's sharding (``sdcorr.shards.shard``), shared by the evaluation and ``match --pairs``."""

from __future__ import annotations

import pytest

from sdcorr.shards import group_by, shard


@pytest.mark.parametrize("world", [1, 2, 3, 4, 7])
def test_one_template_spreads_over_every_rank(world: int) -> None:
    """Propagation (one A against a folder) is one source group: it is cut into equal shares
    (``ceil(10 / world)``), so no rank gets more than one share (the shortest possible run) and
    order within a shard is kept."""
    items = [("template", f"photo{i}") for i in range(10)]
    shards = [shard(items, r, world, key=lambda it: it[0]) for r in range(world)]
    assert sorted(it for s in shards for it in s) == sorted(items)  # disjoint and covering
    share = -(-10 // world)
    assert [len(s) for s in shards] == [max(0, min(share, 10 - r * share)) for r in range(world)]
    assert all(s == sorted(s, key=items.index) for s in shards)
    assert shards == [shard(items, r, world, key=lambda it: it[0]) for r in range(world)]


def test_groups_within_a_share_stay_whole_and_balanced() -> None:
    items = [(src, i) for src in "abcdef" for i in range(3)] + [("g", 0)]  # 19 items, 7 groups
    for world in (2, 3, 4):
        shards = [shard(items, r, world, key=lambda it: it[0]) for r in range(world)]
        assert sorted(it for s in shards for it in s) == sorted(items)
        for group in group_by(items, key=lambda it: it[0]):
            holders = [r for r, s in enumerate(shards) if group[0] in s]
            assert len(holders) == 1 and all(it in shards[holders[0]] for it in group)
        sizes = [len(s) for s in shards]
        assert max(sizes) - min(sizes) <= 3
