"""What the notebooks' outputs say, built from the run's own numbers: sentences and small tables that sit next to
a figure or a metric, so that no number in a notebook's prose goes stale.
"""

import numpy as np
import pandas as pd

from facelib.metrics import FARS, predicted_same, tar_at_far

LEARNT_MARGIN = 0.1  # a pretext head whose mean class accuracy is within this of chance did not learn
Z_95 = 1.959964  # normal quantile of a two-sided 95% interval


def chance_levels(report):
    """Chance accuracy per pretext task: one over its number of classes."""
    return 1 / pd.DataFrame(report).groupby("task")["class"].nunique()


def pretext_reading(report):
    """One sentence per pretext task: mean per-class accuracy against chance, and plainly whether it learnt."""
    report = pd.DataFrame(report)
    chance = chance_levels(report)
    sentences = []
    for task, rows in report.groupby("task", sort=False):
        mean = rows["accuracy"].mean()
        verdict = (
            "it learnt this task"
            if mean >= chance[task] + LEARNT_MARGIN
            else "it did not learn this task (no better than guessing)"
        )
        sentences.append(
            f"{task}: mean class accuracy {mean:.2f} against chance {chance[task]:.2f} "
            f"({len(rows)} classes); {verdict}."
        )
    return " ".join(sentences)


def wilson_interval(correct, total, z=Z_95):
    """Wilson score interval (low, high) of a proportion correct / total; (nan, nan) for no trials."""
    correct, total = np.asarray(correct, dtype=float), np.asarray(total, dtype=float)
    with np.errstate(invalid="ignore", divide="ignore"):
        share = correct / total
        centre = (share + z**2 / (2 * total)) / (1 + z**2 / total)
        half = z * np.sqrt(share * (1 - share) / total + z**2 / (4 * total**2)) / (1 + z**2 / total)
    return centre - half, centre + half


def with_intervals(by_group):
    """`poses.accuracy_by_pose`'s table with a 95% Wilson interval of each accuracy (low, high), rounded."""
    table = pd.DataFrame(by_group).copy()
    if table.empty:  # data without pose or expression labels
        return table
    low, high = wilson_interval(table["accuracy"] * table["pairs"], table["pairs"])
    table["low"], table["high"] = low, high
    return table.round({"accuracy": 3, "auc": 3, "low": 3, "high": 3})


def tar_far_table(scores, same, fars=FARS):
    """True accept rate at each false accept rate, with the number of different-person pairs: a FAR below one
    over that number allows less than one false accept, so it cannot be measured (shown as not measurable)."""
    same = np.asarray(same, dtype=bool)
    negatives = int((~same).sum())
    rows = []
    for far in fars:
        tar = tar_at_far(scores, same, far)
        rows.append(
            {
                "FAR": f"{far:g}",
                "false accepts allowed": round(far * negatives, 2),
                "TAR": "not measurable" if tar is None else round(tar, 3),
            }
        )
    return pd.DataFrame(rows).set_index("FAR").rename_axis(f"FAR ({negatives} different-person pairs)")


def confident_errors(pairs, scores, threshold, kind, k=4):
    """The `k` most confident mistakes: kind 'false accept' (different people scored highest) or 'false reject'
    (the same person scored lowest); the rows of `pairs` with a `score` column, most confident first."""
    scores = np.asarray(scores, dtype=float)
    same = pairs["same"].to_numpy(bool)
    accepted = predicted_same(scores, threshold)
    wrong = accepted & ~same if kind == "false accept" else ~accepted & same
    chosen = pairs.assign(score=scores)[wrong]
    return chosen.sort_values("score", ascending=kind != "false accept").head(k).reset_index(drop=True)


def confused_identities(ranking, identities, k=5):
    """Which identities' clusters merge: the (probe identity, rank-1 identity) pairs of the retrieval misses,
    most frequent first, with how many probes of that identity went to the other."""
    identities = pd.Series(identities).reset_index(drop=True).to_numpy()
    missed = ~ranking.correct[:, 0]
    found = pd.DataFrame(
        {"probe identity": identities[ranking.probes[missed]], "rank-1 identity": identities[ranking.hits[missed, 0]]}
    )
    counts = found.value_counts().rename("probes").reset_index()
    return counts.head(k)


def retrieval_rows(ranking, hits=2, misses=3, seed=0):
    """Probes to draw in a retrieval panel: up to `misses` whose rank-1 is wrong and `hits` whose rank-1 is right,
    drawn with the seed, misses first."""
    rng = np.random.default_rng(seed)
    right = np.flatnonzero(ranking.correct[:, 0])
    wrong = np.flatnonzero(~ranking.correct[:, 0])
    chosen = [rng.choice(rows, size=min(n, len(rows)), replace=False) for rows, n in ((wrong, misses), (right, hits))]
    return [int(row) for row in np.concatenate(chosen)]
