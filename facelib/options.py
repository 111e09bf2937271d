"""Checks of every user-given setting, in one place: the Python API calls them before any work, and the
command line uses the same checks as its argument types, so a bad value is one line at parse time.

Each check returns the value (converted) or raises OptionError naming the option and the expected range.
Kept free of torch so `facelib inspect` stays quick.
"""

import argparse
import math
import os
import re
from pathlib import Path

from facelib.errors import FacelibError

MIN_IMAGE_SIZE = 32  # EfficientNet-B0's five stride-2 stages need at least this (16 px fails in a 5x5 kernel)
MAX_IMAGE_SIZE = 512  # the decoded cache holds 3 x size^2 bytes per image; 112 is the original's size
MAX_BATCH_SIDE = 1024
MAX_EPOCHS = 100_000
MAX_IDENTITIES = 100_000
MAX_SEED = 2**32 - 1  # numpy's legacy seed range
DEVICE = re.compile(r"auto|cpu|cuda(:\d+)?")


class OptionError(FacelibError):
    """A bad setting: `option` names it, `problem` says what is wrong and what is allowed."""

    def __init__(self, option, problem):
        self.option, self.problem = option, problem
        super().__init__(f"{option}: {problem}")


def _expected(option, expected, value):
    return OptionError(option, f"expected {expected}, got {value!r}")


def whole_number(option, value, low, high):
    """An int in [low, high]; bools and fractions are refused."""
    try:
        number = int(value)
        exact = not isinstance(value, bool) and number == float(value)
    except (TypeError, ValueError, OverflowError):
        exact = False
    if not exact or not low <= number <= high:
        raise _expected(option, f"a whole number from {low} to {high}", value)
    return number


def finite_number(option, value, positive=False):
    """A finite float (> 0 if `positive`); NaN and infinities are refused."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        number = math.nan
    if not math.isfinite(number) or (positive and number <= 0):
        raise _expected(option, "a positive finite number" if positive else "a finite number", value)
    return number


def epochs(value):
    return whole_number("--epochs", value, 1, MAX_EPOCHS)


def image_size(value, option="--image-size"):
    return whole_number(option, value, MIN_IMAGE_SIZE, MAX_IMAGE_SIZE)


def ema(value):
    """The decay of a weight average: from 0 (none) up to, not including, 1 (a frozen average)."""
    decay = finite_number("ema", value)
    if not 0 <= decay < 1:
        raise _expected("ema", "a decay from 0 (none) up to 1, not included", value)
    return decay


def synthetic_size(value):
    return image_size(value, "--size")


def identities(value):
    """Synthetic identities: train, validate and test each need 2."""
    return whole_number("--identities", value, 6, MAX_IDENTITIES)


# facelib.synthetic's styles; kept here so the command line needs no numpy
SYNTHETIC_STYLES = ("cartoon", "photo", "sculpted")


def synthetic_style(value):
    if value not in SYNTHETIC_STYLES:
        raise _expected("--style", f"one of {', '.join(SYNTHETIC_STYLES)}", value)
    return value


def seed(value):
    return whole_number("--seed", value, 0, MAX_SEED)


def batch_side(value, option="--batch"):
    return whole_number(option, value, 1, MAX_BATCH_SIDE)


def batch(value):
    """(P, K): P identities x K images per batch, each from 1 to MAX_BATCH_SIDE."""
    try:
        p, k = value
    except (TypeError, ValueError):
        raise _expected("--batch", "two numbers P K", value) from None
    return batch_side(p, "--batch P"), batch_side(k, "--batch K")


def device(value):
    if not isinstance(value, str) or not DEVICE.fullmatch(value):
        raise _expected("--device", "auto, cpu, cuda or cuda:N", value)
    return value


def threshold(value):
    return None if value is None else finite_number("--threshold", value)


def cache_limit_mb():
    """$FACELIB_CACHE_LIMIT_MB (default 2048): the cache folder's cap in MiB, a positive finite number."""
    value = os.environ.get("FACELIB_CACHE_LIMIT_MB", "2048")
    return finite_number("FACELIB_CACHE_LIMIT_MB", value, positive=True)


def _writable_folder(option, folder):
    """`folder` exists as a folder we may write in, or can be created: its nearest existing ancestor is a
    writable folder."""
    folder = Path(folder)
    existing = folder
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        where = "is a file" if existing == folder else f"lies below the file {existing}"
        raise OptionError(option, f"{folder} {where}; expected a folder")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise OptionError(option, f"{folder}: {existing} is not writable")
    return folder


def output_folder(folder, option="--out"):
    return _writable_folder(option, folder)


def output_file(path, option="--out"):
    """A file we may create or replace: not a folder, in a writable (or creatable) folder."""
    path = Path(path)
    if path.is_dir():
        raise OptionError(option, f"{path} is a folder; expected a file name")
    if path.exists() and not os.access(path, os.W_OK):
        raise OptionError(option, f"{path} is not writable")
    _writable_folder(option, path.parent)
    return path


def cli_type(check):
    """An argparse `type` running `check` on the text, so a bad value fails at parse time with the check's
    message (argparse adds the option's name)."""

    def parse(text):
        try:
            return check(text)
        except OptionError as error:
            raise argparse.ArgumentTypeError(error.problem) from None

    parse.__name__ = check.__name__  # argparse names the type in its messages
    return parse
