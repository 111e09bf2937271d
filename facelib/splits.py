"""Which images train and which pairs validate and test: the one split policy, per layout.

    layout          training images          validation pairs         test pairs (reported)          held-out images
    K-Face          split "train"            split "validate"         split "test" (or "validate"    the validate and
                                                                      where the test labels are      test identities
                                                                      the challenge's dummies)
    CFP             train_folds (default:    FF + FP pairs of         FP pairs of val_folds          val_folds' images
                    all but val_folds)       val_folds
    LFW pairs       every image              none                     every pair (k-fold)            every image
    image folders   every image              none                     pairs drawn with the seed      every image
                                                                      (`with_sampled_pairs`), k-fold

Training (facelib.training), evaluation, the notebooks and the benchmarks all ask here; nothing else filters
images or pairs by split or fold. `select_pairs` is the general filter the evaluation commands expose.
"""

import dataclasses

import pandas as pd

from facelib import layouts
from facelib.errors import FacelibError

# CFP's protocol folds 1-8 train; fold 9 is the held-out fold of the copy the project has (fold 10 is withheld)
CFP_TRAIN_FOLDS = list(range(1, 9))
CFP_HELD_OUT_FOLDS = [9]
SAMPLED_PAIRS = 600  # for data without verification pairs (plain identity folders): drawn with the seed
SAMPLED_FOLDS = 10  # ... and cut into folds, each judged at the threshold chosen on the others


def training_images(data, train_folds=None, val_folds=None):
    """The image rows a model trains on: K-Face `train` split, CFP `train_folds` (default: all but `val_folds`),
    every image of other layouts."""
    images = data.images
    if data.format == "cfp":
        if train_folds and val_folds and set(train_folds) & set(val_folds):
            raise FacelibError(f"--train-folds {train_folds} and --val-folds {val_folds} overlap")
        chosen = images["fold"].isin(train_folds) if train_folds else ~images["fold"].isin(val_folds or [])
        selected = images[chosen.fillna(False).astype(bool)]
    else:
        if train_folds or val_folds:
            raise FacelibError(f"--train-folds/--val-folds select CFP folds; {data.root} is {data.format} data")
        selected = images[images["split"] == "train"] if data.format == "kface" else images
    if selected.empty:
        raise FacelibError(f"{data.root}: no training images (format {data.format}, train folds {train_folds})")
    return selected.reset_index(drop=True)


def validation_pairs(data, val_folds=None):
    """Pairs that choose the best epoch: K-Face `validate` split, CFP `val_folds` (FF and FP); else none."""
    pairs = data.pairs
    if pairs.empty:
        return pairs
    if data.format == "kface":
        return pairs[pairs["split"] == "validate"].reset_index(drop=True)
    if data.format == "cfp" and val_folds:
        return pairs[pairs["fold"].isin(val_folds).fillna(False).astype(bool)].reset_index(drop=True)
    return pairs.iloc[:0]


def test_selection(data, val_folds=None):
    """The `select_pairs` filter of the pairs a run reports on: K-Face's test split (its validate split where the
    test labels are dummies, as in the challenge's files), CFP's FP pairs of the validation folds, else all."""
    if data.format == "kface":
        test = data.pairs[data.pairs["split"] == "test"]
        return dict(split="test" if len(test) and test["same"].notna().all() else "validate")
    if data.format == "cfp":
        return dict(protocol="FP", folds=val_folds)
    return {}


def held_out_images(data, val_folds=None):
    """Images no model trains on: the validate and test identities (K-Face), CFP's validation folds; every image
    of other layouts, whose models train on all of them."""
    images = data.images
    if data.format == "kface":
        return images[images["split"].isin(["validate", "test"])].reset_index(drop=True)
    if data.format == "cfp":
        return images[images["fold"].isin(val_folds)].reset_index(drop=True)
    return images


def pair_images(images, pairs):
    """The rows of `images` that `pairs` use, each once, in the order of `images`."""
    used = pd.unique(pairs[["a", "b"]].to_numpy().ravel())
    return images[images["path"].isin(used)].reset_index(drop=True)


def select_pairs(data, split=None, protocol=None, folds=None):
    """The pairs of `data` in `split` / `protocol` / `folds` (None = no filter), in file order."""
    pairs = data.pairs
    if pairs.empty:
        raise FacelibError(f"{data.root}: the data set has no pairs to evaluate")
    keep = pd.Series(True, index=pairs.index)
    if split is not None:
        keep &= pairs["split"] == split
    if protocol is not None:
        keep &= pairs["protocol"].str.upper() == str(protocol).upper()
    if folds is not None:
        keep &= pairs["fold"].isin(list(folds)).fillna(False)
    chosen = pairs[keep.astype(bool)]
    if chosen.empty:
        present = {column: sorted(pairs[column].dropna().unique().tolist()) for column in ("split", "protocol", "fold")}
        raise FacelibError(
            f"{data.root}: no pairs with split={split}, protocol={protocol}, folds={folds} (present: {present})"
        )
    return chosen


def with_sampled_pairs(data, seed=0):
    """`data` as it is where it has verification pairs; else (plain identity folders) with up to SAMPLED_PAIRS
    pairs drawn with the seed, half of them same-person, in SAMPLED_FOLDS folds."""
    if not data.pairs.empty:
        return data
    per_identity = data.images.groupby("identity").size()
    count = min(SAMPLED_PAIRS, 2 * int((per_identity * (per_identity - 1) // 2).sum()))
    pairs = layouts.sample_pairs(data.images, count, seed=seed)
    pairs["fold"] = pd.array(pd.RangeIndex(len(pairs)) % SAMPLED_FOLDS + 1, dtype="Int64")
    return dataclasses.replace(data, pairs=pairs)
