"""The embedded default data: procedural cartoon faces seen from nine camera angles, in the K-Face layout.

Each identity is a small scene of ellipsoids (cranium, jaw, nose, ears, neck, hair shells, shoulders) with
features painted on the skin (eyes, brows, mouth, beard, glasses, freckles...). Every image ray-casts that scene
after rotating it to the camera's yaw plus a little pitch, roll, shift and scale, shades it with one of a few
light directions and puts it in front of a random background. So the identity cues (head shape, skin, hair,
eye colour, feature geometry) stay fixed while pose, light, expression and background change, and a model has
to recognise a person from the side that it has seen from the front.

The photo style (`generate(style="photo")`, `facelib synth --style photo`) renders the same people, views and
splits without the cartoon's ink outlines, with natural hair colours, faintly mottled and shiny skin, and a little
defocus and sensor noise per image: a step towards real photographs for pretraining (benchmarks/cfp.py). The
sculpted style keeps the cartoon's look and gives each person the fine facial relief by which real faces differ:
brow ridge, nose bridge, cheekbones, lips and chin stand out by that person's own amounts.

Layout written by `generate`, the K-Face challenge's files as shipped, so the default takes the real data's path:
    train/train_meta.csv       file_name, face_id, cam_angle (front: C4-C6, |yaw| <= 22.5; side: the other six,
                               so 1 front image to 2 side images, the challenge's proportion)
    train/{face_id}_S001_L{light}_E{expr:02d}_C{angle}_cropped.jpg
    validate/validate_label.csv  image1 (front), image2 (side), label (0 = SAME person, 1 = DIFFERENT)
    test/test_label.csv        the same with dummy labels (all 0), as the challenge's test file has
    test/test_truth.csv        the true test labels, which only facelib's own evaluation reads
    validate/*.jpg, test/*.jpg  the images those pairs name
    render_meta.csv            split, file_name, light, expression (code and name), yaw, pitch as rendered
                               (facelib.layouts reads it when present for yaw, facing, mirrored camera codes and
                               expression names; nothing needs it)
    synthetic.json             the generator settings and layout version (provenance)
Identities of train / validate / test are disjoint (70 / 15 / 15 of 100). Each identity has 54 images:
9 cameras x 3 expressions x 2 of the 4 lights (drawn per camera and expression), which keeps the default set
small enough to train on a CPU in minutes. Pairs are a front image (image1) against a side image (image2): per
identity and side camera 4 same and 4 different, so every side camera is equally represented (720 pairs per split
by default).

Difficulty: the backgrounds, light and framing change with every image, so cosine similarity of raw pixels verifies
the default test pairs little better than chance (tests/test_synthetic.py keeps it below 0.70 accuracy), while hair,
skin, head shape and face geometry stay fixed across pose, so a small CNN trained for minutes on the training
identities learns to verify them (the measured runs: benchmarks/results/synthetic.md).
"""

import dataclasses
import json
import os
import shutil
import tempfile
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from multiprocessing import get_all_start_methods, get_context
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image, ImageFilter
from tqdm import tqdm

from facelib import options
from facelib.errors import FacelibError

# Camera code -> yaw in degrees. 0 = frontal; positive = the nose points towards the image's right side.
CAMERA_YAW = {1: -90.0, 2: -67.5, 3: -45.0, 4: -22.5, 5: 0.0, 6: 22.5, 7: 45.0, 8: 67.5, 9: 90.0}
FRONTAL_CAMERA = 5
FRONT_CAMERAS = (4, 5, 6)  # cam_angle "front"; the other six are "side"
EXPRESSIONS = {1: "neutral", 2: "smile", 3: "surprise"}
# Light code -> direction towards the light (camera frame: x right, y up, z towards the viewer).
LIGHT_DIRECTION = {1: (-0.7, 0.4, 0.6), 2: (0.7, 0.4, 0.6), 3: (0.0, 0.9, 0.45), 4: (0.1, 0.1, 1.0)}
LIGHTS_PER_VIEW = 2  # of the 4 lights, per camera and expression: 9 x 3 x 2 = 54 images per identity
PAIRS_PER_CAMERA = 4  # validate/test: per identity and side camera, 4 same + 4 different pairs (48 per identity)
DUMMY_LABEL = 0  # every label of test_label.csv, as in the challenge's file; the truth goes to test_truth.csv
LAYOUT = 2  # synthetic.json's layout version; 1: the extra train_meta columns, C5-only front, labelled test file
EVAL_FRACTION = 0.15  # of the identities, each for validate and for test
JPEG_QUALITY = 92
JAW_FORWARD = 0.02  # the jaw's centre sits this far in front of the cranium's (head units)
SUPERSAMPLE = 2  # rays per pixel along each axis: smooth edges without a blur
# "cartoon": the default set's look. "photo" (issue 17, lever 7's realism): what a photograph has and a cartoon
# lacks, on the same people and views: no ink outlines, natural hair colours, mottled skin that turns with the head,
# a specular shine, and per image a little defocus and sensor noise.
STYLES = options.SYNTHETIC_STYLES
NATURAL_HAIR = 8  # HAIR_COLOURS' first 8: black to grey; the rest (blue, pink, green, violet) are dyes

# ---------------------------------------------------------------------------------------------- identities

SKIN_TONES = (
    np.array(
        [
            [255, 224, 196],
            [241, 194, 160],
            [224, 172, 125],
            [198, 134, 92],
            [160, 102, 66],
            [125, 80, 55],
            [100, 66, 46],
        ],
        np.float32,
    )
    / 255
)
HAIR_COLOURS = (
    np.array(
        [
            [25, 22, 22],
            [70, 45, 30],
            [120, 80, 45],
            [165, 70, 35],
            [215, 170, 90],
            [235, 220, 170],
            [150, 150, 155],
            [235, 235, 235],
            [40, 70, 160],
            [200, 70, 140],
            [60, 140, 90],
            [110, 60, 160],
        ],
        np.float32,
    )
    / 255
)
IRIS_COLOURS = (
    np.array([[70, 45, 25], [35, 25, 20], [60, 110, 180], [70, 130, 80], [130, 100, 50], [110, 120, 130]], np.float32)
    / 255
)
# hair style -> unit-sphere height of the hair's edge at the front, the sides and the back (None: no cap)
HAIRLINES = {
    "short": (0.5, 0.25, -0.5),
    "buzz": (0.55, 0.3, -0.45),
    "fringe": (0.15, 0.2, -0.5),
    "side_part": (0.42, 0.2, -0.55),
    "long": (0.45, -0.9, -0.9),
    "bun": (0.5, 0.3, -0.35),
    "curly": (0.45, 0.0, -0.55),
    "balding": (1.2, 0.05, -0.4),
    "mohawk": None,
}
HAIR_STYLES = list(HAIRLINES)
BEARDS = [None, None, None, "stubble", "full", "goatee", "moustache"]


