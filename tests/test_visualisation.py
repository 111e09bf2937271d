import numpy as np
import pandas as pd
import pytest
import torch
from matplotlib.colors import to_rgba
from PIL import Image

from facelib import poses, visualisation
from facelib.retrieval import rank_gallery

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def assert_png(path):
    assert path.read_bytes().startswith(PNG_SIGNATURE)
    assert not list(path.parent.glob(".*.tmp"))  # written atomically: no temporary file left behind


def test_roc_marks_the_equal_error_rate(tmp_path):
    scores, same = [0.9, 0.8, 0.4, 0.7, 0.3, 0.2], [True, True, True, False, False, False]
    fig = visualisation.plot_roc(scores, same, label="model")
    (ax,) = fig.axes
    assert ax.get_title() == "ROC" and ax.get_xlabel() == "false accept rate"
    eer_points = [line for line in ax.get_lines() if line.get_marker() == "o"]
    assert len(eer_points) == 1
    assert eer_points[0].get_xydata()[0] == pytest.approx([1 / 3, 2 / 3])
    assert "EER = 0.333" in [text.get_text() for text in ax.get_legend().get_texts()]
    assert_png(visualisation.save(fig, tmp_path / "roc.png"))


def test_score_histogram_shows_both_classes_and_the_threshold(tmp_path):
    rng = np.random.default_rng(0)
    scores = np.concatenate([rng.normal(0.7, 0.1, 50), rng.normal(0.2, 0.1, 50)])
    fig = visualisation.plot_score_histogram(scores, np.arange(100) < 50, threshold=0.45)
    (ax,) = fig.axes
    labels = [text.get_text() for text in ax.get_legend().get_texts()]
    assert labels == ["same person", "different people", "threshold = 0.450"]
    assert ax.get_lines()[0].get_xdata()[0] == 0.45
    assert_png(visualisation.save(fig, tmp_path / "histogram.png"))


def test_accuracy_by_pose_draws_one_panel_per_factor(tmp_path):
    table = pd.DataFrame(
        {
            "factor": ["pose", "pose", "expression"],
            "group": ["frontal-frontal", "frontal-profile", "E1-E2"],
            "pairs": [10, 8, 6],
            "same_pairs": [5, 4, 3],
            "accuracy": [0.9, 0.6, 0.8],
            "auc": [0.95, 0.7, None],
        }
    )
    fig = visualisation.plot_accuracy_by_pose(table.to_dict(orient="records"))
    assert [ax.get_title() for ax in fig.axes] == ["Accuracy by pose", "Accuracy by expression"]
    assert [bar.get_height() for bar in fig.axes[0].patches] == [0.9, 0.6]
    assert_png(visualisation.save(fig, tmp_path / "by_pose.png"))


def test_retrieval_panel_frames_hits_green_and_red(tmp_path):
    embeddings = np.array([[1, 0], [0, 1], [-1, 0], [0.9, 0.1], [0.8, 0.6]])
    embeddings /= np.linalg.norm(embeddings, axis=1, keepdims=True)
    ranking = rank_gallery(embeddings, ["A", "B", "A", "A", "B"], np.array([True, True, True, False, False]))
    faces = torch.randint(0, 256, (5, 3, 8, 8), dtype=torch.uint8)
    fig = visualisation.plot_retrieval(faces, ranking, rows=[0, 1], k=2)
    assert len(fig.axes) == 2 * 3
    first_row_hits, second_row_hits = fig.axes[1:3], fig.axes[4:6]
    green, red = to_rgba("tab:green"), to_rgba("tab:red")
    assert [ax.spines["top"].get_edgecolor() for ax in first_row_hits] == [green, red]  # A: A then B
    assert [ax.spines["top"].get_edgecolor() for ax in second_row_hits] == [red, green]  # B: A then B
    assert fig.axes[0].get_title() == "probe"
    assert_png(visualisation.save(fig, tmp_path / "retrieval.png"))


def test_umap_panels_share_points_and_colour_by_column(tmp_path):
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(4, 16))
    vectors = np.repeat(centres, 10, axis=0) + 0.05 * rng.normal(size=(40, 16))
    images = pd.DataFrame(
        {
            "identity": np.repeat(list("ABCD"), 10),
            "yaw": np.tile(np.linspace(-90, 90, 20), 2),
            "expression": pd.array([1, 2, 3, pd.NA] * 10, dtype="Int64"),
        }
    )
    images = images.assign(pose=poses.pose_labels(images))
    fig = visualisation.plot_umap(vectors, images, color_by=("identity", "pose", "yaw", "expression"))
    panels = [ax for ax in fig.axes if ax.get_title()]
    assert [ax.get_title() for ax in panels] == [
        "coloured by identity",
        "coloured by pose",
        "coloured by yaw",
        "coloured by expression",
    ]
    assert len(fig.axes) == 5  # the four panels and the yaw colour bar
    assert [t.get_text() for t in panels[3].get_legend().get_texts()] == ["unknown", "E1", "E2", "E3"]
    assert [t.get_text() for t in panels[0].get_legend().get_texts()] == list("ABCD")
    first, second = (np.concatenate([c.get_offsets() for c in ax.collections]) for ax in panels[:2])
    assert len(first) == 40 and sorted(map(tuple, first)) == sorted(map(tuple, second))
    assert_png(visualisation.save(fig, tmp_path / "umap.png"))


