import numpy as np
import pytest
import torch

from facelib.classical import ClassicalPeer, hog_features, pixel_features
from facelib.errors import FacelibError

SIZE = 32


def faces(identities=6, per_identity=6, seed=0, noise=25):
    """Synthetic uint8 faces [N, 3, SIZE, SIZE]: each identity a fixed random blocky pattern, each image that
    pattern plus noise, a brightness change and a shift of up to two pixels; labels alongside."""
    rng = np.random.default_rng(seed)
    patterns = rng.integers(40, 216, size=(identities, 1, SIZE // 4, SIZE // 4)).repeat(4, axis=2).repeat(4, axis=3)
    images, labels = [], []
    for identity, pattern in enumerate(patterns):
        for _ in range(per_identity):
            shifted = np.roll(pattern, rng.integers(-2, 3, size=2), axis=(1, 2))
            image = shifted * rng.uniform(0.8, 1.2) + rng.normal(0, noise, size=(3, SIZE, SIZE))
            images.append(image.clip(0, 255).astype(np.uint8))
            labels.append(f"id{identity}")
    return torch.from_numpy(np.stack(images)), np.array(labels)


@pytest.mark.parametrize("features", ["hog", "pixels"])
def test_unseen_identities_are_told_apart(features):
    train_images, train_labels = faces(identities=12, seed=0)
    # the same patterns generator, other seeds: new identities, never seen in fit
    test_images, test_labels = faces(identities=4, seed=1)
    peer = ClassicalPeer(features=features, pca_components=40).fit(train_images, train_labels)
    embeddings = peer.transform(test_images)
    assert embeddings.dtype == np.float32 and embeddings.shape[0] == len(test_images)
    np.testing.assert_allclose(np.linalg.norm(embeddings, axis=1), 1.0, atol=1e-5)
    similarity = embeddings @ embeddings.T
    same = test_labels[:, None] == test_labels[None, :]
    off_diagonal = ~np.eye(len(test_labels), dtype=bool)
    assert similarity[same & off_diagonal].mean() > similarity[~same].mean() + 0.2


def test_seen_identities_are_separated_by_lda():
    images, labels = faces(identities=5, seed=2)
    embeddings = ClassicalPeer(pca_components=20, mirror=False).fit(images, labels).transform(images)
    nearest = np.argsort(-(embeddings @ embeddings.T), axis=1)[:, 1]  # [:, 0] is the image itself
    assert (labels[nearest] == labels).mean() >= 0.9


def test_mirror_makes_embeddings_mirror_invariant():
    images, labels = faces(identities=5, seed=3)
    peer = ClassicalPeer(pca_components=20).fit(images, labels)
    np.testing.assert_allclose(peer.transform(images), peer.transform(images.flip(-1)), atol=1e-5)
    plain = ClassicalPeer(pca_components=20, mirror=False).fit(images, labels)
    assert not np.allclose(plain.transform(images), plain.transform(images.flip(-1)), atol=1e-3)


def test_features_have_fixed_length_per_size():
    images, _ = faces(identities=1, per_identity=2)
    assert hog_features(images).shape == (2, 7 * 7 * 2 * 2 * 9)  # 8 x 8 cells -> 7 x 7 blocks of 2 x 2 cells
    pixels = pixel_features(images)
    assert pixels.shape == (2, SIZE * SIZE)
    np.testing.assert_allclose(pixels.mean(1), 0.0, atol=1e-4)


def test_bad_input_is_one_clear_error():
    images, labels = faces(identities=2, per_identity=3)
    with pytest.raises(FacelibError, match="uint8"):
        ClassicalPeer().fit(images.float(), labels)
    with pytest.raises(FacelibError, match="labels"):
        ClassicalPeer().fit(images, labels[:-1])
    with pytest.raises(FacelibError, match="two identities"):
        ClassicalPeer().fit(images[:3], labels[:3])
    with pytest.raises(FacelibError, match="call fit"):
        ClassicalPeer().transform(images)
    with pytest.raises(FacelibError, match="features"):
        ClassicalPeer(features="sift")
