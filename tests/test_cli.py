"""The command line as a user meets it: JSON contracts, exit codes, one-line errors."""

import json
import signal
import subprocess
import sys
import time

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


def configs_given(monkeypatch, command, *flags):
    """The config each `facelib <command> DATA --out RUN <flags>` hands the trainer (the trainer itself stubbed)."""
    from facelib import training

    trainer = "train_pretext" if command == "pretext" else "train_identity"
    received = []
    monkeypatch.setattr(training, trainer, lambda config, out, **run: received.append(config) or "RUN")
    for given in flags:
        args = build_parser().parse_args([command, "DATA", "--out", "RUN", *given])
        args.handler(args)
    return received


def test_the_command_line_options_are_config_fields():
    from dataclasses import fields

    from facelib import cli, recipe

    assert set(cli.PRETEXT_OPTIONS) <= {field.name for field in fields(recipe.PretextConfig)}
    assert set(cli.IDENTITY_OPTIONS) <= {field.name for field in fields(recipe.IdentityConfig)}
    parser = build_parser()
    for command, names in (("pretext", cli.PRETEXT_OPTIONS), ("train", cli.IDENTITY_OPTIONS)):
        args = parser.parse_args([command, "DATA", "--out", "RUN"])
        assert all(getattr(args, name) is None for name in names)  # unset: the config's default


def test_options_left_out_keep_the_config_defaults(monkeypatch):
    from facelib.recipe import IdentityConfig, PretextConfig

    [pretext] = configs_given(monkeypatch, "pretext", [])
    [identity] = configs_given(monkeypatch, "train", [])
    assert pretext == PretextConfig("DATA") and identity == IdentityConfig("DATA")


@pytest.mark.parametrize("flag, scale", [([], "batch"), (["--triplet-scale", "unit"], "unit")])
def test_triplet_scale_reaches_the_trainer(monkeypatch, flag, scale):
    [config] = configs_given(monkeypatch, "train", flag)
    assert config.triplet_scale == scale  # without the flag: the recipe's default


@pytest.mark.parametrize(
    "flag, pose_aware, augmentation",
    [([], False, "default"), (["--pose-aware", "--augment", "strong"], True, "strong")],
)
def test_pose_aware_and_augment_reach_the_trainer(monkeypatch, flag, pose_aware, augmentation):
    from dataclasses import asdict

    from facelib.imagecache import AUGMENTATIONS

    [config] = configs_given(monkeypatch, "train", flag)
    assert config.pose_aware is pose_aware
    assert config.augmentation == asdict(AUGMENTATIONS[augmentation])


@pytest.mark.parametrize(
    "flag, margin, head, last_stride",
    [
        ([], "none", "gap", 2),
        (["--margin", "cosface", "--head", "gdc", "--last-stride", "1"], "cosface", "gdc", 1),
    ],
)
def test_margin_head_and_last_stride_reach_the_trainer(monkeypatch, flag, margin, head, last_stride):
    from facelib import losses, models

    [config] = configs_given(monkeypatch, "train", flag)
    assert (config.margin, config.head, config.last_stride) == (margin, head, last_stride)
    # the command line names the values itself (without importing torch): it accepts every one training does
    for option, values in (
        ("--margin", losses.MARGINS),
        ("--head", models.EMBEDDING_HEADS),
        ("--last-stride", models.LAST_STRIDES),
    ):
        for value in values:
            parsed = build_parser().parse_args(["train", "DATA", "--out", "RUN", option, str(value)])
            assert getattr(parsed, option[2:].replace("-", "_")) == value


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory):
    out = tmp_path_factory.mktemp("cli") / "synthetic"
    assert facelib("synth", out, "--identities", 12, "--size", 48).returncode == 0
    return out


def test_synth_draws_in_the_style_asked_and_refuses_an_unknown_one(tmp_path):
    assert facelib("synth", tmp_path / "photo", "--identities", 6, "--size", 32, "--style", "photo").returncode == 0
    assert json.loads((tmp_path / "photo" / "synthetic.json").read_text())["style"] == "photo"
    result = facelib("synth", tmp_path / "sketch", "--style", "sketch")
    assert result.returncode == 2 and "--style: expected one of cartoon, photo, sculpted, got 'sketch'" in result.stderr
    assert not (tmp_path / "sketch").exists()


def test_a_killed_synth_leaves_nothing_behind(tmp_path):
    command = [sys.executable, "-m", "facelib", "synth", str(tmp_path / "faces"), "--identities", "400"]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        while not list(tmp_path.glob(".faces.*.tmp/train/*.jpg")):  # stop it half-way through rendering
            assert process.poll() is None, "finished before it could be stopped: render more identities"
            time.sleep(0.05)
        process.send_signal(signal.SIGTERM)  # as `kill` or a scheduler's time limit does
        assert process.wait(timeout=30) == 128 + signal.SIGTERM  # drawing all 400 takes over a minute
    finally:
        process.kill()
    assert list(tmp_path.iterdir()) == []


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


@pytest.mark.parametrize("command", ["pretext", "train"])
def test_align_reaches_both_trainers(monkeypatch, command):
    received = configs_given(monkeypatch, command, [], ["--align"])
    assert received[0].align is False and received[1].align is True  # absent: the recipe's default (boxes)
