"""The data layer: every face source read into one image table and one pair table.

`load(root)` recognises four layouts and returns a `FaceData`:

- ``kface``: the competition layout, ``train/train_meta.csv`` (file_name, face_id, cam_angle) +
  ``validate/validate_label.csv`` + ``test/test_label.csv`` (image1, image2, label, read by position); attributes
  come from the file names ``{face_id}_S001_L{light}_E{expr}_C{angle}_...``, the view (cam_angle front / side ->
  frontal / profile) from each camera code's training rows. In the pair files label 0 means SAME person and 1
  DIFFERENT; the challenge's test file holds dummy labels, read as unlabelled pairs (``same`` NA). Yaw (hence
  facing and mirrored camera codes) is known only where a ``yaw`` column or ``render_meta.csv`` gives it.
- ``cfp``: the official CFP layout (``Data/Images``, ``Data/Fiducials``, ``Protocol/``), FF and FP folds.
- ``lfw``: one folder per identity plus the standard LFW ``pairs.txt``.
- ``folder``: one folder per identity and no pairs (`sample_pairs` draws some with a seed).

Both tables always carry the columns of `IMAGE_COLUMNS` / `PAIR_COLUMNS` (NA where a source does not know a value).
Conventions shared by all sources:

- ``yaw`` in degrees, 0 = frontal, positive = the nose points towards the image's right side.
- ``expression_name`` is the expression in words where the data says it (``render_meta.csv``, or an
  ``expression_name`` column in ``train_meta.csv``); the challenge's files carry only the code, so it is None there
  and figures show ``E{code}``.
- ``facing`` is that direction in words, 'left' or 'right'; None for frontal CFP images (their fiducials mark one
  half of the face only, so they carry no reliable direction) and wherever the pose is unknown.
- ``box`` is (x0, y0, x1, y1), a square crop in pixels (x1, y1 exclusive) that the image cache uses to crop faces.
- ``landmarks`` is the points facelib.alignment warps onto its template for the image's view, ((x, y), ...) in
  pixels; None where the source has no landmarks (every layout but CFP) or one of them is missing or outside the
  image, and an aligned face then falls back to its box.
"""

import os
import re
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image
from tqdm import tqdm

from facelib.errors import FacelibError

# Column -> dtype. Text columns are `object` holding str or None (the same on pandas 2 and 3).
IMAGE_COLUMNS = {
    "path": object,
    "identity": object,
    "split": object,
    "fold": "Int64",
    "view": object,
    "yaw": "float64",
    "angle": "Int64",
    "expression": "Int64",
    "expression_name": object,
    "light": "Int64",
    "facing": object,
    "box": object,
    "landmarks": object,
}
# `same` is NA for an unlabelled pair (the challenge's test file holds dummy labels)
PAIR_COLUMNS = {"a": object, "b": object, "same": "boolean", "split": object, "fold": "Int64", "protocol": object}

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp"}  # .bmp is listed so that `verify` reports it
DECODABLE_FORMATS = {"JPEG", "PNG", "WEBP", "GIF"}  # what torchvision.io.decode_image reads (PIL's format names)
KFACE_NAME = re.compile(r"^(?P<identity>.+?)_S\d+_L(?P<light>\d+)_E(?P<expression>\d+)_C(?P<angle>\d+)")
KFACE_PAIR_FILES = {"validate": "validate/validate_label.csv", "test": "test/test_label.csv"}
KFACE_VIEWS = {"front": "frontal", "side": "profile"}  # train_meta.csv's cam_angle -> view, in CFP's words
KFACE_RENDER_FILE = "render_meta.csv"  # optional per-image metadata the challenge's files lack (synthetic set)
CFP_IDENTITIES_PER_FOLD = 50
# CFP fiducial indices (30 points): 0-8 the jaw contour from the ear (or cheek) down to the chin,
# 9-11 the eyebrow, 12-17 the eye's outline, 18-21 the nose ridge down to its tip, 22-24 the nose base,
# 25 the mouth corner, 26-29 the lips' middle from the upper lip's top to the lower lip's bottom.
CFP_JAW_TOP = slice(0, 5)
CFP_NOSE = slice(18, 25)
CFP_NOSE_RIDGE = slice(18, 22)
CFP_CHIN = [8]
CFP_EYE = slice(12, 18)
CFP_NOSE_TIP = [21]
CFP_MOUTH_CORNER = [25]
CFP_MOUTH_MIDDLE = slice(26, 30)
# the fiducials (each point the mean of its group) that facelib.alignment.TEMPLATES places, in its order: a frontal
# face's chin often leaves the image, so frontal faces use the mouth's middle instead (both lie on the midline)
CFP_ALIGNMENT_POINTS = {
    "frontal": [CFP_EYE, CFP_NOSE_TIP, CFP_MOUTH_CORNER, CFP_MOUTH_MIDDLE],
    "profile": [CFP_EYE, CFP_NOSE_TIP, CFP_MOUTH_CORNER, CFP_CHIN],
}
BOX_MARGIN = 0.2  # of the landmarks' extent, on each side
BOX_RAISE = 0.08  # of the box side: landmarks stop at the eyebrows, so move the box up to keep the forehead


