"""Fast input pipeline: decode every face once into a cached uint8 tensor, augment whole batches as tensors.

Training never decodes a JPEG per epoch: `load_images` turns an image table into one uint8 tensor
[N, 3, size, size] (face crop, resized with antialiasing; with `align`, faces with landmarks are warped onto
their view's template instead, facelib.alignment), stored on disk as a .npy file under a key made of the paths,
modification times, file sizes, crop boxes (and, aligned, landmarks and templates) and size, so a second run
(or a second process) loads it in a fraction of a second and any changed file gives a new key. The faces are
decoded straight into that file, memory-mapped, one chunk at a time, so a large set (K-Face's 66,150 training
faces are 2.5 GB at 112 px) never needs twice its size in memory, and an interrupted decoding resumes after the
last finished chunk. The tensor returned maps the file (copy-on-write): the operating system pages it in and
may page it out again. `Augmentation` then applies
flip / scale / shift / rotation (one `grid_sample`), brightness / contrast and random erasing to a
whole batch at once, each sample with its own random parameters.
"""

import hashlib
import math
import os
import re
import shutil
import warnings
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torchvision.io import ImageReadMode, decode_image
from torchvision.transforms.v2 import functional as TF
from tqdm.auto import tqdm

from facelib import alignment, options
from facelib.errors import FacelibError
from facelib.io_utils import atomic_write_text

CACHE_FORMAT = 2  # bump when the decoding changes, so old cache files are not reused
CHUNK_IMAGES = 4096  # faces decoded between two resume points (at 112 px, 150 MB)
DISK_HEADROOM = 2**30  # left free beside a new cache file, for the checkpoints and logs of the run that decodes it

# the only files pruning may delete: what load_images, facelib.evaluation and facelib.export write, by exact name
CACHE_FILE = re.compile(
    r"(faces-\d+px-\d+-[0-9a-f]{24}\.npy|embeddings-\d+-[0-9a-f]{24}\.npy|onnx-[0-9a-f]{24}-\d+px\.onnx)"
)


def default_cache_dir():
    return Path(os.environ.get("FACELIB_CACHE") or Path.home() / ".cache" / "facelib")


def cache_folder(cache_dir=None):
    """The cache folder (default: $FACELIB_CACHE or ~/.cache/facelib), checked to be writable before any work."""
    return options.output_folder(cache_dir or default_cache_dir(), "cache folder ($FACELIB_CACHE)")


def cache_limit_bytes():
    """The cache folder's size cap: $FACELIB_CACHE_LIMIT_MB (a positive number of MiB), default 2 GiB."""
    return int(options.cache_limit_mb() * 2**20)


def touch(cache_file):
    """Mark a cache file as just used, so pruning removes the least recently used files first."""
    try:
        os.utime(cache_file)
    except OSError:
        pass  # a read-only cache still works; it is only pruned less well


def prune(cache_dir, keep=None, limit=None):
    """Delete the least recently used faces-*/embeddings-*/onnx-* files until the folder fits `limit` bytes (default:
    `cache_limit_bytes()`); `keep`, the file just written, always stays. Every model evaluated adds embeddings,
    so without this the folder grows for ever."""
    limit = cache_limit_bytes() if limit is None else limit
    files = []
    for path in Path(cache_dir).iterdir():
        if CACHE_FILE.fullmatch(path.name) and path.is_file():
            try:
                stat = path.stat()
            except OSError:
                continue  # removed meanwhile by another process
            files.append((stat.st_mtime, stat.st_size, path))
    total = sum(size for _, size, _ in files)
    for _, size, path in sorted(files, key=lambda item: item[0]):
        if total <= limit:
            break
        if keep is not None and path == Path(keep):
            continue
        path.unlink(missing_ok=True)
        total -= size


def _box_or_none(box):
    """The table's `box` cell as a 4-tuple, or None where there is no box (None / NA / missing column)."""
    if box is None or (not isinstance(box, (tuple, list)) and pd.isna(box)):
        return None
    if len(box) != 4:
        raise FacelibError(f"images.box: expected (x0, y0, x1, y1), got {box!r}")
    return tuple(float(v) for v in box)


def _landmarks_or_none(landmarks):
    """The table's `landmarks` cell as a tuple of (x, y) pairs, or None where there are none."""
    if landmarks is None or (not isinstance(landmarks, (tuple, list, np.ndarray)) and pd.isna(landmarks)):
        return None
    return tuple((float(x), float(y)) for x, y in landmarks)


