import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image
from torch import nn

from facelib import embedding, evaluation, layouts, metrics, poses, splits
from facelib.errors import FacelibError
from facelib.retrieval import rank_gallery


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch):
    """Decoded faces and embeddings go to this test's folder, never the user's cache."""
    monkeypatch.setenv("FACELIB_CACHE", str(tmp_path / "facelib-cache"))


# ----------------------------------------------------------------------------------------------- metrics

OVERLAP_SCORES = [0.9, 0.8, 0.4, 0.7, 0.3, 0.2]  # sorted: S S D S D D
OVERLAP_SAME = [True, True, True, False, False, False]


def test_perfect_separator():
    scores, same = [0.9, 0.8, 0.2, 0.1], [True, True, False, False]
    threshold = metrics.best_threshold(scores, same)
    assert threshold == pytest.approx(0.5)
    measured = metrics.verification_metrics(scores, same, threshold)
    assert (measured["accuracy"], measured["auc"], measured["eer"], measured["f1"]) == (1.0, 1.0, 0.0, 1.0)


def test_known_overlap_values():
    threshold = metrics.best_threshold(OVERLAP_SCORES, OVERLAP_SAME)
    assert threshold == pytest.approx(0.75)  # first of the two 5/6 cuts, midway between 0.8 and 0.7
    measured = metrics.verification_metrics(OVERLAP_SCORES, OVERLAP_SAME, threshold)
    assert measured["accuracy"] == pytest.approx(5 / 6)
    assert measured["auc"] == pytest.approx(8 / 9)  # only (0.4 same, 0.7 different) is ordered wrongly
    assert measured["eer"] == pytest.approx(1 / 3)  # at 0.7: 1 of 3 different accepted, 1 of 3 same rejected
    # positive class "different": 3 true positives, 1 false positive (the 0.4 same pair), no false negative
    assert measured["f1"] == pytest.approx(6 / 7)
    assert measured["confusion"] == {"same": {"same": 2, "different": 1}, "different": {"same": 0, "different": 3}}
    assert measured["tar_at_far"] == {"0.01": None, "0.001": None}  # 3 different pairs cannot measure 1e-2


def test_tar_at_far():
    negatives = np.arange(1000) / 999
    positives = np.array([2.0] * 10 + [0.9955] * 5 + [0.5] * 5)  # 0.9955 is beaten by 5 negatives
    scores = np.concatenate([positives, negatives])
    same = np.arange(len(scores)) < len(positives)
    assert metrics.tar_at_far(scores, same, 1e-2) == pytest.approx(15 / 20)
    assert metrics.tar_at_far(scores, same, 1e-3) == pytest.approx(10 / 20)


def test_kfold_threshold_comes_from_the_other_folds():
    scores = [0.9, 0.8, 0.35, 0.2, 0.6, 0.59, 0.1, 0.0]
    same = [True, True, False, False] * 2
    folds = [1] * 4 + [2] * 4
    thresholds, table = metrics.kfold_thresholds(scores, same, folds)
    # fold 1 is judged at fold 2's best cut (0.59 + 0.1) / 2 and wrongly accepts its 0.35 pair
    assert table["threshold"].tolist() == pytest.approx([0.345, 0.575])
    assert table["accuracy"].tolist() == [0.75, 1.0]
    assert thresholds.tolist() == pytest.approx([0.345] * 4 + [0.575] * 4)
    assert table["accuracy"].std(ddof=0) == pytest.approx(0.125)


# ----------------------------------------------------------------------------------------------- pose


