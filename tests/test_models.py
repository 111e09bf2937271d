import pytest
import torch

from facelib.imagecache import to_model_input
from facelib.models import (
    Baseline,
    CheckpointError,
    EmbeddingNet,
    PretextNet,
    Triarchy,
    count_parameters,
    export_embedder,
    feature_map_side,
    load_backbone_from,
    load_embedder,
    measure_centre,
)


def images(n=4, size=32):
    return torch.randn(n, 3, size, size).contiguous(memory_format=torch.channels_last)


def test_inference_model_has_the_original_parameter_count():
    assert count_parameters(EmbeddingNet()) == 4_663_420
    assert count_parameters(export_embedder(Triarchy(num_ids=70))) == 4_663_420
    assert count_parameters(export_embedder(Baseline(num_ids=70))) == 4_663_420


def test_triarchy_has_batchnorm_after_logits_not_after_embedding():
    model = Triarchy(num_ids=5).train()
    embedding, logits = model(images())
    assert embedding.shape == (4, 512) and logits.shape == (4, 5)
    # the BatchNorm in train mode standardises each logit over the batch
    assert torch.allclose(logits.mean(0), torch.zeros(5), atol=1e-5)
    assert not torch.allclose(embedding.mean(0), torch.zeros(512), atol=1e-3)


def test_baseline_export_folds_batchnorm_into_embedding():
    model = Baseline(num_ids=5)
    with torch.no_grad():
        model.embedding_bn.running_mean.normal_()
        model.embedding_bn.running_var.uniform_(0.5, 2.0)
        model.embedding_bn.weight.normal_()
        model.embedding_bn.bias.normal_()
    model.eval()
    x = images()
    with torch.no_grad():
        assert torch.allclose(export_embedder(model)(x), model(x)[0], atol=1e-4)


def test_pretext_heads_are_split_from_one_linear_layer():
    model = PretextNet({"angle": 9, "expression": 3})
    out = model(images())
    assert out["angle"].shape == (4, 9) and out["expression"].shape == (4, 3)
    assert model.head.out_features == 12


def test_pretext_backbone_transfers_to_triarchy(tmp_path):
    pretext = PretextNet({"angle": 9, "expression": 3})
    torch.save({"kind": "pretext", "model": pretext.state_dict(), "config": {"image_size": 32}}, tmp_path / "p.pt")
    model = load_backbone_from(Triarchy(num_ids=5), tmp_path / "p.pt")
    for name, tensor in pretext.backbone.state_dict().items():
        assert torch.equal(model.embedder.backbone.state_dict()[name], tensor)
    features = load_embedder(tmp_path / "p.pt")
    assert features.image_size == 32 and features(images()).shape == (4, 1280)


def test_identity_backbone_transfers_to_another_identity_model(tmp_path):
    # pretraining on synthetic identities: a Baseline's backbone starts a Triarchy with other identities and head
    pretrained = Baseline(num_ids=7)
    torch.save({"kind": "baseline", "model": pretrained.state_dict(), "config": {}}, tmp_path / "id.pt")
    model = load_backbone_from(Triarchy(num_ids=5, head="gdc", image_size=64), tmp_path / "id.pt")
    for name, tensor in pretrained.embedder.backbone.state_dict().items():
        assert torch.equal(model.embedder.backbone.state_dict()[name], tensor)


def test_transfer_rejects_mismatched_or_wrong_checkpoints(tmp_path):
    bad = {"backbone.net._conv_stem.weight": torch.zeros(1)}
    torch.save({"kind": "pretext", "model": bad, "config": {"image_size": 32}}, tmp_path / "bad.pt")
    with pytest.raises(CheckpointError, match="bad.pt"):
        load_backbone_from(Triarchy(num_ids=5), tmp_path / "bad.pt")
    torch.save({"kind": "classical", "model": {}, "config": {"image_size": 32}}, tmp_path / "peer.pt")
    with pytest.raises(CheckpointError, match="peer.pt: not a facelib checkpoint"):
        load_backbone_from(Triarchy(num_ids=5), tmp_path / "peer.pt")
    with pytest.raises(CheckpointError, match="not found"):
        load_embedder(tmp_path / "missing.pt")
    (tmp_path / "junk.pt").write_text("not a checkpoint")
    with pytest.raises(CheckpointError, match="junk.pt"):
        load_embedder(tmp_path / "junk.pt")


