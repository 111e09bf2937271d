"""Hostile and mistaken input, as a user meets it on the command line: each class ends with a non-zero exit,
one error line naming the file or option, no traceback, and no existing file changed."""
# ruff: noqa: F811 (tests take test_training's fixtures, imported below, as arguments)

import json
import os
import pickle
import shutil
import subprocess
import sys

import pandas as pd
import pytest
import torch
from PIL import Image
from test_training import private_cache, tiny_data  # noqa: F401 (fixtures: tiny K-Face data, a private cache)

from facelib import cli, models

FAST = ["--epochs", "1", "--image-size", "32", "--batch", "2", "4", "--device", "cpu"]


@pytest.fixture(scope="module")
def trained_run(tiny_data, tmp_path_factory):
    """A finished one-epoch identity run whose files no failing command may touch."""
    run = tmp_path_factory.mktemp("trained") / "run"
    assert run_cli("train", str(tiny_data), "--out", str(run), *FAST) == 0
    return run


def run_cli(*argv):
    return cli.main([str(arg) for arg in argv])


def snapshot(*folders):
    """Every file under `folders` with its bytes, to show that a refused command changed nothing (logs aside:
    a run's log records the refusal too)."""
    return {
        path: path.read_bytes()
        for folder in folders
        for path in sorted(folder.rglob("*"))
        if path.is_file() and path.suffix != ".log"
    }


def fails_in_one_line(capsys, argv, *named):
    """Run the CLI in-process; assert exit 2 and a single 'facelib: error:' line that names each of `named`."""
    code = run_cli(*argv)
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert code == 2, err
    assert len(lines) == 1 and lines[0].startswith("facelib: error:"), err
    for text in named:
        assert str(text) in lines[0], err
    return lines[0]


class Payload:
    """Unpickling this creates a marker file: what a crafted checkpoint would do with os.system."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


def test_a_crafted_checkpoint_is_refused_without_running_its_payload(tmp_path, tiny_data, capsys):
    marker = tmp_path / "payload-ran"
    crafted = tmp_path / "model.pt"
    torch.save({"kind": "triarchy", "config": {"image_size": 32}, "embedder": Payload(marker)}, crafted)
    before = snapshot(tmp_path)
    fails_in_one_line(capsys, ["evaluate", tiny_data, "--model", crafted], crafted, "not a safe facelib checkpoint")
    assert not marker.exists()
    with pytest.raises(models.CheckpointError, match="not a safe facelib checkpoint"):
        models.read_checkpoint(crafted)
    assert not marker.exists() and snapshot(tmp_path) == before


def test_every_checkpoint_a_run_writes_loads_safely(trained_run):
    for name in ["model.pt", "last.pt"]:
        checkpoint = torch.load(trained_run / name, weights_only=True)
        assert checkpoint["kind"] == "triarchy"
    assert len(torch.load(trained_run / "last.pt", weights_only=True)["rng"]) == 1


def test_an_unexpected_exception_keeps_its_traceback(tmp_path):
    """Programming errors are not hidden behind one line (a subprocess, so the real exit path is used)."""
    script = "import facelib.cli as c; c.cmd_inspect = None; c.main(['inspect', '.'])"
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=tmp_path)
    assert result.returncode != 0 and "Traceback" in result.stderr


def test_pickle_payload_would_run_with_the_unsafe_loader(tmp_path):
    """The test's payload is real: plain pickle runs it (so the safe-loading test above can fail)."""
    marker = tmp_path / "ran"
    pickle.loads(pickle.dumps(Payload(marker)))
    assert marker.exists()


# ----------------------------------------------------------------------------------------------- nothing lost


def test_training_into_a_folder_holding_a_run_is_refused(trained_run, tiny_data, capsys):
    before = snapshot(trained_run)
    line = fails_in_one_line(capsys, ["train", tiny_data, "--out", trained_run, *FAST], trained_run, "--resume")
    assert "--overwrite" in line and "new --out" in line
    assert snapshot(trained_run) == before


