"""The synthetic default data: layout, determinism, atomic writing, and that raw pixels cannot solve it."""

import dataclasses
import filecmp
import io
import re
import sys

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from facelib import layouts, splits, synthetic, training
from facelib.errors import FacelibError

NAME = re.compile(r"^(?P<face_id>\d+)_S001_L(?P<light>\d)_E(?P<expression>0[1-3])_C(?P<angle>\d)_cropped\.jpg$")


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    """40 identities (28 / 6 / 6) at 32 px: 288 pairs per split, enough for a meaningful pixel baseline."""
    return synthetic.generate(tmp_path_factory.mktemp("synthetic") / "data", identities=40, seed=0, size=32)


def attributes(names):
    """face_id, light, expression, angle from K-Face file names (every name must match)."""
    parsed = pd.Series(names).str.extract(NAME)
    assert parsed.notna().all().all(), "file names must follow {face_id}_S001_L#_E0#_C#_cropped.jpg"
    return parsed.astype({"light": int, "expression": int, "angle": int})


def read_pairs(root, split):
    return pd.read_csv(root / split / f"{split}_label.csv", dtype={"image1": str, "image2": str})


def test_layout_follows_the_competition(dataset):
    meta = pd.read_csv(dataset / "train" / "train_meta.csv", dtype={"face_id": str})
    assert list(meta.columns) == ["file_name", "face_id", "cam_angle"]  # exactly the challenge's columns
    parsed = attributes(meta.file_name)
    assert (parsed.face_id == meta.face_id).all()
    assert (meta.cam_angle == np.where(parsed.angle.isin(synthetic.FRONT_CAMERAS), "front", "side")).all()
    assert (meta.cam_angle == "side").sum() == 2 * (meta.cam_angle == "front").sum()  # the challenge's 1 : 2
    assert sorted(p.name for p in (dataset / "train").glob("*.jpg")) == sorted(meta.file_name)
    # every training identity: 9 cameras x 3 expressions x 2 distinct lights
    assert meta.face_id.nunique() == 28 and len(meta) == 28 * 54
    views = parsed.groupby(["face_id", "angle", "expression"]).light.nunique()
    assert len(views) == 28 * 27 and (views == 2).all()
    render = pd.read_csv(dataset / "render_meta.csv")
    assert list(render.columns) == ["split", "file_name", "light", "expression", "expression_name", "yaw", "pitch"]
    assert (render.expression.map(synthetic.EXPRESSIONS) == render.expression_name).all()
    rendered = render[render.split == "train"].set_index("file_name").loc[meta.file_name]
    assert (rendered[["light", "expression"]].to_numpy() == parsed[["light", "expression"]].to_numpy()).all()
    nominal = parsed.angle.map(synthetic.CAMERA_YAW).to_numpy()
    assert np.abs(rendered.yaw.to_numpy() - nominal).max() <= 3.05 and render.pitch.abs().max() <= 10.05
    with Image.open(dataset / "train" / meta.file_name[0]) as image:
        assert image.format == "JPEG" and image.mode == "RGB" and image.size == (32, 32)


def test_pairs_are_front_vs_side_balanced_and_identity_disjoint(dataset):
    identities = {"train": set(pd.read_csv(dataset / "train" / "train_meta.csv", dtype=str).face_id)}
    for split in ["validate", "test"]:
        pairs = read_pairs(dataset, split)
        assert list(pairs.columns) == ["image1", "image2", "label"] and len(pairs) == 6 * 6 * 8
        if split == "test":  # dummy labels, as in the challenge's file; the truth beside it
            assert (pairs.label == synthetic.DUMMY_LABEL).all()
            truth = pd.read_csv(dataset / "test" / "test_truth.csv", dtype={"image1": str, "image2": str})
            assert truth[["image1", "image2"]].equals(pairs[["image1", "image2"]])
            pairs = truth
        first, second = attributes(pairs.image1), attributes(pairs.image2)
        assert first.angle.isin(synthetic.FRONT_CAMERAS).all() and not second.angle.isin(synthetic.FRONT_CAMERAS).any()
        # the competition's convention: 0 = SAME person, 1 = DIFFERENT
        assert ((pairs.label == 0) == (first.face_id == second.face_id)).all()
        assert (pairs.label == 0).sum() == (pairs.label == 1).sum()
        assert not pairs.duplicated().any()
        assert (second.groupby([first.face_id, second.angle, pairs.label]).size() == 4).all(), "4 per camera"
        for name in pd.concat([pairs.image1, pairs.image2]):
            assert (dataset / split / name).is_file()
        identities[split] = set(first.face_id) | set(second.face_id)
        assert len(identities[split]) == 6
    assert not (
        identities["train"] & identities["validate"]
        or identities["train"] & identities["test"]
        or identities["validate"] & identities["test"]
    )


