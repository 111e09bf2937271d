"""Figures for the notebooks and the README: each helper returns a matplotlib Figure, `save` writes a PNG.

Figures are built with `InlineFigure`, a `matplotlib.figure.Figure` without pyplot: nothing needs a display
(safe under Agg and headless runs), nothing is kept alive in pyplot's figure list. Without pyplot no backend
registers Jupyter's PNG formatter, so the figure carries its own `_repr_png_`: a notebook (JupyterLab or a
papermill copy) shows the returned figure as an image once, with no `%matplotlib` line.
Images can be given as a uint8 tensor / array [N, 3, H, W] (as `imagecache.load_images` returns) or as
file paths.
"""

import io
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib import colormaps
from matplotlib.figure import Figure
from PIL import Image
from sklearn.metrics import roc_curve

from facelib import layouts
from facelib.errors import FacelibError
from facelib.io_utils import atomic_path
from facelib.metrics import equal_error_rate

DPI = 120
SAME_COLOUR, DIFFERENT_COLOUR = "tab:green", "tab:red"
MAX_LEGEND_ENTRIES = 12
COUNTED_ATTRIBUTES = ("split", "view", "facing", "angle", "yaw", "expression", "light")


class InlineFigure(Figure):
    """A Figure that Jupyter displays as a PNG image (IPython calls `_repr_png_` on a cell's result)."""

    def _repr_png_(self):
        buffer = io.BytesIO()
        self.savefig(buffer, format="png", dpi=DPI)
        return buffer.getvalue()


def save(fig, path, dpi=None):
    """Write `fig` as a PNG, atomically; returns the path."""
    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=dpi or DPI)
    return path


def _new_axes(ax, figsize=(5, 4)):
    """Draw into `ax` when given (to overlay or compose), else into a new one-axes figure."""
    if ax is not None:
        return ax.figure, ax
    fig = InlineFigure(figsize=figsize, layout="constrained")
    return fig, fig.add_subplot()


