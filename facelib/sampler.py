"""PK sampling: every batch holds P identities with K images each, so each anchor has positives
and negatives for the batch-hard triplet loss (the original entry used P=8, K=16)."""

import numpy as np
import torch


class PKSampler(torch.utils.data.Sampler):
    """Yields batches (lists of P*K dataset indices) for a DataLoader's `batch_sampler`.

    One epoch visits every identity about once: the identities are shuffled and cut into groups of P.
    Identities with fewer than K images are drawn with replacement. Under distributed training each
    rank takes every `world_size`-th group, so ranks see different identities in the same step and
    the same number of batches. `set_epoch` makes the order a pure function of (seed, epoch), which
    is what lets an interrupted run resume onto the same batches.
    """

    def __init__(self, labels, p, k, seed=0, rank=0, world_size=1):
        super().__init__()
        labels = np.asarray(labels)
        self.identities, inverse = np.unique(labels, return_inverse=True)
        if len(self.identities) < p:
            raise ValueError(f"PK sampling needs at least P={p} identities, the data has {len(self.identities)}")
        self.indices_by_identity = [np.flatnonzero(inverse == i) for i in range(len(self.identities))]
        self.p, self.k = p, k
        self.seed, self.rank, self.world_size = seed, rank, world_size
        self.epoch = 0

    def set_epoch(self, epoch):
        self.epoch = epoch

    def __len__(self):
        return len(self.identities) // (self.p * self.world_size)

    def __iter__(self):
        rng = np.random.default_rng([self.seed, self.epoch])
        order = rng.permutation(len(self.identities))
        groups = order[: len(self) * self.p * self.world_size].reshape(-1, self.p)
        # Image choices use one generator per rank, so ranks never share a random stream.
        image_rng = np.random.default_rng([self.seed, self.epoch, self.rank])
        for group in groups[self.rank :: self.world_size]:
            batch = []
            for identity in group:
                pool = self.indices_by_identity[identity]
                batch.extend(image_rng.choice(pool, size=self.k, replace=len(pool) < self.k).tolist())
            yield batch