def test_the_data_layer_reads_it_as_kface(dataset):
    data = layouts.load(dataset)
    summary = layouts.summary(data)
    assert summary["format"] == "kface" and summary["identities"] == 40
    assert summary["pairs"] == {"validate": 288, "test": 288} and "unlabelled_pairs" not in summary
    assert data.pairs.same.sum() == 288  # half of them, read with label 0 = same (test: from test_truth.csv)
    assert summary["cameras"] == {f"C{c}": "frontal" if c in (4, 5, 6) else "profile" for c in range(1, 10)}
    assert summary["yaw"].startswith("known for every camera code")
    assert data.images["yaw"].notna().all() and data.images["view"].notna().all()
    # the pretext's labels: camera code and expression from the file names, mirrors from render_meta.csv's yaw
    labels = training.pretext_labels(splits.training_images(data))
    assert labels.classes == {"angle": list(range(1, 10)), "expression": [1, 2, 3]}
    assert labels.flippable.all() and (labels.mirrored[:, 0] == 8 - labels.targets[:, 0]).all()
    # figures name the expressions the generator drew, and the cameras with their yaw
    expressions = layouts.code_labels(data.images, "expression")
    assert set(expressions) == set(synthetic.EXPRESSIONS.values())
    cameras = layouts.code_labels(data.images, "angle")
    assert cameras[data.images["angle"] == 5].eq("C5 +0°").all()


def raw_pixel_cosines(root, split):
    pairs = pd.read_csv(root / split / f"{split}_{'truth' if split == 'test' else 'label'}.csv", dtype=str)
    pairs["label"] = pairs["label"].astype(int)
    names = pd.unique(pd.concat([pairs.image1, pairs.image2]))
    pixels = {name: np.asarray(Image.open(root / split / name), np.float64).ravel() for name in names}
    a, b = np.stack([pixels[n] for n in pairs.image1]), np.stack([pixels[n] for n in pairs.image2])
    cosine = (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)
    return cosine, (pairs.label == 0).to_numpy()


def accuracy(cosine, same, threshold):
    return np.mean((cosine >= threshold) == same)


def best_threshold(cosine, same):
    return max(np.unique(cosine), key=lambda threshold: accuracy(cosine, same, threshold))


def test_raw_pixels_cannot_verify_across_pose(dataset):
    """The task must not be trivial: cosine similarity of raw pixels stays well below 0.70 accuracy."""
    validate, test = raw_pixel_cosines(dataset, "validate"), raw_pixel_cosines(dataset, "test")
    assert accuracy(*test, best_threshold(*validate)) < 0.70
    assert accuracy(*test, best_threshold(*test)) < 0.70  # even with the threshold chosen on the test pairs


def test_same_seed_same_bytes_whatever_the_workers(tmp_path):
    one = synthetic.generate(tmp_path / "one", identities=6, seed=3, size=32, workers=1)
    two = synthetic.generate(tmp_path / "two", identities=6, seed=3, size=32, workers=2)
    other = synthetic.generate(tmp_path / "other", identities=6, seed=4, size=32, workers=2)
    files = sorted(str(p.relative_to(one)) for p in one.rglob("*") if p.is_file())
    assert files == sorted(str(p.relative_to(two)) for p in two.rglob("*") if p.is_file())
    match, mismatch, errors = filecmp.cmpfiles(one, two, files, shallow=False)
    assert not mismatch and not errors and len(match) == len(files)
    images, others = ({p.name: p for p in root.rglob("*.jpg")} for root in (one, other))
    shared = images.keys() & others.keys()  # same identity number, camera, expression and light
    assert shared and all(images[name].read_bytes() != others[name].read_bytes() for name in shared)


@pytest.mark.parametrize("style", ["photo", "sculpted"])
def test_every_style_shows_the_same_people_and_views_drawn_its_own_way(tmp_path, style):
    cartoon = synthetic.generate(tmp_path / "cartoon", identities=6, seed=3, size=32, workers=1)
    styled = synthetic.generate(tmp_path / style, identities=6, seed=3, size=32, style=style, workers=1)
    for table in ["train/train_meta.csv", "validate/validate_label.csv", "test/test_truth.csv", "render_meta.csv"]:
        assert (cartoon / table).read_bytes() == (styled / table).read_bytes()
    assert f'"style": "{style}"' in (styled / "synthetic.json").read_text()
    names = [p.relative_to(cartoon) for p in cartoon.rglob("*.jpg")]
    assert all((cartoon / name).read_bytes() != (styled / name).read_bytes() for name in names)


