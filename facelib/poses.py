"""Pose groups: each image's pose (frontal / half-profile / profile), and each pair's pose gap, expression pair
and camera pair, with the accuracy per group."""

import numpy as np
import pandas as pd

from facelib import layouts
from facelib.metrics import accuracy_by_group

POSES = ("frontal", "half-profile", "profile")
# Canonical facing (IdentityConfig.canonical_facing) shows every face whose facing is known turned this way, the
# way the alignment templates' profile looks (facelib.alignment): faces facing the other way are mirrored.
CANONICAL_FACING = "right"


# |yaw| bin edges in degrees: frontal, half-profile, profile. They lie between the cameras of both usual
# layouts (every 15 degrees; every 22.5 as in the synthetic set, with a few degrees of jitter), so no
# camera straddles two bins: 0-30 frontal, 45-67.5 half-profile, 75-90 profile.
POSE_EDGES = (37.5, 72.5)


def pose_labels(images):
    """'frontal' / 'half-profile' / 'profile' per image: the |yaw| bin where yaw is known (the finer label),
    else the `view` (CFP; K-Face's cam_angle front / side), else None."""
    from_yaw = pd.cut(images["yaw"].abs(), [0, *POSE_EDGES, np.inf], labels=POSES, include_lowest=True).astype(object)
    view = images["view"].astype(object) if "view" in images else from_yaw
    labels = from_yaw.where(from_yaw.notna(), view)
    return labels.where(labels.notna(), None).rename("pose")


def canonical_facing(images):
    """(known, mirrored): bool arrays aligned with `images`: whose facing is known ('left' / 'right'; the
    `facing` column, from CFP's fiducials or a K-Face camera's yaw), and which of them canonical facing mirrors."""
    facing = images["facing"] if "facing" in images else pd.Series(None, index=images.index, dtype=object)
    known = facing.isin(["left", "right"]).to_numpy(bool)
    return known, known & (facing != CANONICAL_FACING).to_numpy(bool)


def _pair_label(first, second, order):
    """'x-y' with the two values in `order` (None if either is unknown)."""
    if pd.isna(first) or pd.isna(second):
        return None
    return "-".join(sorted([str(first), str(second)], key=order))


def _code_labels(table, column):
    """Each image's label of a code column ('C7'; an expression's name where the data gives it, else 'E1'; None
    where unknown or the column is absent) and a sort key that puts the labels in code order."""
    if column not in table:
        return pd.Series(None, index=table.index, dtype=object), str
    codes = table[column]
    if column == "expression":
        labels = layouts.code_labels(table, column)
    else:
        labels = ("C" + codes.astype(str)).astype(object).where(codes.notna(), None)
    return labels, dict(zip(labels, codes)).get


def pair_groups(pairs, images):
    """The pose gap ('frontal-profile', ...), expression pair ('neutral-smile' where the data names its
    expressions, else 'E1-E2') and camera pair ('C5-C9', K-Face camera codes) of each pair, as a table with
    columns pose, expression and camera aligned with `pairs`."""
    table = images.drop_duplicates("path").set_index("path")
    pose = pose_labels(table.reset_index()).set_axis(table.index)
    factors = {"pose": (pose, POSES.index), "expression": _code_labels(table, "expression")}
    factors["camera"] = _code_labels(table, "angle")
    columns = {}
    for name, (values, order) in factors.items():
        first, second = values.reindex(pairs["a"]), values.reindex(pairs["b"])
        columns[name] = [_pair_label(x, y, order) for x, y in zip(first, second)]
    return pd.DataFrame(columns, index=pairs.index, dtype=object)


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