def decode_face(path, box, size, landmarks=None, target=None):
    """One image as uint8 [3, size, size]: with `landmarks` and `target` (facelib.alignment), warped so that the
    landmarks land on the target; else the `box` crop (zero-padded where it leaves the image) or the centre
    square, resized with antialiasing."""
    try:
        image = decode_image(str(path), mode=ImageReadMode.RGB)
    except (RuntimeError, OSError, ValueError) as error:
        raise FacelibError(f"{path}: cannot decode image ({error})") from None
    if landmarks is not None:
        return alignment.warp(image, landmarks, target, size)
    if box is None:
        image = TF.center_crop(image, [min(image.shape[-2:])] * 2)
    else:
        x0, y0, x1, y1 = (round(v) for v in box)
        if x1 <= x0 or y1 <= y0:
            raise FacelibError(f"{path}: empty crop box {box}")
        image = TF.crop(image, y0, x0, y1 - y0, x1 - x0)
    return TF.resize(image, [size, size], antialias=True)


class _Face(NamedTuple):
    """What `decode_face` needs of one image besides the size."""

    path: str
    box: tuple
    landmarks: tuple
    target: tuple


def _faces_to_decode(images, align):
    """A _Face per row of `images`. Landmarks and target are None unless `align` and the row has landmarks (only
    CFP has them): such a face keeps its box."""
    columns = [
        images[name] if name in images else [None] * len(images) for name in ("box", "landmarks", "view", "facing")
    ]
    jobs = []
    for path, box, landmarks, view, facing in zip(images["path"], *columns):
        landmarks = _landmarks_or_none(landmarks) if align else None
        target = None if landmarks is None else tuple(map(tuple, alignment.template(view, facing).tolist()))
        jobs.append(_Face(path, _box_or_none(box), landmarks, target))
    return jobs


def cache_key(images, size, align=False):
    """Hex digest identifying exactly these files (path, mtime, byte size), crops (with `align`, also landmarks and
    templates) and output size. Unaligned keys are those of earlier versions, so their cached faces stay valid."""
    digest = hashlib.sha256(f"facelib-images v{CACHE_FORMAT} size={size}{' aligned' if align else ''}\n".encode())
    for face in _faces_to_decode(images, align):
        try:
            stat = os.stat(face.path)
        except OSError:
            raise FacelibError(f"{face.path}: image file not found") from None
        crop = f"{face.box}\t{face.landmarks}\t{face.target}" if align else str(face.box)
        digest.update(f"{face.path}\t{stat.st_mtime_ns}\t{stat.st_size}\t{crop}\n".encode())
    return digest.hexdigest()


def load_images(images, size, cache_dir=None, progress=True, align=False):
    """uint8 tensor [N, 3, size, size] of the faces in `images` (rows in table order), decoded once and
    cached in `cache_dir` (default: $FACELIB_CACHE or ~/.cache/facelib; capped by `prune`). `align`: warp each
    face with landmarks onto its view's template (facelib.alignment); the others keep their box."""
    size = options.whole_number("image size", size, 1, options.MAX_IMAGE_SIZE)
    shape = (len(images), 3, size, size)
    if not len(images):
        return torch.empty(shape, dtype=torch.uint8)
    key = cache_key(images, size, align)
    cache_file = cache_folder(cache_dir) / f"faces-{size}px-{len(images)}-{key[:24]}.npy"
    cached = _open_faces(cache_file, shape)
    if cached is not None:
        touch(cache_file)
        return cached
    limit = cache_limit_bytes()  # a bad setting fails before the decoding, not after
    _check_room(cache_file, shape)
    _decode_into(cache_file, _faces_to_decode(images, align), size, progress)
    if cache_file.stat().st_size > limit:
        warnings.warn(
            f"{cache_file} ({cache_file.stat().st_size / 2**20:.0f} MB) is larger than the cache limit "
            f"({limit / 2**20:.0f} MB): the next cache write removes it and the next run decodes it again; "
            "raise FACELIB_CACHE_LIMIT_MB to keep it",
            stacklevel=2,
        )
    prune(cache_file.parent, keep=cache_file, limit=limit)
    return _open_faces(cache_file, shape)


def _open_faces(path, shape):
    """The cached faces as a tensor mapping `path` (copy-on-write), or None if absent, unreadable or not `shape`."""
    try:
        faces = np.load(path, mmap_mode="c")
    except (OSError, ValueError):
        return None  # absent, or unreadable: decode again and replace it
    if faces.dtype != np.uint8 or faces.shape != shape:
        return None
    return torch.from_numpy(faces)