@dataclass(frozen=True)
class Identity:
    """Everything that makes one cartoon person recognisable (head units: the image spans -1..1)."""

    skin: np.ndarray
    lips: np.ndarray
    hair: np.ndarray
    iris: np.ndarray
    hair_style: str
    hairline: tuple  # see HAIRLINES
    hair_part: float  # slope of the front hairline across the forehead (a side parting)
    hair_wave: tuple  # amplitude, frequency, phase of the hair edge
    hair_thickness: float
    head: np.ndarray  # cranium radii x, y, z
    jaw: np.ndarray  # jaw radii relative to the cranium's, and its drop below the centre
    eyes: np.ndarray  # half distance, height, half width, half height, iris radius, tilt
    brows: np.ndarray  # height above the eye, thickness, arch, tilt, half length
    nose: np.ndarray  # height, half width, half height, length, tilt (radians)
    mouth: np.ndarray  # height, half width, lip thickness
    ears: float  # scale
    glasses: object  # None or (frame colour, lens radius, squareness)
    beard: object  # None or a style name from BEARDS
    freckles: np.ndarray  # [k, 2] spots on the cheeks: x, height below the eyes (k may be 0)
    blush: float  # opacity of the cheek blush
    mottling: np.ndarray = field(default_factory=lambda: np.zeros((0, 5), np.float32))  # photo: skin waves
    #                      [k, 5]: direction * frequency (x, y, z), phase, amplitude
    relief: np.ndarray = field(default_factory=lambda: np.zeros((0, 6), np.float32))  # sculpted: facial relief
    #                    [k, 6]: bumps on the face, each x, y, half width, half height, depth, how far it stands out


def sample_identity(rng: np.random.Generator) -> Identity:
    """One random person. Many independent choices (hair style and colour, skin, beard, glasses, eye colour, and
    the proportions) make two people rarely look alike: style, hair colour and skin alone match 1 time in 750."""
    u = rng.uniform
    head = np.array([u(0.42, 0.5), u(0.56, 0.64), u(0.56, 0.64)], np.float32)  # deeper than wide, like a skull
    style = HAIR_STYLES[rng.integers(len(HAIR_STYLES))]
    hairline = HAIRLINES[style] and tuple(h + u(-0.06, 0.06) for h in HAIRLINES[style])
    thickness = {"buzz": 1.03, "curly": u(1.18, 1.28)}.get(style, u(1.05, 1.09))
    skin = SKIN_TONES[rng.integers(len(SKIN_TONES))] * u(0.94, 1.04, 3).astype(np.float32)
    hair = HAIR_COLOURS[rng.integers(len(HAIR_COLOURS))] * u(0.9, 1.08, 3).astype(np.float32)
    glasses = None
    if rng.random() < 0.3:
        glasses = (
            np.array(rng.choice([[0.1, 0.1, 0.1], [0.55, 0.2, 0.15], [0.15, 0.3, 0.6], [0.75, 0.65, 0.3]]), np.float32),
            u(0.085, 0.11),
            float(rng.choice([2.0, 4.0])),
        )
    freckles = (
        np.column_stack([rng.uniform(-0.3, 0.3, 25), rng.uniform(-0.22, -0.06, 25)]).astype(np.float32)
        if rng.random() < 0.2
        else np.zeros((0, 2), np.float32)
    )
    return Identity(
        skin=np.clip(skin, 0, 1),
        lips=np.clip(skin * [0.78, 0.5, 0.5] + [0.12, 0.0, 0.02], 0, 1).astype(np.float32),
        hair=np.clip(hair, 0, 1),
        iris=IRIS_COLOURS[rng.integers(len(IRIS_COLOURS))],
        hair_style=style,
        hairline=hairline,
        hair_part=float(rng.choice([-1, 1]) * u(0.0, 0.35)),
        hair_wave=(u(0.0, 0.08), float(rng.integers(3, 9)), u(0, 2 * np.pi)),
        hair_thickness=thickness,
        head=head,
        jaw=np.array([u(0.72, 1.0), u(0.72, 0.9), u(0.82, 0.95), u(0.18, 0.3)], np.float32),
        eyes=np.array(
            [u(0.16, 0.21), u(0.0, 0.07), u(0.075, 0.1), u(0.045, 0.06), u(0.032, 0.042), u(-0.25, 0.25)], np.float32
        ),
        brows=np.array([u(0.04, 0.08), u(0.015, 0.03), u(0.0, 0.04), u(-0.25, 0.25), u(0.08, 0.12)], np.float32),
        nose=np.array([u(-0.18, -0.12), u(0.045, 0.075), u(0.08, 0.12), u(0.1, 0.17), u(-0.35, 0.3)], np.float32),
        mouth=np.array([u(-0.37, -0.31), u(0.1, 0.15), u(0.014, 0.026)], np.float32),
        ears=u(0.8, 1.25),
        glasses=glasses,
        beard=BEARDS[rng.integers(len(BEARDS))],
        freckles=freckles,
        blush=u(0.0, 0.35) if rng.random() < 0.4 else 0.0,
    )


@dataclass(frozen=True)
class View:
    """One photograph of an identity: pose, expression, light, framing and background."""

    angle: int
    expression: int
    light: int
    yaw: float
    pitch: float
    roll: float
    scale: float
    shift: np.ndarray  # image units
    light_dir: np.ndarray
    light_tint: np.ndarray
    ambient: float
    background: tuple  # colour a, colour b, ramp angle, stripes (rgb, frequency, angle, phase, opacity),
    #                    blobs [k, 6]: x, y, radius, rgb
    shirt: np.ndarray
    camera: tuple = (0.0, 0.0, 0)  # photo: defocus (Gaussian sigma, px), sensor noise (std), noise seed


