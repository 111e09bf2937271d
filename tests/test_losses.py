import math

import pytest
import torch
import torch.nn.functional as F

from facelib.losses import (
    ARCFACE_MARGIN,
    COSFACE_MARGIN,
    MARGIN_SCALE,
    MARGINS,
    ArcFaceLogits,
    CenterLoss,
    CosFaceLogits,
    IdentityLoss,
    SoftMarginTriplet,
    TriarchyCriterion,
)


def test_batch_hard_triplet_with_soft_margin_on_a_hand_computed_case():
    # 1-d embeddings: identity 0 at 0 and 1, identity 1 at 3 and 7
    embeddings = torch.tensor([[0.0], [1.0], [3.0], [7.0]])
    labels = torch.tensor([0, 0, 1, 1])
    # hardest positive / closest negative per anchor: (1,3) (1,2) (4,2) (4,6)
    expected = (
        math.log1p(math.exp(1 - 3))
        + math.log1p(math.exp(1 - 2))
        + math.log1p(math.exp(4 - 2))
        + math.log1p(math.exp(4 - 6))
    ) / 4
    assert math.isclose(SoftMarginTriplet("raw")(embeddings, labels).item(), expected, rel_tol=1e-5)


def test_normalised_triplet_measures_directions_on_a_hand_computed_case():
    # unit directions: identity 0 both along x; identity 1 along y and along the diagonal
    embeddings = torch.tensor([[2.0, 0.0], [1.0, 0.0], [0.0, 5.0], [3.0, 3.0]])
    labels = torch.tensor([0, 0, 1, 1])
    diagonal, right_angle = math.sqrt(2 - math.sqrt(2)), math.sqrt(2)  # |x - diag|, |x - y| on the unit circle
    # hardest positive / closest negative per anchor: (0, diag) (0, diag) (diag, right) (diag, diag)
    expected = (2 * math.log1p(math.exp(-diagonal)) + math.log1p(math.exp(diagonal - right_angle)) + math.log(2)) / 4
    loss = SoftMarginTriplet("unit")
    assert math.isclose(loss(embeddings, labels).item(), expected, rel_tol=1e-5)
    # the raw-embedding loss of the same points differs, and the normalised one ignores the scale
    assert not math.isclose(SoftMarginTriplet("raw")(embeddings, labels).item(), expected, rel_tol=1e-3)
    assert math.isclose(loss(0.01 * embeddings, labels).item(), expected, rel_tol=1e-5)


def test_batch_scaled_triplet_divides_distances_by_the_mean_norm_on_a_hand_computed_case():
    # the raw case above: norms 0, 1, 3, 7 (mean 2.75), hardest pairs (1,3) (1,2) (4,2) (4,6)
    embeddings = torch.tensor([[0.0], [1.0], [3.0], [7.0]])
    labels = torch.tensor([0, 0, 1, 1])
    expected = sum(math.log1p(math.exp((p - n) / 2.75)) for p, n in [(1, 3), (1, 2), (4, 2), (4, 6)]) / 4
    loss = SoftMarginTriplet("batch")
    assert math.isclose(loss(embeddings, labels).item(), expected, rel_tol=1e-5)
    # blind to the batch's overall scale, unlike the raw loss; unlike "unit", each embedding keeps its length
    assert math.isclose(loss(0.01 * embeddings, labels).item(), expected, rel_tol=1e-5)
    assert not math.isclose(SoftMarginTriplet("raw")(0.01 * embeddings, labels).item(), expected, rel_tol=1e-3)
    assert not math.isclose(SoftMarginTriplet("unit")(embeddings, labels).item(), expected, rel_tol=1e-3)


def test_unknown_triplet_scale_is_refused():
    with pytest.raises(ValueError, match="triplet scale: expected one of raw, unit, batch, got 'l2'"):
        SoftMarginTriplet("l2")


@pytest.mark.parametrize("scale", ["raw", "unit", "batch"])
def test_triplet_gradient_is_finite_for_identical_embeddings(scale):
    embeddings = torch.zeros(4, 3, requires_grad=True)
    SoftMarginTriplet(scale)(embeddings, torch.tensor([0, 0, 1, 1])).backward()
    assert torch.isfinite(embeddings.grad).all()


def test_center_loss_is_half_mean_squared_distance_to_class_center():
    loss = CenterLoss(num_classes=2, dim=2)
    with torch.no_grad():
        loss.centers.copy_(torch.tensor([[0.0, 0.0], [1.0, 1.0]]))
    embeddings = torch.tensor([[3.0, 4.0], [1.0, 2.0]])
    # squared distances 25 and 1 -> 0.5 * mean = 6.5
    assert loss(embeddings, torch.tensor([0, 1])).item() == 6.5


def triarchy(num_ids, dim, label_smoothing=0.1, triplet_weight=1.0, center_weight=5e-4, margin="none"):
    """A criterion composed of the three parts, as facelib.training composes it (no center loss: weight None)."""
    return TriarchyCriterion(
        identity=IdentityLoss(label_smoothing, margin),
        triplet=SoftMarginTriplet("raw"),
        center=None if center_weight is None else CenterLoss(num_ids, dim, weight=center_weight),
        triplet_weight=triplet_weight,
    )


