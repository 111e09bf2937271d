"""Verification of face pairs: select the pairs, calibrate a threshold, evaluate, predict.

The flow is: select the pairs (facelib.splits), embed every distinct image once (facelib.embedding), score each
pair, then measure (facelib.metrics) at a threshold chosen one of three ways: fixed, the best-accuracy threshold
of a calibration set, or the k-fold protocol of LFW / CFP. `evaluate` runs it all on a data set and returns an
`Evaluation`: its JSON-ready metrics and the pairs and scores they were measured on (what the notebooks plot);
`predict` writes the challenge's submission file.

Cosine similarity is the default score; 'euclidean' scores are the negated distance between the L2-normalised
embeddings, so the threshold is -distance.
"""

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from facelib import export, imagecache, layouts, models, splits
from facelib import options as checks
from facelib.embedding import Embeddings, embed_pairs, resolve_model, to_canonical_facing
from facelib.errors import FacelibError
from facelib.io_utils import atomic_path
from facelib.metrics import best_threshold, kfold_thresholds, predicted_same, verification_metrics
from facelib.poses import accuracy_by_pose
from facelib.recipe import IdentityConfig
from facelib.retrieval import rank_gallery

# ----------------------------------------------------------------------------------------------- embeddings


# ----------------------------------------------------------------------------------------------- metrics


# ----------------------------------------------------------------------------------------------- pose


# ----------------------------------------------------------------------------------------------- data


def labelled_same(pairs):
    """The pairs' labels as a bool array (True = same person); FacelibError when any pair is unlabelled."""
    unknown = pairs["same"].isna()
    if unknown.any():
        splits = sorted(pairs.loc[unknown, "split"].dropna().unique())
        which = f"split {', '.join(splits)}" if splits else "these pairs"
        raise FacelibError(
            f"{which} has no usable labels (the challenge's test_label.csv holds dummy labels): "
            "evaluate on --split validate, or write the test predictions with `facelib predict --split test`"
        )
    return pairs["same"].to_numpy(bool)


def _calibration_pairs(data, split, protocol, calibrate, calibrate_folds):
    """(pairs that choose the threshold, description) or (None, None). Competition data evaluated on a
    split other than validate is calibrated on validate by default, the honest choice."""
    if calibrate_folds is not None:
        return splits.select_pairs(data, split, protocol, calibrate_folds), f"folds {list(calibrate_folds)}"
    if calibrate is None and split not in (None, "validate") and (data.pairs["split"] == "validate").any():
        calibrate = "validate"
    if calibrate is not None:
        return splits.select_pairs(data, calibrate, protocol), f"split {calibrate}"
    return None, None


def _calibrated_threshold(model, data, pairs, metric, options):
    scores = embed_pairs(model, data.images, pairs, **options).scores(pairs, metric)
    return best_threshold(scores, labelled_same(pairs))


# ----------------------------------------------------------------------------------------------- pretext


@torch.inference_mode()
def pretext_accuracy(checkpoint, images, batch_size=128, device=None, cache_dir=None):
    """Per-class accuracy of a pretext checkpoint on `images`: one row per (task, class) with columns
    task, class, label (the class as figures name it, layouts.code_labels), images, accuracy. Each task's
    labels are read from the image column of the same name (angle, expression, view, facing); images whose
    label is unknown or a class the model never saw are left out of that task."""
    state = models.read_checkpoint(checkpoint)
    if state["kind"] != "pretext":
        raise FacelibError(f"{checkpoint}: expected a pretext checkpoint, found kind {state['kind']!r}")
    if device in (None, "auto"):
        device = "cuda" if torch.cuda.is_available() else "cpu"
    model = models.PretextNet(state["heads"])
    model.load_state_dict(state["model"])
    model.to(device).eval()
    config = state["config"]
    faces = imagecache.load_images(
        images, config["image_size"], cache_dir, progress=False, align=models.faces_aligned(config)
    )
    logits = {name: [] for name in state["heads"]}
    for batch in torch.split(faces, batch_size):
        for name, values in model(imagecache.to_model_input(batch.to(device))).items():
            logits[name].append(values.argmax(1).cpu())
    rows = []
    for task, classes in state["classes"].items():
        predicted = torch.cat(logits[task]).numpy()
        truth = images[task].reset_index(drop=True)
        labels = layouts.code_labels(images, task).reset_index(drop=True)
        for index, value in enumerate(classes):
            chosen = (truth == value).fillna(False).to_numpy(bool)
            if chosen.any():
                rows.append(
                    {
                        "task": task,
                        "class": value,
                        "label": str(labels[chosen].iloc[0]),
                        "images": int(chosen.sum()),
                        "accuracy": float((predicted[chosen] == index).mean()),
                    }
                )
    return pd.DataFrame(rows, columns=["task", "class", "label", "images", "accuracy"])