def test_overwrite_replaces_a_run_explicitly(trained_run, tiny_data, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(trained_run, run)
    (run / ".last.pt.abc123.tmp").write_bytes(b"half a checkpoint from a killed write")
    old = (run / "model.pt").read_bytes()
    assert run_cli("train", tiny_data, "--out", run, *FAST, "--seed", "1", "--overwrite") == 0
    assert (run / "model.pt").read_bytes() != old
    assert not list(run.glob(".*.tmp"))  # the killed write's leftover is gone


def test_resume_cleans_stale_temporaries_and_says_the_runs_settings_win(trained_run, tiny_data, tmp_path, capsys):
    run = tmp_path / "run"
    shutil.copytree(trained_run, run)
    (run / ".last.pt.abc123.tmp").write_bytes(b"half a checkpoint from a killed write")
    assert run_cli("train", tiny_data, "--out", run, "--resume", "--epochs", "3", "--device", "cpu") == 0
    lines = capsys.readouterr().err.strip().splitlines()
    warning = [line for line in lines if line.startswith("facelib: warning:")]
    assert len(warning) == 1 and "run's own settings" in warning[0] and "epochs 1 (asked 3)" in warning[0]
    assert not list(run.glob(".*.tmp"))
    assert models.read_checkpoint(run / "last.pt")["epoch"] == 1  # the run's own schedule: nothing more to do


def test_resume_after_the_data_changed_names_both_identity_counts(trained_run, tiny_data, tmp_path, capsys):
    data, run = tmp_path / "data", tmp_path / "run"
    shutil.copytree(tiny_data, data)
    assert run_cli("train", data, "--out", run, *FAST) == 0
    meta = pd.read_csv(data / "train" / "train_meta.csv")
    added = meta[meta["face_id"] == meta["face_id"].iloc[0]].copy()
    for old_name in added["file_name"]:
        shutil.copy(data / "train" / old_name, data / "train" / old_name.replace(old_name[:3], "999", 1))
    added["file_name"] = added["file_name"].str.replace(r"^\d+", "999", regex=True)
    added["face_id"] = 999
    pd.concat([meta, added]).to_csv(data / "train" / "train_meta.csv", index=False)
    capsys.readouterr()
    before = snapshot(run)
    line = fails_in_one_line(capsys, ["train", data, "--out", run, "--resume"], "no longer matches", "6 identities")
    assert "7" in line
    assert snapshot(run) == before


@pytest.mark.parametrize("limit", ["-5", "0", "inf", "nan", "abc"])
def test_a_bad_cache_limit_stops_every_command_before_any_work(trained_run, tiny_data, monkeypatch, capsys, limit):
    cache = trained_run.parents[1] / "cache"
    assert list(cache.glob("faces-*"))  # the trained run filled it
    (cache / "notes.txt").write_text("a user's file beside the cache")
    before = snapshot(cache, trained_run)
    monkeypatch.setenv("FACELIB_CACHE_LIMIT_MB", limit)
    for argv in (["evaluate", tiny_data, "--model", trained_run / "model.pt"], ["inspect", tiny_data]):
        fails_in_one_line(capsys, argv, "FACELIB_CACHE_LIMIT_MB", "positive")
    assert snapshot(cache, trained_run) == before


def test_pruning_deletes_only_files_facelib_wrote(tmp_path):
    from facelib import imagecache

    theirs = [tmp_path / name for name in ("faces-notes.txt", "embeddings-2024.csv", "photo.jpg")]
    ours = tmp_path / f"faces-32px-3-{'0' * 24}.npy"
    for path in [*theirs, ours]:
        path.write_bytes(b"x" * 100)
    imagecache.prune(tmp_path, limit=1)
    assert all(path.exists() for path in theirs) and not ours.exists()


# ----------------------------------------------------------------------------------------------- options


@pytest.mark.parametrize(
    "options, named",
    [
        (["--epochs", "0"], "--epochs"),
        (["--epochs", "-1"], "--epochs"),
        (["--batch", "0", "4"], "--batch"),
        (["--batch", "4", "0"], "--batch"),
        (["--batch", "-2", "2"], "--batch"),
        (["--image-size", "0"], "--image-size"),
        (["--image-size", "7"], "--image-size"),
        (["--image-size", "100000"], "--image-size"),
        (["--seed", str(2**32)], "--seed"),
        (["--device", "tpu"], "--device"),
        (["--epochs", "two"], "--epochs"),
    ],
)
def test_bad_training_options_are_one_line_before_any_work(tiny_data, tmp_path, capsys, options, named):
    run = tmp_path / "run"
    for command in ("train", "pretext"):
        fails_in_one_line(capsys, [command, tiny_data, "--out", run, *options], named)
    assert not run.exists()


@pytest.mark.parametrize(
    "option, value, expected",
    [
        ("epochs", 0, "--epochs"),
        ("batch", (0, 4), "--batch P"),
        ("image_size", 7, "--image-size"),
        ("seed", -1, "--seed"),
        ("device", "tpu", "--device"),
    ],
)
def test_the_python_api_checks_the_same_ranges(tiny_data, option, value, expected):
    from facelib.errors import FacelibError
    from facelib.recipe import IdentityConfig

    with pytest.raises(FacelibError, match=f"^{expected}: expected"):
        IdentityConfig(tiny_data, **{option: value})  # refused before any run starts


def test_a_batch_without_positives_is_warned_about(trained_run, tiny_data):
    from facelib import training
    from facelib.errors import FacelibError
    from facelib.recipe import IdentityConfig

    with pytest.warns(UserWarning, match="K >= 2"), pytest.raises(FacelibError, match="already holds"):
        training.train_identity(IdentityConfig(tiny_data, batch=(4, 1)), trained_run, progress=False)


def test_synth_refuses_a_huge_size(tmp_path, capsys):
    fails_in_one_line(capsys, ["synth", tmp_path / "s", "--size", "100000"], "--size", "512")
    fails_in_one_line(capsys, ["synth", tmp_path / "s", "--identities", "0"], "--identities")
    assert not (tmp_path / "s").exists()


def test_predict_threshold_nan_is_refused_and_the_old_file_kept(trained_run, tiny_data, tmp_path, capsys):
    predictions = tmp_path / "predictions.csv"
    predictions.write_text("image1,image2,label\n")
    model = trained_run / "model.pt"
    argv = ["predict", tiny_data, "--model", model, "--split", "validate", "--out", predictions]
    fails_in_one_line(capsys, [*argv, "--threshold", "nan"], "--threshold", "finite")
    assert predictions.read_text() == "image1,image2,label\n"
    from facelib import evaluation, layouts
    from facelib.errors import FacelibError

    with pytest.raises(FacelibError, match="--threshold"):
        evaluation.predict(layouts.load(tiny_data), model, "validate", predictions, threshold=float("nan"))


# ----------------------------------------------------------------------------------------------- paths


def test_output_paths_are_checked_before_any_work(trained_run, tiny_data, tmp_path, capsys):
    a_file = tmp_path / "a-file"
    a_file.write_text("mine")
    for out in (a_file, a_file / "run"):
        fails_in_one_line(capsys, ["train", tiny_data, "--out", out, *FAST], a_file, "--out")
    a_folder = tmp_path / "folder"
    a_folder.mkdir()
    model = trained_run / "model.pt"
    fails_in_one_line(capsys, ["predict", tiny_data, "--model", model, "--out", a_folder], a_folder, "is a folder")
    assert a_file.read_text() == "mine" and not list(a_folder.iterdir())


@pytest.mark.skipif(os.geteuid() == 0, reason="root may write into read-only folders")
def test_read_only_output_and_cache_folders_are_one_line(tiny_data, tmp_path, monkeypatch, capsys):
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o555)
    fails_in_one_line(capsys, ["train", tiny_data, "--out", locked / "run", *FAST], locked, "not writable")
    monkeypatch.setenv("FACELIB_CACHE", str(locked / "cache"))
    fails_in_one_line(capsys, ["train", tiny_data, "--out", tmp_path / "run", *FAST], "cache folder", "not writable")


