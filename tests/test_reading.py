import numpy as np
import pandas as pd
import pytest

from facelib import reading
from facelib.retrieval import Ranking


def test_pretext_reading_says_which_head_learnt():
    report = pd.DataFrame(
        {
            "task": ["angle"] * 3 + ["expression"] * 3,
            "class": [1, 2, 3, 1, 2, 3],
            "accuracy": [0.9, 0.8, 0.7, 0.4, 0.3, 0.35],
        }
    )
    text = reading.pretext_reading(report)
    assert "angle: mean class accuracy 0.80 against chance 0.33 (3 classes); it learnt" in text
    assert "expression: mean class accuracy 0.35 against chance 0.33 (3 classes); it did not learn" in text


def test_wilson_interval_matches_the_textbook_value():
    low, high = reading.wilson_interval(8, 10)
    assert (round(float(low), 3), round(float(high), 3)) == (0.490, 0.943)
    table = reading.with_intervals(pd.DataFrame({"group": ["a"], "pairs": [10], "accuracy": [0.8], "auc": [None]}))
    assert table.loc[0, "low"] < 0.8 < table.loc[0, "high"]
    assert reading.with_intervals([]).empty  # no pose labels, no groups


def test_tar_far_table_marks_a_far_too_small_for_the_negatives():
    scores, same = np.r_[np.linspace(0.5, 1, 50), np.linspace(0, 0.6, 200)], np.r_[[True] * 50, [False] * 200]
    table = reading.tar_far_table(scores, same, fars=(1e-1, 1e-3))
    assert table.index.name == "FAR (200 different-person pairs)"
    assert table.loc["0.001", "TAR"] == "not measurable" and table.loc["0.001", "false accepts allowed"] == 0.2
    assert 0 < table.loc["0.1", "TAR"] <= 1


def test_confident_errors_are_the_most_confident_mistakes():
    pairs = pd.DataFrame({"a": list("abcde"), "b": list("vwxyz"), "same": [False, False, True, True, False]})
    scores = [0.9, 0.7, 0.1, 0.3, 0.2]
    accepts = reading.confident_errors(pairs, scores, 0.5, "false accept")
    rejects = reading.confident_errors(pairs, scores, 0.5, "false reject")
    assert list(accepts["a"]) == ["a", "b"] and list(rejects["a"]) == ["c", "d"]


@pytest.fixture
def ranking():
    # probes 0-2 (identities x, x, y) against gallery rows 3-4 (identities x, y): probe 1 and 2 miss at rank 1
    return Ranking(
        probes=np.array([0, 1, 2]),
        hits=np.array([[3, 4], [4, 3], [3, 4]]),
        similarity=np.array([[0.9, 0.1], [0.8, 0.7], [0.6, 0.5]]),
        correct=np.array([[True, False], [False, True], [False, True]]),
    )


def test_confused_identities_counts_the_misses(ranking):
    table = reading.confused_identities(ranking, ["x", "x", "y", "x", "y"])
    assert table.to_dict("records") == [
        {"probe identity": "x", "rank-1 identity": "y", "probes": 1},
        {"probe identity": "y", "rank-1 identity": "x", "probes": 1},
    ]


def test_retrieval_rows_put_misses_first(ranking):
    rows = reading.retrieval_rows(ranking, hits=1, misses=1)
    assert rows[0] in (1, 2) and rows[1] == 0