@torch.inference_mode()
def identity_accuracy(checkpoint, images, batch_size=128, device=None, cache_dir=None):
    """Share of `images` whose person the classifier of a Triarchy / Baseline checkpoint names, on the faces as its
    training saw them before augmentation (aligned, canonical facing, as the run's settings say): how well the
    network fits the people it trained on, so that on its own training faces a low share means it underfits.
    Images of people it did not train on are left out."""
    state = models.read_checkpoint(checkpoint)
    if state["kind"] not in models.MODELS:
        raise FacelibError(f"{checkpoint}: expected a triarchy or baseline checkpoint, found kind {state['kind']!r}")
    config = IdentityConfig.from_stored(state["config"]["settings"])  # older runs: their options' defaults filled in
    model = models.identity_model(config, state["num_ids"])
    model.load_state_dict(state["model"])
    device = models.resolve_device(device)
    model.to(device).eval()
    known = images[images["identity"].isin(state["identities"])]
    if known.empty:
        raise FacelibError(f"{checkpoint}: none of the {len(images)} images shows a person the model trained on")
    faces = imagecache.load_images(known, config.image_size, cache_dir, progress=False, align=config.align)
    if config.canonical_facing:
        to_canonical_facing(faces, known)
    predicted = torch.cat(
        [
            model(imagecache.to_model_input(batch.to(device)))[1].argmax(1).cpu()
            for batch in torch.split(faces, batch_size)
        ]
    )
    return float((predicted.numpy() == pd.Index(state["identities"]).get_indexer(known["identity"])).mean())


# ----------------------------------------------------------------------------------------------- evaluate


@dataclass
class Evaluation:
    """What `evaluate` measured: `metrics`, JSON-ready (what `facelib evaluate --json` prints), and what they were
    measured on: the pairs, one score and one threshold per pair, and the embedded images (with their pose), so
    that figures are drawn from the evaluation itself instead of scoring again."""

    metrics: dict
    pairs: pd.DataFrame
    scores: np.ndarray
    thresholds: np.ndarray
    embeddings: Embeddings

    @property
    def same(self):
        return self.pairs["same"].to_numpy(bool)


def evaluate(
    data,
    model,
    split=None,
    protocol=None,
    folds=None,
    calibrate_folds=None,
    *,
    calibrate=None,
    threshold=None,
    flip=True,
    metric="cosine",
    batch_size=128,
    cache=True,
    device=None,
    engine="torch",
    progress=False,
):
    """Verification (and retrieval, where a gallery can be formed) metrics of `model` on `data`'s pairs.

    `data` is a layouts.FaceData; `model` a checkpoint path or an nn.Module with `image_size`. The threshold
    is, in this order: `threshold` if given; the best one on `calibrate_folds` or the `calibrate` split
    (validate by default for a competition test split); the k-fold protocol when the evaluated pairs span
    two or more folds (CFP); else the best one on the evaluated pairs themselves (optimistic, and said so
    in `threshold_source`). Returns an `Evaluation` whose `metrics` hold: pairs, same_pairs, accuracy (k-fold:
    the mean, plus accuracy_std and fold_results), auc, eer, threshold, threshold_source, f1, tar_at_far, confusion,
    by_pose (records of `accuracy_by_pose`), retrieval {rank1, rank5, mAP, probes, gallery} (only where a
    gallery can be formed), and the options used. `engine`: torch or onnx (ONNX Runtime), see `resolve_model`.
    """
    threshold = checks.threshold(threshold)
    model = resolve_model(model, device, engine)
    options = dict(batch_size=batch_size, flip=flip, cache=cache, progress=progress)
    pairs = splits.select_pairs(data, split, protocol, folds)
    same = labelled_same(pairs)
    calibration, calibration_name = _calibration_pairs(data, split, protocol, calibrate, calibrate_folds)
    if calibration is not None:
        labelled_same(calibration)
    embeddings = embed_pairs(model, data.images, pairs, **options)
    scores = embeddings.scores(pairs, metric)

    fold_table = None
    if threshold is not None:
        thresholds, source = np.full(len(pairs), float(threshold)), "fixed"
    elif calibration is not None:
        chosen = _calibrated_threshold(model, data, calibration, metric, options)
        thresholds, source = np.full(len(pairs), chosen), f"best accuracy on {calibration_name}"
    elif pairs["fold"].nunique() >= 2:
        thresholds, fold_table = kfold_thresholds(scores, same, pairs["fold"].to_numpy(int))
        source = f"{len(fold_table)}-fold protocol"
    else:
        thresholds = np.full(len(pairs), best_threshold(scores, same))
        source = "best accuracy on the evaluated pairs (optimistic)"

    result = {
        "split": split,
        "protocol": protocol,
        "folds": None if folds is None else list(folds),
        "metric": metric,
        "flip": flip,
        "engine": "onnx" if isinstance(model, export.OnnxEmbedder) else "torch",
        "images": len(embeddings.images),
    }
    result.update(verification_metrics(scores, same, thresholds))
    result["threshold_source"] = source
    if fold_table is not None:  # CFP / LFW report the mean and spread over folds
        means = fold_table[["accuracy", "auc", "eer", "threshold"]].astype(float).mean()
        result.update(
            means.to_dict(), accuracy_std=float(fold_table["accuracy"].std(ddof=0)), fold_results=_records(fold_table)
        )
    result["by_pose"] = _records(accuracy_by_pose(pairs, embeddings.images, scores, thresholds))
    retrieval = retrieval_metrics(embeddings)
    if retrieval is not None:
        result["retrieval"] = retrieval
    return Evaluation(result, pairs, scores, thresholds, embeddings)