def test_a_remaining_os_error_on_a_user_path_is_one_line(tmp_path, monkeypatch, capsys):
    def denied(args):
        raise PermissionError(13, "Permission denied", str(tmp_path / "data"))

    monkeypatch.setattr(cli, "cmd_inspect", denied)
    fails_in_one_line(capsys, ["inspect", tmp_path / "data"], tmp_path / "data", "Permission denied")


def test_a_bad_option_in_a_real_process_prints_no_traceback(tiny_data, tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "facelib", "train", str(tiny_data), "--out", str(tmp_path / "run"), "--epochs", "0"],
        capture_output=True,
        text=True,
    )
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2 and len(lines) == 1 and "--epochs" in lines[0], result.stderr
    assert "Traceback" not in result.stderr and not (tmp_path / "run").exists()


# ----------------------------------------------------------------------------------------------- data


def write_face(path, image_format="JPEG"):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (40, 40), (200, 120, 80)).save(path, image_format)


def folder_layout(root, odd_file=None, image_format="JPEG"):
    """Two identities of two images each; `odd_file` (a name under amy/) is written in `image_format`."""
    for name in ("amy", "ben"):
        for number in (1, 2):
            write_face(root / name / f"{name}_{number}.jpg")
    if odd_file:
        write_face(root / "amy" / odd_file, image_format)
    return root


