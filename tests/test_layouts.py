"""The data layer: one reader per layout on tiny layouts made here, the bad inputs, and the real CFP set."""

import json

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from facelib import layouts
from facelib.errors import FacelibError
from facelib.layouts import DataError


def write_jpeg(path, size=(40, 48), value=128):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, (value, value // 2, 255 - value)).save(path, quality=90)


def write_csv(path, rows, columns):
    path.parent.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(rows, columns=columns).to_csv(path, index=False)


def kface_name(face_id, light, expression, angle):
    return f"{face_id}_S001_L{light}_E{expression}_C{angle}_cropped.jpg"


@pytest.fixture
def kface_root(tmp_path):
    """Two training identities seen by three cameras (with yaw), one validate and one test identity pair set."""
    root = tmp_path / "kface"
    yaw_of_camera = {1: -60.0, 7: 0.0, 12: 45.0}
    train = []
    for face_id in ["19062421", "19062422"]:
        for camera, yaw in yaw_of_camera.items():
            name = kface_name(face_id, 1, "01", camera)
            write_jpeg(root / "train" / name)
            train.append((name, face_id, yaw, 5.0))
    write_csv(root / "train" / "train_meta.csv", train, ["file_name", "face_id", "yaw", "pitch"])
    for split, ids in [("validate", ["30000001", "30000002"]), ("test", ["40000001", "40000002"])]:
        a1, a2, b1 = (kface_name(ids[0], 2, "02", 7), kface_name(ids[0], 3, "03", 12), kface_name(ids[1], 2, "01", 1))
        for name in [a1, a2, b1]:
            write_jpeg(root / split / name)
        write_csv(root / split / f"{split}_label.csv", [(a1, a2, 0), (a1, b1, 1)], ["image1", "image2", "label"])
    return root


def test_kface_reader(kface_root):
    data = layouts.load(kface_root)
    images, pairs = data.images, data.pairs
    assert data.format == "kface"
    assert list(images.columns[: len(layouts.IMAGE_COLUMNS)]) == list(layouts.IMAGE_COLUMNS)
    assert list(pairs.columns) == list(layouts.PAIR_COLUMNS)
    assert images["split"].value_counts().to_dict() == {"train": 6, "validate": 3, "test": 3}
    assert set(pairs["a"]) | set(pairs["b"]) <= set(images["path"])

    train = images[images["split"] == "train"].set_index("angle")
    assert train.loc[7, "identity"].tolist() == ["19062421", "19062422"]
    assert train["expression"].unique().tolist() == [1] and train["light"].unique().tolist() == [1]
    assert train.loc[12, "facing"].unique().tolist() == ["right"]
    assert train.loc[1, "facing"].unique().tolist() == ["left"]
    assert train.loc[7, "facing"].isna().all()  # yaw 0: no direction
    assert train["pitch"].tolist() == [5.0] * 6  # extra train_meta columns are kept

    validate = images[images["split"] == "validate"].set_index("angle")
    assert validate["identity"].tolist() == ["30000001", "30000001", "30000002"]
    assert validate["light"].tolist() == [2, 3, 2] and validate["expression"].tolist() == [2, 3, 1]
    assert validate["yaw"].tolist() == [0.0, 45.0, -60.0]  # from the training yaw of the same camera code
    assert layouts.summary(data)["pairs"] == {"validate": 2, "test": 2}
    assert layouts.summary(data)["identities"] == 6


def test_kface_label_zero_means_same(kface_root):
    pairs = layouts.load(kface_root).pairs
    for split in ["validate", "test"]:
        labels = pd.read_csv(kface_root / split / f"{split}_label.csv")["label"].tolist()
        assert labels == [0, 1]
        assert pairs.loc[pairs["split"] == split, "same"].tolist() == [True, False]


def test_kface_without_yaw_leaves_pose_unknown(tmp_path):
    name = kface_name("7", 1, 1, 3)
    write_jpeg(tmp_path / "train" / name)
    write_csv(tmp_path / "train" / "train_meta.csv", [(name, 7)], ["file_name", "face_id"])
    images = layouts.load(tmp_path).images
    assert images.loc[0, "identity"] == "7" and images.loc[0, "angle"] == 3
    assert np.isnan(images.loc[0, "yaw"]) and images.loc[0, "facing"] is None
    assert images.loc[0, "fold"] is pd.NA


def test_kface_challenge_format(kface_challenge):
    """cam_angle is the view; camera codes give validate/test images theirs; headers of any name; dummy test labels."""
    root, _ = kface_challenge
    data = layouts.load(root)
    images, pairs = data.images.set_index("path"), data.pairs
    train = data.images[data.images["split"] == "train"]
    assert train.groupby("angle")["view"].unique().map(list).to_dict() == {
        1: ["profile"],
        2: ["frontal"],
        3: ["profile"],
    }
    assert "cam_angle" not in data.images
    validate = data.images[data.images["split"] == "validate"].set_index("angle")
    assert validate.loc[2, "view"].unique().tolist() == ["frontal"] and validate.loc[3, "view"].unique().tolist() == [
        "profile"
    ]
    assert validate.loc[[4, 9], "view"].isna().all()  # codes never seen in training: view unknown
    assert data.images["yaw"].isna().all() and data.images["facing"].isna().all()

    assert (
        pairs.loc[pairs["split"] == "validate", "same"].tolist() == [True] * 3 + [False] * 3 + [True] * 3 + [False] * 3
    )
    assert pairs.loc[pairs["split"] == "test", "same"].isna().all()  # all labels 0: dummies
    first = pairs.iloc[0]
    assert images.loc[first["a"], "angle"] == 2 and images.loc[first["b"], "angle"] == 3

    summary = layouts.summary(data)
    assert summary["pairs"] == {"validate": 12, "test": 12} and summary["unlabelled_pairs"] == {"test": 12}
    assert summary["views"]["train"] == {"profile": 16, "frontal": 8}
    assert summary["cameras"] == {"C1": "profile", "C2": "frontal", "C3": "profile", "C4": "unknown", "C9": "unknown"}
    assert summary["yaw"].startswith("unknown for every camera code: facing and mirrored camera codes are off")


def test_view_counts_show_the_balance_and_each_camera_code(kface_challenge):
    table = layouts.view_counts(layouts.load(kface_challenge[0]).images)
    assert table.loc[("frontal", 2), "train"] == 8 and table.loc[("profile", 1), "train"] == 8
    assert table.loc[("unknown", 9), "train"] == 0 and table.loc[("unknown", 9), "test"] > 0
    assert table.index.tolist() == [("frontal", 2), ("profile", 1), ("profile", 3), ("unknown", 4), ("unknown", 9)]
    assert table.groupby(level="view")["train"].sum().to_dict() == {"frontal": 8, "profile": 16, "unknown": 0}


@pytest.mark.parametrize("labels", ["", "-1", "x"])
def test_dummy_test_labels_read_as_unlabelled(kface_challenge, labels):
    root, _ = kface_challenge
    csv = root / "test" / "test_label.csv"
    lines = csv.read_text().splitlines()
    csv.write_text("\n".join([lines[0]] + [line.rsplit(",", 1)[0] + "," + labels for line in lines[1:]]) + "\n")
    pairs = layouts.load(root).pairs
    assert pairs.loc[pairs["split"] == "test", "same"].isna().all()
    assert pairs.loc[pairs["split"] == "validate", "same"].notna().all()


def test_label_file_without_header_and_truth_file(kface_challenge):
    root, truth = kface_challenge
    csv = root / "test" / "test_label.csv"
    lines = csv.read_text().splitlines()[1:]
    csv.write_text("\n".join(lines) + "\n")  # the first row is data
    names = [line.rsplit(",", 1)[0] for line in lines]
    (root / "test" / "test_truth.csv").write_text(
        "image1,image2,label\n" + "".join(f"{n},{t}\n" for n, t in zip(names, truth))
    )
    pairs = layouts.load(root).pairs
    test = pairs[pairs["split"] == "test"]
    assert len(test) == 12 and test["same"].tolist() == [t == 0 for t in truth]

    (root / "test" / "test_truth.csv").write_text("image1,image2,label\n" + f"{names[1]},0\n{names[0]},1\n")
    assert_one_line_error(root, r"test_truth.csv: its pairs must be those of test_label.csv, in order")


def test_kface_cam_angle_errors(kface_challenge):
    root, _ = kface_challenge
    meta = pd.read_csv(root / "train" / "train_meta.csv", dtype=str)
    meta.loc[3, "cam_angle"] = "up"
    meta.to_csv(root / "train" / "train_meta.csv", index=False)
    assert_one_line_error(root, r"train_meta.csv: cam_angle must be front or side, found 'up' on data row 4")
    meta.loc[3, "cam_angle"] = "front" if meta.loc[0, "cam_angle"] == "side" else "side"
    meta.loc[3, "file_name"] = meta.loc[0, "file_name"]  # the same camera code, the other view
    meta.to_csv(root / "train" / "train_meta.csv", index=False)
    assert_one_line_error(root, r"train_meta.csv: camera code C\d is listed both as front and as side")


def test_validate_with_dummy_labels_is_an_error(kface_challenge):
    root, _ = kface_challenge
    csv = root / "validate" / "validate_label.csv"
    lines = csv.read_text().splitlines()
    csv.write_text("\n".join([lines[0]] + [line.rsplit(",", 1)[0] + ",0" for line in lines[1:]]) + "\n")
    assert_one_line_error(root, r"validate_label.csv: label must be 0 \(same\) or 1 \(different\), with both present")


def test_render_metadata_gives_yaw_facing_and_pose(kface_challenge):
    root, _ = kface_challenge
    images = layouts.load(root).images
    yaw_of = {1: -60.0, 2: 0.0, 3: 60.0}  # per camera code; codes 4 and 9 are not listed
    listed = images[images["angle"].isin(list(yaw_of))]
    pd.DataFrame(
        {
            "split": listed["split"],
            "file_name": listed["path"].map(lambda path: path.rsplit("/", 1)[1]),
            "yaw": listed["angle"].map(yaw_of).astype(float),
            "pitch": 1.5,
        }
    ).to_csv(root / layouts.KFACE_RENDER_FILE, index=False)
    images = layouts.load(root).images
    by_code = images.groupby("angle")
    assert by_code["yaw"].first().to_dict() == pytest.approx(
        {1: -60.0, 2: 0.0, 3: 60.0, 4: np.nan, 9: np.nan}, nan_ok=True
    )
    assert (
        images.loc[images["angle"] == 3, "facing"].eq("right").all()
        and images.loc[images["angle"] == 2, "facing"].isna().all()
    )
    assert images.loc[images["angle"].isin(list(yaw_of)), "pitch"].eq(1.5).all()
    assert layouts.summary(layouts.load(root))["yaw"].startswith("unknown for C4, C9:")


# Landmarks of a face looking right: jaw contour from the ear (left) to the chin, nose ridge far right.
PROFILE_POINTS = np.array(
    [(10 + i, 20 + 3 * i) for i in range(9)]
    + [(25 + i, 15) for i in range(9)]
    + [(30 + i, 18 + 2 * i) for i in range(7)]
    + [(28, 40 + i) for i in range(5)],
    dtype=float,
)


def write_fiducials(path, points):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(f"{x:.3f},{y:.3f}\n" for x, y in points))


