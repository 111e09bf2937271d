import os
import signal

import pytest

from facelib.io_utils import atomic_path, atomic_write_text, sigterm_unwinds


def test_atomic_write_replaces_whole_file_with_normal_permissions(tmp_path):
    target = tmp_path / "sub" / "metrics.json"
    atomic_write_text(target, "first")
    atomic_write_text(target, "second")
    assert target.read_text() == "second"
    mask = os.umask(0)
    os.umask(mask)
    assert target.stat().st_mode & 0o777 == 0o666 & ~mask
    assert [p.name for p in target.parent.iterdir()] == ["metrics.json"]


def test_failed_write_leaves_the_old_file_and_no_temporary(tmp_path):
    target = tmp_path / "model.pt"
    target.write_text("good")
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("crash while writing")
    assert target.read_text() == "good" and [p.name for p in tmp_path.iterdir()] == ["model.pt"]


def test_sigterm_unwinds_the_block_and_leaves_no_temporary(tmp_path):
    before = signal.getsignal(signal.SIGTERM)
    with pytest.raises(SystemExit) as stop, sigterm_unwinds(), atomic_path(tmp_path / "model.pt") as tmp:
        tmp.write_text("half")
        os.kill(os.getpid(), signal.SIGTERM)
    assert stop.value.code == 143 and list(tmp_path.iterdir()) == []
    assert signal.getsignal(signal.SIGTERM) is before  # the caller's handler is back