def test_criterion_sums_weighted_parts_with_label_smoothing():
    torch.manual_seed(0)
    criterion = triarchy(num_ids=3, dim=4, label_smoothing=0.1, triplet_weight=2.0, center_weight=0.5)
    embedding, logits = torch.randn(6, 4), torch.randn(6, 3)
    labels = torch.tensor([0, 0, 1, 1, 2, 2])
    total, parts = criterion(embedding, logits, labels)
    assert math.isclose(parts["id"], F.cross_entropy(logits, labels, label_smoothing=0.1).item(), rel_tol=1e-6)
    assert math.isclose(parts["triplet"], 2.0 * SoftMarginTriplet()(embedding, labels).item(), rel_tol=1e-6)
    assert math.isclose(parts["center"], 0.5 * criterion.center_loss(embedding, labels).item(), rel_tol=1e-6)
    assert math.isclose(total.item(), sum(parts.values()), rel_tol=1e-6)
    assert "center" not in triarchy(num_ids=3, dim=4, center_weight=None)(embedding, logits, labels)[1]


def test_centers_step_at_their_own_rate_regardless_of_loss_weight():
    criterion = triarchy(num_ids=2, dim=2, center_weight=1e-3)
    with torch.no_grad():
        criterion.center_loss.centers.zero_()
    optimizers = criterion.optimizers()
    assert optimizers["center_optimizer"].param_groups[0]["lr"] == 0.5
    embedding = torch.tensor([[2.0, 0.0], [0.0, 2.0]])
    total, _ = criterion(embedding, torch.randn(2, 2), torch.tensor([0, 1]))
    total.backward()
    criterion.step(optimizers)
    # unweighted gradient of 0.5*mean||x-c||^2 w.r.t. c is -(x-c)/batch = -1 per coordinate moved; lr 0.5
    assert torch.allclose(criterion.center_loss.centers, torch.tensor([[0.5, 0.0], [0.0, 0.5]]))


def test_margin_logits_on_a_hand_built_case():
    # two samples, three classes; the targets' cosines are 0.6 and cos(1.0)
    cosines = torch.tensor([[0.6, 0.2, -0.4], [0.1, math.cos(1.0), 0.9]])
    labels = torch.tensor([0, 1])
    target = F.one_hot(labels, 3).bool()
    s = MARGIN_SCALE
    cosface = CosFaceLogits()(cosines, labels)
    assert torch.allclose(cosface[target], torch.tensor([s * (0.6 - COSFACE_MARGIN), s * (math.cos(1.0) - 0.35)]))
    arcface = ArcFaceLogits()(cosines, labels)
    expected = [s * math.cos(math.acos(0.6) + ARCFACE_MARGIN), s * math.cos(1.0 + 0.5)]
    assert torch.allclose(arcface[target], torch.tensor(expected), atol=1e-4)
    for logits in (cosface, arcface):  # the other classes keep s * cos
        assert torch.allclose(logits[~target], s * cosines[~target])


def test_arcface_falls_back_where_the_angle_plus_margin_passes_pi():
    # theta = 3.0 rad: cos(theta + m) would rise again past pi, so the target gets s * (cos - m sin m)
    cosine = math.cos(3.0)
    logits = ArcFaceLogits()(torch.tensor([[cosine, 0.0]]), torch.tensor([0]))
    fallback = MARGIN_SCALE * (cosine - ARCFACE_MARGIN * math.sin(ARCFACE_MARGIN))
    assert math.isclose(logits[0, 0].item(), fallback, rel_tol=1e-5)


@pytest.mark.parametrize("margin", ["cosface", "arcface"])
def test_margin_criterion_applies_the_margin_before_label_smoothing(margin):
    torch.manual_seed(0)
    criterion = triarchy(num_ids=3, dim=4, label_smoothing=0.1, margin=margin)
    embedding, cosines = torch.randn(6, 4), torch.rand(6, 3) * 2 - 1
    labels = torch.tensor([0, 0, 1, 1, 2, 2])
    total, parts = criterion(embedding, cosines, labels)
    logits = MARGINS[margin]()(cosines, labels)
    assert math.isclose(parts["id"], F.cross_entropy(logits, labels, label_smoothing=0.1).item(), rel_tol=1e-6)
    assert {"triplet", "center"} <= set(parts)  # the triplet and center losses stay
    # the margin makes the identity loss harder than the plain softmax on the same scaled cosines
    assert parts["id"] > F.cross_entropy(MARGIN_SCALE * cosines, labels, label_smoothing=0.1).item()
    # finite gradients even where a target's cosine is exactly 1 or -1 (the sine's square root is kept off 0)
    edges = cosines.detach().clone()
    edges[0, 0], edges[2, 1] = 1.0, -1.0
    edges.requires_grad_(True)
    criterion(embedding, edges, labels)[0].backward()
    assert torch.isfinite(edges.grad).all()


def test_unknown_margin_is_refused():
    with pytest.raises(ValueError, match="margin: expected one of none, cosface, arcface, got 'sphereface'"):
        IdentityLoss(margin="sphereface")
