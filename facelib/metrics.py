"""Verification metrics: pure functions of pair scores and labels (numpy arrays in, numbers and tables out).

Scores follow one convention everywhere: higher means "more likely the same person", and a pair is predicted
SAME when score >= threshold. The curves and areas are scikit-learn's.

F1, the challenge's metric, is computed the way the challenge scores a file: scikit-learn's `f1_score` on
the submission labels (0 = same, 1 = different), so its positive class is "different" (label 1).
"""

import numpy as np
import pandas as pd
from sklearn.metrics import confusion_matrix, f1_score, roc_auc_score, roc_curve

from facelib.errors import FacelibError

FARS = (1e-2, 1e-3)


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
