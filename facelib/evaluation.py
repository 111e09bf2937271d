"""Verification of face pairs: embeddings, scores, metrics, thresholds, accuracy by pose, predictions.

The flow is: embed every distinct image once (`embed_images`, cached on disk), score each pair by looking
its two images up in the embedding matrix (`Embeddings.scores`), then measure (`verification_metrics`)
at a threshold chosen one of three ways: fixed, the best-accuracy threshold of a calibration set
(`best_threshold`), or the k-fold protocol of LFW / CFP (`kfold_thresholds`). `evaluate` runs it all on a
data set and returns one JSON-ready dict; `predict` writes the challenge's submission file.

Scores follow one convention everywhere: higher means "more likely the same person", and a pair is
predicted SAME when score >= threshold. Cosine similarity is the default; 'euclidean' scores are the
negated distance between the L2-normalised embeddings, so the threshold is -distance.

F1, the challenge's metric, is computed the way the challenge scores a file: scikit-learn's `f1_score` on
the submission labels (0 = same, 1 = different), so its positive class is "different" (label 1).
"""

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from sklearn.metrics import confusion_matrix, f1_score, roc_auc_score, roc_curve
from tqdm.auto import tqdm

from facelib import export, imagecache, models, splits
from facelib import options as checks
from facelib.errors import FacelibError
from facelib.io_utils import atomic_path
from facelib.retrieval import rank_gallery

METRICS = ("cosine", "euclidean")
ENGINES = ("torch", "onnx")
FARS = (1e-2, 1e-3)
POSES = ("frontal", "half-profile", "profile")
# |yaw| bin edges in degrees: frontal, half-profile, profile. They lie between the cameras of both usual
# layouts (every 15 degrees; every 22.5 as in the synthetic set, with a few degrees of jitter), so no
# camera straddles two bins: 0-30 frontal, 45-67.5 half-profile, 75-90 profile.
POSE_EDGES = (37.5, 72.5)
EMBEDDING_CACHE_FORMAT = 1  # bump when embedding changes, so old cache files are not reused


# ----------------------------------------------------------------------------------------------- embeddings


def embed_images(model, images, batch_size=128, flip=True, cache=True, device=None, progress=False):
    """L2-normalised embeddings [N, D] (float32) of `images`, one row per input row.

    `images` is an image table (rows with a `path`; a path listed twice is embedded once, faces come from
    `imagecache.load_images` at `model.image_size`) or a uint8 tensor [N, 3, S, S]. With `flip`, each
    embedding is the mean of the image's and its mirror's. `device`: where to run (the model is moved
    there); default: where the model is. `cache`: True (the facelib cache folder), a folder, or False
    (no embedding cache; decoded faces still use the image cache); the key covers the weights, the image
    files (or pixels) and `flip`, so evaluating the same model on the same data again runs no network.
    `model` may also be an export.OnnxEmbedder (ONNX Runtime), whose graph always averages the mirror image.
    """
    if isinstance(model, export.OnnxEmbedder) and not flip:
        raise FacelibError(f"{model.path}: the ONNX graph averages each face with its mirror; flip=False needs torch")
    if isinstance(images, pd.DataFrame):
        distinct = images.drop_duplicates("path")
        vectors = _embed_cached(model, distinct, batch_size, flip, cache, device, progress)
        return vectors[pd.Index(distinct["path"]).get_indexer(images["path"])]
    return _embed_cached(model, images, batch_size, flip, cache, device, progress)


def _embed_cached(model, images, batch_size, flip, cache, device, progress):
    if not cache:
        return _embed(model, _faces(model, images, None, progress), batch_size, flip, device, progress)
    cache_dir = imagecache.cache_folder(None if cache is True else cache)
    limit = imagecache.cache_limit_bytes()  # a bad setting fails before the embedding, not after
    cache_file = cache_dir / f"embeddings-{len(images)}-{_embedding_key(model, images, flip)[:24]}.npy"
    if cache_file.exists():
        try:
            vectors = np.load(cache_file)
            imagecache.touch(cache_file)
            return vectors
        except (OSError, ValueError):
            pass  # unreadable cache file: embed again and replace it
    vectors = _embed(model, _faces(model, images, cache_dir, progress), batch_size, flip, device, progress)
    with atomic_path(cache_file) as tmp, open(tmp, "wb") as file:  # a file object: np.save adds no suffix
        np.save(file, vectors)
    imagecache.prune(cache_dir, keep=cache_file, limit=limit)
    return vectors