@pytest.fixture
def cfp_tiny(tmp_path):
    """Identities 001 and 051 (folds 1 and 2), two frontal and two profile images each, FF/FP splits for fold 1."""
    root = tmp_path / "cfp"
    lists = {"frontal": [], "profile": []}
    for identity in ["001", "051"]:
        for view, count in [("frontal", 2), ("profile", 2)]:
            for number in range(1, count + 1):
                relative = f"{identity}/{view}/{number:02d}"
                write_jpeg(root / "Data" / "Images" / f"{relative}.jpg", size=(60, 70))
                points = PROFILE_POINTS.copy()
                if view == "profile" and number == 2:
                    points[:, 0] = 60 - points[:, 0]  # this one looks left
                write_fiducials(root / "Data" / "Fiducials" / f"{relative}.txt", points)
                lists[view].append(f"../Data/Images/{relative}.jpg")
    protocol = root / "Protocol"
    for view, letter in [("frontal", "F"), ("profile", "P")]:
        lines = [f"{k} {path}" for k, path in enumerate(lists[view], start=1)]
        (protocol / f"Pair_list_{letter}.txt").parent.mkdir(parents=True, exist_ok=True)
        (protocol / f"Pair_list_{letter}.txt").write_text("\n".join(lines) + "\n")
    for name, same, diff in [("FF", "1,2\n", "1,3\n2,4\n"), ("FP", "1,1\n3,4\n", "2,3\n")]:
        (protocol / "Split" / name / "01").mkdir(parents=True)
        (protocol / "Split" / name / "01" / "same.txt").write_text(same)
        (protocol / "Split" / name / "01" / "diff.txt").write_text(diff)
    return root


