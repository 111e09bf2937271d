"""The command line as a user meets it: JSON contracts, exit codes, one-line errors."""

import json
import subprocess
import sys

import pytest

from facelib.cli import build_parser, fold_list


def facelib(*args, cwd=None):
    return subprocess.run(
        [sys.executable, "-m", "facelib", *map(str, args)], capture_output=True, text=True, cwd=cwd, timeout=300
    )


def test_fold_lists():
    assert fold_list("1-8") == list(range(1, 9))
    assert fold_list("9") == [9]
    assert fold_list("1,3,5-6") == [1, 3, 5, 6]
    with pytest.raises(Exception, match="expected folds"):
        fold_list("one")


def test_train_options_follow_the_command_contract():
    args = build_parser().parse_args(
        [
            "train",
            "DATA",
            "--out",
            "RUN",
            "--init",
            "RUN/pretext.pt",
            "--model",
            "baseline",
            "--batch",
            "8",
            "16",
            "--train-folds",
            "1-8",
            "--val-folds",
            "9",
            "--resume",
        ]
    )
    assert (args.model, args.batch, args.train_folds, args.val_folds, args.resume) == (
        "baseline",
        [8, 16],
        list(range(1, 9)),
        [9],
        True,
    )


@pytest.mark.parametrize("flag, scale", [([], None), (["--triplet-scale", "unit"], "unit")])
def test_triplet_scale_reaches_the_trainer(monkeypatch, flag, scale):
    from facelib import training

    received = {}
    monkeypatch.setattr(training, "train_identity", lambda *args, **options: received.update(options) or "RUN")
    args = build_parser().parse_args(["train", "DATA", "--out", "RUN", *flag])
    args.handler(args)
    assert received.get("triplet_scale") == scale  # absent: training's default


@pytest.mark.parametrize(
    "flag, pose_aware, augmentation",
    [([], False, None), (["--pose-aware", "--augment", "strong"], True, "strong")],
)
def test_pose_aware_and_augment_reach_the_trainer(monkeypatch, flag, pose_aware, augmentation):
    from facelib import training

    received = {}
    monkeypatch.setattr(training, "train_identity", lambda *args, **options: received.update(options) or "RUN")
    args = build_parser().parse_args(["train", "DATA", "--out", "RUN", *flag])
    args.handler(args)
    assert received["pose_aware"] is pose_aware
    assert received.get("augmentation") == augmentation  # absent: training's default


@pytest.mark.parametrize(
    "flag, margin, head", [([], "none", "gap"), (["--margin", "cosface", "--head", "gdc"], "cosface", "gdc")]
)
def test_margin_and_head_reach_the_trainer(monkeypatch, flag, margin, head):
    from facelib import losses, models, training

    received = {}
    monkeypatch.setattr(training, "train_identity", lambda *args, **options: received.update(options) or "RUN")
    args = build_parser().parse_args(["train", "DATA", "--out", "RUN", *flag])
    args.handler(args)
    assert (received["margin"], received["head"]) == (margin, head)
    # the command line names the values itself (without importing torch): it accepts every one training does
    for option, values in (("--margin", losses.MARGINS), ("--head", models.EMBEDDING_HEADS)):
        for value in values:
            assert (
                getattr(build_parser().parse_args(["train", "DATA", "--out", "RUN", option, value]), option[2:])
                == value
            )


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory):
    out = tmp_path_factory.mktemp("cli") / "synthetic"
    assert facelib("synth", out, "--identities", 12, "--size", 48).returncode == 0
    return out


def test_inspect_synthetic_json(synthetic):
    result = facelib("inspect", synthetic, "--json")
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    assert summary["format"] == "kface"
    assert summary["identities"] == 12
    assert set(summary["pairs"]) == {"validate", "test"} and all(n > 0 for n in summary["pairs"].values())


def test_inspect_cfp_json(cfp_root):
    summary = json.loads(facelib("inspect", cfp_root, "--json").stdout)
    assert (summary["format"], summary["images"], summary["identities"]) == ("cfp", 6300, 450)
    for protocol in ("FF", "FP"):
        assert summary["pairs"][protocol] == {str(fold): 700 for fold in range(1, 10)}


@pytest.mark.parametrize("problem", ["missing", "empty", "corrupt"])
def test_bad_input_is_one_line_naming_the_problem(tmp_path, problem):
    target = tmp_path / "data"
    if problem == "empty":
        target.mkdir()
    if problem == "corrupt":
        (target / "alice").mkdir(parents=True)
        (target / "alice" / "alice_0001.jpg").write_bytes(b"\xff\xd8 not a jpeg")
    before = sorted(tmp_path.rglob("*"))
    result = facelib("inspect", target)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("facelib: error:") and "Traceback" not in result.stderr
    assert ("alice_0001.jpg" if problem == "corrupt" else str(target)) in lines[0]
    assert sorted(tmp_path.rglob("*")) == before  # nothing written


def test_evaluate_with_missing_checkpoint_is_one_line(synthetic, tmp_path):
    result = facelib("evaluate", synthetic, "--model", tmp_path / "nope.pt")
    assert result.returncode == 2 and "nope.pt" in result.stderr and "Traceback" not in result.stderr


def test_notebooks_refuse_a_wrong_profile_or_a_folder_of_other_data(tmp_path, capsys):
    from facelib import cli

    assert cli.main(["notebooks", "--profile", "huge", "--out", str(tmp_path / "run")]) == 2
    assert capsys.readouterr().err.strip() == (
        "facelib: error: unknown profile 'huge': expected one of default, smoke, cfp"
    )
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "data.json").write_text('{"data": "/somewhere/cfp"}')
    mine = tmp_path / "mine"
    assert cli.main(["notebooks", "--data", str(mine), "--out", str(tmp_path / "run")]) == 2
    error = capsys.readouterr().err.strip()
    assert error.count("\n") == 0 and f"made from data /somewhere/cfp, not {mine}" in error


@pytest.mark.parametrize("command, trainer", [("pretext", "train_pretext"), ("train", "train_identity")])
def test_align_reaches_both_trainers(monkeypatch, command, trainer):
    from facelib import training

    received = []
    monkeypatch.setattr(training, trainer, lambda *args, **options: received.append(options) or "RUN")
    for flag in [[], ["--align"]]:
        args = build_parser().parse_args([command, "DATA", "--out", "RUN", *flag])
        args.handler(args)
    assert "align" not in received[0] and received[1]["align"] is True  # absent: training's default (boxes)
