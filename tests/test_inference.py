"""`facelib verify` and `facelib search` with a model trained in the test session."""

import json
import os
import shutil

import pytest
import torch
from PIL import Image

from facelib import embedding, inference, layouts
from facelib.cli import main
from facelib.errors import FacelibError


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("FACELIB_CACHE", str(tmp_path / "cache"))


def validation_pair(data, same):
    """One validate pair of the tiny set (frontal vs side view): the same identity or two identities."""
    pairs = layouts.load(data).pairs
    row = pairs[pairs["same"] == same].iloc[0]
    return row["a"], row["b"]


def run_cli(capsys, *args):
    code = main([str(arg) for arg in args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.mark.parametrize("same", [True, False])
def test_verify_tells_one_identity_from_two_at_the_stored_threshold(trained_run, capsys, same):
    data, model = trained_run
    stored = torch.load(model, weights_only=True)["verification"]
    assert stored["accuracy"] == 1.0  # the run separates its validation pairs, so each answer below is decided
    a, b = validation_pair(data, same)
    code, out, _ = run_cli(capsys, "verify", a, b, "--model", model, "--json")
    assert code == 0
    result = json.loads(out)
    assert result["same"] is same and result["threshold"] == stored["threshold"]
    assert (result["score"] >= result["threshold"]) is same
    code, out, _ = run_cli(capsys, "verify", a, b, "--model", model)
    assert out.startswith("same person" if same else "different people") and f"{stored['threshold']:.4f}" in out


def test_verify_takes_any_photo_size_and_a_given_threshold(trained_run, tmp_path):
    data, model = trained_run
    a, b = validation_pair(data, True)
    wide = tmp_path / "wide.png"
    with Image.open(a) as image:  # the face in the middle of a wider photo: the centre square is the face again
        canvas = Image.new("RGB", (image.width * 2, image.height), "white")
        canvas.paste(image, (image.width // 2, 0))
        canvas.save(wide)
    original = inference.verify(a, b, model)
    widened = inference.verify(wide, b, model)
    assert widened["score"] == pytest.approx(original["score"], abs=1e-4)
    fixed = inference.verify(a, b, model, threshold=original["score"] + 1e-3)
    assert fixed["same"] is False and fixed["threshold_source"] == "given"


def test_an_unreadable_image_is_named(trained_run, tmp_path, capsys):
    data, model = trained_run
    a, _ = validation_pair(data, True)
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"not a jpeg")
    code, _, err = run_cli(capsys, "verify", a, broken, "--model", model)
    assert code == 2 and "broken.jpg" in err and err.count("\n") == 1
    code, _, err = run_cli(capsys, "verify", a, tmp_path / "missing.jpg", "--model", model)
    assert code == 2 and "missing.jpg: image file not found" in err


def test_a_model_without_a_stored_threshold_asks_for_one(trained_run, tmp_path):
    data, model = trained_run
    checkpoint = torch.load(model, weights_only=True)
    del checkpoint["verification"]
    bare = tmp_path / "bare.pt"
    torch.save(checkpoint, bare)
    a, b = validation_pair(data, True)
    with pytest.raises(FacelibError, match="give one with --threshold"):
        inference.verify(a, b, bare)
    assert isinstance(inference.verify(a, b, bare, threshold=0.5)["same"], bool)


@pytest.fixture
def gallery(trained_run, tmp_path):
    """Identity folders of the tiny set's training images, plus one loose image."""
    data, _ = trained_run
    images = layouts.load(data).images
    train = images[images["split"] == "train"]
    folder = tmp_path / "gallery"
    for identity, group in train.groupby("identity"):
        (folder / identity).mkdir(parents=True)
        for path in group["path"]:
            shutil.copy(path, folder / identity)
    loose = images[images["split"] == "validate"]["path"].iloc[0]
    shutil.copy(loose, folder / "visitor.jpg")
    return folder


def test_search_ranks_the_probes_identity_first(trained_run, gallery, capsys):
    _, model = trained_run
    probe = sorted((gallery / "002").iterdir())[0]
    table = inference.search(probe, gallery, model, top=3)
    assert table["rank"].tolist() == [1, 2, 3] and table["score"].is_monotonic_decreasing
    assert table["identity"].iloc[0] == "002" and table["score"].iloc[0] == pytest.approx(1.0, abs=1e-5)
    assert table["images"].iloc[0] == len(list((gallery / "002").iterdir()))
    identities = inference.gallery_images(gallery)["identity"]
    assert "visitor" in set(identities) and identities.nunique() == 7
    code, out, _ = run_cli(capsys, "search", probe, "--gallery", gallery, "--model", model, "--top", "2", "--json")
    rows = json.loads(out)
    assert code == 0 and [row["rank"] for row in rows] == [1, 2] and rows[0]["identity"] == "002"


def test_search_embeds_the_gallery_once_until_the_model_or_an_image_changes(
    trained_run, gallery, tmp_path, monkeypatch
):
    _, model = trained_run
    embedded = []
    original = embedding._embed

    def counting(net, faces, *args):
        embedded.append(len(faces))
        return original(net, faces, *args)

    monkeypatch.setattr(embedding, "_embed", counting)
    probe = sorted((gallery / "001").iterdir())[0]
    size = len(inference.gallery_images(gallery))

    def gallery_embedded():
        embedded.clear()
        result = inference.search(probe, gallery, model)
        return size in embedded, result

    assert gallery_embedded()[0]
    assert not gallery_embedded()[0]  # cached: only the probe was embedded

    changed = sorted((gallery / "003").iterdir())[0]
    with Image.open(changed) as image:
        image.transpose(Image.Transpose.FLIP_TOP_BOTTOM).save(changed)
    os.utime(changed, ns=(1, 1))
    assert gallery_embedded()[0]

    checkpoint = torch.load(model, weights_only=True)
    checkpoint["embedder"]["embedding.bias"] += 0.01
    other = tmp_path / "other.pt"
    torch.save(checkpoint, other)
    embedded.clear()
    inference.search(probe, gallery, other)
    assert size in embedded


def test_gallery_errors_are_one_line(trained_run, tmp_path):
    data, model = trained_run
    a, _ = validation_pair(data, True)
    (tmp_path / "empty").mkdir()
    with pytest.raises(FacelibError, match="no images"):
        inference.search(a, tmp_path / "empty", model)
    with pytest.raises(FacelibError, match="--gallery .*nowhere: folder not found"):
        inference.search(a, tmp_path / "nowhere", model)
    with pytest.raises(FacelibError, match="--top"):
        inference.search(a, tmp_path / "empty", model, top=0)