def test_cfp_reader(cfp_tiny):
    data = layouts.load(cfp_tiny)
    images = data.images.set_index(data.images["path"].str.split("/Images/").str[1])
    assert data.format == "cfp"
    assert images["identity"].tolist() == ["001"] * 4 + ["051"] * 4
    assert images["fold"].tolist() == [1] * 4 + [2] * 4
    assert images.loc["001/profile/01.jpg", "view"] == "profile"
    assert images.loc["001/profile/01.jpg", "facing"] == "right"
    assert images.loc["001/profile/02.jpg", "facing"] == "left"
    assert images.loc["001/frontal/01.jpg", "facing"] is None

    for path, box in images["box"].items():
        x0, y0, x1, y1 = box
        assert x1 - x0 == y1 - y0 > 0 and 0 <= x0 and 0 <= y0 and x1 <= 60 and y1 <= 70, (path, box)
    # frontal landmarks cover half a face: the box is mirrored about the nose ridge, so it reaches past it
    ridge_x = PROFILE_POINTS[18:22, 0].mean()
    frontal_box = images.loc["001/frontal/01.jpg", "box"]
    assert frontal_box[2] > ridge_x + (ridge_x - PROFILE_POINTS[:, 0].min())

    pairs = data.pairs
    assert pairs["protocol"].tolist() == ["FF"] * 3 + ["FP"] * 3
    assert pairs["same"].tolist() == [True, False, False, True, True, False]
    assert pairs["fold"].unique().tolist() == [1]
    first_fp = pairs.iloc[3]
    assert first_fp["a"].endswith("001/frontal/01.jpg") and first_fp["b"].endswith("001/profile/01.jpg")
    assert layouts.summary(data)["pairs"] == {"FF": {"1": 3}, "FP": {"1": 3}}


