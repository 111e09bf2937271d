"""Run the numbered notebooks headlessly (papermill) and resolve the settings they share.

Every notebook starts with a `parameters` cell (data, run_dir, profile, epochs, image_size, seed,
device) and calls `setup(...)`, which fills what was left as None from the profile and makes sure the
data exists. `run_series` executes 01-05 in order into the run folder; the same works as five plain
`papermill` commands.
"""

import json
import sys
from dataclasses import dataclass
from pathlib import Path

from facelib.errors import FacelibError
from facelib.io_utils import atomic_write_text

REPO = Path(__file__).resolve().parents[1]
NOTEBOOK_DIR = REPO / "notebooks"
NOTEBOOKS = [
    "01_data_exploration",
    "02_pretext_training",
    "03_triarchy_finetuning",
    "04_embedding_visualisation",
    "05_test_inference",
]

# Each profile overrides the training configs (facelib.recipe; whatever it leaves out keeps the config's default):
# `default` is the README's main job (2 CPU cores, under 15 minutes; tuned in benchmarks/results/synthetic.md),
# a shorter identity run than the recipe's 40 epochs; `smoke` checks that every cell runs; `cfp` is the best recipe
# benchmarks/cfp.py measured on real faces (benchmarks/results/cfp.md): the Baseline at 112 px on faces aligned to
# their view's landmark template, 40 epochs, started from one epoch on 2,000 synthetic identities.
# `identities`: the size of the profile's own synthetic set; `synthetic_start`: the identities of a synthetic start
# (recipe.synthetic_start) that 02 trains and 03 starts from instead of the pretext.
PROFILES = {
    "default": dict(pretext=dict(epochs=4), identity=dict(epochs=20), ablations=False),
    "smoke": dict(
        identities=16,
        synthetic_start=16,
        pretext=dict(image_size=32, epochs=1, batch=(4, 4)),
        identity=dict(image_size=32, epochs=2, batch=(4, 4)),
        ablations=True,
    ),
    "cfp": dict(
        synthetic_start=2000,
        pretext=dict(image_size=112, epochs=3, batch=(16, 4), align=True),
        identity=dict(model="baseline", image_size=112, epochs=40, align=True),
        ablations=False,
    ),
}
SYNTHETIC_START = "synthetic_start"  # the run's sub-folder that holds it
DATA_RECORD = "data.json"  # in the run folder: which data set its checkpoints were trained on
# Figures that show faces: refreshed into figures/ only for the generated synthetic faces, never for real data.
FIGURES_WITH_FACES = {"sample_faces", "one_identity", "retrieval", "error_pairs"}


