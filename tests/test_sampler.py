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