def test_cfp_split_index_beyond_pair_list(cfp_tiny):
    (cfp_tiny / "Protocol" / "Split" / "FP" / "01" / "diff.txt").write_text("2,3\n1,9\n")
    with pytest.raises(DataError, match=r"FP/01/diff.txt: pair 1,9"):
        layouts.load(cfp_tiny)


def test_cfp_without_fiducials_has_no_facing_or_box(cfp_tiny):
    (cfp_tiny / "Data" / "Fiducials" / "051" / "profile" / "01.txt").unlink()
    with pytest.warns(UserWarning, match="1 CFP images have no fiducial file"):
        data = layouts.load(cfp_tiny)
    images = data.images.set_index("path")
    row = images.loc[str(cfp_tiny / "Data" / "Images" / "051" / "profile" / "01.jpg")]
    assert row["facing"] is None and row["box"] is None
    assert layouts.summary(data)["no_fiducials"] == 1  # what `facelib inspect` reports


def test_cfp_pair_list_naming_missing_image(cfp_tiny):
    (cfp_tiny / "Data" / "Images" / "051" / "profile" / "02.jpg").unlink()
    assert_one_line_error(cfp_tiny, r"Pair_list_P.txt names an image that does not exist: .*051/profile/02.jpg")


def write_lfw(root, header, lines, people):
    for name, count in people.items():
        for number in range(1, count + 1):
            write_jpeg(root / name / f"{name}_{number:04d}.jpg")
    (root / "pairs.txt").write_text("\n".join([header, *lines]) + "\n")


def test_lfw_reader_assigns_folds_from_header(tmp_path):
    people = {"Ann_Lee": 3, "Bob_Ray": 2, "Cy_Twombly": 1}
    lines = ["Ann_Lee\t1\t2", "Ann_Lee\t1\tBob_Ray\t1", "Bob_Ray\t1\t2", "Cy_Twombly\t1\tAnn_Lee\t3"]
    write_lfw(tmp_path, "2\t1", lines, people)
    data = layouts.load(tmp_path)
    assert data.format == "lfw"
    assert len(data.images) == 6 and data.images["identity"].nunique() == 3
    assert data.pairs["same"].tolist() == [True, False, True, False]
    assert data.pairs["fold"].tolist() == [1, 1, 2, 2]
    assert data.pairs.loc[1, "b"] == str(tmp_path.resolve() / "Bob_Ray" / "Bob_Ray_0001.jpg")
    assert layouts.summary(data)["pairs"] == {"1": 2, "2": 2}


