import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from facelib import alignment, embedding, imagecache, layouts, models, poses
from facelib.imagecache import load_images

OUT = 96  # aligned face side, pixels


def rotation(degrees):
    angle = np.radians(degrees)
    return np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])


def blobs(points, height, width, sigma=2.5):
    """A dark image with a bright Gaussian spot on each point (x, y; pixel centres at whole numbers)."""
    ys, xs = np.mgrid[:height, :width]
    pixels = sum(np.exp(-((xs - x) ** 2 + (ys - y) ** 2) / (2 * sigma**2)) for x, y in points)
    return torch.from_numpy(np.clip(pixels * 255, 0, 255).astype(np.uint8)).expand(3, height, width)


def spot_centre(face, near, radius=4):
    """Brightness-weighted centre (x, y) of the spot in `face` [3, S, S] within `radius` pixels of `near`."""
    ys, xs = np.mgrid[: face.shape[-2], : face.shape[-1]]
    weight = face[0].numpy().astype(float) * ((xs - near[0]) ** 2 + (ys - near[1]) ** 2 <= radius**2)
    return np.array([(xs * weight).sum(), (ys * weight).sum()]) / weight.sum()


def face_landmarks(target, degrees=20, side=150, shift=(30, 20)):
    """Where a face the size of `side` source pixels, rolled by `degrees`, has the template's points."""
    return (np.asarray(target) - 0.5) * side @ rotation(degrees).T + side / 2 + np.asarray(shift)


def test_similarity_recovers_a_known_transform():
    source = np.random.default_rng(0).uniform(0, 100, (5, 2))
    target = 0.3 * source @ rotation(-35).T + (4, -2)
    assert alignment.similarity(source, target) == pytest.approx(
        np.column_stack([0.3 * rotation(-35), (4, -2)]), abs=1e-9
    )


@pytest.mark.parametrize("view, facing", [("frontal", None), ("profile", "right"), ("profile", "left")])
def test_an_aligned_face_puts_the_eyes_where_the_template_says(view, facing):
    target = alignment.template(view, facing)
    landmarks = face_landmarks(target)
    face = alignment.warp(blobs(landmarks, 210, 220), landmarks, target, OUT)
    assert face.shape == (3, OUT, OUT) and face.dtype == torch.uint8
    expected = target * OUT - 0.5  # output pixel coordinates of the template's points
    for name, point in zip(["eye", "nose tip", "mouth corner", "last point"], expected):
        assert spot_centre(face, point) == pytest.approx(point, abs=0.25), name  # pixel centres too


def test_a_left_facing_profile_template_is_the_mirror_image():
    right, left = alignment.template("profile", "right"), alignment.template("profile", "left")
    assert left[:, 0] == pytest.approx(1 - right[:, 0]) and left[:, 1] == pytest.approx(right[:, 1])
    assert alignment.template("frontal", "left") == pytest.approx(alignment.template("frontal"))
    with pytest.raises(ValueError, match="expected view 'frontal' or 'profile', got None"):
        alignment.template(None)


@pytest.fixture
def faces_table(tmp_path):
    """Two copies of one rolled face: the first with landmarks, the second without (it falls back to its box)."""
    target = alignment.template("frontal")
    landmarks = face_landmarks(target, degrees=-15)
    pixels = blobs(landmarks, 210, 220).permute(1, 2, 0).numpy()
    paths = [str(tmp_path / f"{i}.png") for i in range(2)]
    for path in paths:
        Image.fromarray(pixels).save(path)
    return pd.DataFrame(
        {
            "path": paths,
            "view": "frontal",
            "facing": None,
            "box": [(30, 20, 180, 170)] * 2,
            "landmarks": [tuple(map(tuple, landmarks)), None],
        }
    )


def test_aligned_faces_are_warped_once_into_the_cache_and_the_rest_keep_their_box(faces_table, tmp_path):
    boxed = load_images(faces_table, OUT, tmp_path / "cache", progress=False)
    aligned = load_images(faces_table, OUT, tmp_path / "cache", progress=False, align=True)
    assert imagecache.cache_key(faces_table, OUT) != imagecache.cache_key(faces_table, OUT, align=True)
    assert len(list((tmp_path / "cache").glob("faces-*.npy"))) == 2  # one cache file each
    eye = alignment.template("frontal")[0] * OUT - 0.5
    assert spot_centre(aligned[0], eye) == pytest.approx(eye, abs=0.25)
    assert torch.equal(aligned[1], boxed[1])  # no landmarks: the box, as without alignment
    assert not torch.equal(aligned[0], boxed[0])  # the box keeps the roll; the warp removes it