def _check_room(cache_file, shape):
    """Fail before decoding when the cache's disk cannot hold the faces and DISK_HEADROOM: a full disk would
    otherwise end the run later, at a memory-mapped write or at its next checkpoint, with an unclear error."""
    partial = cache_file.with_name(f"{cache_file.name}.partial")
    allocated = partial.stat().st_blocks * 512 if partial.exists() else 0  # an interrupted decoding's share
    needed = math.prod(shape) + DISK_HEADROOM - allocated
    cache_file.parent.mkdir(parents=True, exist_ok=True)
    free = shutil.disk_usage(cache_file.parent).free
    if free < needed:
        raise FacelibError(
            f"{cache_file.parent}: decoding {shape[0]} faces at {shape[-1]} px needs {needed / 2**30:.1f} GiB free "
            f"(the faces and {DISK_HEADROOM / 2**30:.0f} GiB for the run), the disk has {free / 2**30:.1f} GiB; "
            "free some space or point $FACELIB_CACHE at another disk"
        )


def _decode_into(cache_file, jobs, size, progress):
    """Decode the faces of `jobs` (_Face) into `cache_file`, CHUNK_IMAGES at a time into a memory-mapped
    CACHE.partial, whose count of finished faces (CACHE.done) lets an interrupted run resume; renamed into place
    when complete."""
    shape = (len(jobs), 3, size, size)
    partial, done_file = (cache_file.with_name(f"{cache_file.name}.{suffix}") for suffix in ("partial", "done"))
    faces, done = _resume(partial, done_file, shape)
    if faces is None:
        faces, done = np.lib.format.open_memmap(partial, mode="w+", dtype=np.uint8, shape=shape), 0
    bar = tqdm(total=len(jobs), initial=done, desc=f"decoding {size}px faces", unit="img", disable=not progress)
    # Decoding and resizing release the GIL, so threads decode in parallel without process start-up costs.
    with ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool, bar:
        for start in range(done, len(jobs), CHUNK_IMAGES):
            chunk = jobs[start : start + CHUNK_IMAGES]
            for offset, face in enumerate(
                pool.map(lambda job: decode_face(job.path, job.box, size, job.landmarks, job.target), chunk)
            ):
                faces[start + offset] = face.numpy()
                bar.update()
            faces.flush()  # the faces first, then the count that vouches for them
            atomic_write_text(done_file, str(start + len(chunk)))
    del faces
    os.replace(partial, cache_file)
    done_file.unlink(missing_ok=True)


def _resume(partial, done_file, shape):
    """(the memory-mapped partial file, faces finished in it), or (None, 0) when there is nothing to resume."""
    try:
        done = int(done_file.read_text())
        faces = np.lib.format.open_memmap(partial, mode="r+")
    except (OSError, ValueError):
        return None, 0
    if faces.dtype != np.uint8 or faces.shape != shape or not 0 <= done <= shape[0]:
        return None, 0
    return faces, done


def to_model_input(batch):
    """uint8 [B, 3, H, W] -> float in [-1, 1] ((x/255 - 0.5) / 0.5), channels-last (the backbone's fast layout)."""
    return (batch.float() / 127.5 - 1.0).contiguous(memory_format=torch.channels_last)


def _uniform(generator, n, low, high):
    return torch.rand(n, generator=generator) * (high - low) + low