def test_lfw_reader_without_folds(tmp_path):
    write_lfw(tmp_path, "1", ["Ann_Lee 1 2", "Ann_Lee 1 Bob_Ray 1"], {"Ann_Lee": 2, "Bob_Ray": 1})
    data = layouts.load(tmp_path)
    assert data.pairs["fold"].isna().all()
    assert layouts.summary(data)["pairs"] == {"all": 2}


def test_lfw_header_must_match_lines(tmp_path):
    write_lfw(tmp_path, "10\t300", ["Ann_Lee 1 2"], {"Ann_Lee": 2})
    with pytest.raises(DataError, match="pairs.txt: header promises 6000 pairs, found 1 lines"):
        layouts.load(tmp_path)


def make_folder_layout(root, people=(("amy", 3), ("ben", 2), ("cat", 1))):
    for name, count in people:
        for number in range(count):
            write_jpeg(root / name / f"{number}.jpg", value=40 * number)
    (root / "notes.txt").write_text("not an image folder")


def test_folder_reader(tmp_path):
    make_folder_layout(tmp_path)
    data = layouts.load(tmp_path)
    assert data.format == "folder"
    assert data.images["identity"].tolist() == ["amy"] * 3 + ["ben"] * 2 + ["cat"]
    assert data.pairs.empty and list(data.pairs.columns) == list(layouts.PAIR_COLUMNS)
    assert layouts.summary(data) == {
        "format": "folder",
        "root": str(tmp_path.resolve()),
        "images": 6,
        "identities": 3,
        "pairs": {},
    }


def test_sample_pairs_is_seeded_balanced_and_distinct(tmp_path):
    make_folder_layout(tmp_path)
    images = layouts.load(tmp_path).images
    pairs = layouts.sample_pairs(images, 8, seed=3)
    assert pairs.equals(layouts.sample_pairs(images, 8, seed=3))
    assert not pairs.equals(layouts.sample_pairs(images, 8, seed=4))
    assert pairs["same"].sum() == 4  # amy has 3 same pairs, ben 1: all four
    identity = images.set_index("path")["identity"]
    assert (pairs["same"] == (pairs["a"].map(identity) == pairs["b"].map(identity))).all()
    assert not pairs[["a", "b"]].apply(frozenset, axis=1).duplicated().any()
    with pytest.raises(DataError, match="cannot sample 5 same-identity pairs: only 4 exist"):
        layouts.sample_pairs(images, 10, seed=0)


# ----------------------------------------------------------------------------------------------- bad input


def assert_one_line_error(root, match, **options):
    before = sorted(root.rglob("*")) if root.exists() else None
    with pytest.raises(DataError, match=match) as raised:
        layouts.load(root, **options)
    assert isinstance(raised.value, FacelibError) and "\n" not in str(raised.value)
    assert (sorted(root.rglob("*")) if root.exists() else None) == before  # load writes nothing


def test_missing_folder(tmp_path):
    assert_one_line_error(tmp_path / "nowhere", "data folder not found: .*nowhere")


def test_empty_folder(tmp_path):
    assert_one_line_error(tmp_path, "data folder is empty")


def test_unrecognised_folder(tmp_path):
    (tmp_path / "readme.txt").write_text("hello")
    assert_one_line_error(tmp_path, "no face data layout recognised")


def test_csv_without_needed_column(kface_root):
    write_csv(kface_root / "train" / "train_meta.csv", [("x.jpg", 1)], ["file_name", "person"])
    assert_one_line_error(kface_root, r"train_meta.csv: missing column 'face_id'")


@pytest.mark.parametrize("columns", [["image1", "image2"], ["image1", "image2", "label", "note"]])
def test_pair_csv_with_other_than_three_columns(kface_root, columns):
    write_csv(kface_root / "validate" / "validate_label.csv", [tuple(f"{c}.jpg" for c in columns)], columns)
    assert_one_line_error(
        kface_root, rf"validate_label.csv: expected 3 columns \(image1, image2, label\), found {len(columns)}"
    )