def test_load_embedder_returns_exported_weights(tmp_path):
    model = Triarchy(num_ids=5).eval()
    embedder = export_embedder(model)
    torch.save(
        {
            "kind": "triarchy",
            "model": model.state_dict(),
            "embedder": embedder.state_dict(),
            "config": {"image_size": 32},
            "num_ids": 5,
        },
        tmp_path / "m.pt",
    )
    loaded = load_embedder(tmp_path / "m.pt")
    x = images()
    with torch.no_grad():
        assert torch.allclose(loaded(x), model(x)[0], atol=1e-5)
    assert loaded.kind == "triarchy"


def test_batchnorm_statistics_follow_training_at_pytorch_momentum():
    momenta = [m.momentum for m in EmbeddingNet().modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert len(momenta) > 40 and all(momentum == pytest.approx(0.1) for momentum in momenta)


@pytest.mark.parametrize("kind", [Triarchy, Baseline])
def test_measured_centre_makes_the_inference_embedding_zero_mean(kind):
    torch.manual_seed(0)
    model = kind(num_ids=5).eval()
    faces = torch.randint(0, 256, (6, 3, 32, 32), dtype=torch.uint8)
    before = export_embedder(model)
    x = to_model_input(faces)
    shared = ((before(x) + before(x.flip(-1))) / 2).mean(0)
    assert shared.norm() > 0.1  # an untrained network already has a common direction

    centre = measure_centre(model, faces, batch_size=4)
    after = export_embedder(model)
    assert torch.allclose(centre, shared, atol=1e-5)
    assert torch.allclose(((after(x) + after(x.flip(-1))) / 2).mean(0), torch.zeros(512), atol=1e-5)
    # training sees the uncentred embedding: the centre moves no loss
    assert torch.allclose(model(x)[0], before(x), atol=1e-5)


@pytest.mark.parametrize(
    "size, side, parameters",
    [(64, 2, 4_671_612), (100, 3, 4_678_012), (112, 3, 4_678_012), (128, 4, 4_686_972)],
)
def test_gdc_head_covers_the_whole_last_feature_map_within_5m_parameters(size, side, parameters):
    net = EmbeddingNet(head="gdc", image_size=size).eval()
    x = images(2, size)
    with torch.no_grad():
        assert net.backbone.feature_map(x).shape == (2, 1280, side, side)
        assert net(x).shape == (2, 512)
    assert net.pool.conv.weight.shape == (1280, 1, side, side)  # one h x w map per channel
    # the default keeps the original's count; gdc adds the maps, two BatchNorms, and drops the Linear's bias
    gdc_extra = 1280 * side * side + 2 * 1280 + 2 * 512 - 512
    assert count_parameters(net) == parameters == 4_663_420 + gdc_extra <= 5_000_000
    assert count_parameters(EmbeddingNet(image_size=size)) == 4_663_420


@pytest.mark.parametrize("size, side", [(64, 4), (100, 6), (112, 7), (128, 8)])
def test_last_stride_one_keeps_the_last_stages_input_resolution_with_the_same_weights(size, side):
    original, kept = EmbeddingNet(image_size=size).eval(), EmbeddingNet(image_size=size, last_stride=1).eval()
    kept.load_state_dict(original.state_dict())  # one set of weights fits both: a stride has no parameters
    x = images(2, size)
    with torch.no_grad():
        assert original.backbone.feature_map(x).shape[-1] == feature_map_side(size) == side // 2
        assert kept.backbone.feature_map(x).shape == (2, 1280, side, side) and feature_map_side(size, 1) == side
        assert kept(x).shape == (2, 512)
    assert count_parameters(kept) == 4_663_420
    gdc = EmbeddingNet(head="gdc", image_size=size, last_stride=1)
    assert gdc.pool.conv.weight.shape == (1280, 1, side, side)
    with pytest.raises(ValueError, match=r"last_stride: expected one of \(2, 1\), got 3"):
        EmbeddingNet(last_stride=3)


def test_gdc_head_weighs_positions_where_average_pooling_cannot():
    net = EmbeddingNet(head="gdc", image_size=64).eval()
    feature_map = torch.zeros(1, 1280, 2, 2)
    moved = feature_map.clone()
    feature_map[..., 0, 0], moved[..., 1, 1] = 1.0, 1.0  # the same activation, at another place
    with torch.no_grad():
        net.pool.conv.weight.normal_()
        assert not torch.allclose(net.pool(feature_map), net.pool(moved))
    assert torch.equal(feature_map.mean((2, 3)), moved.mean((2, 3)))  # what average pooling would see


def test_unknown_head_or_gdc_without_a_size_is_refused():
    with pytest.raises(ValueError, match="head: expected one of gap, gdc, got 'gem'"):
        EmbeddingNet(head="gem")
    with pytest.raises(ValueError, match="head gdc: the image size is needed"):
        EmbeddingNet(head="gdc")


@pytest.mark.parametrize("kind", [Triarchy, Baseline])
def test_gdc_export_gives_the_training_embedding(kind, tmp_path):
    model = kind(num_ids=5, head="gdc", image_size=64)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, (torch.nn.BatchNorm1d, torch.nn.BatchNorm2d)):
                module.running_mean.normal_()
                module.running_var.uniform_(0.5, 2.0)
                module.weight.normal_()
                module.bias.normal_()
    model.eval()
    x = images(2, 64)
    exported = export_embedder(model)
    assert exported.head == "gdc" and count_parameters(exported) == 4_671_612
    with torch.no_grad():
        assert torch.allclose(exported(x), model(x)[0], atol=1e-4)  # the Baseline's BatchNorm folded in
    torch.save(
        {
            "kind": "baseline",
            "embedder": exported.state_dict(),
            "config": {"image_size": 64, "settings": {"head": "gdc"}},
        },
        tmp_path / "m.pt",
    )
    with torch.no_grad():
        assert torch.allclose(load_embedder(tmp_path / "m.pt")(x), model(x)[0], atol=1e-4)