class DataError(FacelibError):
    """A data folder that cannot be read as any supported layout, or a broken file in it."""


@dataclass
class FaceData:
    root: Path
    format: str
    images: pd.DataFrame = field(repr=False)
    pairs: pd.DataFrame = field(repr=False)


# ----------------------------------------------------------------------------------------------- public API


def load(root, verify_images: bool = False) -> FaceData:
    """Read the face data set in `root` (layout detected from its files); with `verify_images`, decode every image
    so that a corrupt one is reported now rather than in the middle of training. Writes nothing."""
    root = Path(root).expanduser().resolve()
    layout = detect_format(root)
    images, pairs = READERS[layout](root)
    _require_utf8_names(images["path"])
    if verify_images:
        verify(images["path"])
    return FaceData(root, layout, _conform(images, IMAGE_COLUMNS), _drop_duplicate_pairs(_conform(pairs, PAIR_COLUMNS)))


def detect_format(root: Path) -> str:
    """'kface', 'cfp', 'lfw' or 'folder', from the files that mark each layout."""
    if not root.exists():
        raise DataError(f"data folder not found: {root}")
    if not root.is_dir():
        raise DataError(f"not a folder: {root}")
    if any((root / name).is_file() for name in ["train/train_meta.csv", *KFACE_PAIR_FILES.values()]):
        return "kface"
    if (root / "Protocol").is_dir() and (root / "Data" / "Images").is_dir():
        return "cfp"
    if (root / "pairs.txt").is_file():
        return "lfw"
    if _identity_folders(root):
        return "folder"
    if not any(root.iterdir()):
        raise DataError(f"data folder is empty: {root}")
    raise DataError(
        f"no face data layout recognised in {root}: expected train/train_meta.csv (K-Face), "
        "Protocol/ and Data/Images/ (CFP), pairs.txt (LFW) or one sub-folder of images per identity"
    )


def summary(data: FaceData) -> dict:
    """Counts for `facelib inspect`: format, root, images, identities and pairs per protocol/fold or split; the
    unlabelled pairs per split, if any; for CFP, the images without fiducials (centre-cropped instead of cropped
    around the landmarks) and those that keep their box when aligned (`--align`: no fiducials, or a template
    point outside the image; other layouts have no landmarks, so every face keeps its box); for K-Face, images
    per view and split, each camera code's view, and whether yaw is known (without it, facing and the pretext's
    mirrored camera codes are off)."""
    result = {
        "format": data.format,
        "root": str(data.root),
        "images": len(data.images),
        "identities": int(data.images["identity"].nunique()),
        "pairs": _pair_counts(data.pairs),
    }
    if not data.pairs.empty and data.pairs["same"].isna().any():
        result["unlabelled_pairs"] = _counts(data.pairs.loc[data.pairs["same"].isna(), "split"])
    if data.format == "cfp":
        result["no_fiducials"] = int(data.images["box"].isna().sum())
        result["align_fallback"] = int(data.images["landmarks"].isna().sum())
    if data.format == "kface":
        result.update(_kface_pose_summary(data.images))
    return result


def _kface_pose_summary(images: pd.DataFrame) -> dict:
    view = images["view"].fillna("unknown")
    cameras = images.dropna(subset=["angle"]).assign(view=view).groupby("angle")
    no_yaw = [f"C{code}" for code, yaws in cameras["yaw"] if yaws.isna().all()]
    if not cameras.ngroups:
        yaw = "unknown: no file name carries a camera code (_C{code}), so facing and mirrored camera codes are off"
    elif not no_yaw:
        yaw = "known for every camera code: facing and mirrored camera codes are on"
    else:
        where = "every camera code" if len(no_yaw) == cameras.ngroups else ", ".join(no_yaw)
        yaw = (
            f"unknown for {where}: facing and mirrored camera codes are off there (a yaw column in "
            f"train/train_meta.csv or {KFACE_RENDER_FILE} gives it)"
        )
    return {
        "views": {split: _counts(group) for split, group in view.groupby(images["split"], sort=False)},
        "cameras": {f"C{code}": group["view"].iloc[0] for code, group in cameras},
        "yaw": yaw,
    }


