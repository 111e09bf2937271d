"""K-Face exactly as the challenge shipped it (tests/conftest.py's tiny copy of its format), end to end through
the command line: inspect, pretext, train, evaluate on validate, predict on test."""

import json

import pandas as pd

from facelib import layouts, splits, training
from facelib.cli import main
from facelib.notebooks import setup


def facelib(capsys, *args):
    """Run a facelib command in this process; (exit status, stdout, stderr)."""
    status = main([str(arg) for arg in args])
    out, err = capsys.readouterr()
    return status, out, err


def test_challenge_format_end_to_end(kface_challenge, tmp_path, monkeypatch, capsys):
    root, truth = kface_challenge
    run = tmp_path / "run"
    monkeypatch.setenv("FACELIB_CACHE", str(tmp_path / "cache"))

    status, out, err = facelib(capsys, "inspect", root, "--json")
    assert status == 0, err
    summary = json.loads(out)
    assert summary["pairs"] == {"validate": 12, "test": 12} and summary["unlabelled_pairs"] == {"test": 12}
    assert summary["views"]["train"] == {"profile": 16, "frontal": 8}
    assert summary["cameras"]["C2"] == "frontal" and summary["cameras"]["C9"] == "unknown"
    assert "facing and mirrored camera codes are off" in summary["yaw"]

    tiny = ["--epochs", 1, "--image-size", 32, "--batch", 2, 2]
    assert facelib(capsys, "pretext", root, "--out", run, *tiny)[0] == 0
    status, _, err = facelib(capsys, "train", root, "--out", run, "--init", run / "pretext.pt", *tiny)
    assert status == 0, err
    assert json.loads((run / "config.json").read_text())["validation_pairs"] == 12

    status, out, err = facelib(capsys, "evaluate", root, "--model", run / "model.pt", "--split", "validate", "--json")
    assert status == 0, err
    result = json.loads(out)
    assert result["pairs"] == 12 and result["same_pairs"] == 6 and 0 <= result["accuracy"] <= 1
    pose = {row["group"]: row["pairs"] for row in result["by_pose"] if row["factor"] == "pose"}
    assert pose == {"frontal-profile": 4}  # C2 front vs C3 side; C4 and C9 were never seen in training
    camera = {row["group"]: row["pairs"] for row in result["by_pose"] if row["factor"] == "camera"}
    assert camera == {"C2-C3": 4, "C2-C9": 4, "C4-C9": 4}  # every pair, by its two camera codes
    assert result["retrieval"]["probes"] > 0 and result["retrieval"]["gallery"] > 0

    status, out, err = facelib(capsys, "evaluate", root, "--model", run / "model.pt", "--split", "test")
    assert status == 2 and len(err.strip().splitlines()) == 1
    assert "split test has no usable labels" in err and "--split validate" in err

    predictions = tmp_path / "predictions.csv"
    status, _, err = facelib(capsys, "predict", root, "--model", run / "model.pt", "--out", predictions)
    assert status == 0, err
    written = pd.read_csv(predictions)
    shipped = pd.read_csv(root / "test" / "test_label.csv", header=0, names=["image1", "image2", "label"])
    assert written[["image1", "image2"]].equals(shipped[["image1", "image2"]]) and len(written) == len(truth)
    assert set(written["label"]) <= {0, 1}


def test_notebooks_report_on_validate_when_the_test_labels_are_dummies(kface_challenge, tmp_path):
    root, truth = kface_challenge
    assert setup(root, tmp_path / "run").test_pairs == {"split": "validate"}
    (root / "test" / "test_truth.csv").write_text(
        "image1,image2,label\n"
        + "".join(
            f"{line.rsplit(',', 1)[0]},{label}\n"
            for line, label in zip((root / "test" / "test_label.csv").read_text().splitlines()[1:], truth)
        )
    )
    assert setup(root, tmp_path / "run").test_pairs == {"split": "test"}


def test_inspect_says_what_it_read(kface_challenge, capsys):
    root, _ = kface_challenge
    status, out, _ = facelib(capsys, "inspect", root)
    lines = dict(map(str.strip, line.split(": ", 1)) for line in out.strip().splitlines())
    assert status == 0 and json.loads(lines["unlabelled_pairs"].strip()) == {"test": 12}
    assert lines["yaw"].startswith("unknown for every camera code")


def test_pretext_labels_come_from_the_file_names_and_nothing_is_flipped_without_yaw(kface_challenge):
    root, _ = kface_challenge
    labels = training.pretext_labels(splits.training_images(layouts.load(root)))
    assert labels.classes == {"angle": [1, 2, 3], "expression": [1, 2]}
    assert not labels.flippable.any()  # no yaw: no camera code has a known mirror