def test_pose_gap_and_expression_groups():
    images = pd.DataFrame(
        {
            "path": ["f0", "f10", "h45", "p90", "unknown", "cfp_profile"],
            "yaw": [0.0, -10.0, -45.0, 90.0, np.nan, np.nan],
            "view": [None, None, "profile", None, None, "profile"],  # yaw, where known, gives the finer label
            "expression": pd.array([1, 2, 1, 3, 1, pd.NA], dtype="Int64"),
        }
    )
    assert poses.pose_labels(images).tolist() == ["frontal", "frontal", "half-profile", "profile", None, "profile"]
    pairs = pd.DataFrame(
        {
            "a": ["f0", "p90", "h45", "f10", "unknown", "cfp_profile"],
            "b": ["f10", "f0", "f0", "h45", "f0", "f0"],
            "same": [True, True, False, True, True, False],
        }
    )
    groups = poses.pair_groups(pairs, images)
    assert groups["pose"].tolist() == [
        "frontal-frontal",
        "frontal-profile",
        "frontal-half-profile",
        "frontal-half-profile",
        None,
        "frontal-profile",
    ]
    assert groups["expression"].tolist() == ["E1-E2", "E1-E3", "E1-E1", "E1-E2", "E1-E1", None]
    # where the data names its expressions, the pairs are named, still in code order (not alphabetical)
    named = images.assign(expression_name=images["expression"].map({1: "neutral", 2: "smile", 3: "frown"}))
    assert poses.pair_groups(pairs, named)["expression"].tolist()[:3] == [
        "neutral-smile",
        "neutral-frown",
        "neutral-neutral",
    ]

    scores = np.array([0.9, 0.2, 0.1, 0.8, 0.7, 0.6])  # at 0.5: the frontal-profile same pair is missed
    table = poses.accuracy_by_pose(pairs, images, scores, 0.5)
    pose = table[table["factor"] == "pose"].set_index("group")
    assert pose.index.tolist() == ["frontal-frontal", "frontal-half-profile", "frontal-profile"]
    assert pose["pairs"].tolist() == [1, 2, 2]
    assert pose["accuracy"].tolist() == [1.0, 1.0, 0.0]
    assert pose.loc["frontal-half-profile", "auc"] == 1.0 and pd.isna(pose.loc["frontal-frontal", "auc"])


# ----------------------------------------------------------------------------------------------- retrieval


def test_retrieval_cmc_and_map_by_hand():
    def unit(degrees):
        return [np.cos(np.radians(degrees)), np.sin(np.radians(degrees))]

    embeddings = np.array([[1, 0], [0, 1], [-1, 0], unit(10), [0.8, 0.6], [0, -1]])
    identities = ["A", "B", "A", "A", "B", "C"]  # C has no gallery image: it cannot be found, so it is left out
    gallery = np.array([True, True, True, False, False, False])
    ranking = rank_gallery(embeddings, identities, gallery)
    assert ranking.probes.tolist() == [3, 4]
    assert ranking.hits.tolist() == [[0, 1, 2], [0, 1, 2]]
    # probe A: A B A -> first hit rank 1, AP (1/1 + 2/3) / 2; probe B: A B A -> rank 2, AP 1/2
    assert ranking.summary() == pytest.approx(
        {"rank1": 0.5, "rank5": 1.0, "mAP": (5 / 6 + 1 / 2) / 2, "probes": 2, "gallery": 3}
    )
    assert rank_gallery(embeddings, identities, np.zeros(6, dtype=bool)) is None


# ----------------------------------------------------------------------------------------------- embeddings


class MeanColour(nn.Module):
    """Stand-in embedder: an image's mean colour, counting every image it is run on."""

    image_size = 16

    def __init__(self):
        super().__init__()
        self.gain = nn.Parameter(torch.ones(3))
        self.images_seen = 0

    def forward(self, x):
        self.images_seen += len(x)
        return x.mean(dim=(2, 3)) * self.gain