def sample_view(rng: np.random.Generator, angle: int, expression: int, light: int) -> View:
    """One random photograph at the given camera, expression and light (the nuisances a model must ignore)."""
    u = rng.uniform
    direction = np.array(LIGHT_DIRECTION[light], np.float32) + u(-0.1, 0.1, 3).astype(np.float32)
    colour_a, colour_b, colour_stripes = _random_colours(rng, 3)
    stripes = (colour_stripes, u(2, 14), u(0, np.pi), u(0, 2 * np.pi), u(0, 0.6) * (rng.random() < 0.5))
    n_blobs = rng.integers(0, 5)
    blobs = np.column_stack([u(-1, 1, (n_blobs, 2)), u(0.15, 0.6, n_blobs), _random_colours(rng, n_blobs)])
    return View(
        angle=angle,
        expression=expression,
        light=light,
        yaw=CAMERA_YAW[angle] + u(-3, 3),
        pitch=u(-10, 10),
        roll=u(-6, 6),
        scale=u(1.05, 1.18),
        shift=(u(-0.05, 0.05, 2) - [0, 0.04]).astype(np.float32),
        light_dir=direction / np.linalg.norm(direction),
        light_tint=(u(0.88, 1.12) * u(0.95, 1.05, 3)).astype(np.float32),
        ambient=u(0.45, 0.6),
        background=(colour_a, colour_b, u(0, 2 * np.pi), stripes, blobs.astype(np.float32)),
        shirt=_random_colours(rng, 1)[0],
    )


def _random_colours(rng, n):
    """n colours of any hue, grey to saturated, dark to light (HSV -> RGB)."""
    hue, sat, val = rng.uniform(0, 1, n), rng.uniform(0.1, 0.85, n), rng.uniform(0.2, 0.95, n)
    k = (np.array([5.0, 3.0, 1.0]) + hue[:, None] * 6) % 6
    rgb = val[:, None] - val[:, None] * sat[:, None] * np.clip(np.minimum(k, 4 - k), 0, 1)
    return rgb.astype(np.float32)


def photographed(person: Identity, rng: np.random.Generator) -> Identity:
    """The photo style's person: a natural hair colour and skin mottling (a few faint waves across the head, so
    the pattern is the person's and turns with the head, as blotches and freckles do)."""
    hair = HAIR_COLOURS[rng.integers(NATURAL_HAIR)] * rng.uniform(0.9, 1.08, 3).astype(np.float32)
    directions = rng.normal(size=(6, 3))
    directions /= np.linalg.norm(directions, axis=1, keepdims=True)
    waves = np.column_stack(
        [directions * rng.uniform(15, 60, (6, 1)), rng.uniform(0, 2 * np.pi, 6), rng.uniform(0.004, 0.012, 6)]
    )
    return dataclasses.replace(person, hair=np.clip(hair, 0, 1), mottling=waves.astype(np.float32))


def photographed_view(view: View, rng: np.random.Generator) -> View:
    """The photo style's camera: defocus and sensor noise that change from one picture to the next."""
    return dataclasses.replace(view, camera=(rng.uniform(0.0, 0.7), rng.uniform(0.0, 0.02), int(rng.integers(2**31))))


def sculpted(person: Identity, rng: np.random.Generator) -> Identity:
    """The sculpted style's person: the fine geometry by which real faces differ, as bumps on the face that stand
    out by a person's own amount (brow ridge, cheekbones, nose bridge, lips and chin), so that two people
    also differ in their profile line and in how light falls across the face, not only in colours and paint."""
    u = rng.uniform
    ex, ey = person.eyes[0], person.eyes[1]
    nose_y, my = person.nose[0], person.mouth[0]
    chin_y = -(person.jaw[3] + person.jaw[1]) * person.head[1]  # the jaw's lowest point
    bumps = [  # x, y, half width, half height, depth, how far it stands out
        (0.0, ey + u(0.08, 0.12), u(0.2, 0.3), u(0.04, 0.06), 0.12, u(0.0, 0.04)),  # brow ridge, under the hair
        (0.0, (ey + nose_y) / 2, u(0.025, 0.045), (ey - nose_y) / 2 + 0.02, 0.1, u(0.0, 0.06)),  # nose bridge
        (0.0, my + u(-0.01, 0.02), person.mouth[1] * u(1.1, 1.5), u(0.05, 0.08), 0.1, u(0.0, 0.05)),  # lips
        (0.0, chin_y + u(0.06, 0.1), u(0.06, 0.14), u(0.05, 0.08), 0.1, u(-0.01, 0.06)),  # chin
    ]
    cheek_x, cheek_y, cheek = ex + u(0.0, 0.06), ey - u(0.1, 0.16), (u(0.06, 0.1), u(0.04, 0.07), 0.1, u(0.0, 0.045))
    bumps += [(side * cheek_x, cheek_y, *cheek) for side in (-1, 1)]  # cheekbones, alike on both sides
    return dataclasses.replace(person, relief=np.array(bumps, np.float32))


# ---------------------------------------------------------------------------------------------- the scene

SKIN, FACE, NOSE, EAR, HAIR, SHIRT = range(6)  # materials; FACE is skin that carries the painted features


@dataclass(frozen=True)
class Ellipsoid:
    """One part of a person's scene, in head coordinates."""

    centre: np.ndarray
    radii: np.ndarray
    material: int
    axes: np.ndarray = field(default_factory=lambda: np.eye(3, dtype=np.float32))  # columns: its axes
    mask: object = None  # fn(unit-sphere point [3, n]) -> bool [n]: where the surface exists (hair shells)

    def __post_init__(self):  # float32 throughout: rendering speed
        object.__setattr__(self, "centre", np.asarray(self.centre, np.float32))
        object.__setattr__(self, "radii", np.asarray(self.radii, np.float32))


def build_scene(person: Identity) -> list:
    """The ellipsoids of one person, in head coordinates (x right, y up, z out of the face)."""
    rx, ry, rz = person.head
    jaw_x, jaw_y, jaw_z, jaw_drop = person.jaw
    nose_y, nose_w, nose_h, nose_l, nose_tilt = person.nose
    surface_z = rz * np.sqrt(max(1 - (nose_y / ry) ** 2, 0.0))
    ear_y = person.eyes[1] - 0.07
    scene = [
        Ellipsoid((0, 0, 0), (rx, ry, rz), FACE),
        Ellipsoid((0, -jaw_drop * ry, JAW_FORWARD), (rx * jaw_x, ry * jaw_y, rz * jaw_z), FACE),
        Ellipsoid((0, nose_y, surface_z - nose_l * 0.1), (nose_w, nose_h, nose_l), NOSE, _rotation_x(nose_tilt)),
        Ellipsoid((0, -ry * 1.05, -0.06), (0.2, 0.45, 0.22), SKIN),  # neck
        Ellipsoid((0, -ry * 2.15, -0.1), (0.95, 0.55, 0.42), SHIRT),
    ]
    for side in (-1, 1):
        ear_axes = _rotation_y(-side * 0.45) @ _rotation_x(-0.15)  # flaring out towards the back
        scene.append(
            Ellipsoid(
                (side * rx * 0.97, ear_y, -0.12 * rz), (0.035, 0.12 * person.ears, 0.075 * person.ears), EAR, ear_axes
            )
        )
    scene += [
        Ellipsoid((x, y, _face_depth(person, x, y) - depth + out), (width, height, depth), FACE)
        for x, y, width, height, depth, out in person.relief
    ]
    scene += _hair(person)
    return scene