@dataclass
class Settings:
    """What one notebook needs: the resolved parameters and where its files go."""

    data: str
    format: str
    run_dir: str
    profile: str
    pretext: dict  # overrides of facelib.recipe.PretextConfig: the profile's, then the notebook's parameters
    identity: dict  # ... and of facelib.recipe.IdentityConfig
    seed: int
    device: str
    ablations: bool
    synthetic_start: int | None  # identities of the synthetic start 03 starts from; None: the pretext's start
    train_folds: list  # CFP: the folds that train, and those that validate and test (facelib.splits)
    val_folds: list
    test_pairs: dict  # the pairs the notebooks report on, as a `select_pairs` filter (splits.test_selection)

    def path(self, name):
        return Path(self.run_dir) / name

    def pretext_config(self):
        from facelib.recipe import PretextConfig

        return PretextConfig(
            self.data, seed=self.seed, device=self.device, train_folds=self.train_folds, **self.pretext
        )

    def identity_config(self, **overrides):
        """The identity run's config; `overrides` (e.g. model, init) win over the profile's."""
        from facelib.recipe import IdentityConfig

        settings = dict(seed=self.seed, device=self.device, train_folds=self.train_folds, val_folds=self.val_folds)
        return IdentityConfig(self.data, **settings, **{**self.identity, **overrides})

    def exists(self, name):
        return self.path(name).exists()

    @property
    def model(self):
        from facelib.recipe import IdentityConfig, default

        return self.identity.get("model", default(IdentityConfig, "model"))

    def train_synthetic_start(self):
        """Train (or resume) the profile's synthetic start in the run's synthetic_start/ folder, at the identity
        run's image size and batch; its last checkpoint, or None where the profile has no synthetic start."""
        if not self.synthetic_start:
            return None
        from facelib import recipe, training

        identity = self.identity_config()
        asked = dict(image_size=identity.image_size, batch=identity.batch, seed=self.seed)
        last = self.path(SYNTHETIC_START) / "last.pt"
        # a finished start as asked is returned before its config would make the set again (if deleted since);
        # one trained otherwise goes on to training's resume, which warns about each setting that differs
        if training.finished(last, **asked):
            return last
        config = recipe.synthetic_start(self.synthetic_start, **asked, device=self.device)
        training.train_identity(config, last.parent, resume=last.exists())
        return last

    def start(self):
        """The checkpoint whose backbone starts identity training (03): the profile's synthetic start, else the
        pretext (02), else None (data without pretext labels: from scratch)."""
        if self.synthetic_start:
            return self.path(SYNTHETIC_START) / "last.pt"
        return self.path("pretext.pt") if self.exists("pretext.pt") else None

    def title(self, model, init):
        """How tables and figures name an identity run: its model and where it started."""
        if init is None:
            return f"{model.capitalize()} from scratch"
        return f"{model.capitalize()} ({'synthetic start' if self.synthetic_start else 'pretext init'})"

    def ablation_runs(self, init):
        """03's neighbours of the run it trains from `init`: {title: (sub-folder, identity_config overrides)}: the
        other model from the same start, and the same model from scratch (where the run did not start from it)."""
        other = "baseline" if self.model == "triarchy" else "triarchy"
        runs = {self.title(other, init): (other, dict(model=other, init=init))}
        if init is not None:
            runs[self.title(self.model, None)] = (f"{self.model}_from_scratch", dict(init=None))
        return runs

    def keep(self, fig, name):
        """Save a figure as PNG in the run's figures/ and return it, so the notebook shows it inline
        (facelib.visualisation's figures display themselves as PNG)."""
        from facelib.visualisation import save

        save(fig, self.path("figures") / f"{name}.png")
        return fig

    def load(self):
        """The data set (layouts.load); where it has no verification pairs (plain identity folders), with pairs
        drawn with the seed (splits.with_sampled_pairs)."""
        from facelib import layouts, splits

        return splits.with_sampled_pairs(layouts.load(self.data), self.seed)

    @property
    def has_pretext_labels(self):
        """Whether the training images carry labels for a pretext task (camera angle + expression, or view +
        facing); plain identity folders do not."""
        from facelib import layouts, splits, training

        images = splits.training_images(layouts.load(self.data), self.train_folds)
        try:
            training.pretext_labels(images)
        except FacelibError:
            return False
        return True

    def write_json(self, name, obj):
        atomic_write_text(self.path(name), json.dumps(obj, indent=2, default=str))

    def test_images(self, faces):
        """The images of the reported pairs."""
        from facelib import splits

        return splits.pair_images(faces.images, splits.select_pairs(faces, **self.test_pairs))

    def held_out_images(self):
        """Images no model trains on (facelib.splits)."""
        from facelib import splits

        return splits.held_out_images(self.load(), self.val_folds)


def profile_settings(profile):
    if profile not in PROFILES:
        raise FacelibError(f"unknown profile {profile!r}: expected one of {', '.join(PROFILES)}")
    return PROFILES[profile]


def setup(
    data=None,
    run_dir="runs/main",
    profile="default",
    epochs=None,
    pretext_epochs=None,
    image_size=None,
    seed=0,
    device="auto",
    ablations=None,
):
    """Settings for one notebook: explicit values win, the profile fills the rest, synthetic data is made if needed."""
    from facelib import layouts, splits

    preset = profile_settings(profile)
    if data is None:
        from facelib import synthetic

        data = data_path(data, profile)
        if "identities" not in preset:
            synthetic.ensure_default(data)
        elif not data.exists():
            synthetic.generate(data, identities=preset["identities"], seed=0)
    record_data(run_dir, data)
    data_format = layouts.detect_format(Path(data).resolve())
    cfp = data_format == "cfp"
    val_folds = splits.CFP_HELD_OUT_FOLDS if cfp else None
    Path(run_dir, "figures").mkdir(parents=True, exist_ok=True)
    return Settings(
        data=str(data),
        format=data_format,
        run_dir=str(run_dir),
        profile=profile,
        pretext=_overrides(preset["pretext"], epochs=pretext_epochs, image_size=image_size),
        identity=_overrides(preset["identity"], epochs=epochs, image_size=image_size),
        seed=seed,
        device=device,
        ablations=preset["ablations"] if ablations is None else ablations,
        synthetic_start=preset.get("synthetic_start"),
        train_folds=splits.CFP_TRAIN_FOLDS if cfp else None,
        val_folds=val_folds,
        test_pairs=splits.test_selection(layouts.load(data), val_folds),
    )


