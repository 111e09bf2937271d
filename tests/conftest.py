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
def trained_run(tmp_path_factory):
    """A tiny Triarchy run (cartoon faces, K-Face layout) trained once per session: its data folder and best
    checkpoint, which stores the threshold chosen on the validation pairs. 64 px, 12 epochs at lr 3e-3: smaller
    runs give near-constant embeddings in eval mode (all cosines above 0.9999); this one separates its
    validation pairs from epoch 7 on (measured: accuracy 1.0, lowest cosine between two faces 0.47)."""
    from test_training import write_tiny_kface

    from facelib import training

    root = tmp_path_factory.mktemp("trained")
    data = write_tiny_kface(root / "data")
    model = training.train_identity(
        data,
        root / "run",
        image_size=64,
        epochs=12,
        lr=3e-3,
        batch=(2, 4),
        seed=0,
        cache_dir=root / "cache",
        progress=False,
    )
    return data, model