def test_kface_faces_are_unchanged_by_align(tmp_path):
    from test_training import write_tiny_kface

    images = layouts.load(write_tiny_kface(tmp_path / "kface")).images
    assert images["landmarks"].isna().all()  # K-Face has no landmarks: every face keeps its box
    boxed = load_images(images, 32, tmp_path / "cache", progress=False)
    assert torch.equal(load_images(images, 32, tmp_path / "cache", progress=False, align=True), boxed)


def test_align_is_stored_with_the_run_and_embeds_faces_the_same_way(tmp_path, monkeypatch):
    from test_training import identity_run, pretext_run, write_tiny_kface

    monkeypatch.setenv("FACELIB_CACHE", str(tmp_path / "cache"))
    data = write_tiny_kface(tmp_path / "kface")
    run = identity_run(data, tmp_path / "aligned", epochs=1, align=True)
    assert models.read_checkpoint(run)["config"]["settings"]["align"] is True
    model = models.load_embedder(run)
    assert model.align is True
    assert models.load_embedder(pretext_run(data, tmp_path / "plain", epochs=1)).align is False

    asked = []
    original = imagecache.load_images
    monkeypatch.setattr(
        imagecache, "load_images", lambda *args, **kw: asked.append(kw["align"]) or original(*args, **kw)
    )
    embedding.embed_images(model, layouts.load(data).images, cache=False)
    assert asked == [True]


@pytest.fixture(scope="module")
def cfp_images():
    from conftest import CFP_ROOT

    if not (CFP_ROOT / "Protocol").is_dir():
        pytest.skip(f"CFP data not found at {CFP_ROOT}")
    return layouts.load(CFP_ROOT).images


@pytest.mark.parametrize("view", ["frontal", "profile"])
def test_aligned_cfp_faces_put_their_eyes_on_the_template(cfp_images, view):
    chosen = cfp_images[(cfp_images["view"] == view) & cfp_images["landmarks"].notna()].iloc[::150]
    eyes = []
    for landmarks, facing in zip(chosen["landmarks"], chosen["facing"]):
        source = np.add(landmarks, 0.5)  # pixel centres, as alignment.warp fits them
        eye = apply(alignment.similarity(source, alignment.template(view, facing)), source)[0]
        eyes.append([1 - eye[0], eye[1]] if facing == "left" else eye)  # left-facing profiles: mirrored back
    mean_eye = np.mean(eyes, axis=0)
    assert mean_eye == pytest.approx(alignment.TEMPLATES[view][0], abs=0.01)  # within a pixel at 112 px
    assert np.linalg.norm(np.array(eyes) - mean_eye, axis=1).max() < 0.1


def test_cfp_templates_are_the_procrustes_mean_of_the_training_folds(cfp_images):
    """The derivation TEMPLATES' comment describes, repeated on the data: it gives the stored numbers."""
    training_faces = cfp_images[(cfp_images["fold"] <= 8) & cfp_images["landmarks"].notna()]
    for view, faces in training_faces.groupby("view"):
        shapes = []
        for landmarks, box, facing in zip(faces["landmarks"], faces["box"], faces["facing"]):
            x0, y0, x1, _ = box
            shape = (np.array(landmarks) + 0.5 - (x0, y0)) / (x1 - x0)
            shapes.append(np.column_stack([1 - shape[:, 0], shape[:, 1]]) if facing == "left" else shape)
        plain = mean = np.mean(shapes, axis=0)
        for _ in range(3):
            mean = np.mean([apply(alignment.similarity(shape, mean), shape) for shape in shapes], axis=0)
        assert apply(alignment.similarity(mean, plain), mean) == pytest.approx(alignment.TEMPLATES[view], abs=1e-3)


def apply(transform, points):
    return points @ transform[:, :2].T + transform[:, 2]


def test_canonical_facing_turns_every_cfp_profile_right(cfp_images, tmp_path):
    """A mirrored profile's facing flips: after canonical facing, the mean of the profiles that faced left matches
    the mean of those that faced right far better than before (box crops, which keep each face's facing)."""
    profiles = cfp_images[(cfp_images["view"] == "profile") & cfp_images["facing"].notna()].iloc[::9]
    faces = load_images(profiles, 48, cache_dir=tmp_path, progress=False)
    known, mirrored = poses.canonical_facing(profiles)
    assert known.all() and 0.2 < mirrored.mean() < 0.8  # CFP profiles face both ways

    def likeness():  # correlation of the two groups' mean faces
        left, right = (faces[group].float().mean(0).flatten() for group in (mirrored, ~mirrored))
        return float(torch.corrcoef(torch.stack([left, right]))[0, 1])

    before = likeness()
    embedding.to_canonical_facing(faces, profiles)
    assert likeness() > before + 0.1
