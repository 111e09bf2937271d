from collections import Counter

import pytest

from facelib.sampler import PKSampler

LABELS = ["a"] * 10 + ["b"] * 2 + ["c"] * 5 + ["d"] * 7 + ["e"] * 4 + ["f"] * 6


def test_each_batch_has_p_identities_with_k_images():
    sampler = PKSampler(LABELS, p=3, k=4, seed=0)
    batches = list(sampler)
    assert len(batches) == len(sampler) == len(LABELS) // 12  # an epoch shows about every image once
    for batch in batches:
        counts = Counter(LABELS[i] for i in batch)
        assert len(counts) == 3 and set(counts.values()) == {4}


def test_identities_with_enough_images_are_drawn_without_replacement():
    sampler = PKSampler(LABELS, p=2, k=4, seed=1)
    small_identity_seen = False
    for epoch in range(20):
        sampler.set_epoch(epoch)
        for batch in sampler:
            for group in (batch[:4], batch[4:]):
                if LABELS[group[0]] == "b":  # two images only: K=4 needs replacement
                    small_identity_seen = True
                else:
                    assert len(set(group)) == 4
    assert small_identity_seen


def test_order_depends_only_on_seed_and_epoch():
    first, second = PKSampler(LABELS, p=2, k=2, seed=3), PKSampler(LABELS, p=2, k=2, seed=3)
    second.set_epoch(1)
    assert list(first) != list(second)
    first.set_epoch(1)
    assert list(first) == list(second)
    assert list(PKSampler(LABELS, p=2, k=2, seed=4)) != list(PKSampler(LABELS, p=2, k=2, seed=3))


def test_ranks_split_one_batch_sequence():
    single = list(PKSampler(LABELS, p=2, k=2, seed=0))
    ranks = [list(PKSampler(LABELS, p=2, k=2, seed=0, rank=r, world_size=2)) for r in range(2)]
    assert len(ranks[0]) == len(ranks[1]) == len(single) // 2
    assert ranks[0] == single[0::2][: len(ranks[0])] and ranks[1] == single[1::2][: len(ranks[1])]
    assert ranks[0] != ranks[1]


def test_too_few_identities_is_a_clear_error():
    with pytest.raises(ValueError, match="at least P=7 identities"):
        PKSampler(LABELS, p=7, k=2)


def test_pose_aware_batches_hold_every_view_of_each_identity():
    # like CFP: 10 frontal + 4 profile images per identity; identity "b" has no profile at all
    labels = ["a"] * 14 + ["b"] * 6 + ["c"] * 14
    views = (["frontal"] * 10 + ["profile"] * 4) + ["frontal"] * 6 + (["frontal"] * 10 + ["profile"] * 4)
    plain = PKSampler(labels, p=2, k=4, seed=0)
    aware = PKSampler(labels, p=2, k=4, seed=0, views=views)
    missed = 0
    for epoch in range(30):
        plain.set_epoch(epoch)
        aware.set_epoch(epoch)
        for batch in plain:
            missed += sum(labels[g[0]] != "b" and all(views[i] == "frontal" for i in g) for g in (batch[:4], batch[4:]))
        for batch in aware:
            for group in (batch[:4], batch[4:]):
                assert len(group) == 4 and len({labels[i] for i in group}) == 1
                assert len(set(group)) == 4  # still without replacement
                if labels[group[0]] != "b":
                    assert {views[i] for i in group} == {"frontal", "profile"}
    assert missed > 0  # uniform draws do miss the profiles, which is what the option is for


def test_pose_aware_identity_with_fewer_images_than_k_still_fills_its_k():
    labels, views = ["a", "a", "b", "b", "b", "b"], ["frontal", "profile", "frontal", "frontal", "profile", "profile"]
    for batch in PKSampler(labels, p=2, k=4, seed=0, views=views):
        assert len(batch) == 8
        group_a = [i for i in batch if labels[i] == "a"]
        assert len(group_a) == 4 and set(group_a) == {0, 1}
