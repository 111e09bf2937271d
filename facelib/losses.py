"""The losses: the pretext heads' cross-entropy, and Triarchy's three parts (label-smoothed softmax, soft-margin
batch-hard triplet, center loss), composed by `TriarchyCriterion` (the Baseline's has no center loss).

The softmax may be a margin softmax (`margin`, MARGINS): on the cosines of a models.CosineClassifier, the
target class's logit is pushed down by a margin before the label-smoothed cross-entropy, so an identity must
win by that margin (CosFace, Wang et al. 2018: s * (cos - m); ArcFace, Deng et al. 2019: s * cos(theta + m)).

Defaults follow the original entry, which took them from reid-strong-baseline (Luo et al. 2019):
label smoothing 0.1, triplet weight 1, center-loss weight 5e-4 with its own SGD optimiser (lr 0.5).

Where the triplet distances are measured (`scale`; facelib.recipe's default is "batch"):
    raw    the embedding as it is, as in the original. Nothing holds its scale up once the identity logits pass
           through BatchNorm: weight decay shrinks it until the soft margin sits near softplus(0) and ranks all
           triplets alike.
    unit   each embedding L2-normalised (pytorch-metric-learning's default distance). It can collapse every face
           onto one direction early in training (it did on CFP).
    batch  the embeddings divided by the batch's mean norm: blind to the overall scale, like "unit", but each
           face keeps its own length. The measured comparison: benchmarks/results/synthetic.md and experiments.md.
"""

import math

import torch
import torch.nn.functional as F
from torch import nn


def pairwise_distances(embeddings):
    """Euclidean distance matrix; the clamp keeps the square root differentiable at zero."""
    squared = torch.cdist(embeddings, embeddings).pow(2)
    return squared.clamp(min=1e-12).sqrt()


TRIPLET_SCALES = ("raw", "unit", "batch")
IGNORE = -100  # the target of an unknown label (cross-entropy's ignore_index)

# s = 30 rather than the papers' 64 (tuned on tens of thousands of identities): the CosFace paper's lower bound
# on s for C classes and a target probability P, (C - 1) / C * log((C - 1) P / (1 - P)), is about 8 for the
# ~400 identities of CFP folds 1-8 at P = 0.9, and 30 clears it for any C the project trains on. The margins are
# the papers' own: CosFace 0.35 on the cosine, ArcFace 0.5 rad on the angle.
MARGIN_SCALE = 30.0
COSFACE_MARGIN = 0.35
ARCFACE_MARGIN = 0.5


class CosFaceLogits(nn.Module):
    """CosFace (large margin cosine loss) logits: s * cos, the target class's s * (cos - m)."""

    def __init__(self, scale=MARGIN_SCALE, margin=COSFACE_MARGIN):
        super().__init__()
        self.scale, self.margin = scale, margin

    def forward(self, cosines, labels):
        target = F.one_hot(labels, cosines.shape[1]).bool()
        return self.scale * torch.where(target, cosines - self.margin, cosines)


class ArcFaceLogits(nn.Module):
    """ArcFace (additive angular margin) logits: s * cos, the target class's s * cos(theta + m).

    Where theta + m would pass pi, cos(theta + m) would rise again and reward a worse angle; there the target
    gets s * (cos - m sin m) instead: the fallback of ArcFace's own code, a CosFace-like margin.
    """

    def __init__(self, scale=MARGIN_SCALE, margin=ARCFACE_MARGIN):
        super().__init__()
        self.scale, self.margin = scale, margin

    def forward(self, cosines, labels):
        target = F.one_hot(labels, cosines.shape[1]).bool()
        # the sine from the cosine, kept off 0 where the square root's gradient is infinite
        sines = (1 - cosines.pow(2)).clamp(min=1e-6).sqrt()
        shifted = cosines * math.cos(self.margin) - sines * math.sin(self.margin)  # cos(theta + m)
        fallback = cosines - self.margin * math.sin(self.margin)
        shifted = torch.where(cosines > math.cos(math.pi - self.margin), shifted, fallback)
        return self.scale * torch.where(target, shifted, cosines)


class PlainLogits(nn.Module):
    """No margin: the model's logits as they are."""

    def forward(self, logits, labels):
        return logits


MARGINS = {"none": PlainLogits, "cosface": CosFaceLogits, "arcface": ArcFaceLogits}


class Criterion(nn.Module):
    """What the training loop needs of a criterion: `forward` gives the total and each part (floats, for logging);
    parameters of its own (center-loss centers) come with their own optimisers, stepped by `step`."""

    def optimizers(self):
        """name -> optimiser over this criterion's own parameters (stored under that name in checkpoints)."""
        return {}

    def step(self, optimizers):
        """Step the optimisers of `optimizers()` after the backward pass."""