def _overrides(profile_overrides, **parameters):
    """A profile's overrides of a config, with the notebook's parameters that were set (None: the profile's)."""
    return {**profile_overrides, **{name: value for name, value in parameters.items() if value is not None}}


def data_path(data, profile):
    """The data set a series uses: `data`, else the generated synthetic faces: the default set, or for a profile
    that sets its own number of identities (smoke) a smaller set of its own, so it never replaces the default."""
    if data is not None:
        return Path(data).resolve()
    from facelib import synthetic

    default = synthetic.default_path().resolve()
    return default if "identities" not in PROFILES[profile] else default.with_name(f"synthetic-{profile}")


def record_data(run_dir, data):
    """Tie a run folder to its data set: the notebooks resume the checkpoints they find, so running them on
    other data in the same folder would evaluate the old model on the new data."""
    record = Path(run_dir) / DATA_RECORD
    data = str(Path(data).resolve())
    if record.exists():
        made_from = json.loads(record.read_text())["data"]
        if made_from != data:
            raise FacelibError(
                f"run folder {run_dir} was made from data {made_from}, not {data}: choose another run folder (--out)"
            )
        return
    Path(run_dir).mkdir(parents=True, exist_ok=True)
    atomic_write_text(record, json.dumps({"data": data}, indent=2))


def run_series(
    profile="default", data=None, out="runs/main", device="auto", notebooks=NOTEBOOKS, refresh_figures=False
):
    """Execute the notebooks in order into `out`; a failing cell stops the series with its notebook and cell.
    refresh_figures: then copy the run's figures into the repo's figures/ (see `refresh_reference_figures`)."""
    import papermill

    profile_settings(profile)  # a wrong name fails here, not in the first notebook
    out = Path(out).resolve()
    record_data(out, data_path(data, profile))  # before any work: a one-line error for the wrong folder
    parameters = dict(
        data=None if data is None else str(Path(data).resolve()), run_dir=str(out), profile=profile, device=device
    )
    for number, name in enumerate(notebooks, 1):
        try:
            papermill.execute_notebook(
                NOTEBOOK_DIR / f"{name}.ipynb",
                out / f"{name}.ipynb",
                parameters=parameters,
                cwd=str(NOTEBOOK_DIR),
                kernel_name="python3",
                # the terminal shows which notebook and cell runs (a bar), and above it what the cells print
                # (training: one line per epoch with the time left); tables and figures stay in the notebook
                progress_bar=dict(desc=f"{name} ({number}/{len(notebooks)})", unit="cell", file=sys.stderr),
                stdout_file=_AboveTheBar(),
                stderr_file=_AboveTheBar(),
                # the kernel's own log: its TCP warning and its KeyboardInterrupt line at shutdown are noise here
                extra_arguments=["--IPKernelApp.log_level=CRITICAL"],
            )
        except papermill.PapermillExecutionError as error:
            raise FacelibError(
                f"{name}.ipynb failed in cell {error.exec_count}: {error.ename}: {error.evalue} "
                f"(executed copy: {out / f'{name}.ipynb'})"
            ) from None
    if refresh_figures:
        refresh_reference_figures(out, synthetic=data is None)
    return out


class _AboveTheBar:
    """A file for papermill's stream outputs: each line is printed above the progress bar."""

    def __init__(self):
        self.pending = ""

    def write(self, text):
        from tqdm import tqdm

        lines = (self.pending + text.replace("\r", "\n")).split("\n")
        self.pending = lines.pop()
        for line in filter(str.strip, lines):
            tqdm.write(line, file=sys.stderr)

    def flush(self):
        pass


def refresh_reference_figures(run_dir, synthetic, figures=REPO / "figures"):
    """Copy a run's figures into the README's figures/: all of them for the generated synthetic faces; for
    real data only those without face images (real faces are never committed), named `<data>_<figure>.png`."""
    from facelib.io_utils import atomic_path

    run_dir = Path(run_dir)
    prefix = "" if synthetic else Path(json.loads((run_dir / DATA_RECORD).read_text())["data"]).name + "_"
    copied = []
    for png in sorted((run_dir / "figures").glob("*.png")):
        if synthetic or png.stem not in FIGURES_WITH_FACES:
            with atomic_path(figures / f"{prefix}{png.name}") as tmp:
                tmp.write_bytes(png.read_bytes())
            copied.append(prefix + png.name)
    return copied