def _face_depth(person: Identity, x, y):
    """How far the face (cranium or jaw, whichever is in front) stands out of the head at (x, y)."""
    rx, ry, rz = person.head
    jaw_x, jaw_y, jaw_z, jaw_drop = person.jaw
    cranium = rz * np.sqrt(max(1 - (x / rx) ** 2 - (y / ry) ** 2, 0.0))
    across_jaw = 1 - (x / (rx * jaw_x)) ** 2 - ((y + jaw_drop * ry) / (ry * jaw_y)) ** 2
    jaw = JAW_FORWARD + rz * jaw_z * np.sqrt(max(across_jaw, 0.0))
    return max(cranium, jaw)


def _hair(person: Identity) -> list:
    """Hair: a shell around the cranium cut along a wavy hairline, plus the style's extra parts."""
    rx, ry, rz = person.head
    t, style = person.hair_thickness, person.hair_style
    shells = (
        [Ellipsoid((0, 0.02, -0.02), (rx * t, ry * t, rz * t), HAIR, mask=_hair_cap(person))] if person.hairline else []
    )
    if style == "long":  # a curtain falling behind the face down to the shoulders
        shells.append(
            Ellipsoid(
                (0, -0.3 * ry, -0.12 * rz),
                (rx * 1.2, ry * 1.05, rz * 0.95),
                HAIR,
                mask=lambda q: (q[2] < 0.35 + 0.1 * np.sin(9 * q[0])) & (q[1] > -0.8),
            )
        )
    if style == "mohawk":  # a fin from the forehead over the crown to the nape
        shells.append(Ellipsoid((0, ry * 0.3, -0.1 * rz), (0.07, ry * 0.85, rz * 0.98), HAIR))
    if style == "bun":
        shells.append(Ellipsoid((0, ry * 0.85, -rz * 0.55), (0.17, 0.16, 0.17), HAIR))
    return shells


def _hair_cap(person: Identity):
    """Mask of the hair shell: above a hairline that is a smooth, wavy function of the angle around the head."""
    front, side, back = person.hairline
    amplitude, frequency, phase = person.hair_wave
    # a0 + a1 cos + a2 cos 2a passes through front (angle 0), side (+-pi/2) and back (pi)
    a0, a1, a2 = ((front + back) / 2 + side) / 2, (front - back) / 2, ((front + back) / 2 - side) / 2

    def cap(q):
        around = np.arctan2(q[0], q[2])
        line = a0 + a1 * np.cos(around) + a2 * np.cos(2 * around) + amplitude * np.sin(frequency * around + phase)
        inside = q[1] > line + person.hair_part * q[0] * (q[2] > 0)
        if person.hair_style == "balding":  # a ring: nothing on the crown
            inside &= q[1] < 0.4 - 0.35 * np.cos(around)
        return inside

    return cap


def _rotation_x(angle):
    c, s = np.cos(angle), np.sin(angle)
    return np.array([[1, 0, 0], [0, c, -s], [0, s, c]], np.float32)


def _rotation_y(angle):
    c, s = np.cos(angle), np.sin(angle)
    return np.array([[c, 0, s], [0, 1, 0], [-s, 0, c]], np.float32)


def _rotation_z(angle):
    c, s = np.cos(angle), np.sin(angle)
    return np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]], np.float32)


# ---------------------------------------------------------------------------------------------- rendering


@dataclass(frozen=True)
class Rays:
    """One orthographic ray per sub-pixel, in head coordinates: origin(x, y) = base + x * along_x + y * along_y."""

    xs: np.ndarray  # [1, n] image x of each column (-1..1, right)
    ys: np.ndarray  # [n, 1] image y of each row (-1..1, up)
    base: np.ndarray
    along_x: np.ndarray
    along_y: np.ndarray
    direction: np.ndarray
    rotation: np.ndarray  # head -> camera
    view: View

    @classmethod
    def of(cls, view: View, n: int):
        grid = (np.arange(n, dtype=np.float32) + 0.5) / n * 2 - 1
        rotation = (
            _rotation_z(np.radians(view.roll)) @ _rotation_x(np.radians(view.pitch)) @ _rotation_y(np.radians(view.yaw))
        )
        to_head = rotation.T / view.scale  # camera = scale * rotation @ head + shift
        return cls(
            grid[None, :],
            -grid[:, None],
            to_head @ np.array([-view.shift[0], -view.shift[1], 4], np.float32),
            to_head[:, 0],
            to_head[:, 1],
            to_head @ np.array([0, 0, -1], np.float32),
            rotation,
            view,
        )

    def window(self, shape: Ellipsoid):
        """Rows and columns whose rays can reach the shape (its bounding sphere, projected)."""
        centre = self.view.scale * self.rotation @ shape.centre
        reach = self.view.scale * max(shape.radii) + 0.02
        n = self.xs.shape[1]

        def pixels(low, high):
            return slice(int(np.clip((low + 1) / 2 * n, 0, n)), int(np.clip(np.ceil((high + 1) / 2 * n), 0, n)))

        x, y = centre[0] + self.view.shift[0], centre[1] + self.view.shift[1]
        return pixels(-y - reach, -y + reach), pixels(x - reach, x + reach)

    def points(self, rows, cols, t):
        """Head coordinates [3, k] at parameter t along the rays of pixels (rows, cols)."""
        x, y = self.xs[0, cols], self.ys[rows, 0]
        return self.base[:, None] + self.along_x[:, None] * x + self.along_y[:, None] * y + self.direction[:, None] * t


