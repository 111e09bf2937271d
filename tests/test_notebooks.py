"""The notebook series, executed headlessly with papermill on the smoke profile (conftest.smoke_run), judged by
what it writes."""

import json
import re
import shutil

import pandas as pd
import pytest

from facelib import layouts, synthetic
from facelib.errors import FacelibError
from facelib.notebooks import FIGURES_WITH_FACES, NOTEBOOKS, refresh_reference_figures, run_series, setup

pytestmark = pytest.mark.slow
FIGURES = [
    "sample_faces",
    "attribute_counts",
    "one_identity",
    "pretext_curves",
    "pretext_accuracy",
    "triarchy_curves",
    "umap_triarchy",
    "umap_pretext",
    "retrieval",
    "roc",
    "score_histogram",
    "accuracy_by_pose",
    "error_pairs",
]


def test_every_notebook_is_executed_without_error(smoke_run):
    run_dir, _, _ = smoke_run
    for name in NOTEBOOKS:
        executed = json.loads((run_dir / f"{name}.ipynb").read_text())
        outputs = [o for cell in executed["cells"] for o in cell.get("outputs", [])]
        assert outputs and not [o for o in outputs if o["output_type"] == "error"], name


def test_every_figure_is_shown_inline(smoke_run):
    """A reader of the executed copy sees a picture for every figure the notebook keeps, not '<Figure ...>'."""
    run_dir, _, _ = smoke_run
    for name in NOTEBOOKS:
        cells = json.loads((run_dir / f"{name}.ipynb").read_text())["cells"]
        code = [cell for cell in cells if cell["cell_type"] == "code"]
        figures = sum("".join(cell["source"]).count(".keep(") for cell in code)
        images = sum("image/png" in output.get("data", {}) for cell in code for output in cell["outputs"])
        assert figures and images >= figures, f"{name}: {images} images for {figures} figures"


def test_training_files_and_inference_size(smoke_run):
    run_dir, _, _ = smoke_run
    for name in [
        "pretext.pt",
        "model.pt",
        "last.pt",
        "metrics.csv",
        "config.json",
        "train.log",
        "synthetic_start/last.pt",
        "baseline/model.pt",
        "triarchy_from_scratch/model.pt",
    ]:
        assert (run_dir / name).is_file(), name
    # the smoke profile has a synthetic start (as cfp has), so 03's Triarchy and its Baseline neighbour start from it
    for folder in (run_dir, run_dir / "baseline"):
        assert json.loads((folder / "config.json").read_text())["settings"]["init"] == str(
            run_dir / "synthetic_start" / "last.pt"
        )
    assert json.loads((run_dir / "config.json").read_text())["inference_parameters"] == 4_663_420
    metrics = pd.read_csv(run_dir / "metrics.csv")
    assert list(metrics["epoch"]) == [1, 2] and metrics["val_accuracy"].between(0, 1).all()


def test_each_profile_starts_and_names_its_identity_runs(kface_challenge, tmp_path):
    """03 starts from the profile's synthetic start, else the pretext 02 made, else from scratch; its tables and
    figures name the model and start, and its ablations are the other model from the same start and its own from
    scratch. The cfp profile trains the best CFP recipe (benchmarks/results/cfp.md)."""
    data, _ = kface_challenge
    default = setup(data, tmp_path / "default", "default")
    assert default.start() is None and default.title(default.model, None) == "Triarchy from scratch"
    (tmp_path / "default" / "pretext.pt").touch()
    pretext = tmp_path / "default" / "pretext.pt"
    assert default.start() == pretext and default.title(default.model, pretext) == "Triarchy (pretext init)"
    assert default.ablation_runs(pretext) == {
        "Baseline (pretext init)": ("baseline", dict(model="baseline", init=pretext)),
        "Triarchy from scratch": ("triarchy_from_scratch", dict(init=None)),
    }
    assert list(default.ablation_runs(None)) == ["Baseline from scratch"]

    cfp = setup(data, tmp_path / "cfp", "cfp")
    start = tmp_path / "cfp" / "synthetic_start" / "last.pt"
    assert cfp.start() == start and cfp.synthetic_start == 2000
    identity = cfp.identity_config(init=start)
    assert (identity.model, identity.image_size, identity.epochs, identity.align) == ("baseline", 112, 40, True)
    assert list(cfp.ablation_runs(start)) == ["Triarchy (synthetic start)", "Baseline from scratch"]


def test_a_finished_synthetic_start_is_reused_without_making_its_set(smoke_run, tmp_path, monkeypatch):
    """Re-running 02 after the synthetic start's set was deleted returns the finished start; it makes nothing."""
    run_dir, data, _ = smoke_run
    start = tmp_path / "run" / "synthetic_start" / "last.pt"
    start.parent.mkdir(parents=True)
    shutil.copy(run_dir / "synthetic_start" / "last.pt", start)
    before = start.stat().st_mtime_ns

    def set_deleted(*args, **kwargs):
        raise AssertionError("the synthetic set was made again")

    monkeypatch.setattr(synthetic, "pretraining_set", set_deleted)
    assert setup(data, tmp_path / "run", "smoke").train_synthetic_start() == start
    assert start.stat().st_mtime_ns == before
    # a start trained at another size is not the one asked for: training's resume decides (and warns)
    with pytest.raises(AssertionError, match="made again"):
        setup(data, tmp_path / "run", "smoke", image_size=40).train_synthetic_start()


