"""PK sampling: every batch holds P identities with K images each, so each anchor has positives
and negatives for the batch-hard triplet loss (the original entry used P=8, K=16)."""

import numpy as np
import torch


class PKSampler(torch.utils.data.Sampler):
    """Yields batches (lists of P*K dataset indices) for a DataLoader's `batch_sampler`.

    An epoch has as many batches as the data has images divided by P*K, so one epoch shows about every
    image once whatever the number of images per identity. Each batch draws P distinct identities at
    random and K images of each, without replacement where the identity has K images or more. The batch
    sequence is a pure function of (seed, epoch), which is what lets an interrupted run resume onto the
    same batches; under distributed training rank r takes every `world_size`-th batch of that sequence,
    so ranks train on different batches and all see the same number of them.

    views: optional pose label per image (e.g. 'frontal' / 'profile'; missing values count as one more
    view). With it, each identity's K images include one of every view that identity has (when K allows),
    the rest drawn at random as before: a cross-pose positive is then in every batch, where uniform draws
    of 4 from CFP's 10 frontal + 4 profile images miss the profiles about one time in five. Only the first
    image of each view is forced, so the view mix otherwise follows the data (a fixed 2 + 2 split did not
    help on CFP).
    """

    def __init__(self, labels, p, k, seed=0, rank=0, world_size=1, views=None):
        super().__init__()
        labels = np.asarray(labels)
        identities, inverse = np.unique(labels, return_inverse=True)
        if len(identities) < p:
            raise ValueError(f"PK sampling needs at least P={p} identities, the data has {len(identities)}")
        self.indices_by_identity = [np.flatnonzero(inverse == i) for i in range(len(identities))]
        self.view_codes = None if views is None else np.unique(np.asarray(views, dtype=str), return_inverse=True)[1]
        self.p, self.k = p, k
        self.seed, self.rank, self.world_size = seed, rank, world_size
        self.batches_per_rank = max(1, len(labels) // (p * k * world_size))
        self.epoch = 0

    def set_epoch(self, epoch):
        self.epoch = epoch

    def __len__(self):
        return self.batches_per_rank

    def __iter__(self):
        rng = np.random.default_rng([self.seed, self.epoch])
        for number in range(self.batches_per_rank * self.world_size):
            group = rng.choice(len(self.indices_by_identity), size=self.p, replace=False)
            batch = []
            for identity in group:
                batch.extend(self._draw(rng, self.indices_by_identity[identity]))
            if number % self.world_size == self.rank:
                yield batch

    def _draw(self, rng, pool):
        """K images of one identity: one of each of its views first (pose-aware), then uniformly."""
        forced, rest = [], pool
        if self.view_codes is not None:
            views = self.view_codes[pool]
            present = np.unique(views)
            if len(present) <= self.k:
                forced = [rng.choice(pool[views == view]) for view in rng.permutation(present)]
                rest = np.setdiff1d(pool, forced) if len(pool) > len(forced) else pool
        size = self.k - len(forced)
        drawn = rng.choice(rest, size=size, replace=len(rest) < size) if size else []
        return [int(i) for i in [*forced, *drawn]]