def render(person: Identity, view: View, size: int, style: str = "cartoon") -> np.ndarray:
    """uint8 [size, size, 3]: ray casting of the person's scene, shaded, over the background, in a style of
    STYLES (the photo style's person and view come from photographed() and photographed_view(), the sculpted
    style's person from sculpted())."""
    style = options.synthetic_style(style)  # an unknown style would otherwise render as neither
    n = size * SUPERSAMPLE
    rays = Rays.of(view, n)
    scene = build_scene(person)
    depth = np.full((n, n), np.inf, np.float32)
    winner = np.full((n, n), -1, np.int16)  # 2 * index in scene + (1 where its inner side is seen)
    windows = [rays.window(shape) for shape in scene]
    for index, (shape, (rows, cols)) in enumerate(zip(scene, windows)):
        _intersect(shape, rays, rows, cols, depth[rows, cols], winner[rows, cols], 2 * index)
    image = _background(view, size).repeat(SUPERSAMPLE, 0).repeat(SUPERSAMPLE, 1)
    for code in np.flatnonzero(np.bincount(winner.ravel() + 1)[1:]):
        window_rows, window_cols = windows[code // 2]
        rows, cols = np.nonzero(winner[window_rows, window_cols] == code)
        rows, cols = rows + window_rows.start, cols + window_cols.start
        point = rays.points(rows, cols, depth[rows, cols])
        image[rows, cols] = _shade(person, rays, scene, code, point, shine=style == "photo")
    if style != "photo":
        image = _ink(image, winner, scene)
    image = sum(image[i::SUPERSAMPLE, j::SUPERSAMPLE] for i in range(SUPERSAMPLE) for j in range(SUPERSAMPLE))
    image /= SUPERSAMPLE**2
    pixels = np.clip(image * 255 + 0.5, 0, 255).astype(np.uint8)
    return _camera(pixels, view.camera) if style == "photo" else pixels


def _camera(pixels, camera):
    """A photograph's optics and sensor: Gaussian defocus, then noise."""
    sigma, noise, noise_seed = camera
    image = np.asarray(Image.fromarray(pixels).filter(ImageFilter.GaussianBlur(sigma)), np.float32)
    image += np.random.default_rng(noise_seed).normal(0, noise * 255, image.shape).astype(np.float32)
    return np.clip(image + 0.5, 0, 255).astype(np.uint8)


def _intersect(shape, rays, rows, cols, depth, winner, code):
    """Update depth/winner (views of a window) where the rays meet the shape before anything else."""
    to_unit = shape.axes.T / shape.radii[:, None]  # head -> unit sphere
    xs, ys = rays.xs[:, cols], rays.ys[rows, :]
    start, along_x, along_y = to_unit @ (rays.base - shape.centre), to_unit @ rays.along_x, to_unit @ rays.along_y
    o = [start[k] + along_x[k] * xs + along_y[k] * ys for k in range(3)]
    d = to_unit @ rays.direction
    a = d @ d
    half_b = o[0] * d[0] + o[1] * d[1] + o[2] * d[2]
    disc = half_b * half_b - a * (o[0] * o[0] + o[1] * o[1] + o[2] * o[2] - 1)
    hit = disc > 0
    root = np.sqrt(np.where(hit, disc, 0))
    sides = [(-half_b - root) / a]
    if shape.mask is not None:  # a cut shell: where its outer side is cut away, its inner side may show
        sides.append((-half_b + root) / a)
    for inner, t in enumerate(sides):
        valid = hit.copy()
        if shape.mask is not None:
            idx = np.flatnonzero(hit)
            valid.ravel()[idx] = shape.mask(np.stack([o[k].ravel()[idx] + t.ravel()[idx] * d[k] for k in range(3)]))
        closer = valid & (t < depth)
        depth[closer] = t[closer]
        winner[closer] = code + inner


def _shade(person, rays, scene, code, point, shine=False):
    """Lit colours [k, 3] of the points (head coordinates) where one side of one shape is seen; shine: a
    specular highlight on the skin (Blinn-Phong), as skin has on the nose, forehead and cheeks."""
    shape, inner, view = scene[code // 2], code % 2, rays.view
    unit = shape.axes.T @ (point - shape.centre[:, None]) / shape.radii[:, None]
    colour = _albedo(person, view, shape, point, unit)
    normal = _normal(scene, shape, point)
    if inner:
        colour, normal = colour * 0.55, -normal
    camera_normal = rays.rotation @ normal
    light = np.clip((view.light_dir @ camera_normal + 0.3) / 1.3, 0, None)  # wrapped: a soft terminator
    rim = 0.8 + 0.2 * np.abs(camera_normal[2])  # darker towards the silhouette: rounder
    lit = colour * ((view.ambient + (1 - view.ambient) * light) * rim)[:, None]
    if shine and shape.material in (SKIN, FACE, NOSE, EAR) and not inner:
        half = view.light_dir + np.array([0, 0, 1], np.float32)  # between the light and the viewer
        highlight = np.clip(half / np.linalg.norm(half) @ camera_normal, 0, None) ** 24
        lit = lit + 0.18 * highlight[:, None]
    return lit * view.light_tint


def _normal(scene, shape, point):
    """Unit surface normals [3, k]; the cranium and jaw blend theirs where they meet, so no crease shows."""
    parts = [s for s in scene if s.material == FACE] if shape.material == FACE else [shape]
    total = 0
    for part in parts:
        radii = part.radii[:, None]
        unit = part.axes.T @ (point - part.centre[:, None]) / radii
        gradient = part.axes @ (unit / radii)
        gradient /= np.linalg.norm(gradient, axis=0)
        total = total + np.exp(-6 * np.abs((unit**2).sum(0) - 1)) * gradient
    return total / np.linalg.norm(total, axis=0)


def _ink(image, winner, scene):
    """Cartoon outlines where the visible surface changes from one part to another."""
    # one group per part, except that the skin of cranium, jaw and neck is one, and so is the outside of the hair
    merged = {SKIN: -3, FACE: -3, HAIR: -4}
    groups = np.array([[merged.get(shape.material, 2 * i), 2 * i + 1] for i, shape in enumerate(scene)]).ravel()
    group = np.where(winner >= 0, groups[winner], -2)
    edge = np.zeros(group.shape, bool)
    edge[1:] |= group[1:] != group[:-1]
    edge[:, 1:] |= group[:, 1:] != group[:, :-1]
    image[edge] *= 0.45
    return image


def _background(view, size):
    """A random backdrop [size, size, 3]: a two-colour ramp, maybe soft stripes, a few soft blobs."""
    grid = (np.arange(size, dtype=np.float32) + 0.5) / size * 2 - 1
    xs, ys = grid[None, :], -grid[:, None]
    colour_a, colour_b, angle, (stripe_colour, frequency, stripe_angle, phase, opacity), blobs = view.background
    ramp = np.clip(0.5 + 0.5 * (xs * np.cos(angle) + ys * np.sin(angle)), 0, 1)[..., None]
    image = colour_a * (1 - ramp) + colour_b * ramp
    wave = np.sin(frequency * (xs * np.cos(stripe_angle) + ys * np.sin(stripe_angle)) + phase)
    image = image + (stripe_colour - image) * (opacity * np.clip(wave * 2, 0, 1))[..., None]
    for x, y, radius, *rgb in blobs:  # a Gaussian is separable: an outer product of two 1-d profiles
        weight = (np.exp(-((ys - y) ** 2) / (2 * radius**2)) * np.exp(-((xs - x) ** 2) / (2 * radius**2)))[..., None]
        image = image + (np.array(rgb, np.float32) - image) * (0.6 * weight)
    return image.astype(np.float32)


def _albedo(person, view, shape, point, unit):
    """Base colour [k, 3] of the visible points of one shape (features painted on the face)."""
    k = point.shape[1]
    if shape.material == HAIR:
        around = np.arctan2(unit[0], unit[2])
        if person.hair_style == "curly":
            texture = 0.85 + 0.15 * np.sin(30 * unit[0]) * np.sin(30 * unit[1]) * np.sin(30 * unit[2])
        else:
            texture = 0.9 + 0.1 * np.sin(40 * around + 10 * unit[1])
        return person.hair[None, :] * texture[:, None]
    if shape.material == SHIRT:
        return np.repeat(view.shirt[None, :], k, axis=0)
    colour = np.repeat(person.skin[None, :], k, axis=0)
    if len(person.mottling):
        waves = np.sin(person.mottling[:, :3] @ point + person.mottling[:, 3:4])
        colour *= (1 + person.mottling[:, 4] @ waves)[:, None]
    if shape.material == EAR:
        colour[np.abs(unit[0]) < 0.7] *= 0.82  # the inner ear
    if shape.material == NOSE:
        for side in (-1, 1):  # nostrils on the underside
            colour[((unit[0] - side * 0.4) ** 2 / 0.08 + (unit[1] + 0.65) ** 2 / 0.05 < 1) & (unit[2] > 0)] *= 0.35
    if shape.material == FACE:
        near = point[2] > -0.3  # the features (and a beard) are all on the front half
        colour[near] = _paint_face(colour[near], person, view.expression, point[:, near])
    return colour


def _paint_face(colour, person, expression, point):
    """The colours with the face painted on; features are functions of the head's x, y, so they turn with it."""
    x, y, z = point
    front = z > 0.05
    ex, ey, ew, eh, iris_r, eye_tilt = person.eyes

    def paint(mask, rgb, opacity=1.0):
        where = np.flatnonzero(mask)  # integer indexing of the few painted points: much faster than a boolean mask
        if where.size:
            rgb = rgb[where] if np.ndim(rgb) == 2 else np.asarray(rgb, np.float32)
            colour[where] = colour[where] * (1 - opacity) + rgb * opacity

    if person.blush:
        for side in (-1, 1):
            paint(
                front & ((x - side * (ex + 0.03)) ** 2 + (y - ey + 0.17) ** 2 < 0.07**2),
                [0.95, 0.45, 0.45],
                person.blush,
            )
    if len(person.freckles):
        near = np.flatnonzero(front & (np.abs(x) < 0.32) & (y < ey - 0.04) & (y > ey - 0.25))
        fx, fy = person.freckles.T
        spots = np.zeros(len(x), bool)
        spots[near] = ((x[near, None] - fx) ** 2 + (y[near, None] - ey - fy) ** 2 < 0.011**2).any(axis=1)
        paint(spots, person.skin * 0.7)
    _paint_beard(paint, person, x, y, z, front)
    _paint_mouth(paint, person, expression, x, y, front)

    opening_up, opening_down, brow_lift = {1: (1.0, 1.0, 0.0), 2: (0.8, 0.35, 0.01), 3: (1.35, 1.25, 0.045)}[expression]
    for side in (-1, 1):
        dx, dy = (x - side * ex) * side, y - ey  # dx grows outwards on both sides
        c, s = np.cos(eye_tilt), np.sin(eye_tilt)
        u, v = c * dx + s * dy, -s * dx + c * dy
        across = np.sqrt(np.clip(1 - (u / ew) ** 2, 0, None))
        opening = front & (np.abs(u) < ew) & (v < eh * opening_up * across) & (v > -eh * opening_down * across)
        rim = (
            front
            & (np.abs(u) < ew + 0.012)
            & (v < eh * opening_up * across + 0.014)
            & (v > -eh * opening_down * across - 0.008)
        )
        paint(rim & ~opening, [0.12, 0.08, 0.07])
        paint(opening, [0.97, 0.97, 0.95])
        iris = opening & (u**2 + v**2 < iris_r**2)
        paint(iris, person.iris)
        paint(iris & (u**2 + v**2 < (iris_r * 0.45) ** 2), [0.03, 0.03, 0.03])
        paint(iris & ((u - iris_r * 0.35) ** 2 + (v - iris_r * 0.35) ** 2 < (iris_r * 0.25) ** 2), [1, 1, 1])
        lift, thick, arch, tilt, length = person.brows
        arch = arch * (1.6 if expression == 3 else 1.0)
        centre = ey + eh + lift + brow_lift + arch * (1 - (dx / length) ** 2) + tilt * 0.3 * dx
        paint(
            front & (np.abs(dx) < length) & (np.abs(y - centre) < thick * (1 - 0.4 * (dx / length) ** 2)),
            person.hair * 0.7 + 0.05,
        )
        if person.glasses is not None:
            frame, radius, squareness = person.glasses
            ring = (np.abs(dx) ** squareness + np.abs(dy) ** squareness) ** (1 / squareness)
            paint(front & (ring < radius + 0.012) & (ring > radius), frame)
            paint(front & (ring <= radius), [0.85, 0.92, 1.0], 0.15)
            temple = (np.abs(y - ey - radius * 0.4) < 0.01) & (dx > radius) & (z > -0.1) & (dx < 1)
            paint(temple, frame)
    if person.glasses is not None:
        frame, radius, _ = person.glasses
        paint(front & (np.abs(x) < ex - radius) & (np.abs(y - ey - 0.01) < 0.01), frame)
    return colour


def _paint_mouth(paint, person, expression, x, y, front):
    my, mw, lip = person.mouth
    r = x / mw
    inside = np.abs(r) < 1
    if expression == 1:  # closed: two lips meeting on a slightly curved line
        line = my + 0.008 * r**2
        paint(front & inside & (np.abs(y - line) < lip * np.clip(1 - r**2, 0, 1) ** 0.4), person.lips)
        paint(front & inside & (np.abs(y - line) < 0.004), person.lips * 0.5)
    elif expression == 2:  # open smile: a crescent with teeth
        r = x / (mw * 1.2)
        inside = np.abs(r) < 1
        top, bottom = my + 0.035 * r**2 + 0.005, my - 0.055 * (1 - r**2) + 0.035 * r**2
        paint(front & inside & (y < top + lip * 0.7) & (y > bottom - lip), person.lips)
        mouth = front & inside & (y < top) & (y > bottom)
        paint(mouth, [0.35, 0.08, 0.1])
        paint(mouth & (y > top - 0.02), [0.97, 0.96, 0.92])
    else:  # surprise: a round open mouth
        ring = (x / (mw * 0.5)) ** 2 + ((y - my + 0.015) / 0.055) ** 2
        paint(front & (ring < 1 + lip * 25), person.lips)
        paint(front & (ring < 1), [0.3, 0.06, 0.08])


def _paint_beard(paint, person, x, y, z, front):
    if person.beard is None:
        return
    ey = person.eyes[1]
    my, mw, lip = person.mouth
    rx = person.head[0]
    grain = 0.8 + 0.2 * np.sin(90 * x + 40 * y) ** 2
    moustache = front & (np.abs(x) < mw * 1.1) & (y > my + lip * 0.6) & (y < my + 0.05 - 0.03 * (x / mw) ** 2)
    if person.beard == "moustache":
        mask = moustache
    elif person.beard == "goatee":
        mask = moustache | (front & ((x / (mw * 0.7)) ** 2 + ((y - my + 0.07) / 0.08) ** 2 < 1) & (y < my - lip))
    else:  # full beard or stubble: the jaw, up to the sideburns, wrapping under the jaw towards the back
        sideburn = ey - 0.2
        top = my + 0.04 + (sideburn - my - 0.04) * np.clip(np.abs(x) / rx, 0, 1) ** 3
        mask = (z > -0.08 - (sideburn - y)) & (y < top) & ~((np.abs(x) < mw * 1.05) & (np.abs(y - my) < lip * 1.3))
    paint(mask, person.hair[None, :] * grain[:, None], 0.35 if person.beard == "stubble" else 0.95)


# ---------------------------------------------------------------------------------------------- the data set


def default_path() -> Path:
    """Where the default set lives: $FACELIB_DATA/synthetic, else data/synthetic in the checkout (git-ignored)."""
    return Path(os.environ.get("FACELIB_DATA", Path(__file__).resolve().parents[1] / "data")) / "synthetic"


def ensure_default(path=None) -> Path:
    """The default set (100 identities, seed 0, 112 px) at `path` (default: default_path()), made if missing and
    remade if an older facelib made it in an older layout (it is facelib's own output, nothing a user made)."""
    path = Path(path) if path is not None else default_path()
    if _is_dataset(path) and _layout(path) not in (None, LAYOUT):  # None: not made by facelib, left alone
        _replace_with_new_set(path)
    return _ensure(path)


def pretraining_set(identities: int, size: int, style: str = "cartoon") -> Path:
    """A larger set to pretrain on (facelib.recipe.synthetic_start): `identities` people (seed 0, as the default set,
    so the first 100 are its people) rendered at `size` px in `style`, beside the default set and made once for every
    run that asks for the same (2,000 at 112 px: about 5 min on 2 cores, 470 MB)."""
    name = f"synthetic-{identities}ids-s{size}" + ("" if style == "cartoon" else f"-{style}")
    return _ensure(default_path().with_name(name), identities=identities, size=size, style=style)


def _ensure(path: Path, **settings) -> Path:
    """`path`, generated with `settings` unless a complete set is there."""
    if not _is_dataset(path):
        try:
            generate(path, **settings)
        except FacelibError:
            if not _is_dataset(path):  # another process may have finished the same set first
                raise
    return path


def generate(
    out, identities: int = 100, seed: int = 0, size: int = 112, style: str = "cartoon", *, workers: int | None = None
) -> Path:
    """Write a complete synthetic set in the K-Face competition layout to `out` (new or empty); returns `out`.
    style: one of STYLES; the same seed gives the same people, views and splits in either.

    Built in a temporary folder beside `out` and renamed into place, so `out` is either absent or complete.
    The same arguments give byte-identical files, whatever the number of worker processes (default: one per
    available CPU core).
    """
    out = Path(out)
    identities, size = options.identities(identities), options.synthetic_size(size)
    style = options.synthetic_style(style)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise FacelibError(f"{out} already exists and is not an empty folder: choose a new output folder")
    out.parent.mkdir(parents=True, exist_ok=True)
    images, pairs = plan(identities, seed)
    work = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent))
    work.chmod(0o755)  # mkdtemp makes it private; the data set is not
    try:
        images = _render_all(images, work, seed, size, style, workers)
        _write_tables(images, pairs, work)
        (work / "synthetic.json").write_text(
            json.dumps(
                {
                    "generator": "facelib.synthetic",
                    "layout": LAYOUT,
                    "identities": identities,
                    "seed": seed,
                    "size": size,
                    "style": style,
                },
                indent=1,
            )
            + "\n"
        )
        try:
            os.rename(work, out)  # atomic; replaces `out` only if it is an empty folder
        except OSError:
            raise FacelibError(
                f"{out} appeared while generating and is not empty: choose a new output folder"
            ) from None
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return out