def test_a_photographed_person_keeps_the_face_and_takes_natural_hair_and_skin_texture():
    natural = synthetic.HAIR_COLOURS[:8]  # black, browns, auburn, blonds, grey, white: not the blue, pink... dyes
    for index in range(40):
        cartoon, photo = synthetic._person(0, index), synthetic._person(0, index, "photo")
        assert np.array_equal(cartoon.eyes, photo.eyes) and cartoon.hair_style == photo.hair_style
        ratio = photo.hair / np.maximum(natural, 1e-3)  # the colour's own jitter: 0.9-1.08 per channel
        assert (((ratio > 0.89) & (ratio < 1.09)) | (photo.hair >= 1)).all(axis=1).any()
        assert len(cartoon.mottling) == 0 and len(photo.mottling) > 0


def test_the_photo_style_draws_no_outlines_and_adds_camera_blur_and_noise():
    person, view = synthetic._person(0, 1), synthetic._view(0, 1, 5, 1, 4)
    sharp = dataclasses.replace(view, camera=(0.0, 0.0, 0))
    cartoon = synthetic.render(person, sharp, 64).astype(float)
    unlined = synthetic.render(person, sharp, 64, "photo").astype(float)
    assert (cartoon <= unlined + 1).all() and (unlined - cartoon).max() > 60  # ink only darkens, and strongly
    blurred = synthetic.render(person, dataclasses.replace(view, camera=(0.7, 0.0, 0)), 64, "photo").astype(float)
    assert np.abs(np.diff(blurred, axis=1)).mean() < 0.9 * np.abs(np.diff(unlined, axis=1)).mean()
    noisy = synthetic.render(person, dataclasses.replace(view, camera=(0.0, 0.02, 5)), 64, "photo").astype(float)
    assert 2 < np.abs(noisy - unlined).mean() < 8  # 2% of full scale: about 4 grey levels on average


def test_a_sculpted_person_keeps_the_face_and_only_adds_relief_to_it():
    for index in range(40):
        cartoon, sculpted = synthetic._person(0, index), synthetic._person(0, index, "sculpted")
        assert np.array_equal(cartoon.eyes, sculpted.eyes) and np.array_equal(cartoon.hair, sculpted.hair)
        assert len(cartoon.relief) == 0 and len(sculpted.relief) == 6
    view = synthetic._view(0, 3, 5, 1, 4)
    flattened = dataclasses.replace(synthetic._person(0, 3, "sculpted"), relief=np.zeros((0, 6), np.float32))
    assert np.array_equal(
        synthetic.render(flattened, view, 48, "sculpted"), synthetic.render(synthetic._person(0, 3), view, 48)
    )


def test_the_relief_pushes_the_profile_line_out_between_brow_and_chin():
    person = synthetic._person(0, 2, "sculpted")
    standing_out = person.relief.copy()
    standing_out[:, 5] = 0.05  # every bump 0.05 head units out of the face: about 3 px at 128 px
    green = np.array([0, 1, 0], np.float32)
    profile = dataclasses.replace(
        synthetic._view(0, 2, 9, 1, 4),  # camera 9: yaw 90, the face looks to the image's right
        yaw=90.0,
        pitch=0.0,
        roll=0.0,
        background=(green, green, 0.0, (green, 0.0, 0.0, 0.0, 0.0), np.zeros((0, 6), np.float32)),
    )

    def front_line(someone):  # per image row, the rightmost pixel that is not the green backdrop
        image = synthetic.render(someone, profile, 128, "sculpted").astype(int)
        person_pixels = np.abs(image - [0, 255, 0]).sum(axis=2) > 60
        return np.where(person_pixels.any(axis=1), 127 - np.argmax(person_pixels[:, ::-1], axis=1), -1)

    flat = front_line(dataclasses.replace(person, relief=np.zeros((0, 6), np.float32)))
    sculpted = front_line(dataclasses.replace(person, relief=standing_out))
    assert (sculpted >= flat - 1).all()  # bumps only add to the face
    pushed = np.flatnonzero(sculpted - flat >= 3)
    eye_row = 64 - (profile.scale * person.eyes[1] + profile.shift[1]) * 64
    chin_row = 64 + (profile.scale * (person.jaw[3] + person.jaw[1]) * person.head[1] - profile.shift[1]) * 64
    assert len(pushed) > 5 and eye_row - 20 < pushed.min() and pushed.max() < chin_row