def sample_pairs(images: pd.DataFrame, n: int, seed: int = 0) -> pd.DataFrame:
    """`n` distinct pairs of `images` (half same identity, half different, in random order), the same for the same
    seed. Pass a filtered table to sample within one split or fold."""
    rng = np.random.default_rng(seed)
    images = images[images["identity"].notna()].reset_index(drop=True)
    identity = pd.factorize(images["identity"])[0]
    groups = [members for members in pd.Series(identity).groupby(identity).indices.values() if len(members) > 1]
    same_available = sum(len(members) * (len(members) - 1) // 2 for members in groups)
    all_available = len(images) * (len(images) - 1) // 2

    def draw_same():
        return rng.choice(groups[rng.integers(len(groups))], 2, replace=False)

    def draw_different():
        i, j = rng.choice(len(images), 2, replace=False)
        return (i, j) if identity[i] != identity[j] else None

    same = _distinct_pairs(n // 2, draw_same, same_available, "same-identity")
    different = _distinct_pairs(n - n // 2, draw_different, all_available - same_available, "different-identity")
    rows = [(i, j, True) for i, j in same] + [(i, j, False) for i, j in different]
    rows = [rows[k] for k in rng.permutation(len(rows))]
    path = images["path"]
    pairs = pd.DataFrame(
        {
            "a": [path[i] for i, _, _ in rows],
            "b": [path[j] for _, j, _ in rows],
            "same": [is_same for _, _, is_same in rows],
        }
    )
    return _conform(pairs, PAIR_COLUMNS)


def one_identity(images: pd.DataFrame, identity=None) -> pd.DataFrame:
    """The images of one identity (default: the one with most images) ordered by yaw or view, then
    expression and lighting, with a short `label` per image for figure titles."""
    if identity is None:
        identity = images["identity"].value_counts().index[0]
    chosen = images[images["identity"] == identity].copy()
    order = [column for column in ("yaw", "view", "angle", "expression", "light") if chosen[column].notna().any()]
    chosen = chosen.sort_values(order, na_position="last") if order else chosen
    chosen["label"] = _labels(chosen)
    return chosen.reset_index(drop=True)


def sample_faces(images: pd.DataFrame, identities: int = 5, columns: int = 9) -> pd.DataFrame:
    """A grid's worth of faces: for the `identities` with most images, `columns` images each, evenly spread
    over the identity's images ordered as in `one_identity` (so, where the data has poses, across the poses)."""
    chosen = images["identity"].value_counts().index[:identities]
    rows = []
    for identity in chosen:
        one = one_identity(images, identity)
        rows.append(one.iloc[np.linspace(0, len(one) - 1, min(columns, len(one))).round().astype(int)])
    return pd.concat(rows, ignore_index=True)


def code_labels(images: pd.DataFrame, column: str) -> pd.Series:
    """A column as figures label it, codes decoded where the data says what they mean: camera angle 'C7 +30°'
    (the median yaw of the camera's images, where yaw is known), expression its name ('smile') where known,
    else 'E2'. Other columns are returned as they are; NA stays NA."""
    values = images[column]
    known = values.notna()
    if column == "angle":
        labels = "C" + values.astype(str)
        yaw = images.groupby("angle")["yaw"].transform("median") if "yaw" in images else values * np.nan
        labels = labels.where(yaw.isna(), labels + " " + yaw.map(_degrees, na_action="ignore"))
    elif column == "expression":
        names = images["expression_name"] if "expression_name" in images else pd.Series(None, index=images.index)
        labels = names.where(names.notna(), "E" + values.astype(str))
    else:
        return values
    return labels.astype(object).where(known, None)


def _degrees(value):
    return f"{round(value):+d}°"


def _labels(images: pd.DataFrame) -> list:
    """Short titles, codes decoded where the data says what they mean: camera code with the image's yaw in
    degrees, the expression's name."""
    yaw = images["yaw"].map(_degrees, na_action="ignore")
    parts = [
        np.where(images["angle"].notna(), "C" + images["angle"].astype(str), ""),
        yaw.fillna("").to_numpy(),
        code_labels(images, "expression").fillna("").to_numpy(),
    ]
    for column, prefix in [("light", "L"), ("view", ""), ("facing", "")]:
        known = images[column].notna()
        parts.append(np.where(known, prefix + images[column].astype(str), ""))
    return [" ".join(p for p in row if p) for row in zip(*parts)]


def view_counts(images: pd.DataFrame) -> pd.DataFrame:
    """Images per split (and in total) for each view (frontal / profile / unknown) and, where the data has camera
    codes, each code: K-Face's front / side balance and which code is which."""
    frame = images.assign(
        view=images["view"].fillna("unknown"), camera=images["angle"], split=images["split"].fillna("all")
    )
    keys = ["view", "camera"] if frame["camera"].notna().any() else ["view"]
    table = frame.groupby([*keys, "split"], dropna=False).size().unstack("split", fill_value=0)
    return table.assign(total=table.sum(axis=1))


def image_sizes(images: pd.DataFrame, sample=None, seed: int = 0) -> pd.DataFrame:
    """Width and height (pixels) of the image files, of a seeded sample of `sample` rows if given."""
    if sample is not None and sample < len(images):
        images = images.sample(n=sample, random_state=seed)
    sizes = [_image_size(path) for path in images["path"]]
    return pd.DataFrame(sizes, columns=["width", "height"], index=images.index)


def verify(paths) -> None:
    """Decode every image (JPEGs at reduced scale, which still reads all their data); DataError names a bad one,
    or one in a format training's decoder (torchvision) cannot read."""
    for path in tqdm(paths, desc="verifying images", unit="img", disable=None, leave=False):
        with _open_image(path) as image:
            if image.format not in DECODABLE_FORMATS:
                raise DataError(
                    f"{path}: {image.format} images cannot be decoded for training "
                    f"(expected {', '.join(sorted(DECODABLE_FORMATS))}); convert it"
                )
            image.draft("RGB", (64, 64))
            try:
                image.load()
            except (OSError, SyntaxError, ValueError) as error:
                raise DataError(f"corrupt image {path}: {_one_line(error)}") from None


# ----------------------------------------------------------------------------------------------- K-Face


def read_kface(root: Path):
    """Competition layout: train images from train_meta.csv, validate/test images and pairs from the label files;
    then per-image rendering metadata (if any), the view of each camera code and, where known, yaw and facing."""
    tables = [_kface_train_images(root)] if (root / "train" / "train_meta.csv").is_file() else []
    pair_tables = []
    for split, name in KFACE_PAIR_FILES.items():
        if (root / name).is_file():
            images, pairs = _kface_split(root / name, split)
            tables.append(images)
            pair_tables.append(pairs)
    images = _kface_render_metadata(root, pd.concat(tables, ignore_index=True))
    images = _views_from_camera_codes(images, root / "train" / "train_meta.csv")
    if "yaw" in images:
        images = _fill_yaw_from_camera_codes(images)
        images["facing"] = _facing_from_yaw(images["yaw"])
    return images, pd.concat(pair_tables, ignore_index=True) if pair_tables else pd.DataFrame()


def _kface_train_images(root: Path) -> pd.DataFrame:
    """train_meta.csv (file_name, face_id, the challenge's cam_angle and any extra columns, e.g. yaw) with
    attributes from the file names; cam_angle front / side becomes the view frontal / profile."""
    csv = root / "train" / "train_meta.csv"
    meta = _read_csv(csv, required=["file_name", "face_id"], dtype={"file_name": str, "face_id": str})
    paths = [str(root / "train" / name) for name in meta["file_name"]]
    _require_files(paths, csv)
    images = meta.drop(columns=["file_name", "face_id"]).assign(path=paths, identity=meta["face_id"], split="train")
    if "cam_angle" in images:
        images["view"] = _views_from_cam_angle(images.pop("cam_angle"), csv)
    if "yaw" in images:
        images["yaw"] = pd.to_numeric(images["yaw"], errors="coerce")
    _require_whole_numbers(images, ["fold", "angle", "expression", "light"], csv)
    reserved = [column for column in ("box", "view", "facing") if column in meta]
    if reserved:
        raise DataError(f"{csv}: column {reserved[0]!r} is facelib's own (derived from the data); rename it")
    attributes = _kface_attributes(meta["file_name"]).drop(columns="identity")
    return images.join(attributes[[c for c in attributes if c not in images]])


def _views_from_cam_angle(cam_angle: pd.Series, csv: Path) -> pd.Series:
    words = cam_angle.astype(str).str.strip().str.lower()
    view = words.map(KFACE_VIEWS)
    bad = view.isna()
    if bad.any():
        row = int(bad.to_numpy().argmax())
        raise DataError(
            f"{csv}: cam_angle must be {' or '.join(KFACE_VIEWS)}, found {cam_angle.iloc[row]!r} on data row {row + 1}"
        )
    return view


def _views_from_camera_codes(images: pd.DataFrame, csv: Path) -> pd.DataFrame:
    """Each camera code's view, learned from the training rows, for every image of that code (validate and test
    images have no cam_angle of their own). A code seen in training as both front and side is an error."""
    known = images.dropna(subset=["view", "angle"]) if "view" in images else images.iloc[:0]
    if known.empty:
        return images
    views = known.groupby("angle")["view"].unique()
    mixed = views[views.map(len) > 1]
    if len(mixed):
        raise DataError(f"{csv}: camera code C{mixed.index[0]} is listed both as front and as side")
    return images.assign(view=images["view"].fillna(images["angle"].map(views.map(lambda found: found[0]))))


def _kface_split(csv: Path, split: str):
    """A validate/test label file: pairs (label 0 = same) and the images they name, from the file's own folder.
    Labels come from `{split}_truth.csv` beside it when present (the synthetic test split, whose label file holds
    dummy labels as the challenge's does); dummy labels without a truth file leave a test split unlabelled."""
    table = _read_pair_file(csv)
    truth = csv.with_name(f"{split}_truth.csv")
    if truth.is_file():
        labels = _truth_labels(truth, table)
    else:
        labels = _pair_labels(table["label"], csv, required=split == "validate")
    folder = csv.parent
    pairs = pd.DataFrame(
        {
            "a": [str(folder / name) for name in table["image1"]],
            "b": [str(folder / name) for name in table["image2"]],
            # the competition's convention: 0 = SAME person, 1 = DIFFERENT; NA: unlabelled
            "same": labels.map({0: True, 1: False}).astype("boolean"),
            "split": split,
        }
    )
    names = pd.unique(table[["image1", "image2"]].to_numpy().ravel())  # in order of first appearance
    paths = [str(folder / name) for name in names]
    _require_files(paths, csv)
    images = _kface_attributes(pd.Series(names)).assign(path=paths, split=split)
    return images, pairs


def _read_pair_file(csv: Path) -> pd.DataFrame:
    """The three columns image1, image2, label read by position, as the challenge's loader does (the header row's
    names vary); a first row that names two images is data, not a header."""
    table = _read_csv(csv, required=[], header=None, dtype=str)
    if table.shape[1] != 3:
        raise DataError(f"{csv}: expected 3 columns (image1, image2, label), found {table.shape[1]}")
    table.columns = ["image1", "image2", "label"]
    first = table.iloc[0, :2].astype(str).str.lower()
    if not first.map(lambda name: Path(name).suffix in IMAGE_SUFFIXES).all():
        table = table.iloc[1:].reset_index(drop=True)
    if table.empty:
        raise DataError(f"{csv} has no pairs")
    return table


def _pair_labels(labels: pd.Series, csv: Path, required: bool) -> pd.Series:
    """The labels as 0/1 numbers; all NA when they are dummies (missing, one value only, or not 0/1), which is an
    error where they are `required` (validate: its pairs choose the threshold)."""
    numbers = pd.to_numeric(labels, errors="coerce")
    bad = ~numbers.isin([0, 1])
    if not bad.any() and numbers.nunique() == 2:
        return numbers
    if required:
        if bad.any():
            row = int(bad.to_numpy().argmax())
            found = f"found {labels.iloc[row]} on data row {row + 1}"
        else:
            found = f"found only {int(numbers.iloc[0])}"
        raise DataError(f"{csv}: label must be 0 (same) or 1 (different), with both present; {found}")
    return pd.Series(np.nan, index=labels.index)


def _truth_labels(truth: Path, table: pd.DataFrame) -> pd.Series:
    """The true labels of a pair file whose own labels are dummies: same pairs in the same order, real labels."""
    true = _read_pair_file(truth)
    if not true[["image1", "image2"]].equals(table[["image1", "image2"]]):
        raise DataError(f"{truth}: its pairs must be those of {truth.name.replace('_truth', '_label')}, in order")
    return _pair_labels(true["label"], truth, required=True)


def _kface_render_metadata(root: Path, images: pd.DataFrame) -> pd.DataFrame:
    """render_meta.csv (split, file_name and e.g. yaw, pitch; written by facelib.synthetic): optional per-image
    values that the challenge's files do not carry; they fill what the file names and train_meta.csv leave NA."""
    csv = root / KFACE_RENDER_FILE
    if not csv.is_file():
        return images
    meta = _read_csv(csv, required=["split", "file_name"], dtype={"split": str, "file_name": str})
    key = pd.MultiIndex.from_arrays([images["split"], images["path"].map(os.path.basename)])
    meta = meta.drop_duplicates(["split", "file_name"]).set_index(["split", "file_name"])
    for column in meta.columns:
        values = meta[column].reindex(key).to_numpy()
        if column in images:
            images[column] = images[column].where(images[column].notna(), values)
        else:
            images[column] = values
    return images


def _kface_attributes(names: pd.Series) -> pd.DataFrame:
    """identity, light, expression, angle parsed from K-Face file names (NA where a name does not match)."""
    parsed = names.str.extract(KFACE_NAME)
    return parsed.astype({"light": "Int64", "expression": "Int64", "angle": "Int64"})


def _fill_yaw_from_camera_codes(images: pd.DataFrame) -> pd.DataFrame:
    """K-Face cameras sit at fixed angles, so an image without a yaw gets the median yaw of its camera code."""
    per_camera = images.groupby("angle")["yaw"].transform("median")
    return images.assign(yaw=images["yaw"].fillna(per_camera))


def _facing_from_yaw(yaw: pd.Series) -> pd.Series:
    facing = np.where(yaw > 0, "right", np.where(yaw < 0, "left", None))
    return pd.Series(facing, index=yaw.index, dtype=object)


# ----------------------------------------------------------------------------------------------- CFP


def read_cfp(root: Path):
    """Official CFP layout: images listed by the two pair lists, fiducial-derived facing and crop box, FF/FP folds."""
    protocol = root / "Protocol"
    frontal = _cfp_pair_list(protocol / "Pair_list_F.txt")
    profile = _cfp_pair_list(protocol / "Pair_list_P.txt")
    images = pd.DataFrame(
        [_cfp_image(root, path, "frontal") for path in frontal]
        + [_cfp_image(root, path, "profile") for path in profile]
    )
    pairs = _cfp_pairs(protocol, frontal, profile)
    unmarked = int(images["box"].isna().sum())
    if unmarked:
        warnings.warn(f"{root}: {unmarked} CFP images have no fiducial file; they are centre-cropped")
    return images.sort_values("path", ignore_index=True), pairs


def _cfp_image(root: Path, path: str, view: str) -> dict:
    """One image row: identity NNN from the path, its protocol fold, and facing, box and landmarks from its
    fiducials."""
    identity = Path(path).parent.parent.name
    points = _cfp_fiducials(root, Path(path))
    width, height = _image_size(path)
    return {
        "path": path,
        "identity": identity,
        "fold": (int(identity) - 1) // CFP_IDENTITIES_PER_FOLD + 1,
        "view": view,
        "facing": _cfp_facing(points, view),
        "box": _cfp_box(points, view, width, height),
        "landmarks": _cfp_landmarks(points, view, width, height),
    }


def _cfp_pair_list(path: Path) -> list:
    """Pair_list_*.txt: line k = "k ../Data/Images/NNN/view/NN.jpg"; returns absolute paths, index k-1."""
    if not path.is_file():
        raise DataError(f"CFP pair list not found: {path}")
    paths = []
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        fields = line.split(maxsplit=1)
        if len(fields) != 2 or fields[0] != str(number):
            raise DataError(f"{path} line {number}: expected '{number} ../Data/Images/NNN/VIEW/NN.jpg', got {line!r}")
        paths.append(os.path.normpath(path.parent / fields[1]))
    _require_files(paths, path)
    return paths


def _cfp_pairs(protocol: Path, frontal: list, profile: list) -> pd.DataFrame:
    """Split/{FF,FP}/NN/{same,diff}.txt, the folds present only; "i,j" index the frontal / frontal-or-profile lists."""
    tables = []
    for name, second in [("FF", frontal), ("FP", profile)]:
        for fold_dir in sorted((protocol / "Split" / name).glob("[0-9]*")):
            for kind in ["same", "diff"]:
                indices = _cfp_split_file(fold_dir / f"{kind}.txt", len(frontal), len(second))
                tables.append(
                    pd.DataFrame(
                        {
                            "a": [frontal[i - 1] for i in indices["i"]],
                            "b": [second[j - 1] for j in indices["j"]],
                            "same": kind == "same",
                            "fold": int(fold_dir.name),
                            "protocol": name,
                        }
                    )
                )
    return pd.concat(tables, ignore_index=True) if tables else pd.DataFrame()


def _cfp_split_file(path: Path, first_count: int, second_count: int) -> pd.DataFrame:
    indices = _read_csv(path, required=["i", "j"], header=None, names=["i", "j"], dtype=int)
    out_of_range = ~(indices["i"].between(1, first_count) & indices["j"].between(1, second_count))
    if out_of_range.any():
        row = indices[out_of_range].iloc[0]
        raise DataError(
            f"{path}: pair {row['i']},{row['j']} names an image beyond the pair lists "
            f"({first_count} and {second_count} entries)"
        )
    return indices


def _cfp_fiducials(root: Path, image_path: Path):
    """The 30 landmarks of an image as an array [30, 2] (x, y), or None where the fiducial file is missing."""
    relative = image_path.relative_to(root / "Data" / "Images").with_suffix(".txt")
    path = root / "Data" / "Fiducials" / relative
    try:
        text = path.read_text()
    except FileNotFoundError:
        return None
    try:
        points = np.array(text.replace(",", " ").split(), dtype=float).reshape(-1, 2)
    except ValueError:
        points = np.empty((0, 2))
    if len(points) < CFP_NOSE.stop:
        raise DataError(f"{path}: expected 30 landmarks as 'x,y' lines")
    return points


def _cfp_facing(points, view: str):
    """Profiles: the side of the nose relative to the jaw contour's top (the ear). On all 1800 CFP profiles the
    two are at least 0.29 of the landmarks' width apart, so the sign is unambiguous."""
    if points is None or view != "profile":
        return None
    return "right" if points[CFP_NOSE, 0].mean() > points[CFP_JAW_TOP, 0].mean() else "left"


def _cfp_box(points, view: str, width: int, height: int):
    """A square around the landmarks plus margin, raised to keep the forehead, moved (and if need be shrunk) to fit
    the image. Frontal landmarks mark one half of the face, so they are mirrored about the nose ridge first."""
    if points is None:
        return None
    if view == "frontal":
        ridge_x = points[CFP_NOSE_RIDGE, 0].mean()
        points = np.vstack([points, np.column_stack([2 * ridge_x - points[:, 0], points[:, 1]])])
    low, high = points.min(axis=0), points.max(axis=0)
    side = min((high - low).max() * (1 + 2 * BOX_MARGIN), width, height)
    centre_x, centre_y = (low + high) / 2 - (0, BOX_RAISE * side)
    side = int(round(side))
    x0 = int(np.clip(round(centre_x - side / 2), 0, width - side))
    y0 = int(np.clip(round(centre_y - side / 2), 0, height - side))
    return (x0, y0, x0 + side, y0 + side)


def _cfp_landmarks(points, view: str, width: int, height: int):
    """The view's CFP_ALIGNMENT_POINTS as ((x, y), ...), or None where the fiducials are missing or one of those
    points lies outside the image (mostly a chin below its bottom edge): a warp fitted to a guessed point would
    misplace the face, so such an image keeps its box."""
    if points is None:
        return None
    chosen = np.array([points[group].mean(axis=0) for group in CFP_ALIGNMENT_POINTS[view]])
    inside = (chosen >= 0).all() and (chosen <= (width - 1, height - 1)).all()
    return tuple(map(tuple, chosen.round(3).tolist())) if inside else None


# ----------------------------------------------------------------------------------------------- LFW and plain folders


def read_lfw(root: Path):
    """One folder per identity plus the standard LFW pairs.txt."""
    images = _folder_images(root)
    pairs = _lfw_pairs(root / "pairs.txt", root)
    _require_files(pairs[["a", "b"]].to_numpy().ravel(), root / "pairs.txt")
    return images, pairs


def _lfw_pairs(path: Path, root: Path) -> pd.DataFrame:
    """Header "folds n" (each fold: n same lines, then n different lines) or just "n" (n same, n different, no fold).
    Same: "name i j"; different: "name1 i name2 j"; image i of name is name/name_000i.jpg."""
    lines = [line.split() for line in path.read_text().splitlines() if line.strip()]
    if not lines or not 1 <= len(lines[0]) <= 2 or not all(token.isdigit() for token in lines[0]):
        raise DataError(f"{path}: first line must be 'folds n' or 'n'")
    folds, per_class = (int(lines[0][0]), int(lines[0][1])) if len(lines[0]) == 2 else (None, int(lines[0][0]))
    body = lines[1:]
    if len(body) != 2 * per_class * (folds or 1):
        raise DataError(f"{path}: header promises {2 * per_class * (folds or 1)} pairs, found {len(body)} lines")

    rows = []
    for number, fields in enumerate(body, start=1):
        try:
            rows.append(_lfw_pair(root, fields))
        except ValueError:
            raise DataError(
                f"{path}: pair {number} {' '.join(fields)!r}: expected 'name i j' or 'name1 i name2 j'"
            ) from None
        same_block = (number - 1) % (2 * per_class) < per_class  # each fold: n same lines, then n different
        if rows[-1][2] != same_block or (not same_block and fields[0] == fields[2]):
            block, line = ("same", "different-person") if same_block else ("different", "same-person")
            raise DataError(f"{path}: pair {number} {' '.join(fields)!r} is a {line} line inside a {block!r} block")
    pairs = pd.DataFrame(rows, columns=["a", "b", "same"])
    if folds:
        pairs["fold"] = np.arange(len(pairs)) // (2 * per_class) + 1
    return pairs


def _lfw_pair(root: Path, fields: list) -> tuple:
    """(a, b, same) from "name i j" or "name1 i name2 j"; ValueError for anything else."""
    if len(fields) == 3:
        name, first, second = fields
        return _lfw_image(root, name, first), _lfw_image(root, name, second), True
    name1, first, name2, second = fields
    return _lfw_image(root, name1, first), _lfw_image(root, name2, second), False


def _lfw_image(root: Path, name: str, number: str) -> str:
    return str(root / name / f"{name}_{int(number):04d}.jpg")


def read_folder(root: Path):
    """One sub-folder of images per identity; no pairs (see `sample_pairs`)."""
    return _folder_images(root), pd.DataFrame()


def _identity_folders(root: Path) -> list:
    return sorted(folder for folder in root.iterdir() if folder.is_dir() and _image_files(folder))


def _image_files(folder: Path) -> list:
    return sorted(path for path in folder.iterdir() if path.suffix.lower() in IMAGE_SUFFIXES and path.is_file())


def _folder_images(root: Path) -> pd.DataFrame:
    rows = [(str(path), folder.name) for folder in _identity_folders(root) for path in _image_files(folder)]
    return pd.DataFrame(rows, columns=["path", "identity"])


READERS = {"kface": read_kface, "cfp": read_cfp, "lfw": read_lfw, "folder": read_folder}


# ----------------------------------------------------------------------------------------------- helpers


def _read_csv(path: Path, required: list, **options) -> pd.DataFrame:
    """pandas.read_csv with one-line DataErrors: unreadable file or a missing required column, named."""
    try:
        table = pd.read_csv(path, **options)
    except FileNotFoundError:
        raise DataError(f"file not found: {path}") from None
    except pd.errors.EmptyDataError:
        raise DataError(f"{path} is empty") from None
    except (pd.errors.ParserError, ValueError, UnicodeDecodeError) as error:
        raise DataError(f"{path}: cannot read as CSV: {_one_line(error)}") from None
    missing = [column for column in required if column not in table]
    if missing:
        raise DataError(
            f"{path}: missing column {missing[0]!r} (needs {', '.join(required)}; "
            f"has {', '.join(map(str, table.columns))})"
        )
    return table


def _require_utf8_names(paths) -> None:
    """Training keys its cache on the path text: a name that is not valid UTF-8 would fail there."""
    for path in paths:
        try:
            str(path).encode("utf-8")
        except UnicodeEncodeError:
            raise DataError(f"{path!r}: file name is not valid UTF-8; rename it") from None


def _require_whole_numbers(table: pd.DataFrame, columns: list, csv: Path) -> None:
    """Extra CSV columns named like facelib's numeric ones (e.g. angle) must hold whole numbers."""
    for column in columns:
        if column in table:
            values = pd.to_numeric(table[column], errors="coerce")
            bad = table[column].notna() & (values.isna() | (values % 1 != 0))
            if bad.any():
                raise DataError(
                    f"{csv}: column {column!r} must hold whole numbers (facelib reads it as the {column}), "
                    f"found {table[column][bad].iloc[0]!r}"
                )
            table[column] = values


def _drop_duplicate_pairs(pairs: pd.DataFrame) -> pd.DataFrame:
    """A pair listed twice would count twice in every metric: keep the first, and say so."""
    duplicated = pairs.astype(str).duplicated()
    if duplicated.any():
        warnings.warn(f"dropped {int(duplicated.sum())} duplicate pair rows (each pair is counted once)")
    return pairs[~duplicated].reset_index(drop=True)


def _require_files(paths, listed_in: Path) -> None:
    missing = next((path for path in paths if not os.path.isfile(path)), None)
    if missing is not None:
        raise DataError(f"{listed_in} names an image that does not exist: {missing}")


def _open_image(path):
    try:
        return Image.open(path)
    except (OSError, SyntaxError, ValueError) as error:
        raise DataError(f"corrupt image {path}: {_one_line(error)}") from None


def _image_size(path) -> tuple:
    with _open_image(path) as image:  # reads the header only
        return image.size


def _one_line(error: Exception) -> str:
    return " ".join(str(error).split())


def _pair_counts(pairs: pd.DataFrame) -> dict:
    """{protocol: {fold: n}} for CFP, {split: n} for split layouts, {fold: n} for folded LFW, else {"all": n}."""
    if pairs.empty:
        return {}
    if pairs["protocol"].notna().any():
        return {protocol: _counts(group["fold"]) for protocol, group in pairs.groupby("protocol", sort=False)}
    if pairs["split"].notna().any():
        return _counts(pairs["split"])
    if pairs["fold"].notna().any():
        return _counts(pairs["fold"])
    return {"all": len(pairs)}


def _counts(column: pd.Series) -> dict:
    return {str(key): int(count) for key, count in column.value_counts(sort=False).items()}  # first-seen order


def _distinct_pairs(n: int, draw, available: int, kind: str) -> list:
    """Call `draw()` (an index pair or None) until `n` distinct unordered pairs are collected, in draw order."""
    if n > available:
        raise DataError(f"cannot sample {n} {kind} pairs: only {available} exist")
    chosen = {}
    while len(chosen) < n:
        pair = draw()
        if pair is not None:
            chosen.setdefault(tuple(sorted(int(index) for index in pair)), None)
    return list(chosen)


def _conform(table: pd.DataFrame, columns: dict) -> pd.DataFrame:
    """All `columns` first, with their dtypes (missing -> NA, text NA -> None), then any extra columns."""
    extra = [column for column in table.columns if column not in columns]
    table = table.reindex(columns=[*columns, *extra]).reset_index(drop=True)
    for column, dtype in columns.items():
        if dtype is object:
            values = table[column].astype(object)
            table[column] = values.where(values.notna(), None)
        else:
            table[column] = table[column].astype(dtype)
    return table