def plan(identities: int, seed: int):
    """What to render: the image table (split, index, face_id, light, expression, angle, file_name) and the
    validate/test pair table (image1, image2, label, split), both deterministic in `seed`."""
    rng = np.random.default_rng(seed)
    n_eval = max(2, round(EVAL_FRACTION * identities))
    split_of = np.array(["train"] * (identities - 2 * n_eval) + ["validate"] * n_eval + ["test"] * n_eval)
    split_of = split_of[rng.permutation(identities)]
    rows = []
    for index in range(identities):
        face_id = str(10000001 + index)  # K-Face style numeric id, no leading zero (reads back the same as int)
        for (angle, expression), lights in _lights(seed, index).items():
            for light in lights:
                rows.append(
                    (
                        split_of[index],
                        index,
                        face_id,
                        light,
                        expression,
                        angle,
                        f"{face_id}_S001_L{light}_E{expression:02d}_C{angle}_cropped.jpg",
                    )
                )
    images = pd.DataFrame(rows, columns=["split", "index", "face_id", "light", "expression", "angle", "file_name"])
    pairs = pd.concat(
        [_pairs(images[images.split == split], split, rng) for split in ["validate", "test"]], ignore_index=True
    )
    used = set(pairs.image1) | set(pairs.image2)
    images = images[(images.split == "train") | images.file_name.isin(used)].reset_index(drop=True)
    return images, pairs