def test_a_terminal_sees_the_rendering_progress_and_a_notebook_output_does_not(tmp_path, monkeypatch):
    class Terminal(io.StringIO):
        def isatty(self):
            return True

    for stream, shown in [(io.StringIO(), False), (Terminal(), True)]:  # a kernel's stderr is no terminal
        monkeypatch.setattr(sys, "stderr", stream)
        synthetic.generate(tmp_path / str(shown), identities=6, size=32, workers=1)
        assert ("rendering 32px cartoon faces: 100%" in stream.getvalue()) == shown


def test_an_interrupted_run_leaves_nothing(tmp_path, monkeypatch):
    render_identity, rendered = synthetic._render_identity, []

    def interrupted_after_one_identity(job):
        if rendered:
            raise KeyboardInterrupt
        rendered.append(render_identity(job))
        return rendered[-1]

    monkeypatch.setattr(synthetic, "_render_identity", interrupted_after_one_identity)
    with pytest.raises(KeyboardInterrupt):
        synthetic.generate(tmp_path / "data", identities=6, size=32, workers=1)
    assert rendered and list(tmp_path.iterdir()) == []  # images were written, then all removed


def test_bad_arguments_and_occupied_output_are_refused(tmp_path):
    with pytest.raises(FacelibError, match="identities"):
        synthetic.generate(tmp_path / "a", identities=5)
    with pytest.raises(FacelibError, match="size"):
        synthetic.generate(tmp_path / "b", size=16)
    with pytest.raises(FacelibError, match="--style: expected one of cartoon, photo, sculpted, got 'sketch'"):
        synthetic.generate(tmp_path / "b", identities=6, size=32, style="sketch")
    assert not (tmp_path / "b").exists()
    with pytest.raises(FacelibError, match="--style"):
        synthetic.render(synthetic._person(0, 0), synthetic._view(0, 0, 5, 1, 1), 32, "sketch")
    (tmp_path / "c").mkdir()
    (tmp_path / "c" / "notes.txt").write_text("mine")
    with pytest.raises(FacelibError, match="not an empty folder"):
        synthetic.generate(tmp_path / "c", identities=6, size=32)
    assert [p.name for p in (tmp_path / "c").iterdir()] == ["notes.txt"]


def test_ensure_default_remakes_a_set_of_an_older_layout_only(tmp_path, monkeypatch):
    made = []

    def fake_generate(out, **options):
        made.append(out)
        (out / "train").mkdir(parents=True, exist_ok=True)
        for name in ["train/train_meta.csv", "validate/validate_label.csv", "test/test_label.csv"]:
            (out / name).parent.mkdir(parents=True, exist_ok=True)
            (out / name).write_text("new")
        (out / "synthetic.json").write_text(f'{{"layout": {synthetic.LAYOUT}}}')
        return out

    monkeypatch.setattr(synthetic, "generate", fake_generate)
    old = tmp_path / "synthetic"
    fake_generate(old)
    made.clear()
    (old / "synthetic.json").write_text('{"generator": "facelib.synthetic", "seed": 0}')  # layout 1 had no version
    (old / "train" / "train_meta.csv").write_text("old")
    assert synthetic.ensure_default(old) == old
    assert (old / "train" / "train_meta.csv").read_text() == "new" and len(made) == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["synthetic"]  # nothing left beside it
    (old / "synthetic.json").unlink()  # not facelib's: never replaced
    (old / "train" / "train_meta.csv").write_text("mine")
    synthetic.ensure_default(old)
    assert (old / "train" / "train_meta.csv").read_text() == "mine" and len(made) == 1


def test_ensure_default_makes_the_set_once_where_facelib_data_says(tmp_path, monkeypatch):
    made = []

    def fake_generate(out, **options):
        made.append(out)
        for name in ["train/train_meta.csv", "validate/validate_label.csv", "test/test_label.csv"]:
            (out / name).parent.mkdir(parents=True, exist_ok=True)
            (out / name).write_text("")
        return out

    monkeypatch.setenv("FACELIB_DATA", str(tmp_path))
    monkeypatch.setattr(synthetic, "generate", fake_generate)
    assert synthetic.ensure_default() == tmp_path / "synthetic"
    assert synthetic.ensure_default() == tmp_path / "synthetic"
    assert made == [tmp_path / "synthetic"]
