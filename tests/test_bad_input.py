"""Hostile and mistaken input, as a user meets it on the command line: each class ends with a non-zero exit,
one error line naming the file or option, no traceback, and no existing file changed."""

import pickle
import subprocess
import sys

import pytest
import torch
from test_training import write_tiny_kface

from facelib import cli, models

FAST = ["--epochs", "1", "--image-size", "32", "--batch", "2", "4", "--device", "cpu"]


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory):
    return write_tiny_kface(tmp_path_factory.mktemp("bad") / "data")


@pytest.fixture(autouse=True)
def private_cache(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("FACELIB_CACHE", str(tmp_path_factory.getbasetemp() / "cache"))
    monkeypatch.delenv("FACELIB_CACHE_LIMIT_MB", raising=False)


@pytest.fixture(scope="module")
def trained_run(tiny_data, tmp_path_factory):
    """A finished one-epoch identity run whose files no failing command may touch."""
    run = tmp_path_factory.mktemp("trained") / "run"
    assert cli.main(["train", str(tiny_data), "--out", str(run), *FAST]) == 0
    return run


def snapshot(*folders):
    """Every file under `folders` with its bytes, to show that a refused command changed nothing."""
    return {path: path.read_bytes() for folder in folders for path in sorted(folder.rglob("*")) if path.is_file()}


def fails_in_one_line(capsys, argv, *named):
    """Run the CLI in-process; assert exit 2 and a single 'facelib: error:' line that names each of `named`."""
    code = cli.main([str(arg) for arg in argv])
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