def _grid(count, ncols, cell=2.0):
    """A figure with `count` axes in rows of `ncols` (unused cells removed)."""
    ncols = max(1, min(ncols, count))
    nrows = -(-count // ncols)
    fig = InlineFigure(figsize=(cell * ncols, cell * nrows), layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False).ravel()
    for ax in axes[count:]:
        ax.remove()
    return fig, axes[:count]


# ----------------------------------------------------------------------------------------------- verification


def plot_roc(scores, same, label=None, ax=None):
    """ROC curve (true accept rate against false accept rate) with the equal error rate marked;
    pass `ax` to overlay several models."""
    fig, ax = _new_axes(ax)
    fpr, tpr, _ = roc_curve(np.asarray(same, dtype=bool), np.asarray(scores, dtype=float))
    eer = equal_error_rate(scores, same)
    (line,) = ax.plot(fpr, tpr, label=label or "ROC")
    ax.plot([eer], [1 - eer], "o", color=line.get_color(), label=f"EER = {eer:.3f}")
    ax.plot([0, 1], [0, 1], ":", color="grey", linewidth=1)
    ax.set(xlabel="false accept rate", ylabel="true accept rate", title="ROC", xlim=(0, 1), ylim=(0, 1.01))
    ax.legend(loc="lower right")
    return fig


def plot_score_histogram(scores, same, threshold=None, bins=40, ax=None):
    """Score distributions of same-person and different-person pairs, with the decision threshold."""
    fig, ax = _new_axes(ax, figsize=(6, 4))
    scores, same = np.asarray(scores, dtype=float), np.asarray(same, dtype=bool)
    edges = np.histogram_bin_edges(scores, bins=bins)
    ax.hist(scores[same], bins=edges, alpha=0.6, color=SAME_COLOUR, label="same person")
    ax.hist(scores[~same], bins=edges, alpha=0.6, color=DIFFERENT_COLOUR, label="different people")
    if threshold is not None:
        ax.axvline(threshold, color="black", linestyle="--", label=f"threshold = {threshold:.3f}")
    ax.set(xlabel="score", ylabel="pairs", title="Pair scores")
    ax.legend()
    return fig


def _accuracy_panels(table, panel, group, count, title):
    """Bars of `accuracy` per `group`, one panel per value of `panel`, the value (and `count`) on each bar."""
    table = pd.DataFrame(table)
    names = list(table[panel].unique())
    fig = InlineFigure(figsize=(5 * len(names), 4), layout="constrained")
    for ax, name in zip(fig.subplots(1, len(names), squeeze=False).ravel(), names):
        rows = table[table[panel] == name]
        bars = ax.bar(rows[group].astype(str), rows["accuracy"], color="tab:blue")
        counts = rows[count] if count in rows else [None] * len(rows)
        ax.bar_label(
            bars,
            labels=[f"{a:.2f}" + (f"\nn={n}" if n is not None else "") for a, n in zip(rows["accuracy"], counts)],
            fontsize=8,
        )
        ax.set(ylim=(0, 1.15), ylabel="accuracy", title=title.format(name))
        ax.tick_params(axis="x", labelrotation=30)
    return fig


def plot_accuracy_by_pose(table):
    """Accuracy per pose gap and per expression pair, one panel each, pair counts on the bars.
    `table` is `poses.accuracy_by_pose`'s (or its records, as in `evaluate`'s by_pose)."""
    return _accuracy_panels(table, "factor", "group", "pairs", "Accuracy by {}")


def plot_pretext_accuracy(report):
    """Per-class accuracy of the pretext model, one panel per task (e.g. angle, expression), chance level (one
    over the task's classes) dashed. `report` is a table with columns task, class, accuracy and optionally
    images (the count shown on each bar) and label (the class as the bars name it, e.g. 'C7 +30°')."""
    report = pd.DataFrame(report)
    group = "label" if "label" in report else "class"
    fig = _accuracy_panels(report, "task", group, "images", "Pretext task: {}")
    chance = 1 / report.groupby("task", sort=False)["class"].nunique()
    for ax, level in zip(fig.axes, chance):
        ax.axhline(level, color="grey", linestyle="--", label=f"chance = {level:.2f}")
        ax.legend(loc="upper right", fontsize=8)
    return fig


# ----------------------------------------------------------------------------------------------- images


def _as_image(item):
    """HWC uint8 array from a [3, H, W] tensor / array, an HWC array, or an image path."""
    if isinstance(item, (str, Path)):
        with Image.open(item) as image:
            return np.asarray(image.convert("RGB"))
    array = np.asarray(item.cpu() if hasattr(item, "cpu") else item)
    return array.transpose(1, 2, 0) if array.ndim == 3 and array.shape[0] in (1, 3) else array


def _image_list(images):
    return list(images) if not isinstance(images, pd.Series) else images.tolist()


def _show(ax, image, title=None, frame=None):
    """An image without ticks; `frame` colours a thick border (e.g. green = correct)."""
    ax.imshow(_as_image(image))
    ax.set_xticks([])
    ax.set_yticks([])
    if title:
        ax.set_title(title, fontsize=8)
    if frame:
        for spine in ax.spines.values():
            spine.set(edgecolor=frame, linewidth=4)


def plot_attribute_counts(images, ncols=4):
    """How the images spread: a histogram of images per identity, then image counts per value of each
    attribute the data has (split, view, facing, camera angle, expression, light; a histogram for yaw)."""
    columns = [c for c in COUNTED_ATTRIBUTES if c in images and images[c].notna().any()]
    fig, axes = _grid(1 + len(columns), ncols, cell=3.0)
    axes[0].hist(images.groupby("identity").size(), bins=20, color="tab:blue")
    axes[0].set(title="images per identity", xlabel="images", ylabel="identities")
    for ax, column in zip(axes[1:], columns):
        values = images[column].dropna()
        if pd.api.types.is_float_dtype(values):
            ax.hist(values, bins=36, color="tab:blue")
        else:  # bars in code order, labelled with what each code means where the data says it
            labels = layouts.code_labels(images, column).dropna()
            counts = pd.DataFrame({"value": values, "label": labels}).groupby(["value", "label"]).size()
            ax.bar(counts.index.get_level_values("label").astype(str), counts.to_numpy(), color="tab:blue")
            ax.tick_params(axis="x", labelrotation=90 if len(counts) > 8 else 0)
        ax.set(title=column, ylabel="images")
    return fig


def plot_image_grid(images, titles=None, ncols=8, title=None):
    """Images in a grid (e.g. one identity across camera angles and expressions) with optional titles."""
    images = _image_list(images)
    titles = None if titles is None else list(titles)
    fig, axes = _grid(len(images), ncols, cell=1.6)
    for i, (ax, image) in enumerate(zip(axes, images)):
        _show(ax, image, None if titles is None else str(titles[i]))
    if title:
        fig.suptitle(title)
    return fig


def plot_retrieval(faces, ranking, rows=range(4), k=5):
    """Probes with their top-k gallery images, correct identities framed green and wrong ones red.

    `faces` holds the images of the embedding rows (uint8 tensor or paths); `ranking` is a
    `retrieval.Ranking`; `rows` picks which of its probes to draw (one figure row each)."""
    faces, rows = _image_list(faces), list(rows)
    k = min(k, ranking.hits.shape[1])
    fig = InlineFigure(figsize=(1.7 * (k + 1), 1.9 * len(rows)), layout="constrained")
    axes = fig.subplots(len(rows), k + 1, squeeze=False)
    for line, row in zip(axes, rows):
        _show(line[0], faces[ranking.probes[row]], "probe")
        for rank in range(k):
            colour = SAME_COLOUR if ranking.correct[row, rank] else DIFFERENT_COLOUR
            _show(
                line[rank + 1],
                faces[ranking.hits[row, rank]],
                f"#{rank + 1}  {ranking.similarity[row, rank]:.2f}",
                frame=colour,
            )
    fig.suptitle(f"Retrieval: probe and top-{k} gallery matches (green = same identity)")
    return fig


def plot_pairs(groups, cell=1.6):
    """Face pairs side by side with their score, one figure row per group: `groups` maps a title (e.g. 'false
    accepts') to a table with columns a, b (image paths) and score."""
    width = max(1, 2 * max(len(pairs) for pairs in groups.values()))
    fig = InlineFigure(figsize=(cell * width, (cell + 0.4) * len(groups)), layout="constrained")
    rows = fig.subfigures(len(groups), 1, squeeze=False).ravel()
    for row, (title, pairs) in zip(rows, groups.items()):
        row.suptitle(f"{title}: {len(pairs)} shown" if len(pairs) else f"{title}: none")
        axes = row.subplots(1, width, squeeze=False).ravel()
        for ax in axes:
            ax.axis("off")
        for i, pair in enumerate(pairs.itertuples()):
            _show(axes[2 * i], pair.a, f"score {pair.score:.2f}")
            _show(axes[2 * i + 1], pair.b)
    return fig


# ----------------------------------------------------------------------------------------------- embeddings


def umap_2d(vectors, random_state=0, n_neighbors=15):
    """2-D UMAP of embeddings (cosine metric), reproducible for a given `random_state`; the neighbourhood
    shrinks for small sets so that it always fits the data."""
    import umap  # imported here: it compiles with numba on first use, which only UMAP figures should pay for

    n_neighbors = max(2, min(n_neighbors, len(vectors) - 1))
    reducer = umap.UMAP(n_neighbors=n_neighbors, metric="cosine", random_state=random_state, n_jobs=1)
    return reducer.fit_transform(np.asarray(vectors))


def _scatter(ax, coords, values, name):
    """Colour points by a column: a colour bar for continuous numbers (e.g. yaw), categories otherwise."""
    values = pd.Series(values).reset_index(drop=True)
    unknown = values.isna().to_numpy()
    ax.scatter(*coords[unknown].T, s=6, color="lightgrey", label="unknown" if unknown.any() else None)
    if pd.api.types.is_float_dtype(values) and values.nunique() > MAX_LEGEND_ENTRIES:
        points = ax.scatter(*coords[~unknown].T, s=8, c=values[~unknown], cmap="viridis")
        ax.figure.colorbar(points, ax=ax, label=name)
        return
    categories = sorted(values.dropna().unique())
    palette = colormaps["tab10" if len(categories) <= 10 else "tab20"]  # cycles beyond 20 identities
    for i, category in enumerate(categories):
        chosen = values.eq(category).fillna(False).to_numpy(bool)
        ax.scatter(*coords[chosen].T, s=8, color=palette(i % palette.N), label=str(category))
    if 0 < len(categories) <= MAX_LEGEND_ENTRIES:
        ax.legend(title=name, fontsize=7, markerscale=2, loc="best")


def plot_umap(vectors, images, color_by=("identity",), random_state=0, title=None, coords=None):
    """UMAP of the embeddings, one panel per column of `images` in `color_by` (e.g. identity, pose,
    expression), all panels showing the same points. Pass `coords` (from `umap_2d`) to skip the fit."""
    coords = umap_2d(vectors, random_state) if coords is None else np.asarray(coords)
    fig = InlineFigure(figsize=(4.5 * len(color_by), 4), layout="constrained")
    for ax, column in zip(fig.subplots(1, len(color_by), squeeze=False).ravel(), color_by):
        _scatter(ax, coords, layouts.code_labels(images, column), column)
        ax.set(title=f"coloured by {column}", xticks=[], yticks=[])
    fig.suptitle(title or "UMAP of the embeddings")
    return fig


# ----------------------------------------------------------------------------------------------- training


def plot_training_curves(metrics, ncols=3):
    """One small panel per numeric column of a training metrics table (CSV path or DataFrame), against
    `step` if present, else `epoch`, else the row number."""
    table = pd.read_csv(metrics) if isinstance(metrics, (str, Path)) else pd.DataFrame(metrics)
    x_name = next((name for name in ("step", "epoch") if name in table), None)
    x = table[x_name] if x_name else pd.Series(range(len(table)))
    columns = [c for c in table.select_dtypes("number").columns if c not in ("step", "epoch")]
    if not columns:
        raise FacelibError(f"{metrics if isinstance(metrics, (str, Path)) else 'metrics'}: no numeric column to plot")
    fig, axes = _grid(len(columns), ncols, cell=3.0)
    for ax, column in zip(axes, columns):
        known = table[column].notna()
        ax.plot(x[known], table.loc[known, column], marker="." if known.sum() <= 50 else None)
        ax.set(title=column, xlabel=x_name or "row")
    return fig
