from collections import Counter

import pytest

from facelib.sampler import PKSampler

LABELS = ["a"] * 10 + ["b"] * 2 + ["c"] * 5 + ["d"] * 7 + ["e"] * 4 + ["f"] * 6


def test_each_batch_has_p_identities_with_k_images():
    sampler = PKSampler(LABELS, p=3, k=4, seed=0)
    batches = list(sampler)
    assert len(batches) == len(sampler) == 2
    for batch in batches:
        counts = Counter(LABELS[i] for i in batch)
        assert len(counts) == 3 and set(counts.values()) == {4}
    # over an epoch every identity appears once, the small one ("b") with replacement
    assert sorted(LABELS[b[0]] for batch in batches for b in [batch[i:i + 4] for i in range(0, 12, 4)]) == list("abcdef")


def test_identities_with_enough_images_are_drawn_without_replacement():
    for batch in PKSampler(LABELS, p=2, k=4, seed=1):
        for i in range(0, 8, 4):
            group = batch[i:i + 4]
            if LABELS[group[0]] != "b":
                assert len(set(group)) == 4


def test_order_depends_only_on_seed_and_epoch():
    first, second = PKSampler(LABELS, p=2, k=2, seed=3), PKSampler(LABELS, p=2, k=2, seed=3)
    second.set_epoch(1)
    assert list(first) != list(second)
    first.set_epoch(1)
    assert list(first) == list(second)
    assert list(PKSampler(LABELS, p=2, k=2, seed=4)) != list(PKSampler(LABELS, p=2, k=2, seed=3))


def test_ranks_get_different_identities_and_equal_batch_counts():
    ranks = [PKSampler(LABELS, p=1, k=2, seed=0, rank=r, world_size=2) for r in range(2)]
    assert len(ranks[0]) == len(ranks[1]) == 3
    seen = [{LABELS[i] for batch in sampler for i in batch} for sampler in ranks]
    assert not seen[0] & seen[1]


def test_too_few_identities_is_a_clear_error():
    with pytest.raises(ValueError, match="at least P=7 identities"):
        PKSampler(LABELS, p=7, k=2)