def _pairs(images: pd.DataFrame, split: str, rng: np.random.Generator) -> pd.DataFrame:
    """Front-vs-side pairs: per identity and side camera, PAIRS_PER_CAMERA same and as many different."""
    rows = []
    for face_id, frontal in images[images.angle.isin(FRONT_CAMERAS)].groupby("face_id"):
        for camera in [c for c in CAMERA_YAW if c not in FRONT_CAMERAS]:
            side = images[images.angle == camera]
            for label, partners in [(0, side[side.face_id == face_id]), (1, side[side.face_id != face_id])]:
                picks = rng.choice(len(frontal) * len(partners), PAIRS_PER_CAMERA, replace=False)  # distinct pairs
                rows += [
                    (
                        frontal.file_name.iloc[pick // len(partners)],
                        partners.file_name.iloc[pick % len(partners)],
                        label,
                    )
                    for pick in picks
                ]
    pairs = pd.DataFrame(rows, columns=["image1", "image2", "label"])
    return pairs.iloc[rng.permutation(len(pairs))].assign(split=split).reset_index(drop=True)


def _render_all(images: pd.DataFrame, work: Path, seed: int, size: int, style: str, workers) -> pd.DataFrame:
    """Render every identity's images into work/{split}/, in parallel over identities; adds the rendered yaw, pitch."""
    for split in ["train", "validate", "test"]:
        (work / split).mkdir()
    jobs = [
        (
            seed,
            index,
            group[["split", "file_name", "angle", "expression", "light"]].to_numpy().tolist(),
            str(work),
            size,
            style,
        )
        for index, group in images.groupby("index")
    ]
    if workers is None:
        workers = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    workers = min(workers, len(jobs))
    # in a terminal only: a notebook's output would keep every step of the bar
    progress = dict(total=len(jobs), desc=f"rendering {size}px {style} faces", unit="identity", disable=None)
    if workers <= 1:
        views = [_render_identity(job) for job in tqdm(jobs, **progress)]
    else:  # fork: no re-import of the caller's main module; the workers only use numpy and PIL
        context = get_context("fork" if "fork" in get_all_start_methods() else None)
        with ProcessPoolExecutor(workers, mp_context=context) as pool:
            try:
                views = list(tqdm(pool.map(_render_identity, jobs, chunksize=1), **progress))
            except BaseException:  # a stop (Ctrl-C, kill) waits only for the identities being drawn, not the rest
                pool.shutdown(cancel_futures=True)
                raise
    rendered = pd.DataFrame([row for rows in views for row in rows], columns=["file_name", "yaw", "pitch"])
    return images.merge(rendered, on="file_name", validate="one_to_one")


def _render_identity(job):
    """Render one identity's images; returns (file_name, yaw, pitch) as rendered."""
    seed, index, rows, work, size, style = job
    person = _person(seed, index, style)
    rendered = []
    for split, file_name, angle, expression, light in rows:
        view = _view(seed, index, angle, expression, light, style)
        Image.fromarray(render(person, view, size, style)).save(Path(work) / split / file_name, quality=JPEG_QUALITY)
        rendered.append((file_name, round(view.yaw, 1), round(view.pitch, 1)))
    return rendered


def _lights(seed, index) -> dict:
    """(camera, expression) -> the LIGHTS_PER_VIEW light codes this identity is photographed under."""
    rng = np.random.default_rng([seed, index, 1])
    return {
        (angle, expression): sorted(
            int(light) for light in rng.choice(list(LIGHT_DIRECTION), LIGHTS_PER_VIEW, replace=False)
        )
        for angle in CAMERA_YAW
        for expression in EXPRESSIONS
    }


def _person(seed, index, style="cartoon") -> Identity:
    """The styles change a person from streams of their own, so every style shows the same people."""
    person = sample_identity(np.random.default_rng([seed, index, 0]))
    if style == "photo":
        return photographed(person, np.random.default_rng([seed, index, 3]))
    if style == "sculpted":
        return sculpted(person, np.random.default_rng([seed, index, 5]))
    return person


def _view(seed, index, angle, expression, light, style="cartoon") -> View:
    """Each image has its own random stream: the same file whichever other images are made, in whatever order
    (the photo style's camera draws from a stream of its own, so both styles show the same views)."""
    view = sample_view(np.random.default_rng([seed, index, 2, angle, expression, light]), angle, expression, light)
    if style == "photo":
        return photographed_view(view, np.random.default_rng([seed, index, 4, angle, expression, light]))
    return view


def _write_tables(images: pd.DataFrame, pairs: pd.DataFrame, work: Path):
    """The challenge's three files (dummy test labels), the test truth, and the rendering metadata."""
    train = images[images.split == "train"].assign(
        cam_angle=lambda table: np.where(table.angle.isin(FRONT_CAMERAS), "front", "side")
    )
    train[["file_name", "face_id", "cam_angle"]].to_csv(work / "train" / "train_meta.csv", index=False)
    columns = ["image1", "image2", "label"]
    validate, test = (pairs[pairs.split == split][columns] for split in ["validate", "test"])
    validate.to_csv(work / "validate" / "validate_label.csv", index=False)
    test.assign(label=DUMMY_LABEL).to_csv(work / "test" / "test_label.csv", index=False)
    test.to_csv(work / "test" / "test_truth.csv", index=False)
    meta = images.assign(expression_name=images["expression"].map(EXPRESSIONS))
    columns = ["split", "file_name", "light", "expression", "expression_name", "yaw", "pitch"]
    meta[columns].to_csv(work / "render_meta.csv", index=False)


def _layout(path: Path):
    try:
        return json.loads((path / "synthetic.json").read_text()).get("layout", 1)
    except (OSError, ValueError):
        return None


def _replace_with_new_set(path: Path):
    """Generate the default set beside `path`, then swap it in; the old set is removed only after that."""
    fresh = generate(Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".new", dir=path.parent)))
    old = path.with_name(f".{path.name}.old-layout-{_layout(path)}")
    shutil.rmtree(old, ignore_errors=True)
    os.rename(path, old)
    os.rename(fresh, path)
    shutil.rmtree(old, ignore_errors=True)


def _is_dataset(path: Path) -> bool:
    return all(
        (path / name).is_file()
        for name in ["train/train_meta.csv", "validate/validate_label.csv", "test/test_label.csv"]
    )
