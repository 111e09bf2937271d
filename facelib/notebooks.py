"""Run the numbered notebooks headlessly (papermill) and resolve the settings they share.

Every notebook starts with a `parameters` cell (data, run_dir, profile, epochs, image_size, seed,
device) and calls `setup(...)`, which fills what was left as None from the profile and makes sure the
data exists. `run_series` executes 01-05 in order into the run folder; the same works as five plain
`papermill` commands.
"""

import os
from dataclasses import dataclass
from pathlib import Path

from facelib.errors import FacelibError

REPO = Path(__file__).resolve().parents[1]
NOTEBOOK_DIR = REPO / "notebooks"
NOTEBOOKS = [
    "01_data_exploration",
    "02_pretext_training",
    "03_triarchy_finetuning",
    "04_embedding_visualisation",
    "05_test_inference",
]

# `default` is the README's main job (2 CPU cores, under 15 minutes); `smoke` checks that every cell runs.
PROFILES = {
    "default": dict(identities=100, image_size=64, pretext_epochs=6, epochs=40, batch=(8, 8), ablations=True),
    "smoke": dict(identities=16, image_size=32, pretext_epochs=1, epochs=2, batch=(4, 4), ablations=False),
}


@dataclass
class Settings:
    data: str
    run_dir: str
    profile: str
    image_size: int
    pretext_epochs: int
    epochs: int
    batch: tuple
    seed: int
    device: str
    ablations: bool
    figures_dir: str  # where the figures worth keeping are copied; None except for the reference run

    def figure_paths(self, name):
        """Where to save figure `name`: the run's figures folder, plus the repo's figures/ for the reference run."""
        paths = [Path(self.run_dir) / "figures" / f"{name}.png"]
        if self.figures_dir:
            paths.append(Path(self.figures_dir) / f"{name}.png")
        return paths


def synthetic_data_path(profile):
    base = Path(os.environ.get("FACELIB_DATA", REPO / "data"))
    return base / ("synthetic" if profile == "default" else f"synthetic-{profile}")


def setup(data=None, run_dir="runs/main", profile="default", epochs=None, pretext_epochs=None, image_size=None,
          seed=0, device="auto"):
    """Settings for one notebook: explicit values win, the profile fills the rest, synthetic data is made if needed."""
    if profile not in PROFILES:
        raise FacelibError(f"unknown profile {profile!r}: expected one of {', '.join(PROFILES)}")
    preset = PROFILES[profile]
    reference_run = data is None and profile == "default"
    if data is None:
        from facelib import synthetic

        data = synthetic_data_path(profile)
        if not data.exists():
            synthetic.generate(data, identities=preset["identities"], seed=0)
    Path(run_dir, "figures").mkdir(parents=True, exist_ok=True)
    return Settings(
        data=str(data), run_dir=str(run_dir), profile=profile,
        image_size=image_size or preset["image_size"],
        pretext_epochs=pretext_epochs or preset["pretext_epochs"],
        epochs=epochs or preset["epochs"], batch=preset["batch"], seed=seed, device=device,
        ablations=preset["ablations"], figures_dir=str(REPO / "figures") if reference_run else None,
    )


def run_series(profile="default", data=None, out="runs/main", device="auto", notebooks=NOTEBOOKS):
    """Execute the notebooks in order into `out`; a failing cell stops the series with its notebook and cell."""
    import papermill

    out = Path(out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    parameters = dict(data=None if data is None else str(Path(data).resolve()), run_dir=str(out),
                      profile=profile, device=device)
    for name in notebooks:
        print(f"== {name}", flush=True)
        try:
            papermill.execute_notebook(
                NOTEBOOK_DIR / f"{name}.ipynb", out / f"{name}.ipynb", parameters=parameters,
                cwd=str(NOTEBOOK_DIR), kernel_name="python3", progress_bar=False, log_output=True,
            )
        except papermill.PapermillExecutionError as error:
            raise FacelibError(
                f"{name}.ipynb failed in cell {error.exec_count}: {error.ename}: {error.evalue} "
                f"(executed copy: {out / f'{name}.ipynb'})"
            ) from None
    return out