@dataclass(frozen=True)
class Augmentation:
    """Per-sample random augmentation of a whole uint8 batch, returning model input and the flip mask.

    Defaults follow reid-strong-baseline (flip 0.5, a small shifted crop, random erasing 0.5) plus mild
    rotation and brightness / contrast jitter, which multi-angle faces tolerate well.
    """

    flip: float = 0.5  # probability of a horizontal flip
    scale: tuple = (0.85, 1.0)  # side of the sampled crop, as a fraction of the image (zoom in)
    shift: float = 0.08  # max translation, as a fraction of the image side
    rotate: float = 8.0  # max rotation, degrees
    brightness: float = 0.2  # multiplier drawn from 1 +- brightness
    contrast: float = 0.2  # contrast around each image's mean, 1 +- contrast
    erase: float = 0.5  # probability of erasing one rectangle (filled with the mean value 0)
    erase_area: tuple = (0.02, 0.2)  # its area, as a fraction of the image
    grayscale: float = 0.0  # probability of dropping colour (real photos differ in white balance and film)

    def __call__(self, batch, generator=None, flippable=None, mirrored=None):
        """batch: uint8 [B, 3, H, W] (any device). flippable: optional bool [B]; False forbids flipping that
        sample at random (e.g. a camera angle whose mirror is unknown). mirrored: optional bool [B]; True flips
        that sample always (canonical facing). Returns (float normalised channels-last batch, bool [B] flip mask
        on the CPU) so that direction labels can be mirrored for the flipped samples."""
        n, device = batch.shape[0], batch.device
        flipped = torch.rand(n, generator=generator) < self.flip
        if flippable is not None:
            flipped &= torch.as_tensor(flippable, dtype=torch.bool)
        if mirrored is not None:
            flipped |= torch.as_tensor(mirrored, dtype=torch.bool)

        x = batch.float() / 255.0
        brightness = _uniform(generator, n, 1 - self.brightness, 1 + self.brightness).view(n, 1, 1, 1).to(device)
        contrast = _uniform(generator, n, 1 - self.contrast, 1 + self.contrast).view(n, 1, 1, 1).to(device)
        mean = x.mean(dim=(1, 2, 3), keepdim=True)
        x = (((x - mean) * contrast + mean) * brightness).clamp_(0, 1)
        if self.grayscale > 0:  # drawn only when asked, so the default keeps its random stream
            gray = (torch.rand(n, generator=generator) < self.grayscale).view(n, 1, 1, 1).to(device)
            x = torch.where(gray, TF.rgb_to_grayscale(x, num_output_channels=3), x)
        x = x * 2 - 1

        x = F.grid_sample(
            x,
            self._grids(n, x.shape, flipped, generator).to(device),
            mode="bilinear",
            padding_mode="zeros",
            align_corners=False,
        )
        x = x.masked_fill(self._erase_masks(n, x.shape[-2:], generator).to(device).unsqueeze(1), 0.0)
        return x.contiguous(memory_format=torch.channels_last), flipped

    def _grids(self, n, shape, flipped, generator):
        """Sampling grids for flip * scale * rotation + shift: output coordinates -> input coordinates."""
        scale = _uniform(generator, n, *self.scale)
        angle = _uniform(generator, n, -self.rotate, self.rotate) * (math.pi / 180)
        shift = _uniform(generator, 2 * n, -2 * self.shift, 2 * self.shift).view(n, 2)  # [-1, 1] spans 2
        mirror = 1.0 - 2.0 * flipped.float()
        cos, sin = torch.cos(angle) * scale, torch.sin(angle) * scale
        theta = torch.stack(
            [torch.stack([cos * mirror, -sin, shift[:, 0]], 1), torch.stack([sin * mirror, cos, shift[:, 1]], 1)], 1
        )
        return F.affine_grid(theta, list(shape), align_corners=False)

    def _erase_masks(self, n, hw, generator):
        """bool [B, H, W]: one random rectangle per erased sample (random erasing, Zhong et al.)."""
        height, width = hw
        area = _uniform(generator, n, *self.erase_area) * height * width
        aspect = torch.exp(_uniform(generator, n, math.log(0.3), math.log(1 / 0.3)))
        h = (area * aspect).sqrt().clamp(max=height)
        w = (area / aspect).sqrt().clamp(max=width)
        y0 = torch.rand(n, generator=generator) * (height - h)
        x0 = torch.rand(n, generator=generator) * (width - w)
        erased = torch.rand(n, generator=generator) < self.erase
        ys = torch.arange(height).view(1, height, 1) + 0.5
        xs = torch.arange(width).view(1, 1, width) + 0.5
        inside = (
            (ys >= y0.view(n, 1, 1))
            & (ys < (y0 + h).view(n, 1, 1))
            & (xs >= x0.view(n, 1, 1))
            & (xs < (x0 + w).view(n, 1, 1))
        )
        return inside & erased.view(n, 1, 1)


# named recipes for the command line; "strong" is for real photos with few images per person (CFP: 14), where the
# default's mild jitter leaves the nets memorising: wider zoom, shift and rotation, stronger light, dropped colour
AUGMENTATIONS = {
    "default": Augmentation(),
    "strong": Augmentation(scale=(0.7, 1.0), shift=0.1, rotate=12.0, brightness=0.3, contrast=0.3, grayscale=0.2),
}
NO_AUGMENTATION = Augmentation(
    flip=0.0, scale=(1.0, 1.0), shift=0.0, rotate=0.0, brightness=0.0, contrast=0.0, erase=0.0
)
