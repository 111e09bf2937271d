from pathlib import Path

import pytest

CFP_ROOT = Path(__file__).resolve().parents[2] / "shared" / "data" / "cfp"


@pytest.fixture
def cfp_root():
    """The real CFP set beside the checkout; tests that need it skip where it is absent."""
    if not (CFP_ROOT / "Protocol").is_dir():
        pytest.skip(f"CFP data not found at {CFP_ROOT}")
    return CFP_ROOT


def write_kface_challenge(root, size=32):
    """A tiny set in the challenge's exact format: train_meta.csv with file_name, face_id, cam_angle (C2 front,
    C1 and C3 side); label files under other header names, read by position; camera codes C4 (front) and C9
    (side) only in validate / test; dummy test labels (all 0). Each identity has its own colour, so a tiny
    model can tell them apart. Returns (root, the true test labels)."""
    import numpy as np
    import pandas as pd
    from PIL import Image

    def image(split, face_id, light, expression, camera):
        name = f"{face_id}_S001_L{light}_E{expression:02d}_C{camera}_cropped.jpg"
        path = root / split / name
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            rng = np.random.default_rng([int(face_id), light, expression, camera])
            colour = np.array([int(face_id) * 53 % 256, int(face_id) * 97 % 256, int(face_id) * 31 % 256])
            pixels = np.clip(colour + rng.normal(0, 20, (size, size, 3)) + 10 * camera, 0, 255).astype(np.uint8)
            Image.fromarray(pixels).save(path, quality=90)
        return name

    train = [
        (image("train", face_id, light, expression, camera), face_id, "front" if camera == 2 else "side")
        for face_id in ["19062401", "19062402", "19062403", "19062404"]
        for camera in [1, 2, 3]
        for expression in [1, 2]
        for light in [1]
    ]
    pd.DataFrame(train, columns=["file_name", "face_id", "cam_angle"]).to_csv(
        root / "train" / "train_meta.csv", index=False
    )
    truth = {}
    for split, ids, header in [
        ("validate", ["1001", "1002"], "file1,file2,is_different"),
        ("test", ["2001", "2002"], "a,b,c"),
    ]:
        rows = []
        for first, second in [(ids[0], ids[0]), (ids[0], ids[1]), (ids[1], ids[1]), (ids[1], ids[0])]:
            for front, side in [(2, 3), (4, 9), (2, 9)]:
                rows.append((image(split, first, 1, 1, front), image(split, second, 2, 2, side), int(first != second)))
        truth[split] = [label for _, _, label in rows]
        labels = rows if split == "validate" else [(a, b, 0) for a, b, _ in rows]
        lines = [header] + [f"{a},{b},{label}" for a, b, label in labels]
        (root / split / f"{split}_label.csv").write_text("\n".join(lines) + "\n")
    return root, truth["test"]


@pytest.fixture
def kface_challenge(tmp_path):
    return write_kface_challenge(tmp_path / "kface")


@pytest.fixture(scope="session")
def trained_run(tmp_path_factory):
    """A tiny Triarchy run (cartoon faces, K-Face layout) trained once per session: its data folder and best
    checkpoint, which stores the threshold chosen on the validation pairs. 64 px, 12 epochs at lr 3e-3: smaller
    runs give near-constant embeddings in eval mode (all cosines above 0.9999); this one separates its
    validation pairs from epoch 7 on (measured: accuracy 1.0, lowest cosine between two faces 0.47)."""
    from test_training import write_tiny_kface

    from facelib import training
    from facelib.recipe import IdentityConfig

    root = tmp_path_factory.mktemp("trained")
    data = write_tiny_kface(root / "data")
    config = IdentityConfig(data, image_size=64, epochs=12, lr=3e-3, batch=(2, 4), seed=0)
    model = training.train_identity(config, root / "run", cache_dir=root / "cache", progress=False)
    return data, model


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