@pytest.mark.parametrize("kind", [Triarchy, Baseline])
def test_cosine_classifier_gives_cosines_without_a_logit_batchnorm(kind):
    model = kind(num_ids=5, cosine=True).train()
    embedding, cosines = model(images())
    weight = model.classifier.weight
    expected = torch.nn.functional.normalize(embedding, dim=1) @ torch.nn.functional.normalize(weight, dim=1).T
    assert cosines.shape == (4, 5) and torch.allclose(cosines, expected, atol=1e-6)
    assert not any(
        isinstance(m, torch.nn.BatchNorm1d) for m in model.modules() if m is not getattr(model, "embedding_bn", None)
    )
    # the inference network is the same as without a margin head
    assert count_parameters(export_embedder(model)) == 4_663_420


def test_pretext_backbone_transfers_to_a_gdc_model(tmp_path):
    pretext = PretextNet({"view": 2})
    torch.save({"kind": "pretext", "model": pretext.state_dict(), "config": {"image_size": 64}}, tmp_path / "p.pt")
    model = load_backbone_from(Baseline(num_ids=5, head="gdc", image_size=64), tmp_path / "p.pt")
    for name, tensor in pretext.backbone.state_dict().items():
        assert torch.equal(model.embedder.backbone.state_dict()[name], tensor)