def test_embed_images_is_normalised_and_cached(tmp_path):
    faces = torch.randint(0, 256, (10, 3, 16, 16), dtype=torch.uint8)
    model = MeanColour()
    first = embedding.embed_images(model, faces, batch_size=4, flip=False, cache=tmp_path)
    assert first.shape == (10, 3) and np.allclose(np.linalg.norm(first, axis=1), 1, atol=1e-5)
    assert model.images_seen == 10
    again = embedding.embed_images(model, faces, batch_size=4, flip=False, cache=tmp_path)
    assert model.images_seen == 10 and np.array_equal(first, again)  # read from the cache
    embedding.embed_images(model, faces, batch_size=4, flip=True, cache=tmp_path)
    assert model.images_seen == 30  # flip is part of the key; each image is run with its mirror
    with torch.no_grad():
        model.gain.mul_(2.0)  # new weights -> new key (the direction of the embeddings is unchanged)
    embedding.embed_images(model, faces, batch_size=4, flip=False, cache=tmp_path)
    assert model.images_seen == 40


class Pixels(nn.Sequential):
    """Stand-in embedder that sees left from right: a linear map of the raw pixels."""

    image_size = 16

    def __init__(self):
        super().__init__(nn.Flatten(), nn.Linear(3 * 16 * 16, 8))


def test_flip_averaged_embeddings_do_not_depend_on_which_way_a_face_looks():
    """Issue 17's canonical facing (mirroring profiles to face one way before embedding) is what the default flip
    averaging already gives: a face and its mirror get the same embedding, so pairs score the same either way."""
    torch.manual_seed(0)
    faces = torch.randint(0, 256, (6, 3, 16, 16), dtype=torch.uint8)
    model = Pixels()
    mirrored = faces.flip(-1)
    averaged = [embedding.embed_images(model, x, flip=True, cache=False) for x in (faces, mirrored)]
    np.testing.assert_allclose(*averaged, atol=1e-5)
    plain = [embedding.embed_images(model, x, flip=False, cache=False) for x in (faces, mirrored)]
    assert np.abs(plain[0] - plain[1]).max() > 0.1  # without the averaging, facing changes the embedding


def test_a_canonical_facing_model_sees_every_profile_turned_right(tmp_path, monkeypatch):
    """Canonical facing at test: a profile facing left is mirrored before embedding, a face of known facing is not
    averaged with its mirror (the model never saw it turned the other way), a face of unknown facing still is."""
    monkeypatch.setenv("FACELIB_CACHE", str(tmp_path / "cache"))
    torch.manual_seed(0)
    profile, frontal = torch.randint(0, 256, (2, 3, 16, 16), dtype=torch.uint8)
    files = {"right": profile, "left": profile.flip(-1), "frontal": frontal, "frontal-mirrored": frontal.flip(-1)}
    for name, face in files.items():
        Image.fromarray(face.permute(1, 2, 0).numpy()).save(tmp_path / f"{name}.png")
    images = pd.DataFrame(
        {"path": [str(tmp_path / f"{name}.png") for name in files], "facing": ["right", "left", None, None]}
    )
    model = Pixels()
    model.canonical_facing = True
    right, left, frontal_vector, frontal_mirrored = embedding.embed_images(model, images, cache=tmp_path / "cache")
    np.testing.assert_allclose(left, right, atol=1e-5)
    np.testing.assert_allclose(
        right, embedding.embed_images(model, profile[None], flip=False, cache=False)[0], atol=1e-5
    )
    np.testing.assert_allclose(frontal_vector, frontal_mirrored, atol=1e-5)
    # the same choice per face, given as a mask with a tensor of faces (and cached under the mask)
    by_mask = embedding.embed_images(model, torch.stack([profile, frontal]), flip=[False, True], cache=tmp_path)
    np.testing.assert_allclose(by_mask, [right, frontal_vector], atol=1e-5)
    model.canonical_facing = False  # the same weights trained with random flips: the cache must not answer
    random_flips = embedding.embed_images(model, images, flip=False, cache=tmp_path / "cache")
    assert np.abs(random_flips[0] - random_flips[1]).max() > 0.1


# ----------------------------------------------------------------------------------------------- data set

