import os
from dataclasses import replace
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from facelib import imagecache
from facelib.errors import FacelibError
from facelib.imagecache import NO_AUGMENTATION, Augmentation, load_images, to_model_input


def write_image(path, pixels):
    Image.fromarray(pixels).save(path)  # PNG: lossless, so decoded pixels can be checked exactly
    return str(path)


def quadrants(height=40, width=60):
    """An image whose four quadrants (of the centre square and of the whole) have distinct colours."""
    pixels = np.zeros((height, width, 3), np.uint8)
    pixels[:, : width // 2] = (255, 0, 0)
    pixels[:, width // 2 :] = (0, 0, 255)
    pixels[height // 2 :, :, 1] = 255
    return pixels


@pytest.fixture
def table(tmp_path):
    paths = [write_image(tmp_path / f"{i}.png", quadrants()) for i in range(3)]
    return pd.DataFrame({"path": paths, "box": [None, (0, 0, 20, 20), (50, 30, 70, 50)]})


def test_shapes_dtype_and_crops(table, tmp_path):
    faces = load_images(table, 16, cache_dir=tmp_path / "cache", progress=False)
    assert faces.shape == (3, 3, 16, 16) and faces.dtype == torch.uint8
    # no box: the centre square (40x40 of 60x40) keeps both halves, left red and right blue
    assert faces[0, :, 4, 2].tolist() == [255, 0, 0] and faces[0, :, 4, 13].tolist() == [0, 0, 255]
    # box inside the top-left quadrant: all red
    assert (faces[1, 0] == 255).all() and (faces[1, 1:] == 0).all()
    # box partly outside the bottom-right corner: blue + green inside, zero padding outside
    assert faces[2, :, 2, 2].tolist() == [0, 255, 255]
    assert faces[2, :, 12, 12].tolist() == [0, 0, 0]


def test_cache_is_reused_and_invalidated_when_a_file_changes(table, tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    first = load_images(table, 16, cache_dir=cache, progress=False)
    assert len(list(cache.glob("*.npy"))) == 1

    def no_decoding(*args):
        raise AssertionError("decoded although the cache is valid")

    monkeypatch.setattr(imagecache, "decode_face", no_decoding)
    assert torch.equal(load_images(table, 16, cache_dir=cache, progress=False), first)
    monkeypatch.undo()

    write_image(table["path"][0], np.full((40, 60, 3), 7, np.uint8))
    os.utime(table["path"][0], ns=(1, 1))  # a different mtime even on coarse file-system clocks
    changed = load_images(table, 16, cache_dir=cache, progress=False)
    assert (changed[0] == 7).all() and torch.equal(changed[1:], first[1:])
    assert len(list(cache.glob("*.npy"))) == 2

    load_images(table, 8, cache_dir=cache, progress=False)  # another size: another cache file
    assert len(list(cache.glob("*.npy"))) == 3


def test_default_cache_dir_follows_the_environment(table, tmp_path, monkeypatch):
    monkeypatch.setenv("FACELIB_CACHE", str(tmp_path / "env-cache"))
    load_images(table, 8, progress=False)
    assert len(list((tmp_path / "env-cache").glob("faces-8px-3-*.npy"))) == 1


def test_the_cache_keeps_to_its_size_limit_dropping_the_least_recently_used(table, tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    sizes = [8, 12, 16]
    for age, size in enumerate(sizes):  # written oldest first
        load_images(table, size, cache_dir=cache, progress=False)
        os.utime(next(cache.glob(f"faces-{size}px-*")), (1000 + age, 1000 + age))
    load_images(table, 8, cache_dir=cache, progress=False)  # a cache hit marks the 8px file as just used
    unrelated = cache / "notes.txt"
    unrelated.write_text("not a cache file")
    one_file = max(f.stat().st_size for f in cache.glob("faces-*"))

    monkeypatch.setenv("FACELIB_CACHE_LIMIT_MB", str(2.5 * one_file / 2**20))
    load_images(table, 20, cache_dir=cache, progress=False)  # a fourth file: two must go
    assert sorted(int(f.name.split("-")[1][:-2]) for f in cache.glob("faces-*")) == [8, 20]
    assert unrelated.exists()

    monkeypatch.setenv("FACELIB_CACHE_LIMIT_MB", "0.0001")  # 100 bytes: the file just written stays, with a warning
    with pytest.warns(UserWarning, match="larger than the cache limit .* raise FACELIB_CACHE_LIMIT_MB"):
        load_images(table, 24, cache_dir=cache, progress=False)
    assert [f.name.split("-")[1] for f in cache.glob("faces-*")] == ["24px"]

    monkeypatch.setenv("FACELIB_CACHE_LIMIT_MB", "lots")
    with pytest.raises(FacelibError, match="FACELIB_CACHE_LIMIT_MB"):
        load_images(table, 28, cache_dir=cache, progress=False)
    assert not list(cache.glob("faces-28px-*"))  # refused before any work


def test_an_interrupted_decoding_resumes_after_the_last_finished_chunk(table, tmp_path, monkeypatch):
    expected = load_images(table, 16, cache_dir=tmp_path / "whole", progress=False)
    cache, decode, calls = tmp_path / "cache", imagecache.decode_face, []

    def interrupted_at_the_third(*args):
        calls.append(args[0])
        if len(calls) == 3:
            raise KeyboardInterrupt
        return decode(*args)

    monkeypatch.setattr(imagecache, "CHUNK_IMAGES", 1)
    monkeypatch.setattr(imagecache, "decode_face", interrupted_at_the_third)
    with pytest.raises(KeyboardInterrupt):
        load_images(table, 16, cache_dir=cache, progress=False)
    assert not list(cache.glob("*.npy")) and [f.read_text() for f in cache.glob("*.done")] == ["2"]
    calls.clear()
    monkeypatch.setattr(imagecache, "decode_face", lambda *args: calls.append(args[0]) or decode(*args))
    faces = load_images(table, 16, cache_dir=cache, progress=False)
    assert calls == [table["path"][2]]  # only the face that was not finished
    assert torch.equal(faces, expected)
    assert [f.suffix for f in cache.iterdir()] == [".npy"]  # nothing partial left


def test_a_disk_without_room_for_the_faces_fails_before_decoding(table, tmp_path, monkeypatch):
    faces_bytes = len(table) * 3 * 16 * 16
    room = faces_bytes + imagecache.DISK_HEADROOM

    def disk_with(free):
        monkeypatch.setattr(imagecache.shutil, "disk_usage", lambda path: SimpleNamespace(free=free))

    disk_with(room - 1)
    with pytest.raises(FacelibError, match=r"cache.*: decoding 3 faces at 16 px needs .* GiB free"):
        load_images(table, 16, cache_dir=tmp_path / "cache", progress=False)
    assert not list((tmp_path / "cache").iterdir())  # nothing started
    disk_with(room)
    assert load_images(table, 16, cache_dir=tmp_path / "cache", progress=False).shape == (3, 3, 16, 16)


def test_missing_or_corrupt_images_name_the_file(table, tmp_path):
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"not a jpeg")
    with pytest.raises(FacelibError, match="broken.jpg"):
        load_images(pd.DataFrame({"path": [str(broken)]}), 8, cache_dir=tmp_path / "cache", progress=False)
    with pytest.raises(FacelibError, match="missing.png: image file not found"):
        load_images(pd.DataFrame({"path": [str(tmp_path / "missing.png")]}), 8, cache_dir=tmp_path, progress=False)


def test_model_input_is_normalised_and_channels_last():
    batch = torch.tensor([0, 255], dtype=torch.uint8).view(1, 1, 1, 2).expand(2, 3, 2, 2)
    x = to_model_input(batch)
    assert x.dtype == torch.float32 and x.is_contiguous(memory_format=torch.channels_last)
    assert x[0, 0, 0].tolist() == [-1.0, 1.0]


def test_augmentation_flip_mask_matches_the_flipped_images():
    batch = torch.randint(0, 256, (64, 3, 12, 12), dtype=torch.uint8)
    flip_only = Augmentation(flip=0.5, scale=(1.0, 1.0), shift=0.0, rotate=0.0, brightness=0.0, contrast=0.0, erase=0.0)
    x, flipped = flip_only(batch, torch.Generator().manual_seed(0))
    plain = to_model_input(batch)
    assert 0 < flipped.sum() < 64
    assert torch.allclose(x[flipped], plain[flipped].flip(-1), atol=1e-5)
    assert torch.allclose(x[~flipped], plain[~flipped], atol=1e-5)
    allowed = torch.arange(64) % 2 == 0
    _, flipped = flip_only(batch, torch.Generator().manual_seed(0), flippable=allowed)
    assert not flipped[~allowed].any()
    # canonical facing: some faces are always mirrored, and faces of known facing never flip at random
    always = torch.arange(64) % 4 == 1
    x, flipped = flip_only(batch, torch.Generator().manual_seed(0), flippable=allowed, mirrored=always)
    assert flipped[always].all() and not flipped[~allowed & ~always].any()
    assert torch.allclose(x[always], plain[always].flip(-1), atol=1e-5)


def test_augmentation_is_per_sample_seeded_and_shaped():
    batch = torch.full((32, 3, 16, 16), 128, dtype=torch.uint8)
    augment = Augmentation(erase=1.0)
    first, _ = augment(batch, torch.Generator().manual_seed(1))
    again, _ = augment(batch, torch.Generator().manual_seed(1))
    assert torch.equal(first, again)
    assert first.shape == (32, 3, 16, 16) and first.is_contiguous(memory_format=torch.channels_last)
    assert first.min() >= -1 and first.max() <= 1
    assert len(torch.unique(first[:, 0, 8, 8])) > 16  # brightness differs from sample to sample
    erased, _ = replace(NO_AUGMENTATION, erase=1.0)(batch, torch.Generator().manual_seed(1))
    zeros = (erased == 0).all(1).flatten(1).sum(1)  # one rectangle of 2-20% of the 256 pixels per sample
    assert ((zeros >= 2) & (zeros <= 0.2 * 256 + 16)).all()
    x, flipped = NO_AUGMENTATION(batch, torch.Generator().manual_seed(1))
    assert torch.allclose(x, to_model_input(batch), atol=1e-5) and not flipped.any()


def test_grayscale_augmentation_drops_colour_in_about_its_share_of_samples():
    batch = torch.zeros((200, 3, 8, 8), dtype=torch.uint8)
    batch[:, 0] = 200  # pure red faces
    x, _ = replace(NO_AUGMENTATION, grayscale=0.3)(batch, torch.Generator().manual_seed(0))
    gray = (x[:, 0] == x[:, 1]).all(-1).all(-1) & (x[:, 1] == x[:, 2]).all(-1).all(-1)
    assert 0.2 < gray.float().mean() < 0.4
    assert torch.allclose(x[~gray], to_model_input(batch[~gray]), atol=1e-5)  # the others keep their colour
    assert torch.allclose(x[gray], torch.tensor(0.299 * 200 / 127.5 - 1), atol=1e-2)  # luminance, not a mean