class PretextCriterion(Criterion):
    """Cross-entropy on every pretext head, summed; each head's mean is over its known labels only (targets of
    IGNORE are unknown, e.g. the facing of a frontal face), so a batch without any adds 0."""

    def forward(self, logits, targets):
        parts, total = {}, 0.0
        for column, (name, head_logits) in enumerate(logits.items()):
            target = targets[:, column]
            known = (target != IGNORE).sum().clamp(min=1)
            head_loss = F.cross_entropy(head_logits.float(), target, ignore_index=IGNORE, reduction="sum") / known
            total = total + head_loss
            parts[name] = head_loss.item()
            parts[f"{name}_acc"] = ((head_logits.argmax(1) == target).sum() / known).item()
        return total, parts


class IdentityLoss(nn.Module):
    """Label-smoothed cross-entropy on the identity logits; with a margin (MARGINS), the model gives cosines and
    the margin softmax makes the logits."""

    def __init__(self, label_smoothing=0.1, margin="none"):
        super().__init__()
        if margin not in MARGINS:
            raise ValueError(f"margin: expected one of {', '.join(MARGINS)}, got {margin!r}")
        self.margin_logits = MARGINS[margin]()
        self.cross_entropy = nn.CrossEntropyLoss(label_smoothing=label_smoothing)

    def forward(self, logits, labels):
        return self.cross_entropy(self.margin_logits(logits, labels), labels)


class SoftMarginTriplet(nn.Module):
    """Batch-hard triplet loss (Hermans et al. 2017) with a soft margin: mean softplus(d(a,p) - d(a,n)).

    For each anchor the farthest positive and the closest negative in the batch are used. The soft
    margin replaces the hinge max(0, m + d_ap - d_an) and keeps pulling even satisfied triplets.
    scale: the embeddings the distances are measured between (see the module docstring): "raw" as they
    are, "unit" L2-normalised one by one, "batch" divided by the batch's mean norm.
    """

    def __init__(self, scale="raw"):
        super().__init__()
        if scale not in TRIPLET_SCALES:
            raise ValueError(f"triplet scale: expected one of {', '.join(TRIPLET_SCALES)}, got {scale!r}")
        self.scale = scale

    def forward(self, embeddings, labels):
        if self.scale == "unit":
            embeddings = F.normalize(embeddings, dim=1)
        elif self.scale == "batch":
            embeddings = embeddings / embeddings.norm(dim=1).mean().clamp(min=1e-12)
        distances = pairwise_distances(embeddings)
        same = labels[:, None] == labels[None, :]
        hardest_positive = distances.masked_fill(~same, float("-inf")).amax(dim=1)
        hardest_negative = distances.masked_fill(same, float("inf")).amin(dim=1)
        return F.softplus(hardest_positive - hardest_negative).mean()


class CenterLoss(nn.Module):
    """Center loss (Wen et al. 2016): half the mean squared distance of each embedding to its class center.

    The centers are parameters of this module, updated by their own SGD at `lr` (`optimizer`, `step`), whatever
    the loss's weight in the total.
    """

    def __init__(self, num_classes, dim, weight=1.0, lr=0.5):
        super().__init__()
        self.centers = nn.Parameter(torch.randn(num_classes, dim))
        self.weight, self.lr = weight, lr

    def forward(self, embeddings, labels):
        return 0.5 * (embeddings - self.centers[labels]).pow(2).sum(dim=1).mean()

    def optimizer(self):
        return torch.optim.SGD(self.parameters(), lr=self.lr)

    def step(self, optimizer):
        """Update the centers at their own learning rate, undoing the loss weight on their gradient."""
        for parameter in self.parameters():
            if parameter.grad is not None:
                parameter.grad.mul_(1.0 / self.weight)
        optimizer.step()


class TriarchyCriterion(Criterion):
    """The weighted sum of its parts: the identity loss, the triplet loss (times triplet_weight) and, where there
    is one, the center loss (times its weight). Triarchy has all three; the Baseline no center loss."""

    def __init__(self, identity, triplet, center=None, triplet_weight=1.0):
        super().__init__()
        self.identity_loss, self.triplet_loss, self.center_loss = identity, triplet, center
        self.triplet_weight = triplet_weight

    def forward(self, embedding, logits, labels):
        parts = {
            "id": self.identity_loss(logits, labels),
            "triplet": self.triplet_weight * self.triplet_loss(embedding, labels),
        }
        if self.center_loss is not None:
            parts["center"] = self.center_loss.weight * self.center_loss(embedding, labels)
        total = sum(parts.values())
        return total, {name: value.item() for name, value in parts.items()}

    def optimizers(self):
        return {} if self.center_loss is None else {"center_optimizer": self.center_loss.optimizer()}

    def step(self, optimizers):
        if self.center_loss is not None:
            self.center_loss.step(optimizers["center_optimizer"])
