from pathlib import Path

import pytest

CFP_ROOT = Path(__file__).resolve().parents[2] / "shared" / "data" / "cfp"


@pytest.fixture
def cfp_root():
    """The real CFP set beside the checkout; tests that need it skip where it is absent."""
    if not (CFP_ROOT / "Protocol").is_dir():
        pytest.skip(f"CFP data not found at {CFP_ROOT}")
    return CFP_ROOT


@pytest.fixture(scope="session")
def smoke_run(tmp_path_factory):
    """The notebook series executed once on the smoke profile (shared by the notebook and JupyterLab tests):
    the run folder, the data it made, and the repo's reference figures with their times before the run."""
    from facelib.notebooks import REPO, run_series

    root = tmp_path_factory.mktemp("series")
    with pytest.MonkeyPatch.context() as env:  # the kernels inherit these: data and caches stay in tmp
        env.setenv("FACELIB_DATA", str(root / "data"))
        env.setenv("FACELIB_CACHE", str(root / "cache"))
        kept_figures = {path: path.stat().st_mtime for path in (REPO / "figures").glob("*.png")}
        run_dir = run_series(profile="smoke", out=root / "run")
    return run_dir, root / "data" / "synthetic-smoke", kept_figures