COLOURS = {"A": (230, 30, 30), "B": (30, 230, 30), "C": (30, 30, 230), "D": (230, 230, 30)}
POSES = [(0.0, 1), (0.0, 2), (45.0, 1), (90.0, 1)]  # (yaw, expression) per image of an identity


@pytest.fixture
def face_data(tmp_path):
    """Four single-colour 'identities' in four poses each, K-Face style validate / test pairs (CFP-style folds
    on the test pairs), as a FaceData."""
    rows = []
    for identity, colour in COLOURS.items():
        for index, (yaw, expression) in enumerate(POSES):
            path = tmp_path / f"{identity}_{index}.png"
            shade = np.array(colour) * (1 - 0.05 * index)
            Image.fromarray(np.full((20, 20, 3), shade, dtype=np.uint8)).save(path)
            rows.append(
                {
                    "path": str(path),
                    "identity": identity,
                    "yaw": yaw,
                    "expression": expression,
                    "view": None,
                    "box": None,
                }
            )
    images = pd.DataFrame(rows).astype({"expression": "Int64"})

    def path(name):
        return str(tmp_path / f"{name}.png")

    test = [
        ("A_0", "A_3", True),
        ("A_0", "B_0", False),
        ("C_1", "C_2", True),
        ("D_0", "C_0", False),
        ("B_2", "B_0", True),
        ("D_3", "A_0", False),
        ("D_0", "D_2", True),
        ("B_3", "C_3", False),
    ]
    validate = [("A_1", "A_2", True), ("B_1", "D_1", False), ("C_0", "C_3", True), ("A_3", "B_3", False)]
    pairs = (
        pd.DataFrame(
            [(path(a), path(b), same, "test", 1 + i // 4) for i, (a, b, same) in enumerate(test)]
            + [(path(a), path(b), same, "validate", pd.NA) for a, b, same in validate],
            columns=["a", "b", "same", "split", "fold"],
        )
        .astype({"fold": "Int64"})
        .assign(protocol=None)
    )
    return layouts.FaceData(tmp_path, "kface", images, pairs)


def test_evaluate_embeds_each_image_once_and_reuses_the_cache(face_data, tmp_path):
    model = MeanColour()
    evaluated = evaluation.evaluate(face_data, model, split="test", flip=False, cache=tmp_path / "cache")
    result = evaluated.metrics
    test, validate = (face_data.pairs[face_data.pairs["split"] == split] for split in ("test", "validate"))
    distinct_test, distinct_validate = (len(pd.unique(p[["a", "b"]].to_numpy().ravel())) for p in (test, validate))
    assert result["images"] == distinct_test < 2 * len(test)
    assert model.images_seen == distinct_test + distinct_validate  # validate's pairs choose the threshold
    assert result["pairs"] == 8 and result["same_pairs"] == 4
    assert (result["accuracy"], result["auc"], result["eer"], result["f1"]) == (1.0, 1.0, 0.0, 1.0)
    assert result["threshold_source"] == "best accuracy on split validate"
    assert result["retrieval"]["rank1"] == 1.0 and result["retrieval"]["gallery"] > 0
    by_pose = {row["group"]: row for row in result["by_pose"] if row["factor"] == "pose"}
    assert by_pose["frontal-profile"]["pairs"] == 2
    seen = model.images_seen
    evaluation.evaluate(face_data, model, split="test", flip=False, cache=tmp_path / "cache")
    again = evaluation.evaluate(face_data, model, split="test", flip=False, cache=tmp_path / "cache")
    pairs, scores = again.pairs, again.scores
    assert model.images_seen == seen  # nothing re-run: the second evaluation read the cache
    assert len(scores) == len(pairs) == 8 and (scores[pairs["same"].to_numpy()] > 0.9).all()
    # the evaluation carries what it measured, so figures need not score again
    assert evaluated.pairs.equals(pairs) and np.array_equal(evaluated.scores, scores)
    assert len(evaluated.thresholds) == 8 and (evaluated.thresholds == result["threshold"]).all()
    assert evaluated.same.tolist() == pairs["same"].tolist() and len(evaluated.embeddings.images) == result["images"]


def test_evaluate_runs_the_kfold_protocol_over_folds(face_data, tmp_path):
    face_data.pairs = face_data.pairs[face_data.pairs["split"] == "test"]  # folds 1 and 2, nothing to calibrate on
    result = evaluation.evaluate(face_data, MeanColour(), metric="euclidean", cache=tmp_path).metrics
    assert result["threshold_source"] == "2-fold protocol"
    assert result["accuracy"] == 1.0 and result["accuracy_std"] == 0.0
    assert [row["fold"] for row in result["fold_results"]] == [1, 2]
    assert result["threshold"] < 0  # euclidean scores are negated distances


def test_compare_scores_each_run_on_the_same_pairs(face_data, tmp_path):
    table = evaluation.compare(face_data, {"one": MeanColour(), "two": MeanColour()}, split="test", cache=tmp_path)
    assert table.index.tolist() == ["one", "two"]
    assert table["pairs"].tolist() == [8, 8] and table["accuracy"].tolist() == [1.0, 1.0]
    assert table["rank1"].tolist() == [1.0, 1.0]


def test_evaluate_rejects_missing_pairs_and_checkpoints(face_data, tmp_path):
    with pytest.raises(FacelibError, match="no pairs with split=train"):
        evaluation.evaluate(face_data, MeanColour(), split="train", cache=False)
    with pytest.raises(FacelibError, match="checkpoint not found"):
        evaluation.evaluate(face_data, tmp_path / "missing.pt", split="test", cache=False)


# ----------------------------------------------------------------------------------------------- predictions


def test_write_predictions_uses_zero_for_same_and_keeps_order(tmp_path):
    pairs = pd.DataFrame(
        {
            "a": ["/data/test/x1.jpg", "/data/test/x2.jpg", "/data/test/x3.jpg"],
            "b": ["/data/test/y1.jpg", "/data/test/y2.jpg", "/data/test/y3.jpg"],
        }
    )
    out = evaluation.write_predictions(pairs, [0.1, 0.9, 0.5], 0.5, tmp_path / "predictions.csv", with_score=True)
    table = pd.read_csv(out)
    assert table.columns.tolist() == ["image1", "image2", "label", "score"]
    assert table["image1"].tolist() == ["x1.jpg", "x2.jpg", "x3.jpg"]
    assert table["label"].tolist() == [1, 0, 0]  # 0 = same (score >= threshold)
    assert not list(tmp_path.glob(".*.tmp"))


def test_predict_calibrates_on_validate(face_data, tmp_path):
    out = evaluation.predict(face_data, MeanColour(), "test", tmp_path / "out" / "test.csv", cache=False)
    table = pd.read_csv(out)
    test_pairs = face_data.pairs[face_data.pairs["split"] == "test"]
    assert table["image1"].tolist() == [p.rsplit("/", 1)[1] for p in test_pairs["a"]]
    assert table["label"].tolist() == [0 if same else 1 for same in test_pairs["same"]]
    with pytest.raises(FacelibError, match="give a threshold"):
        evaluation.predict(face_data, MeanColour(), "validate", tmp_path / "v.csv", cache=False)


def test_unlabelled_test_split_predicts_but_does_not_evaluate(face_data, tmp_path):
    """The challenge's test file holds dummy labels: predictions work, metrics point to the validate split."""
    truth = face_data.pairs["same"].astype("boolean")
    face_data.pairs["same"] = truth.where(face_data.pairs["split"] != "test", pd.NA)
    with pytest.raises(FacelibError, match=r"split test has no usable labels .* --split validate"):
        evaluation.evaluate(face_data, MeanColour(), split="test", cache=False)
    with pytest.raises(FacelibError, match="split test has no usable labels"):
        evaluation.evaluate(face_data, MeanColour(), cache=False)  # every pair, the test ones included
    assert evaluation.evaluate(face_data, MeanColour(), split="validate", cache=False).metrics["accuracy"] == 1.0
    out = evaluation.predict(face_data, MeanColour(), "test", tmp_path / "test.csv", cache=False)
    assert pd.read_csv(out)["label"].tolist() == [
        0 if same else 1 for same in truth[face_data.pairs["split"] == "test"]
    ]
    with pytest.raises(FacelibError, match="split test has no usable labels"):
        evaluation.predict(face_data, MeanColour(), "validate", tmp_path / "v.csv", calibrate="test", cache=False)


def test_cfp_pose_groups_follow_the_protocol(cfp_root):
    data = layouts.load(cfp_root)
    pairs = pd.concat([splits.select_pairs(data, protocol=p, folds=[1]).head(50) for p in ("FF", "FP")])
    groups = poses.pair_groups(pairs, data.images)["pose"]
    assert groups[pairs["protocol"] == "FF"].eq("frontal-frontal").all()
    assert groups[pairs["protocol"] == "FP"].eq("frontal-profile").all()


def test_identity_accuracy_says_how_well_a_run_fits_the_people_it_trained_on(face_data, tmp_path):
    from facelib.models import Baseline
    from facelib.recipe import IdentityConfig

    model = Baseline(num_ids=2)
    with torch.no_grad():  # a classifier that always names its first class, whoever the face shows
        model.classifier.weight.zero_()
        model.classifier.bias.copy_(torch.tensor([10.0, -10.0]))
    settings = IdentityConfig(face_data.root, model="baseline", image_size=32).stored()
    checkpoint = {"kind": "baseline", "model": model.state_dict(), "config": {"image_size": 32, "settings": settings}}
    images = face_data.images[face_data.images["identity"].isin(["A", "B", "C"])].iloc[:7]  # A x4, B x3
    for first, expected in (["A", 4 / 7], ["B", 3 / 7]):  # the stored identities name the classes
        torch.save(dict(checkpoint, num_ids=2, identities=[first, "AB".replace(first, "")]), tmp_path / "model.pt")
        assert evaluation.identity_accuracy(tmp_path / "model.pt", images, cache_dir=tmp_path) == pytest.approx(
            expected
        )
    strangers = face_data.images[face_data.images["identity"] == "D"]
    with pytest.raises(FacelibError, match="none of the 4 images shows a person the model trained on"):
        evaluation.identity_accuracy(tmp_path / "model.pt", strangers, cache_dir=tmp_path)


def test_pretext_accuracy_per_class(face_data, tmp_path):
    from facelib.models import PretextNet

    model = PretextNet({"expression": 2})
    with torch.no_grad():  # a head that always answers the first class, expression 1
        model.head.weight.zero_()
        model.head.bias.copy_(torch.tensor([10.0, -10.0]))
    torch.save(
        {
            "kind": "pretext",
            "model": model.state_dict(),
            "heads": {"expression": 2},
            "classes": {"expression": [1, 2]},
            "config": {"image_size": 32},
        },
        tmp_path / "pretext.pt",
    )
    report = evaluation.pretext_accuracy(tmp_path / "pretext.pt", face_data.images, cache_dir=tmp_path)
    assert report.to_dict("records") == [
        {"task": "expression", "class": 1, "label": "E1", "images": 12, "accuracy": 1.0},
        {"task": "expression", "class": 2, "label": "E2", "images": 4, "accuracy": 0.0},
    ]
    torch.save({"kind": "triarchy", "model": {}, "config": {"image_size": 16}}, tmp_path / "model.pt")
    with pytest.raises(FacelibError, match="expected a pretext checkpoint"):
        evaluation.pretext_accuracy(tmp_path / "model.pt", face_data.images)
