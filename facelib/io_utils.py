"""Atomic file writing: a reader never sees a half-written file, a crash leaves the old one."""

import os
import signal
import tempfile
import threading
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def atomic_path(target):
    """Yield a temporary path next to `target`; rename it onto `target` only if the block succeeds."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    os.close(fd)
    try:
        yield Path(tmp)
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes the file private; give it a normal file's mode
        os.replace(tmp, target)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


@contextmanager
def sigterm_unwinds():
    """Within the block, SIGTERM (`kill`, a scheduler's time limit) raises SystemExit(143) as Ctrl-C raises
    KeyboardInterrupt, so `finally` blocks remove their temporaries; by default Python dies at once and leaves them."""
    if threading.current_thread() is not threading.main_thread():  # only the main thread may set a handler
        yield
        return
    previous = signal.signal(signal.SIGTERM, _raise_system_exit)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _raise_system_exit(signum, frame):
    raise SystemExit(128 + signum)  # the status a shell reports for a process killed by that signal


def remove_stale_temporaries(folder, names):
    """Delete what killed atomic writes of the files `names` in `folder` left behind (see atomic_path)."""
    for name in names:
        if name:
            for stale in Path(folder).glob(f".{name}.*.tmp"):
                stale.unlink(missing_ok=True)


def _umask():
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write_text(target, text):
    with atomic_path(target) as tmp:
        tmp.write_text(text)


def atomic_save(obj, target):
    """torch.save, atomically."""
    import torch  # kept local: the data layer uses this module without needing torch

    with atomic_path(target) as tmp:
        torch.save(obj, tmp)
