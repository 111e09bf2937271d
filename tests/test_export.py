"""ONNX export: the exported graph gives torch's final embeddings, and says in its metadata how to feed it."""

import json
import os

import numpy as np
import onnx
import onnxruntime
import pytest
import torch

from facelib import alignment, embedding, evaluation, export, imagecache, inference, layouts, models
from facelib.cli import main
from facelib.errors import FacelibError

TOLERANCE = 1e-4  # max abs difference of L2-normalised embeddings


@pytest.fixture(autouse=True)
def private_cache(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("FACELIB_CACHE", str(tmp_path_factory.getbasetemp() / "cache"))


@pytest.fixture(scope="module")
def exported(trained_run, tmp_path_factory):
    _, model = trained_run
    return model, export.export_onnx(model, tmp_path_factory.mktemp("export") / "model.onnx")


def run_without_facelib(path, faces):
    """What another program does: read the metadata, normalise uint8 RGB faces with it, run the graph."""
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    meta = session.get_modelmeta().custom_metadata_map
    mean = np.array(meta["facelib.input_mean"].split(","), np.float32)[:, None, None]
    std = np.array(meta["facelib.input_std"].split(","), np.float32)[:, None, None]
    assert faces.shape[-1] == int(meta["facelib.input_size"])
    x = ((faces.numpy().astype(np.float32) / 255 - mean) / std).astype(np.float32)
    return session.run([meta["facelib.output_name"]], {meta["facelib.input_name"]: x})[0]


def torch_embeddings(model, faces, flip=True):
    net = models.load_embedder(model) if isinstance(model, (str, os.PathLike)) else model
    return embedding.embed_images(net, faces, flip=flip, cache=False)


def assert_parity(model, onnx_path, faces):
    expected = torch_embeddings(model, faces)
    got = run_without_facelib(onnx_path, faces)
    assert got.shape == expected.shape == (len(faces), models.EMBEDDING_DIM)
    assert np.abs(got - expected).max() <= TOLERANCE


def tiny_faces(data):
    return imagecache.load_images(layouts.load(data).images, 64, progress=False)


def test_onnx_matches_torch_on_synthetic_faces_at_any_batch_size(trained_run, exported):
    data, _ = trained_run
    model, path = exported
    faces = tiny_faces(data)
    assert_parity(model, path, faces)
    assert_parity(model, path, faces[:1])  # the batch axis is dynamic


def test_the_parity_check_fails_without_the_flip_or_the_normalisation(trained_run, tmp_path):
    """On a network far from mirror-invariant (random weights, BatchNorm statistics of these faces, so that eval
    mode is not degenerate), dropping the mirror average or the L2 normalisation from the graph would change the
    embeddings by far more than the tolerance; the graph still matches."""
    data, _ = trained_run
    faces = tiny_faces(data)
    torch.manual_seed(0)
    net = models.EmbeddingNet()
    for module in net.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.momentum = None  # a cumulative average over the passes below
    with torch.no_grad():
        for batch in faces.split(16):
            net(imagecache.to_model_input(batch))
    net.eval().image_size = 64
    expected = torch_embeddings(net, faces)
    assert np.abs(torch_embeddings(net, faces, flip=False) - expected).max() > 10 * TOLERANCE
    with torch.inference_mode():
        raw = net(imagecache.to_model_input(faces))
    assert (raw.norm(dim=1) - 1).abs().min() > 10 * TOLERANCE
    assert_parity(net, export.write_onnx(net, tmp_path / "random.onnx"), faces)


def test_onnx_matches_torch_on_cfp_faces(cfp_root, exported):
    model, path = exported
    images = layouts.load(cfp_root).images
    faces = imagecache.load_images(images.groupby("view").head(8), 64, progress=False)  # frontal and profile
    assert_parity(model, path, faces)


def test_metadata_says_how_to_use_the_model_without_facelib(exported):
    model, path = exported
    proto = onnx.load(str(path))
    meta = {entry.key: entry.value for entry in proto.metadata_props}
    stored = models.load_embedder(model).verification
    assert meta["facelib.input_size"] == "64" and meta["facelib.parameters"] == "4663420"
    assert meta["facelib.flip_averaging"] == meta["facelib.l2_normalized"] == "true"
    assert (meta["facelib.input_mean"], meta["facelib.input_std"]) == ("0.5,0.5,0.5", "0.5,0.5,0.5")
    assert float(meta["facelib.threshold"]) == stored["threshold"] and meta["facelib.metric"] == stored["metric"]
    assert meta["facelib.align"] == "false" and export.OnnxEmbedder(path).align is False  # boxes, as it trained
    batch_axis = proto.graph.input[0].type.tensor_type.shape.dim[0]
    assert batch_axis.dim_param and not batch_axis.dim_value
    # the metadata's normalisation is facelib's own
    faces = torch.randint(0, 256, (2, 3, 4, 4), dtype=torch.uint8)
    expected = (faces.float() / 255 - 0.5) / 0.5
    assert torch.allclose(imagecache.to_model_input(faces), expected, atol=1e-6)


def test_a_pretext_checkpoint_is_refused_in_one_line(tmp_path, capsys):
    pretext = tmp_path / "pretext.pt"
    net = models.PretextNet({"angle": 3})
    torch.save({"kind": "pretext", "config": {"image_size": 64}, "model": net.state_dict()}, pretext)
    with pytest.raises(FacelibError, match="pretext checkpoint has no identity embedding"):
        export.export_onnx(pretext, tmp_path / "model.onnx")
    (tmp_path / "damaged.pt").write_bytes(b"not a checkpoint")
    assert main(["export", "--model", str(tmp_path / "damaged.pt"), "--out", str(tmp_path / "model.onnx")]) == 2
    error = capsys.readouterr().err
    assert "damaged.pt" in error and error.count("\n") == 1
    assert not list(tmp_path.glob("*.onnx*"))  # nothing half-written


def test_out_must_be_a_new_onnx_file(exported, tmp_path):
    model, path = exported
    with pytest.raises(FacelibError, match="--out .*model.pt: expected a file name ending in .onnx"):
        export.export_onnx(model, tmp_path / "model.pt")
    with pytest.raises(FacelibError, match="the file exists; give --overwrite"):
        export.export_onnx(model, path)


def test_onnx_engine_scores_equal_torch(trained_run):
    data, model = trained_run
    faces = layouts.load(data)
    torch_evaluation = evaluation.evaluate(faces, model, split="validate", engine="torch")
    onnx_evaluation = evaluation.evaluate(faces, model, split="validate", engine="onnx")
    assert np.abs(onnx_evaluation.scores - torch_evaluation.scores).max() <= TOLERANCE
    torch_result, onnx_result = torch_evaluation.metrics, onnx_evaluation.metrics
    assert onnx_result["engine"] == "onnx" and torch_result["engine"] == "torch"
    assert onnx_result["accuracy"] == torch_result["accuracy"]
    assert onnx_result["auc"] == pytest.approx(torch_result["auc"], abs=TOLERANCE)


def test_onnx_engine_needs_the_flip(exported, trained_run):
    data, _ = trained_run
    _, path = exported
    with pytest.raises(FacelibError, match="averages each face with its mirror"):
        evaluation.evaluate(layouts.load(data), path, split="validate", flip=False)


def test_the_exported_file_verifies_with_its_stored_threshold(trained_run, exported):
    data, _ = trained_run
    model, path = exported
    pairs = layouts.load(data).pairs
    a, b = pairs[["a", "b"]].iloc[0]
    with_torch, with_onnx = inference.verify(a, b, model), inference.verify(a, b, path)
    assert with_onnx["threshold"] == with_torch["threshold"] and with_onnx["same"] == with_torch["same"]
    assert with_onnx["score"] == pytest.approx(with_torch["score"], abs=TOLERANCE)


def test_an_aligned_model_exports_its_landmark_templates():
    aligned = export.crop_metadata(True)
    assert aligned["align"] == "true" and "landmarks" in aligned["crop"]
    templates = json.loads(aligned["align_templates"])
    assert templates.keys() == alignment.TEMPLATES.keys()
    for view, points in templates.items():
        assert np.array(points) == pytest.approx(alignment.TEMPLATES[view])


def test_a_canonical_facing_model_is_not_exported_to_a_graph_that_averages_mirrors(tmp_path):
    net = models.EmbeddingNet()
    net.image_size, net.canonical_facing = 32, True
    with pytest.raises(FacelibError, match="canonical facing"):
        export.write_onnx(net, tmp_path / "model.onnx")
    assert not (tmp_path / "model.onnx").exists()


def with_statistics_of(net, faces):
    """`net` with every BatchNorm's running statistics measured on `faces` (torch's `update_bn`). A tiny run's best
    epoch can be an early one whose eval-mode embedding is the same for every face (the cosface + GDC run below, on
    an AMD CPU: epoch 4, spread 4e-7 of the norm), and parity on a constant proves nothing; with the statistics of
    the faces themselves the embeddings spread (measured: 0.97 of the norm)."""
    torch.optim.swa_utils.update_bn([imagecache.to_model_input(faces)], net)
    return net.eval()


def test_a_cosface_gdc_last_stride_run_trains_reloads_and_exports(tmp_path):
    """A margin softmax with the GDC head on a last stride of 1: the run stores its options, its inference net is
    rebuilt with them (the GDC head's parameter count over a 4 x 4 map at 64 px), and export_onnx writes it; the
    ONNX graph of that net gives torch's embeddings."""
    from test_training import write_tiny_kface

    from facelib import training
    from facelib.recipe import IdentityConfig

    data = write_tiny_kface(tmp_path / "data")
    config = IdentityConfig(
        data, image_size=64, epochs=12, lr=3e-3, batch=(2, 4), margin="cosface", head="gdc", last_stride=1
    )
    model = training.train_identity(config, tmp_path / "run", cache_dir=tmp_path / "cache", progress=False)
    checkpoint = models.read_checkpoint(model)
    assert {key: checkpoint["config"]["settings"][key] for key in ("margin", "head", "last_stride")} == dict(
        margin="cosface", head="gdc", last_stride=1
    )
    assert checkpoint["config"]["inference_parameters"] == 4_686_972
    assert "logit_bn.weight" not in checkpoint["model"]  # no logit BatchNorm on the cosines
    net = models.load_embedder(model)
    assert (net.head, net.last_stride) == ("gdc", 1) and models.count_parameters(net) == 4_686_972
    exported_path = export.export_onnx(model, tmp_path / "model.onnx")
    meta = {p.key: p.value for p in onnx.load(exported_path).metadata_props}
    assert meta["facelib.kind"] == net.kind and meta["facelib.source"] == "model.pt"

    faces = tiny_faces(data)
    net = with_statistics_of(net, faces)
    with torch.no_grad():
        uncentred = net.uncentred(imagecache.to_model_input(faces))
    assert (uncentred - net.centre).norm(dim=1).mean() > 0.01 * uncentred.norm(dim=1).mean()  # not float noise
    path = export.write_onnx(net, tmp_path / "recalibrated.onnx")
    assert_parity(net, path, faces)
