"""The run config: defaults written once, the stored dict's round trip, clear errors, and today's old checkpoints."""

import dataclasses
import json

import pytest

from facelib import layouts, losses, models, recipe, synthetic
from facelib.recipe import IdentityConfig, PretextConfig, RecipeError


def test_a_config_round_trips_through_its_stored_dict(tmp_path):
    config = IdentityConfig(
        tmp_path, model="baseline", epochs=3, batch=(4, 4), train_folds=[2, 1], margin="cosface", augmentation="strong"
    )
    stored = json.loads(json.dumps(config.stored()))  # what a checkpoint's config.json holds
    assert IdentityConfig.from_stored(stored).stored() == config.stored()
    # the per-model settings are stored as resolved (MODEL_DEFAULTS), so a read-back config holds them as values
    assert IdentityConfig.from_stored(stored) == dataclasses.replace(config, label_smoothing=0.0, center_weight=0.0)
    assert stored["kind"] == "baseline" and stored["train_folds"] == [1, 2] and stored["batch"] == [4, 4]
    pretext = PretextConfig(tmp_path, epochs=2)
    assert PretextConfig.from_stored(pretext.stored()) == pretext


def test_the_device_is_where_a_run_computes_not_part_of_its_recipe(tmp_path):
    config = IdentityConfig(tmp_path, device="cpu")
    assert "device" not in config.stored()
    assert IdentityConfig.from_stored(config.stored(), device="cpu").device == "cpu"
    assert IdentityConfig.from_stored(config.stored()).device == "auto"


@pytest.mark.parametrize(
    "change, message",
    [
        (dict(temperature=2.0), "temperature: not a setting of IdentityConfig"),
        (dict(epochs="40"), "epochs: expected a whole number, got '40'"),
        (dict(centre=1), "centre: expected true or false, got 1"),
        (dict(lr="fast"), "lr: expected a number, got 'fast'"),
        (dict(val_folds=["9"]), "val_folds: expected a list of whole numbers or null"),
        (dict(kind="pretext"), "kind: expected 'triarchy' for IdentityConfig, got 'pretext'"),
        (dict(format=7), "format 7: this facelib reads format 2; retrain"),
    ],
)
def test_a_stored_config_with_an_unknown_or_ill_typed_key_is_refused_by_name(tmp_path, change, message):
    stored = dict(IdentityConfig(tmp_path).stored(), **change)
    with pytest.raises(RecipeError, match=message):
        IdentityConfig.from_stored(stored)


def test_per_model_defaults_come_from_one_table(tmp_path):
    triarchy, baseline = IdentityConfig(tmp_path), IdentityConfig(tmp_path, model="baseline")
    for config in (triarchy, baseline):
        for name, value in recipe.MODEL_DEFAULTS[config.model].items():
            assert config.resolved(name) == config.stored()[name] == value
    assert (baseline.resolved("label_smoothing"), baseline.resolved("center_weight")) == (0.0, 0.0)
    # a copy with the other model takes that model's defaults; a value that was set stays
    assert dataclasses.replace(triarchy, model="baseline").resolved("label_smoothing") == 0.0
    assert IdentityConfig(tmp_path, model="baseline", label_smoothing=0.2).resolved("label_smoothing") == 0.2


def test_a_synthetic_start_is_a_one_epoch_baseline_on_a_set_made_once(tmp_path, monkeypatch):
    """Issue 17's lever 7: the set is rendered at the run's size beside the default set, and reused after."""
    monkeypatch.setenv("FACELIB_DATA", str(tmp_path))
    config = recipe.synthetic_start(6, image_size=32, batch=(2, 4), seed=3)
    data = tmp_path / "synthetic-6ids-s32"
    assert (config.model, config.epochs, config.image_size, config.batch, config.seed) == ("baseline", 1, 32, (2, 4), 3)
    assert config.data_root == str(data)
    images = layouts.load(data).images
    assert images["identity"].nunique() == 6 and layouts.image_sizes(images, sample=5, seed=0)["width"].eq(32).all()
    monkeypatch.setattr(synthetic, "generate", lambda *args, **kwargs: pytest.fail("the set was generated again"))
    assert recipe.synthetic_start(6, image_size=32, epochs=2).epochs == 2


def test_the_recipe_names_what_the_registries_build():
    assert recipe.MODEL_NAMES == tuple(models.MODELS) == tuple(recipe.MODEL_DEFAULTS)
    assert recipe.TRIPLET_SCALES == losses.TRIPLET_SCALES
    assert recipe.MARGINS == tuple(losses.MARGINS)
    assert recipe.EMBEDDING_HEADS == models.EMBEDDING_HEADS
    assert recipe.LAST_STRIDES == models.LAST_STRIDES


LEGACY_BASELINE = {  # a Baseline's settings as checkpoints stored them before facelib.recipe
    "kind": "baseline",
    "data_root": "/data/cfp",
    "init": "/runs/pretext.pt",
    "epochs": 25,
    "image_size": 64,
    "batch": [16, 4],
    "seed": 0,
    "train_folds": [1, 2, 3, 4, 5, 6, 7, 8],
    "val_folds": [9],
    "lr": 0.001,
    "weight_decay": 0.0005,
    "warmup": 0.1,
    "label_smoothing": 0.0,
    "triplet_weight": 1.0,
    "triplet_scale": "batch",
    "center_weight": None,
    "center_lr": None,
    "centre": True,
    "pose_aware": False,
    "margin": "none",
    "head": "gap",
    "augmentation": recipe.default(IdentityConfig, "augmentation"),
}


def test_a_checkpoint_of_the_old_format_is_converted():
    config = IdentityConfig.from_stored(LEGACY_BASELINE)
    assert config.model == "baseline" and config.val_folds == [9] and config.batch == (16, 4)
    assert config.resolved("center_weight") == 0.0  # the Baseline never had a center loss


@pytest.mark.parametrize(
    "saved, scale",
    [
        ({}, "raw"),
        ({"normalize_triplet": False}, "raw"),
        ({"normalize_triplet": True}, "unit"),
        ({"triplet_scale": "batch"}, "batch"),
    ],
)
def test_old_runs_keep_the_triplet_scale_they_started_with(saved, scale):
    # runs saved before `triplet_scale` stored nothing (the raw embedding) or a flag for the unit one
    old = {name: value for name, value in LEGACY_BASELINE.items() if name != "triplet_scale"}
    old.update(kind="triarchy", center_weight=5e-4, center_lr=0.5, **saved)
    assert IdentityConfig.from_stored(old).triplet_scale == scale


def test_an_old_run_without_its_kind_is_refused_with_how_to_retrain():
    with pytest.raises(RecipeError, match=r"retrain it into a new folder \(facelib pretext/train DATA --out NEW\)"):
        IdentityConfig.from_stored({"epochs": 3})


def test_overlapping_cfp_folds_are_refused(tmp_path):
    with pytest.raises(recipe.FacelibError, match=r"--train-folds \[1, 9\] and --val-folds \[9\] overlap"):
        IdentityConfig(tmp_path, train_folds=[1, 9], val_folds=[9])