@pytest.mark.parametrize("labels, found", [([0, 2], "found 2 on data row 2"), ([1, 1], "found only 1")])
def test_validate_labels_must_be_0_and_1(kface_root, labels, found):
    table = pd.read_csv(kface_root / "validate" / "validate_label.csv").assign(label=labels)
    table.to_csv(kface_root / "validate" / "validate_label.csv", index=False)
    assert_one_line_error(
        kface_root, rf"validate_label.csv: label must be 0 \(same\) or 1 \(different\), with both present; {found}"
    )


def test_pair_file_naming_missing_image(kface_root):
    table = pd.read_csv(kface_root / "test" / "test_label.csv")
    table.loc[1, "image2"] = "ghost.jpg"
    table.to_csv(kface_root / "test" / "test_label.csv", index=False)
    assert_one_line_error(kface_root, r"test_label.csv names an image that does not exist: .*test/ghost.jpg")


def test_lfw_pairs_naming_missing_image(tmp_path):
    write_lfw(tmp_path, "1", ["Ann_Lee 1 2", "Ann_Lee 1 Bob_Ray 4"], {"Ann_Lee": 2, "Bob_Ray": 1})
    assert_one_line_error(tmp_path, r"pairs.txt names an image that does not exist: .*Bob_Ray_0004.jpg")


def test_lfw_malformed_pair_line(tmp_path):
    write_lfw(tmp_path, "1", ["Ann_Lee 1 2", "Ann_Lee one Bob_Ray 1"], {"Ann_Lee": 2, "Bob_Ray": 1})
    assert_one_line_error(tmp_path, r"pairs.txt: pair 2 'Ann_Lee one Bob_Ray 1': expected 'name i j'")