def test_metrics_are_written_and_in_range(smoke_run):
    run_dir, _, _ = smoke_run
    result = json.loads((run_dir / "test_metrics.json").read_text())
    for key in ("accuracy", "auc", "eer", "f1"):
        assert 0 <= result[key] <= 1, key
    assert result["threshold_source"] == "best accuracy on split validate"
    assert 0 <= result["retrieval"]["rank1"] <= result["retrieval"]["rank5"] <= 1


def test_prediction_file_follows_the_competition_format(smoke_run):
    run_dir, data, _ = smoke_run
    predictions = pd.read_csv(run_dir / "predictions.csv")
    expected = pd.read_csv(data / "test" / "test_label.csv")
    assert list(predictions.columns) == ["image1", "image2", "label", "score"]
    assert predictions[["image1", "image2"]].equals(expected[["image1", "image2"]])
    assert set(predictions["label"]) <= {0, 1}


def test_figures_are_saved_for_the_run_only(smoke_run):
    run_dir, _, kept_figures = smoke_run
    for name in FIGURES:
        assert (run_dir / "figures" / f"{name}.png").stat().st_size > 5_000, name
    # the reference figures in the repo belong to the default run, never to a smoke run
    assert {path: path.stat().st_mtime for path in kept_figures} == kept_figures


def test_reference_figures_of_real_data_show_no_faces(smoke_run, tmp_path):
    run_dir, data, _ = smoke_run
    synthetic = refresh_reference_figures(run_dir, synthetic=True, figures=tmp_path / "synthetic")
    real = refresh_reference_figures(run_dir, synthetic=False, figures=tmp_path / "real")
    assert set(synthetic) == {f"{name}.png" for name in FIGURES}
    assert set(real) == {f"{data.name}_{name}.png" for name in FIGURES if name not in FIGURES_WITH_FACES}
    assert sorted(path.name for path in (tmp_path / "real").iterdir()) == sorted(real)


def test_a_run_folder_refuses_other_data(smoke_run, tmp_path):
    """Its checkpoints would be resumed and scored on the new data: a one-line error naming both, before any work."""
    run_dir, data, _ = smoke_run
    other = tmp_path / "my_faces"
    expected = re.escape(f"run folder {run_dir} was made from data {data}, not {other}")
    with pytest.raises(FacelibError, match=expected):
        run_series(profile="smoke", data=other, out=run_dir)
    with pytest.raises(FacelibError, match=expected):  # the same from a notebook's own setup cell
        setup(other, run_dir, "smoke")
    assert json.loads((run_dir / "data.json").read_text()) == {"data": str(data)}


def test_a_failing_cell_names_the_notebook_and_cell(tmp_path):
    with pytest.raises(FacelibError, match=r"01_data_exploration\.ipynb failed in cell \d+: DataError"):
        run_series(profile="smoke", data=tmp_path / "missing", out=tmp_path / "run", notebooks=NOTEBOOKS[:1])


def test_plain_identity_folders_go_through_the_series(smoke_run, tmp_path, monkeypatch):
    """No pose labels and no pairs: 02 says so and trains no pretext, 03 starts from the profile's synthetic start
    (it needs no labels of the data), 05 scores pairs drawn with the seed."""
    _, data, _ = smoke_run
    folders = tmp_path / "my_faces"
    images = layouts.load(data).images
    for identity in images["identity"].unique()[:8]:
        for number, path in enumerate(images.loc[images["identity"] == identity, "path"].iloc[:6]):
            (folders / str(identity)).mkdir(parents=True, exist_ok=True)
            shutil.copyfile(path, folders / str(identity) / f"{number}.png")
    monkeypatch.setenv("FACELIB_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("FACELIB_DATA", str(tmp_path / "data"))  # where the synthetic start's set is made

    run_dir = run_series(profile="smoke", data=folders, out=tmp_path / "run")

    pretext_notebook = (run_dir / "02_pretext_training.ipynb").read_text()
    assert "no pretext labels" in pretext_notebook and not (run_dir / "pretext.pt").exists()
    init = json.loads((run_dir / "config.json").read_text())["settings"]["init"]
    assert init == str(run_dir / "synthetic_start" / "last.pt")
    result = json.loads((run_dir / "test_metrics.json").read_text())
    assert result["threshold_source"] == "10-fold protocol" and 0 <= result["accuracy"] <= 1
    assert result["pairs"] == 240  # 8 identities x 15 same-person pairs each, as many different-person pairs
