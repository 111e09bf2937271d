"""The split policy: per layout, which images train and which pairs validate and test (facelib.splits)."""

import pandas as pd
import pytest

from facelib import splits
from facelib.errors import FacelibError
from facelib.layouts import FaceData


def face_data(layout, images, pairs):
    images = pd.DataFrame(images)
    images["identity"] = images["path"].str[0]
    pairs = pd.DataFrame(pairs, columns=["a", "b", "same", "split", "fold", "protocol"])
    images["fold"] = pd.array(images.get("fold", [None] * len(images)), dtype="Int64")
    pairs["fold"] = pd.array(pairs["fold"], dtype="Int64")
    pairs["same"] = pairs["same"].astype("boolean")
    return FaceData("/data", layout, images, pairs)


@pytest.fixture
def kface():
    images = dict(
        path=["a1", "a2", "b1", "c1", "c2", "d1"], split=["train", "train", "train", "validate", "test", "test"]
    )
    pairs = [
        ("c1", "c2", True, "validate", None, None),
        ("c2", "d1", False, "test", None, None),
    ]
    return face_data("kface", images, pairs)


@pytest.fixture
def cfp():
    images = dict(path=["a1", "a2", "b1", "c1", "c2"], split=None, fold=[1, 1, 2, 9, 9])
    pairs = [
        ("a1", "a2", True, None, 1, "FF"),
        ("c1", "c2", True, None, 9, "FF"),
        ("c1", "c2", True, None, 9, "FP"),
    ]
    return face_data("cfp", images, pairs)


@pytest.fixture
def folders():
    return face_data("folders", dict(path=["a1", "a2", "b1", "b2"], split=None), [])


def test_kface_trains_on_train_validates_on_validate_and_reports_on_test(kface):
    assert splits.training_images(kface)["path"].tolist() == ["a1", "a2", "b1"]
    assert splits.validation_pairs(kface)["split"].tolist() == ["validate"]
    assert splits.test_selection(kface) == {"split": "test"}
    assert splits.held_out_images(kface)["path"].tolist() == ["c1", "c2", "d1"]
    with pytest.raises(FacelibError, match="select CFP folds"):
        splits.training_images(kface, train_folds=[1])


def test_kface_reports_on_validate_where_the_test_labels_are_dummies(kface):
    kface.pairs["same"] = pd.array([True, pd.NA], dtype="boolean")
    assert splits.test_selection(kface) == {"split": "validate"}


def test_cfp_splits_by_folds(cfp):
    assert splits.training_images(cfp, val_folds=[9])["path"].tolist() == ["a1", "a2", "b1"]
    assert splits.training_images(cfp, train_folds=[2])["path"].tolist() == ["b1"]
    assert splits.training_images(cfp)["path"].tolist() == cfp.images["path"].tolist()  # no folds: all
    assert splits.validation_pairs(cfp, [9])["protocol"].tolist() == ["FF", "FP"]
    assert splits.validation_pairs(cfp).empty  # no validation folds, no validation
    assert splits.test_selection(cfp, [9]) == {"protocol": "FP", "folds": [9]}
    assert splits.select_pairs(cfp, **splits.test_selection(cfp, [9]))["fold"].tolist() == [9]
    assert splits.held_out_images(cfp, [9])["path"].tolist() == ["c1", "c2"]
    with pytest.raises(FacelibError, match="overlap"):
        splits.training_images(cfp, train_folds=[1, 9], val_folds=[9])


def test_plain_folders_train_on_everything_and_test_on_sampled_pairs(folders):
    assert len(splits.training_images(folders)) == 4
    assert splits.validation_pairs(folders).empty
    assert splits.test_selection(folders) == {}
    assert len(splits.held_out_images(folders)) == 4
    sampled = splits.with_sampled_pairs(folders, seed=0).pairs
    assert len(sampled) == 4 and sampled["same"].sum() == 2  # both same-person pairs there are, as many others
    assert sampled["fold"].tolist() == [1, 2, 3, 4]
    assert splits.with_sampled_pairs(folders, seed=0).pairs.equals(sampled)  # the same for the same seed


def test_the_images_of_pairs_are_each_listed_once(kface):
    assert splits.pair_images(kface.images, kface.pairs)["path"].tolist() == ["c1", "c2", "d1"]


def test_a_filter_without_pairs_names_what_is_present(cfp):
    with pytest.raises(FacelibError, match=r"no pairs with split=None, protocol=FP, folds=\[1\]"):
        splits.select_pairs(cfp, protocol="FP", folds=[1])
