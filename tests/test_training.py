import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from facelib import layouts, losses, models, splits, training
from facelib.errors import FacelibError
from facelib.imagecache import AUGMENTATIONS, Augmentation
from facelib.recipe import IdentityConfig, PretextConfig

SIZE = 32  # pixels: tiny images keep every run here to a few seconds on 2 CPU cores
YAW = {1: -45.0, 2: 0.0, 3: 45.0}  # camera code -> yaw, so each side view has a mirror code
FAST = dict(image_size=SIZE, batch=(2, 4))  # config overrides


def pretext_run(data, out, **settings):
    return training.train_pretext(PretextConfig(data, **{**FAST, **settings}), out, progress=False)


def identity_run(data, out, resume=False, **settings):
    return training.train_identity(IdentityConfig(data, **{**FAST, **settings}), out, resume=resume, progress=False)


def write_tiny_kface(root, identities=6, evaluated=2, seed=0):
    """A K-Face layout of coloured cartoon 'faces': each identity has its own colours and mark position,
    the camera code moves the mark sideways, the expression changes a stripe. `evaluated` identities are
    held out for the validate pairs (frontal vs side, half same)."""
    rng = np.random.default_rng(seed)
    root = Path(root)
    people = {f"{i:03d}": rng.integers(0, 256, size=(2, 3)) for i in range(identities + evaluated)}

    def face(identity, angle, expression):
        background, mark = people[identity]
        pixels = np.empty((48, 48, 3), np.uint8)
        pixels[:] = background
        x = 18 + int(YAW[angle] / 6)
        pixels[14:34, x : x + 12] = mark
        pixels[38 : 40 + 2 * expression, 10:38] = 255 - mark
        return Image.fromarray(pixels)

    def save(folder, identity, angle, expression):
        name = f"{identity}_S001_L1_E0{expression}_C{angle}_cropped.jpg"
        (root / folder).mkdir(parents=True, exist_ok=True)
        face(identity, angle, expression).save(root / folder / name, quality=95)
        return name

    ids = list(people)
    train = [(save("train", i, a, e), i, YAW[a]) for i in ids[:identities] for a in YAW for e in (1, 2)]
    pd.DataFrame(train, columns=["file_name", "face_id", "yaw"]).to_csv(root / "train" / "train_meta.csv", index=False)
    held_out = ids[identities:]
    rows = []
    for position, identity in enumerate(held_out):
        other = held_out[(position + 1) % len(held_out)]
        for side in (1, 3):
            frontal = save("validate", identity, 2, 1)
            rows.append((frontal, save("validate", identity, side, 2), 0))
            rows.append((frontal, save("validate", other, side, 1), 1))
    pd.DataFrame(rows, columns=["image1", "image2", "label"]).to_csv(
        root / "validate" / "validate_label.csv", index=False
    )
    return root


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory):
    return write_tiny_kface(tmp_path_factory.mktemp("kface") / "data")