def test_inspect_finds_a_file_name_that_is_not_utf8(tmp_path, capsys):
    data = folder_layout(tmp_path / "data", os.fsdecode(b"amy_\xff.jpg"))
    fails_in_one_line(capsys, ["inspect", data], "not valid UTF-8")


def test_inspect_finds_a_format_the_training_decoder_refuses(tmp_path, capsys):
    data = folder_layout(tmp_path / "data", "amy_3.bmp", "BMP")
    fails_in_one_line(capsys, ["inspect", data], "amy_3.bmp", "BMP images cannot be decoded")


def test_a_csv_column_named_like_a_facelib_column_is_one_line(tiny_data, tmp_path, capsys):
    data = tmp_path / "data"
    shutil.copytree(tiny_data, data)
    meta = pd.read_csv(data / "train" / "train_meta.csv")
    meta.assign(angle="frontal").to_csv(data / "train" / "train_meta.csv", index=False)
    fails_in_one_line(capsys, ["inspect", data], "train_meta.csv", "'angle'", "frontal")


def test_duplicate_pair_rows_are_dropped_with_a_count(tiny_data, tmp_path, capsys):
    data = tmp_path / "data"
    shutil.copytree(tiny_data, data)
    labels = pd.read_csv(data / "validate" / "validate_label.csv")
    pd.concat([labels, labels.iloc[:3]]).to_csv(data / "validate" / "validate_label.csv", index=False)
    assert run_cli("inspect", data, "--json") == 0
    captured = capsys.readouterr()
    assert json.loads(captured.out)["pairs"] == {"validate": len(labels)}
    assert captured.err.strip() == "facelib: warning: dropped 3 duplicate pair rows (each pair is counted once)"


def test_a_same_person_line_in_an_lfw_different_block_is_one_line(tmp_path, capsys):
    data = folder_layout(tmp_path / "data")
    (data / "pairs.txt").write_text("1\namy 1 2\namy 1 2\n")
    fails_in_one_line(capsys, ["inspect", data], "pairs.txt", "pair 2", "same-person line inside a 'different' block")


def test_a_wrong_init_checkpoint_stops_before_any_work(tiny_data, tmp_path, capsys):
    # any pretext or identity run may start a network (models.load_backbone_from); another program's weights may not
    run, foreign = tmp_path / "run", tmp_path / "resnet.pt"
    torch.save({"state_dict": {"conv1.weight": torch.zeros(1)}}, foreign)
    fails_in_one_line(
        capsys, ["train", tiny_data, "--out", run, "--init", foreign], foreign, "not a facelib checkpoint"
    )
    assert not run.exists()
