"""Atomic file writing: a reader never sees a half-written file, a crash leaves the old one."""

import os
import tempfile
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