@pytest.fixture(autouse=True)
def private_cache(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("FACELIB_CACHE", str(tmp_path_factory.getbasetemp() / "cache"))


def weights(path):
    return models.read_checkpoint(path)["model"]


def test_pretext_labels_mirror_camera_codes_and_expressions_stay(tiny_data):
    images = splits.training_images(layouts.load(tiny_data))
    labels = training.pretext_labels(images)
    assert labels.classes == {"angle": [1, 2, 3], "expression": [1, 2]}
    angle = labels.targets[:, 0]
    assert torch.equal(labels.mirrored[:, 0], 2 - angle)  # C1 (-45) <-> C3 (+45), C2 (0) stays
    assert torch.equal(labels.mirrored[:, 1], labels.targets[:, 1])
    assert labels.flippable.all()


def test_pretext_labels_without_a_known_mirror_forbid_flipping():
    images = pd.DataFrame(
        {
            "angle": pd.array([1, 2, 3], dtype="Int64"),
            "expression": pd.array([1, 1, 2], dtype="Int64"),
            "yaw": [-45.0, 0.0, 30.0],
            "view": None,
            "facing": None,
        }
    )
    labels = training.pretext_labels(images)
    assert labels.flippable.tolist() == [False, True, False]


def test_cfp_style_labels_flip_facing_and_ignore_unknown_facing():
    images = pd.DataFrame(
        {
            "angle": pd.array([pd.NA] * 3, dtype="Int64"),
            "expression": pd.array([pd.NA] * 3, dtype="Int64"),
            "view": ["frontal", "profile", "profile"],
            "facing": [None, "left", "right"],
        }
    )
    labels = training.pretext_labels(images)
    assert labels.classes == {"view": ["frontal", "profile"], "facing": ["left", "right"]}
    assert labels.targets.tolist() == [[0, training.IGNORE], [1, 0], [1, 1]]
    assert labels.mirrored.tolist() == [[0, training.IGNORE], [1, 1], [1, 0]]
    assert labels.flippable.all()


def test_pretext_then_triarchy_writes_every_run_file(tiny_data, tmp_path):
    pretext = pretext_run(tiny_data, tmp_path / "run", epochs=1)
    assert pretext == tmp_path / "run" / "pretext.pt"
    checkpoint = models.read_checkpoint(pretext)
    assert checkpoint["kind"] == "pretext" and checkpoint["heads"] == {"angle": 3, "expression": 2}
    assert (tmp_path / "run" / "pretext_metrics.csv").is_file() and (tmp_path / "run" / "pretext.log").is_file()

    best = identity_run(tiny_data, tmp_path / "run", init=pretext, epochs=2)
    assert best == tmp_path / "run" / "model.pt"
    for name in ["model.pt", "last.pt", "metrics.csv", "config.json", "train.log"]:
        assert (tmp_path / "run" / name).is_file(), name
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    assert config["inference_parameters"] == 4_663_420
    assert config["settings"]["init"] == str(pretext) and config["image_size"] == SIZE
    assert config["settings"]["triplet_scale"] == "batch"  # not the original raw embedding: facelib.losses
    metrics = pd.read_csv(tmp_path / "run" / "metrics.csv")
    assert metrics["epoch"].tolist() == [1, 2]
    assert {"loss", "id", "triplet", "center", "lr", "val_accuracy", "seconds", "images_per_s"} <= set(metrics)
    assert metrics["val_accuracy"].between(0, 1).all()
    saved_best = models.read_checkpoint(best)
    assert saved_best["epoch"] == 1 + int(metrics["val_accuracy"].iloc[1] >= metrics["val_accuracy"].iloc[0])
    assert "optimizer" not in saved_best  # the best model is for inference; last.pt carries the training state
    embedder = models.load_embedder(best)
    assert embedder.image_size == SIZE and models.count_parameters(embedder) == 4_663_420
    assert "epoch 2/2" in (tmp_path / "run" / "train.log").read_text()


@pytest.mark.parametrize("init_kind", ["pretext", "baseline"])
def test_a_pretext_or_identity_backbone_initialises_triarchy(tiny_data, tmp_path, monkeypatch, init_kind):
    if init_kind == "pretext":
        init = pretext_run(tiny_data, tmp_path / "init", epochs=1)
    else:  # pretraining on other identities (benchmarks/cfp.py --pretrain-synthetic)
        identity_run(tiny_data, tmp_path / "init", model="baseline", epochs=1)
        init = tmp_path / "init" / "last.pt"
    loaded = {}
    original = models.load_backbone_from

    def spy(model, path):
        original(model, path)
        loaded.update({name: value.clone() for name, value in model.embedder.backbone.state_dict().items()})
        return model

    monkeypatch.setattr(models, "load_backbone_from", spy)
    identity_run(tiny_data, tmp_path / "run", init=init, epochs=1)
    backbone = models.backbone_state(weights(init), models.BACKBONE_PREFIX[init_kind])
    assert loaded and backbone and all(torch.equal(loaded[name], value) for name, value in backbone.items())


def test_unknown_triplet_scale_stops_before_training(tmp_path):
    with pytest.raises(FacelibError, match="triplet_scale: expected one of raw, unit, batch, got 'cosine'"):
        identity_run(tmp_path / "no-data", tmp_path / "run", triplet_scale="cosine")
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("ema", [0.0, 0.9])
def test_resume_after_a_stop_reaches_the_same_weights(tiny_data, tmp_path, monkeypatch, ema):
    identity_run(tiny_data, tmp_path / "straight", epochs=2, seed=3, ema=ema)

    # interrupt the second run during epoch 2 (a failing loss), then resume it
    calls = {"n": 0}
    steps_per_epoch = json.loads((tmp_path / "straight" / "config.json").read_text())["steps_per_epoch"]
    original = losses.TriarchyCriterion.forward

    def failing(self, *args):
        calls["n"] += 1
        if calls["n"] > steps_per_epoch:
            raise KeyboardInterrupt
        return original(self, *args)

    monkeypatch.setattr(losses.TriarchyCriterion, "forward", failing)
    with pytest.raises(KeyboardInterrupt):
        identity_run(tiny_data, tmp_path / "resumed", epochs=2, seed=3, ema=ema)
    last = tmp_path / "resumed" / "last.pt"
    assert models.read_checkpoint(last)["epoch"] == 1 and not training.finished(last)
    monkeypatch.setattr(losses.TriarchyCriterion, "forward", original)
    identity_run(tiny_data, tmp_path / "resumed", epochs=2, seed=3, ema=ema, resume=True)

    a, b = (
        models.read_checkpoint(tmp_path / "straight" / "last.pt"),
        models.read_checkpoint(tmp_path / "resumed" / "last.pt"),
    )
    assert all(torch.equal(a["model"][name], b["model"][name]) for name in a["model"])
    assert ("average" in a) == bool(ema)
    assert all(torch.equal(a["average"][name], b["average"][name]) for name in a.get("average", {}))
    assert torch.equal(a["criterion"]["center_loss.centers"], b["criterion"]["center_loss.centers"])
    assert pd.read_csv(tmp_path / "resumed" / "metrics.csv")["epoch"].tolist() == [1, 2]
    # finished: with the settings it trained with (a batch given as a tuple, as configs hold it), not with others
    batch = tuple(b["config"]["settings"]["batch"])
    assert training.finished(last) and training.finished(last, seed=3, batch=batch)
    assert not training.finished(last, seed=4) and not training.finished(tmp_path / "never" / "last.pt")
    # resuming the finished run returns its model without decoding a face
    monkeypatch.setattr(training, "load_images", lambda *args, **kwargs: pytest.fail("a finished run decoded faces"))
    assert (
        identity_run(tiny_data, tmp_path / "resumed", epochs=2, seed=3, resume=True)
        == tmp_path / "resumed" / "model.pt"
    )


def test_a_nan_loss_stops_with_a_clear_error_and_keeps_the_last_good_checkpoint(tiny_data, tmp_path, monkeypatch):
    calls = {"n": 0}
    original = losses.TriarchyCriterion.forward

    def poisoned(self, *args):
        calls["n"] += 1
        total, parts = original(self, *args)
        # 36 images // (P=2 x K=4) = 4 steps per epoch: call 6 is epoch 2, step 2
        return (total * float("nan"), parts) if calls["n"] == 6 else (total, parts)

    monkeypatch.setattr(losses.TriarchyCriterion, "forward", poisoned)
    with pytest.raises(FacelibError, match=r"loss became nan at epoch 2, step 2.*last.pt \(epoch 1\) is kept"):
        identity_run(tiny_data, tmp_path / "run", epochs=3)
    assert models.read_checkpoint(tmp_path / "run" / "last.pt")["epoch"] == 1
    assert "loss became nan" in (tmp_path / "run" / "train.log").read_text()


def test_cfp_fold_options_are_rejected_for_split_layouts(tiny_data, tmp_path):
    with pytest.raises(FacelibError, match="CFP"):
        identity_run(tiny_data, tmp_path / "run", train_folds=[1], epochs=1)


TORCHRUN_SCRIPT = """
import sys
from facelib import training
from facelib.recipe import IdentityConfig
training.train_identity(IdentityConfig(sys.argv[1], epochs=1, image_size=32, batch=(2, 2)), sys.argv[2], progress=False)
"""


@pytest.mark.slow
def test_two_process_torchrun(tiny_data, tmp_path):
    script = tmp_path / "train.py"
    script.write_text(TORCHRUN_SCRIPT)
    torchrun = Path(sys.executable).parent / "torchrun"
    result = subprocess.run(
        [str(torchrun), "--standalone", "--nproc_per_node=2", str(script), str(tiny_data), str(tmp_path / "run")],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    assert result.returncode == 0, result.stderr[-3000:]
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    assert config["world_size"] == 2 and config["steps_per_epoch"] == 4  # 36 images // (P=2 x K=2 x 2 ranks)
    checkpoint = models.read_checkpoint(tmp_path / "run" / "last.pt")
    assert len(checkpoint["rng"]) == 2  # both ranks' RNG states, for an exact resume
    assert pd.read_csv(tmp_path / "run" / "metrics.csv")["epoch"].tolist() == [1]


def test_identity_models_store_the_centre_of_their_training_embeddings(tiny_data, tmp_path):
    centred = identity_run(tiny_data, tmp_path / "centred", epochs=1)
    plain = identity_run(tiny_data, tmp_path / "plain", epochs=1, centre=False)
    assert models.read_checkpoint(centred)["embedder"]["centre"].norm() > 0
    assert torch.equal(models.read_checkpoint(plain)["embedder"]["centre"], torch.zeros(512))


def test_pose_aware_training_draws_batches_by_view(tiny_data, tmp_path, monkeypatch):
    seen = []

    class Spy(training.PKSampler):
        def __init__(self, *args, views=None, **kwargs):
            seen.append(views)
            super().__init__(*args, views=views, **kwargs)

    monkeypatch.setattr(training, "PKSampler", Spy)
    data = shutil.copytree(tiny_data, tmp_path / "data")
    meta = pd.read_csv(data / "train" / "train_meta.csv")
    meta["cam_angle"] = np.where(meta["yaw"].abs() < 30, "front", "side")  # the challenge's column gives the view
    meta.to_csv(data / "train" / "train_meta.csv", index=False)
    run = identity_run(data, tmp_path / "aware", epochs=1, pose_aware=True)
    assert set(seen[0]) == {"frontal", "profile"}
    assert models.read_checkpoint(run)["config"]["settings"]["pose_aware"] is True
    identity_run(data, tmp_path / "plain", epochs=1)
    assert seen[1] is None


def test_canonical_facing_turns_faces_of_known_facing_right_in_training_and_at_test(tiny_data, tmp_path):
    images = splits.training_images(layouts.load(tiny_data))
    everyone = torch.arange(len(images))
    task = training.IdentityTask(IdentityConfig(tiny_data, canonical_facing=True, **FAST), images)
    facing = images["facing"]
    assert set(facing.dropna()) == {"left", "right"}
    assert task.mirrored(everyone).tolist() == (facing == "left").tolist()
    assert task.flippable(everyone).tolist() == facing.isna().tolist()  # the others flip at random
    plain = training.IdentityTask(IdentityConfig(tiny_data, **FAST), images)
    assert plain.mirrored(everyone) is None and plain.flippable(everyone) is None
    run = identity_run(tiny_data, tmp_path / "canonical", epochs=1, canonical_facing=True)
    assert models.load_embedder(run).canonical_facing is True
    assert models.load_embedder(identity_run(tiny_data, tmp_path / "plain", epochs=1)).canonical_facing is False


def test_canonical_facing_without_any_known_facing_stops_before_training(tmp_path):
    for name in ("amy", "ben"):
        (tmp_path / "data" / name).mkdir(parents=True)
        for number in range(4):
            Image.new("RGB", (40, 40), (40 * number, 120, 80)).save(tmp_path / "data" / name / f"{number}.jpg")
    with pytest.raises(FacelibError, match="canonical_facing needs the facing"):
        identity_run(tmp_path / "data", tmp_path / "run", canonical_facing=True)
    assert sorted(path.name for path in (tmp_path / "run").iterdir()) == ["train.log"]  # stopped before any epoch
    assert "canonical_facing needs the facing" in (tmp_path / "run" / "train.log").read_text()


def test_augmentation_recipes_by_name(tiny_data, tmp_path):
    with pytest.raises(FacelibError, match="augmentation: expected one of default, strong, got 'sparkly'"):
        identity_run(tiny_data, tmp_path / "run", epochs=1, augmentation="sparkly")
    assert not (tmp_path / "run").exists()  # refused before any work
    run = identity_run(tiny_data, tmp_path / "strong", epochs=1, augmentation="strong")
    stored = models.read_checkpoint(run)["config"]["settings"]["augmentation"]
    assert Augmentation(**stored) == AUGMENTATIONS["strong"]


@pytest.mark.parametrize(
    "option, value, message",
    [
        ("margin", "sphereface", "margin: expected one of none, cosface, arcface, got 'sphereface'"),
        ("head", "gem", "head: expected one of gap, gdc, got 'gem'"),
        ("ema", 1.0, r"ema: expected a decay from 0 \(none\) up to 1, not included, got 1.0"),
        ("ema", -0.5, "ema: expected a decay from 0"),
    ],
)
def test_a_bad_margin_head_or_ema_stops_before_training(tmp_path, option, value, message):
    with pytest.raises(FacelibError, match=message):
        identity_run(tmp_path / "no-data", tmp_path / "run", **{option: value})
    assert not (tmp_path / "run").exists()


def test_margin_and_head_build_the_model_and_criterion_they_name(tmp_path):
    images = pd.DataFrame({"identity": ["a", "a", "b", "b"]})
    config = IdentityConfig(tmp_path, model="baseline", image_size=64, margin="arcface", head="gdc")
    model, criterion = training.IdentityTask(config, images).build()
    assert isinstance(model.classifier, models.CosineClassifier) and model.embedder.head == "gdc"
    assert isinstance(criterion.identity_loss.margin_logits, losses.ArcFaceLogits)
    assert criterion.center_loss is None  # the Baseline's: recipe.MODEL_DEFAULTS
    # the defaults: the plain softmax on the average-pooled head
    model, criterion = training.IdentityTask(IdentityConfig(tmp_path, model="baseline"), images).build()
    assert isinstance(model.classifier, torch.nn.Linear) and model.embedder.head == "gap"
    assert isinstance(criterion.identity_loss.margin_logits, losses.PlainLogits)


def test_a_weight_average_is_what_validation_scores_and_the_best_model_holds(tiny_data, tmp_path):
    plain = models.read_checkpoint(identity_run(tiny_data, tmp_path / "plain", epochs=1).with_name("last.pt"))
    best = identity_run(tiny_data, tmp_path / "averaged", epochs=1, ema=0.9)
    last = models.read_checkpoint(best.with_name("last.pt"))
    # the average rides along: the trained weights are those of the same run without it (the centre aside)
    trained = [name for name in plain["model"] if name != "embedder.centre"]
    assert all(torch.equal(plain["model"][name], last["model"][name]) for name in trained)
    average = {name.removeprefix("module."): value for name, value in last["average"].items() if name != "n_averaged"}
    steps = json.loads((best.parent / "config.json").read_text())["steps_per_epoch"]
    assert int(last["average"]["n_averaged"]) == steps  # updated after every step
    stored = models.read_checkpoint(best)
    weight = "embedder.embedding.weight"
    assert torch.equal(stored["model"][weight], average[weight])
    assert not torch.equal(stored["model"][weight], last["model"][weight])
    # the inference network and its centre are the average's: measured on it, not on the trained weights
    embedder = models.load_embedder(best)
    assert torch.equal(embedder.embedding.weight, average[weight])
    assert embedder.centre.norm() > 0 and torch.equal(embedder.centre, average["embedder.centre"])
    assert not last["model"]["embedder.centre"].any()
    assert stored["config"]["settings"]["ema"] == 0.9
    # the epoch's validation accuracy is the average's: the same pairs scored again with its weights give it
    config = IdentityConfig(tiny_data, ema=0.9, **FAST)
    data = layouts.load(tiny_data)
    images, pairs = training.IdentityTask.select(config, data)
    averaged, _ = training.IdentityTask(config, images).build()
    averaged.load_state_dict(average)
    validation = training._Validation(pairs, data.images, config, "cpu", None, progress=False)
    scored = pd.read_csv(best.parent / "metrics.csv")["val_accuracy"].tolist()
    assert scored == [validation.accuracy(averaged)]
    assert scored != pd.read_csv(tmp_path / "plain" / "metrics.csv")["val_accuracy"].tolist()  # the trained weights'