def retrieval_metrics(embeddings):
    """rank1 / rank5 / mAP with the frontal images as gallery and the others of known pose as probes
    (`embeddings.images` needs identity and pose columns); None when either side is empty."""
    images = embeddings.images
    gallery = (images["pose"] == "frontal").to_numpy()
    probes = (images["pose"].notna() & (images["pose"] != "frontal")).to_numpy()
    ranking = rank_gallery(embeddings.vectors, images["identity"], gallery, probes)
    return None if ranking is None else ranking.summary()


COMPARED = ["pairs", "accuracy", "accuracy_std", "auc", "eer", "f1", "threshold"]


def compare(data, runs, split=None, protocol=None, folds=None, **options):
    """`evaluate` several models on the same pairs: one row per run ({name: checkpoint or module}), with
    the verification metrics and retrieval rank-1 / mAP."""
    rows = {}
    for name, model in runs.items():
        result = evaluate(data, model, split, protocol, folds, **options).metrics
        retrieval = result.get("retrieval", {})
        rows[name] = {
            **{key: result.get(key) for key in COMPARED},
            "rank1": retrieval.get("rank1"),
            "mAP": retrieval.get("mAP"),
        }
    return pd.DataFrame.from_dict(rows, orient="index").rename_axis("model")


def _records(table):
    """Table rows as JSON-ready dicts (NaN -> None)."""
    return table.astype(object).where(table.notna(), None).to_dict(orient="records")


# ----------------------------------------------------------------------------------------------- predict


def write_predictions(pairs, scores, threshold, out, with_score=False):
    """The challenge's submission file: image1,image2,label[,score], label 0 = same and 1 = different, one
    row per pair in the order of `pairs`, file names as the pair file gives them; written atomically."""
    table = pd.DataFrame(
        {
            "image1": [os.path.basename(path) for path in pairs["a"]],
            "image2": [os.path.basename(path) for path in pairs["b"]],
            "label": np.where(predicted_same(scores, threshold), 0, 1),
        }
    )
    if with_score:
        table["score"] = np.asarray(scores)
    out = Path(out)
    with atomic_path(out) as tmp:
        table.to_csv(tmp, index=False, float_format="%.6f")
    return out


def predict(
    data,
    model,
    split,
    out,
    threshold=None,
    calibrate=None,
    with_score=False,
    *,
    flip=True,
    metric="cosine",
    batch_size=128,
    cache=True,
    device=None,
    engine="torch",
    progress=False,
):
    """Score the pairs of `split` and write the submission file `out`. The threshold is `threshold` if
    given, else the best-accuracy threshold on the `calibrate` split (default: validate, when present and
    not the split being predicted). Returns the path written."""
    threshold, out = checks.threshold(threshold), checks.output_file(out)
    model = resolve_model(model, device, engine)
    options = dict(batch_size=batch_size, flip=flip, cache=cache, progress=progress)
    pairs = splits.select_pairs(data, split)
    if threshold is None:
        calibrate = calibrate or ("validate" if split != "validate" else None)
        if calibrate is None or calibrate == split:
            raise FacelibError(f"predicting split {split!r}: give a threshold, or another split to calibrate it on")
        threshold = _calibrated_threshold(model, data, splits.select_pairs(data, calibrate), metric, options)
    scores = embed_pairs(model, data.images, pairs, **options).scores(pairs, metric)
    return write_predictions(pairs, scores, threshold, out, with_score)