def test_training_curves_plot_each_numeric_column(tmp_path):
    metrics = pd.DataFrame(
        {
            "epoch": [1, 2, 3],
            "loss": [2.0, 1.5, 1.2],
            "lr": [0.1, 0.05, 0.01],
            "val_accuracy": [np.nan, 0.7, 0.8],
            "phase": ["a", "b", "c"],
        }
    )
    metrics.to_csv(tmp_path / "metrics.csv", index=False)
    fig = visualisation.plot_training_curves(tmp_path / "metrics.csv")
    assert [ax.get_title() for ax in fig.axes] == ["loss", "lr", "val_accuracy"]
    assert fig.axes[0].get_xlabel() == "epoch"
    assert fig.axes[2].get_lines()[0].get_xdata().tolist() == [2, 3]  # the missing value is skipped
    assert_png(visualisation.save(fig, tmp_path / "curves.png"))


def test_image_grid_from_tensor_and_paths(tmp_path):
    faces = torch.randint(0, 256, (5, 3, 12, 12), dtype=torch.uint8)
    fig = visualisation.plot_image_grid(faces, titles=[f"C{i}" for i in range(5)], ncols=3, title="identity A")
    assert len(fig.axes) == 5 and fig.axes[4].get_title() == "C4"
    assert fig.axes[0].get_images()[0].get_array().shape == (12, 12, 3)
    paths = []
    for i in range(2):
        paths.append(tmp_path / f"face{i}.png")
        Image.fromarray(np.full((10, 10, 3), 40 * i, dtype=np.uint8)).save(paths[-1])
    fig = visualisation.plot_image_grid(pd.Series(paths))
    assert len(fig.axes) == 2
    assert_png(visualisation.save(fig, tmp_path / "out" / "grid.png"))


def test_attribute_counts_show_the_attributes_present(tmp_path):
    images = pd.DataFrame(
        {
            "identity": list("AABBB"),
            "split": ["train"] * 5,
            "view": [None] * 5,
            "angle": pd.array([1, 2, 1, 2, 3], dtype="Int64"),
            "yaw": [-45.0, 0.0, -45.0, 0.0, 45.0],
            "expression": pd.array([pd.NA] * 5, dtype="Int64"),
        }
    )
    fig = visualisation.plot_attribute_counts(images)
    assert [ax.get_title() for ax in fig.axes] == ["images per identity", "split", "angle", "yaw"]
    assert [bar.get_height() for bar in fig.axes[2].patches] == [2, 2, 1]  # camera codes 1, 2, 3
    assert_png(visualisation.save(fig, tmp_path / "attributes.png"))


def test_pretext_accuracy_has_one_panel_per_task(tmp_path):
    report = pd.DataFrame(
        {
            "task": ["angle", "angle", "expression"],
            "class": ["C1", "C2", "E1"],
            "accuracy": [0.9, 0.5, 0.7],
            "images": [10, 12, 8],
        }
    )
    fig = visualisation.plot_pretext_accuracy(report)
    assert [ax.get_title() for ax in fig.axes] == ["Pretext task: angle", "Pretext task: expression"]
    assert [text.get_text() for text in fig.axes[0].texts] == ["0.90\nn=10", "0.50\nn=12"]
    assert_png(visualisation.save(fig, tmp_path / "pretext.png"))
    # the bars are named by the report's labels where it has them (the class codes decoded)
    named = visualisation.plot_pretext_accuracy(report.assign(label=["C1 -90°", "C2 -68°", "neutral"]))
    visualisation.save(named, tmp_path / "named.png")  # drawing it fills in the tick labels
    assert [tick.get_text() for tick in named.axes[1].get_xticklabels()] == ["neutral"]


def test_figures_show_themselves_as_png_in_a_notebook():
    fig = visualisation.plot_roc([0.9, 0.1], [True, False])
    assert fig._repr_png_().startswith(PNG_SIGNATURE)


def test_pretext_accuracy_marks_chance_per_task():
    report = pd.DataFrame({"task": ["angle"] * 3 + ["expression"] * 2, "class": [1, 2, 3, 1, 2], "accuracy": 0.5})
    fig = visualisation.plot_pretext_accuracy(report)
    chance = [line.get_ydata()[0] for ax in fig.axes for line in ax.get_lines()]
    assert chance == pytest.approx([1 / 3, 1 / 2])


def test_pairs_are_drawn_side_by_side_with_their_score(tmp_path):
    faces = [tmp_path / f"{name}.png" for name in "abc"]
    for path in faces:
        Image.new("RGB", (8, 8), "white").save(path)
    accepts = pd.DataFrame({"a": faces[:2], "b": faces[1:], "score": [0.9, 0.8]})
    fig = visualisation.plot_pairs({"false accepts": accepts, "false rejects": accepts.iloc[:0]})
    titles = [ax.get_title() for ax in fig.axes if ax.get_title()]
    assert titles == ["score 0.90", "score 0.80"]
    assert [sub._suptitle.get_text() for sub in fig.subfigs] == ["false accepts: 2 shown", "false rejects: none"]
    assert_png(visualisation.save(fig, tmp_path / "pairs.png"))
