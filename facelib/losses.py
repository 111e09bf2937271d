"""The three Triarchy losses: label-smoothed softmax, soft-margin batch-hard triplet, center loss.

Defaults follow the original entry, which took them from reid-strong-baseline (Luo et al. 2019):
label smoothing 0.1, triplet weight 1, center-loss weight 5e-4 with its own SGD optimiser (lr 0.5).

An option, off by default: triplet distances between unit-normalised embeddings (`normalize=True`;
pytorch-metric-learning's default distance, and the cosine geometry that verification scores with). On the
raw embedding, as the original, nothing holds the scale up once the identity logits pass through BatchNorm:
weight decay shrinks it (norm about 0.26 on the synthetic default) and the soft margin sits near
softplus(0) = 0.69, ranking all triplets alike. Normalised, the synthetic default's test AUC rose from 0.968
to 0.984, but on CFP (400 identities, 25 epochs) the embedding collapsed to one direction (the triplet loss
stuck at log 2, the identity loss at chance) where the raw version learnt: see benchmarks/results/synthetic.md.
"""

import torch
import torch.nn.functional as F
from torch import nn


def pairwise_distances(embeddings):
    """Euclidean distance matrix; the clamp keeps the square root differentiable at zero."""
    squared = torch.cdist(embeddings, embeddings).pow(2)
    return squared.clamp(min=1e-12).sqrt()


class SoftMarginTripletLoss(nn.Module):
    """Batch-hard triplet loss (Hermans et al. 2017) with a soft margin: mean softplus(d(a,p) - d(a,n)).

    For each anchor the farthest positive and the closest negative in the batch are used. The soft
    margin replaces the hinge max(0, m + d_ap - d_an) and keeps pulling even satisfied triplets.
    normalize: measure distances between the L2-normalised embeddings (see the module docstring).
    """

    def __init__(self, normalize=False):
        super().__init__()
        self.normalize = normalize

    def forward(self, embeddings, labels):
        if self.normalize:
            embeddings = F.normalize(embeddings, dim=1)
        distances = pairwise_distances(embeddings)
        same = labels[:, None] == labels[None, :]
        hardest_positive = distances.masked_fill(~same, float("-inf")).amax(dim=1)
        hardest_negative = distances.masked_fill(same, float("inf")).amin(dim=1)
        return F.softplus(hardest_positive - hardest_negative).mean()


class CenterLoss(nn.Module):
    """Center loss (Wen et al. 2016): half the mean squared distance of each embedding to its class center.

    The centers are parameters of this module, updated by their own optimiser.
    """

    def __init__(self, num_classes, dim):
        super().__init__()
        self.centers = nn.Parameter(torch.randn(num_classes, dim))

    def forward(self, embeddings, labels):
        return 0.5 * (embeddings - self.centers[labels]).pow(2).sum(dim=1).mean()


class TriarchyCriterion(nn.Module):
    """Weighted sum of the three losses; returns the total and each part (as floats, for logging).

    The Baseline uses the same class with `use_center=False` (softmax + triplet only).
    """

    def __init__(self, num_ids, dim=512, label_smoothing=0.1, triplet_weight=1.0, center_weight=5e-4,
                 use_center=True, normalize_triplet=False):
        super().__init__()
        self.identity_loss = nn.CrossEntropyLoss(label_smoothing=label_smoothing)
        self.triplet_loss = SoftMarginTripletLoss(normalize=normalize_triplet)
        self.center_loss = CenterLoss(num_ids, dim) if use_center else None
        self.triplet_weight = triplet_weight
        self.center_weight = center_weight

    def forward(self, embedding, logits, labels):
        parts = {
            "id": self.identity_loss(logits, labels),
            "triplet": self.triplet_weight * self.triplet_loss(embedding, labels),
        }
        if self.center_loss is not None:
            parts["center"] = self.center_weight * self.center_loss(embedding, labels)
        total = sum(parts.values())
        return total, {name: value.item() for name, value in parts.items()}

    def center_optimizer(self, lr=0.5):
        if self.center_loss is None:
            return None
        return torch.optim.SGD(self.center_loss.parameters(), lr=lr)

    def step_centers(self, optimizer):
        """Update the centers at their own learning rate, undoing the loss weight on their gradient."""
        if optimizer is None:
            return
        for parameter in self.center_loss.parameters():
            if parameter.grad is not None:
                parameter.grad.mul_(1.0 / self.center_weight)
        optimizer.step()