def _faces(model, images, cache_dir, progress):
    if not isinstance(images, pd.DataFrame):
        return images
    return imagecache.load_images(
        images, _image_size(model), cache_dir=cache_dir, progress=progress, align=_aligned(model)
    )


def _image_size(model):
    if not hasattr(model, "image_size"):
        raise FacelibError(f"{type(model).__name__}: the model has no image_size; embed a uint8 tensor instead")
    return int(model.image_size)


def _aligned(model):
    """Whether `model` takes landmark-aligned faces (`.align`, set by models.load_embedder); else boxes."""
    return bool(getattr(model, "align", False))


def _embedding_key(model, images, flip):
    digest = hashlib.sha256(f"facelib-embeddings v{EMBEDDING_CACHE_FORMAT} flip={bool(flip)}\n".encode())
    digest.update(weights_digest(model))
    if isinstance(images, pd.DataFrame):
        digest.update(imagecache.cache_key(images, _image_size(model), _aligned(model)).encode())
    else:
        digest.update(str(tuple(images.shape)).encode())
        digest.update(images.contiguous().cpu().numpy().tobytes())
    return digest.hexdigest()


def weights_digest(model):
    """Digest of the architecture and every weight and buffer: the same checkpoint gives the same key
    wherever it is stored, and retraining in place gives a new one. An ONNX model: its file's digest."""
    if isinstance(model, export.OnnxEmbedder):
        return b"onnx" + model.digest
    digest = hashlib.sha256(type(model).__name__.encode())
    for name, value in model.state_dict().items():
        digest.update(name.encode())
        digest.update(value.detach().cpu().reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.digest()


def _embed(model, faces, batch_size, flip, device, progress):
    if isinstance(model, export.OnnxEmbedder):  # flip averaging and normalisation are inside the graph
        batches = torch.split(faces, batch_size)
        batches = tqdm(batches, desc="embedding (onnxruntime)", unit="batch", disable=not progress, leave=False)
        chunks = [model(imagecache.to_model_input(batch)) for batch in batches]
        return torch.cat(chunks).numpy() if chunks else np.zeros((0, 0), dtype=np.float32)
    if device:
        model.to(device)
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    chunks = []
    try:
        with torch.inference_mode():
            for start in tqdm(
                range(0, len(faces), batch_size), desc="embedding", unit="batch", disable=not progress, leave=False
            ):
                x = imagecache.to_model_input(faces[start : start + batch_size].to(device))
                if flip:  # one forward pass over the batch and its mirror image, each view weighing the same
                    original, mirrored = model(torch.cat([x, x.flip(-1)])).float().chunk(2)
                    chunks.append(
                        torch.nn.functional.normalize(original, dim=1) + torch.nn.functional.normalize(mirrored, dim=1)
                    )
                else:
                    chunks.append(model(x).float())
    finally:
        model.train(was_training)
    if not chunks:
        return np.zeros((0, 0), dtype=np.float32)
    return torch.nn.functional.normalize(torch.cat(chunks), dim=1).cpu().numpy()


@dataclass
class Embeddings:
    """Distinct images (`images`, one row each) and their embeddings (`vectors`, row i = images row i);
    pairs of these images are scored by lookup."""

    images: pd.DataFrame
    vectors: np.ndarray

    def rows(self, paths):
        rows = pd.Index(self.images["path"]).get_indexer(paths)
        if (rows < 0).any():
            raise FacelibError(f"pair image not among the embedded images: {list(paths)[int(np.argmin(rows))]}")
        return rows

    def scores(self, pairs, metric="cosine"):
        """One score per pair (higher = more alike), looked up from the embedding matrix."""
        return score_vectors(self.vectors[self.rows(pairs["a"])], self.vectors[self.rows(pairs["b"])], metric)


def score_vectors(a, b, metric="cosine"):
    """Row-wise scores of two matrices of L2-normalised embeddings: cosine, or the negated euclidean distance."""
    if metric == "cosine":
        return np.einsum("ij,ij->i", a, b).astype(np.float64)
    if metric == "euclidean":
        return -np.linalg.norm(a - b, axis=1).astype(np.float64)
    raise FacelibError(f"metric: expected one of {', '.join(METRICS)}, got {metric!r}")


def embed_pairs(model, images, pairs, batch_size=128, flip=True, cache=True, device=None, progress=False):
    """Embeddings of the distinct images of `pairs` (in order of first appearance, looked up by path in
    the image table, with a `pose` column added)."""
    paths = pd.unique(pairs[["a", "b"]].to_numpy().ravel())
    table = images.drop_duplicates("path").set_index("path")
    missing = [path for path in paths if path not in table.index]
    if missing:
        raise FacelibError(f"pair image not in the image table: {missing[0]}")
    chosen = table.loc[paths].reset_index()
    chosen["pose"] = pose_labels(chosen)
    vectors = embed_images(
        model, chosen, batch_size=batch_size, flip=flip, cache=cache, device=device, progress=progress
    )
    return Embeddings(chosen, vectors)


# ----------------------------------------------------------------------------------------------- metrics


def _as_arrays(scores, same):
    return np.asarray(scores, dtype=np.float64), np.asarray(same, dtype=bool)


def predicted_same(scores, threshold):
    """True where score >= threshold; `threshold` is one number or one per pair."""
    return np.asarray(scores) >= np.asarray(threshold)


def best_threshold(scores, same):
    """The threshold of highest accuracy (the highest such one), placed midway between two scores."""
    scores, same = _as_arrays(scores, same)
    if len(scores) == 0:
        raise FacelibError("cannot choose a threshold: no labelled pairs")
    if same.all() or not same.any():  # one class: call everything that class
        return float(scores.min() - 1e-6) if same.all() else float(scores.max() + 1e-6)
    fpr, tpr, thresholds = roc_curve(same, scores, drop_intermediate=False)
    accuracy = tpr * same.sum() + (1 - fpr) * (~same).sum()
    distinct = thresholds[1:]  # the distinct scores, descending; thresholds[0] = inf predicts nothing same
    cuts = np.concatenate([[distinct[0] + 1e-6], (distinct[:-1] + distinct[1:]) / 2, [distinct[-1] - 1e-6]])
    return float(cuts[np.argmax(accuracy)])


def roc_auc(scores, same):
    """ROC AUC, or None when the pairs are all of one class."""
    scores, same = _as_arrays(scores, same)
    return float(roc_auc_score(same, scores)) if 0 < same.sum() < len(same) else None


def equal_error_rate(scores, same):
    """The rate at which false accepts equal false rejects, on the linearly interpolated ROC curve."""
    scores, same = _as_arrays(scores, same)
    if not 0 < same.sum() < len(same):
        return None
    fpr, tpr, _ = roc_curve(same, scores, drop_intermediate=False)
    fnr = 1 - tpr
    return float(np.interp(0.0, fpr - fnr, fpr))  # fpr - fnr rises strictly along the curve


def tar_at_far(scores, same, far):
    """True accept rate at a false accept rate <= `far`; None unless there are at least 1/far different
    pairs (with fewer, that rate cannot be measured)."""
    scores, same = _as_arrays(scores, same)
    negatives = int((~same).sum())
    if negatives < round(1 / far) or not same.any():
        return None
    fpr, tpr, _ = roc_curve(same, scores, drop_intermediate=False)
    return float(tpr[fpr <= far].max())


def confusion_table(same, predicted):
    """Pair counts: rows = true relation, columns = predicted relation."""
    labels = ["same", "different"]
    matrix = confusion_matrix(np.asarray(same, dtype=bool), np.asarray(predicted, dtype=bool), labels=[True, False])
    return pd.DataFrame(matrix, index=pd.Index(labels, name="true"), columns=pd.Index(labels, name="predicted"))


def challenge_f1(same, predicted):
    """F1 on the challenge's labels (0 = same, 1 = different): sklearn's default positive class, label 1."""
    return float(f1_score(~np.asarray(same, dtype=bool), ~np.asarray(predicted, dtype=bool), zero_division=0.0))


def verification_metrics(scores, same, threshold):
    """pairs, accuracy, auc, eer, threshold, f1, tar_at_far and the confusion table at `threshold`
    (one number, or one per pair as in the k-fold protocol; then `threshold` reports their mean)."""
    scores, same = _as_arrays(scores, same)
    predicted = predicted_same(scores, threshold)
    return {
        "pairs": len(scores),
        "same_pairs": int(same.sum()),
        "accuracy": float((predicted == same).mean()),
        "auc": roc_auc(scores, same),
        "eer": equal_error_rate(scores, same),
        "threshold": float(np.mean(threshold)),
        "f1": challenge_f1(same, predicted),
        "tar_at_far": {f"{far:g}": tar_at_far(scores, same, far) for far in FARS},
        "confusion": confusion_table(same, predicted).to_dict(orient="index"),
    }


def kfold_thresholds(scores, same, folds):
    """The k-fold protocol: each fold is judged with the best threshold of all the other folds.

    Returns (one threshold per pair, a table with one row per fold: fold, pairs, threshold, accuracy,
    auc, eer). Report the table's mean accuracy and its standard deviation, as LFW and CFP do.
    """
    scores, same = _as_arrays(scores, same)
    folds = np.asarray(folds)
    thresholds = np.empty(len(scores))
    rows = []
    for fold in np.unique(folds):
        held_out = folds == fold
        threshold = best_threshold(scores[~held_out], same[~held_out])
        thresholds[held_out] = threshold
        fold_scores, fold_same = scores[held_out], same[held_out]
        rows.append(
            {
                "fold": int(fold),
                "pairs": int(held_out.sum()),
                "threshold": threshold,
                "accuracy": float((predicted_same(fold_scores, threshold) == fold_same).mean()),
                "auc": roc_auc(fold_scores, fold_same),
                "eer": equal_error_rate(fold_scores, fold_same),
            }
        )
    return thresholds, pd.DataFrame(rows)


# ----------------------------------------------------------------------------------------------- pose


def pose_labels(images):
    """'frontal' / 'half-profile' / 'profile' per image: the |yaw| bin where yaw is known (the finer label),
    else the `view` (CFP; K-Face's cam_angle front / side), else None."""
    from_yaw = pd.cut(images["yaw"].abs(), [0, *POSE_EDGES, np.inf], labels=POSES, include_lowest=True).astype(object)
    view = images["view"].astype(object) if "view" in images else from_yaw
    labels = from_yaw.where(from_yaw.notna(), view)
    return labels.where(labels.notna(), None).rename("pose")


def _pair_label(first, second, order):
    """'x-y' with the two values in `order` (None if either is unknown)."""
    if pd.isna(first) or pd.isna(second):
        return None
    return "-".join(sorted([str(first), str(second)], key=order))


def _codes(table, column, prefix):
    """'E1', 'C7', ... from a code column (None where unknown or the column is absent)."""
    if column not in table:
        return pd.Series(None, index=table.index, dtype=object)
    return table[column].map(lambda code: None if pd.isna(code) else f"{prefix}{int(code)}")


def _code_number(code):
    return int(code[1:])


def pair_groups(pairs, images):
    """The pose gap ('frontal-profile', ...), expression pair ('E1-E3', ...) and camera pair ('C5-C9', K-Face
    camera codes) of each pair, as a table with columns pose, expression and camera aligned with `pairs`."""
    table = images.drop_duplicates("path").set_index("path")
    pose = pose_labels(table.reset_index()).set_axis(table.index)
    columns = {}
    for name, values, order in [
        ("pose", pose, POSES.index),
        ("expression", _codes(table, "expression", "E"), _code_number),
        ("camera", _codes(table, "angle", "C"), _code_number),
    ]:
        first, second = values.reindex(pairs["a"]), values.reindex(pairs["b"])
        columns[name] = [_pair_label(x, y, order) for x, y in zip(first, second)]
    return pd.DataFrame(columns, index=pairs.index, dtype=object)


def accuracy_by_group(scores, same, groups, threshold):
    """One row per group: group, pairs, same_pairs, accuracy, auc (None unless both classes occur)."""
    scores, same = _as_arrays(scores, same)
    frame = pd.DataFrame(
        {"score": scores, "same": same, "group": list(groups), "correct": predicted_same(scores, threshold) == same}
    ).dropna(subset=["group"])
    rows = [
        {
            "group": name,
            "pairs": len(group),
            "same_pairs": int(group["same"].sum()),
            "accuracy": float(group["correct"].mean()),
            "auc": roc_auc(group["score"], group["same"]),
        }
        for name, group in frame.groupby("group", sort=True)
    ]
    return pd.DataFrame(rows, columns=["group", "pairs", "same_pairs", "accuracy", "auc"])


def accuracy_by_pose(pairs, images, scores, threshold):
    """Accuracy per pose gap, expression pair and camera pair: columns factor ('pose' / 'expression' /
    'camera'; a factor no pair has is left out), group, pairs, same_pairs, accuracy, auc. Groups follow the
    pose order, e.g. frontal-frontal first."""
    groups = pair_groups(pairs, images)
    tables = [
        accuracy_by_group(scores, pairs["same"], groups[factor], threshold).assign(factor=factor) for factor in groups
    ]
    columns = ["factor", "group", "pairs", "same_pairs", "accuracy", "auc"]
    tables = [table[columns] for table in tables if len(table)]
    return pd.concat(tables, ignore_index=True) if tables else pd.DataFrame(columns=columns)


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


def resolve_model(model, device=None, engine="torch"):
    """The embedding model to run. engine "torch": an nn.Module as it is, a checkpoint path loaded with
    `models.load_embedder`. engine "onnx": the same network in ONNX Runtime (CPU), exported once into the cache
    folder (export.onnx_engine). A .onnx file (from `facelib export`) or an export.OnnxEmbedder always runs in
    ONNX Runtime."""
    if engine not in ENGINES:
        raise FacelibError(f"engine: expected one of {', '.join(ENGINES)}, got {engine!r}")
    if isinstance(model, export.OnnxEmbedder):
        return model
    if not isinstance(model, torch.nn.Module) and Path(model).suffix.lower() == ".onnx":
        return export.OnnxEmbedder(model)
    if engine == "onnx":
        net = model if isinstance(model, torch.nn.Module) else models.load_embedder(model, "cpu")
        return export.onnx_engine(net)
    if isinstance(model, torch.nn.Module):
        return model
    return models.load_embedder(model, models.resolve_device(device))


def pair_scores(
    data,
    model,
    split=None,
    protocol=None,
    folds=None,
    *,
    flip=True,
    metric="cosine",
    batch_size=128,
    cache=True,
    device=None,
    engine="torch",
    progress=False,
):
    """(the selected pairs, one score per pair): what ROC curves and score histograms are drawn from.
    Shares `evaluate`'s embedding cache, so after an evaluation it runs no network."""
    pairs = splits.select_pairs(data, split, protocol, folds)
    labelled_same(pairs)  # the curves drawn from these scores need labels
    embeddings = embed_pairs(
        resolve_model(model, device, engine),
        data.images,
        pairs,
        batch_size=batch_size,
        flip=flip,
        cache=cache,
        progress=progress,
    )
    return pairs, embeddings.scores(pairs, metric)


def _calibrated_threshold(model, data, pairs, metric, options):
    scores = embed_pairs(model, data.images, pairs, **options).scores(pairs, metric)
    return best_threshold(scores, labelled_same(pairs))


# ----------------------------------------------------------------------------------------------- pretext


@torch.inference_mode()
def pretext_accuracy(checkpoint, images, batch_size=128, device=None, cache_dir=None):
    """Per-class accuracy of a pretext checkpoint on `images`: one row per (task, class) with columns
    task, class, images, accuracy. Each task's labels are read from the image column of the same name
    (angle, expression, view, facing); images whose label is unknown or a class the model never saw are
    left out of that task."""
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
        for index, value in enumerate(classes):
            chosen = (truth == value).fillna(False).to_numpy(bool)
            if chosen.any():
                rows.append(
                    {
                        "task": task,
                        "class": value,
                        "images": int(chosen.sum()),
                        "accuracy": float((predicted[chosen] == index).mean()),
                    }
                )
    return pd.DataFrame(rows, columns=["task", "class", "images", "accuracy"])


# ----------------------------------------------------------------------------------------------- evaluate


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
    in `threshold_source`). Returns a JSON-ready dict: pairs, same_pairs, accuracy (k-fold: the mean, plus
    accuracy_std and fold_results), auc, eer, threshold, threshold_source, f1, tar_at_far, confusion,
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
    return result


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
        result = evaluate(data, model, split, protocol, folds, **options)
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