@pytest.mark.parametrize("damage", ["garbage", "truncated"])
def test_corrupt_jpeg_found_by_verify(tmp_path, damage):
    make_folder_layout(tmp_path)
    bad = tmp_path / "ben" / "1.jpg"
    write_jpeg(bad, size=(300, 300))
    content = bad.read_bytes()
    bad.write_bytes(b"not a jpeg at all" if damage == "garbage" else content[: len(content) // 2])
    assert layouts.load(tmp_path).images["path"].str.endswith("ben/1.jpg").any()  # not decoded without verify
    assert_one_line_error(tmp_path, r"corrupt image .*ben/1.jpg", verify_images=True)


# ----------------------------------------------------------------------------------------------- the real CFP set


def test_cfp_integration(cfp_root):
    data = layouts.load(cfp_root)
    summary = layouts.summary(data)
    folds = {str(fold): 700 for fold in range(1, 10)}
    assert json.loads(json.dumps(summary)) == {
        "format": "cfp",
        "root": str(cfp_root),
        "images": 6300,
        "identities": 450,
        "pairs": {"FF": folds, "FP": folds},
        "no_fiducials": 0,
        "align_fallback": 9,  # profiles whose chin lies below the image: they keep their box when aligned
    }
    images, pairs = data.images, data.pairs
    assert images["view"].value_counts().to_dict() == {"frontal": 4500, "profile": 1800}
    assert images["fold"].value_counts().sort_index().to_dict() == {fold: 700 for fold in range(1, 10)}

    view = images.set_index("path")["view"]
    fold = images.set_index("path")["fold"]
    assert (pairs["a"].map(view) == "frontal").all()
    assert (pairs["b"].map(view) == pairs["protocol"].map({"FF": "frontal", "FP": "profile"})).all()
    assert (pairs["a"].map(fold) == pairs["fold"]).all() and (pairs["b"].map(fold) == pairs["fold"]).all()
    assert pairs.groupby(["protocol", "fold"])["same"].sum().eq(350).all()

    profiles = images[images["view"] == "profile"]
    assert profiles["facing"].isin(["left", "right"]).mean() > 0.95
    assert 0.3 < (profiles["facing"] == "left").mean() < 0.7  # CFP profiles look both ways
    assert images.loc[images["view"] == "frontal", "facing"].isna().all()

    boxes = np.array(images["box"].tolist())
    assert ((boxes[:, 2] - boxes[:, 0]) == (boxes[:, 3] - boxes[:, 1])).all() and (boxes[:, :2] >= 0).all()
    for index in np.random.default_rng(0).choice(len(images), 200, replace=False):
        with Image.open(images["path"][index]) as image:
            width, height = image.size
        x0, y0, x1, y1 = images["box"][index]
        assert x1 <= width and y1 <= height
        assert x1 - x0 >= 0.4 * min(width, height)  # loosely cropped images: the face fills a good part


def test_sample_faces_spread_over_poses_with_decoded_labels():
    yaws = [-90.4, -45.0, -0.3, 45.0, 90.0]
    images = layouts._conform(
        pd.DataFrame(
            {
                "identity": ["a"] * 5 + ["b"] * 2,
                "path": [f"{i}.jpg" for i in range(7)],
                "yaw": yaws + [0.0, 10.0],
                "angle": [1, 3, 5, 7, 9, 5, 6],
            }
        ),
        layouts.IMAGE_COLUMNS,
    )
    grid = layouts.sample_faces(images, identities=2, columns=3)
    assert list(grid["identity"]) == ["a", "a", "a", "b", "b"]
    assert list(grid["label"][:3]) == ["C1 -90°", "C5 +0°", "C9 +90°"]


def test_cfp_landmarks_for_alignment_and_the_box_fallback(cfp_tiny):
    chin_below = PROFILE_POINTS.copy()
    chin_below[8] = (18, 75)  # below the 70-pixel image: the profile's chin is a template point
    for view in ["frontal", "profile"]:
        write_fiducials(cfp_tiny / "Data" / "Fiducials" / "051" / view / "01.txt", chin_below)
    data = layouts.load(cfp_tiny)
    images = data.images.set_index(data.images["path"].str.split("/Images/").str[1])
    eye, nose_tip, mouth_corner = PROFILE_POINTS[12:18].mean(axis=0), PROFILE_POINTS[21], PROFILE_POINTS[25]
    assert np.array(images.loc["001/profile/01.jpg", "landmarks"]) == pytest.approx(
        np.array([eye, nose_tip, mouth_corner, PROFILE_POINTS[8]])
    )
    assert images.loc["001/frontal/01.jpg", "landmarks"][3] == pytest.approx(PROFILE_POINTS[26:30].mean(axis=0))
    assert images.loc["051/profile/01.jpg", "landmarks"] is None  # falls back to its box when aligned
    assert images.loc["051/profile/01.jpg", "box"] is not None
    assert images.loc["051/frontal/01.jpg", "landmarks"] is not None  # a frontal face's template has no chin
    assert layouts.summary(data)["align_fallback"] == 1  # what `facelib inspect` reports


def test_code_labels_decode_what_the_data_says_and_keep_codes_otherwise():
    images = layouts._conform(
        pd.DataFrame(
            {
                "path": [f"{i}.jpg" for i in range(5)],
                "angle": [5, 5, 9, 7, None],
                "yaw": [-1.0, 1.0, 88.0, np.nan, np.nan],
                "expression": [1, 2, 3, 2, None],
                "expression_name": ["neutral", "smile", None, None, None],
            }
        ),
        layouts.IMAGE_COLUMNS,
    )
    assert layouts.code_labels(images, "expression").tolist() == ["neutral", "smile", "E3", "E2", None]
    # a camera is named with the median yaw of its images; a camera without yaw keeps its code
    assert layouts.code_labels(images, "angle").tolist() == ["C5 +0°", "C5 +0°", "C9 +88°", "C7", None]
    assert layouts.code_labels(images, "path").equals(images["path"])  # any other column as it is
    assert layouts.one_identity(images.assign(identity="a"))["label"].tolist()[:2] == ["C5 -1° neutral", "C5 +1° smile"]


def test_a_users_train_meta_can_name_its_expressions(kface_challenge):
    root, _ = kface_challenge
    meta = pd.read_csv(root / "train" / "train_meta.csv", dtype=str)
    names = meta["file_name"].str.extract(r"_E(\d+)_")[0].map({"01": "neutral", "02": "smile"})
    meta.assign(expression_name=names).to_csv(root / "train" / "train_meta.csv", index=False)
    images = layouts.load(root).images
    labels = layouts.code_labels(images, "expression")
    train = images["split"] == "train"
    assert set(labels[train]) == {"neutral", "smile"}
    assert labels[~train].str.fullmatch(r"E\d").all()  # validate / test images are named by no file: codes
