"""The classical peer: hand-made features + PCA + LDA, a pre-deep-learning face verifier to compare against.

Each face crop (the uint8 tensors of `facelib.imagecache.load_images`) is described by HOG (scikit-image:
gradient orientation histograms on an 8 x 8 grid of cells, whatever the image size) or by its raw grey
pixels; PCA (whitened) keeps the strongest directions, and LDA projects them onto the directions that best
separate the training identities (the Fisherfaces recipe, Belhumeur et al. 1997). Embeddings are
L2-normalised, so pairs are scored by cosine similarity exactly like the networks' embeddings.

With `mirror` (the default) the model also learns from each training face's mirror image, and a face's
embedding is the mean of its own and its mirror's: a profile facing left then looks like one facing right,
the same trick as the networks' flip-averaged test embeddings.
"""

from dataclasses import dataclass, field

import numpy as np
from skimage.feature import hog
from sklearn.decomposition import PCA
from sklearn.discriminant_analysis import LinearDiscriminantAnalysis
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import StandardScaler

from facelib.errors import FacelibError

CELLS = 8  # HOG cells along each side of the image
GREY = np.array([0.299, 0.587, 0.114], dtype=np.float32)  # ITU-R 601 luma weights


def grey(images) -> np.ndarray:
    """uint8 [N, 3, S, S] (tensor or array) -> float32 [N, S, S] in [0, 1]."""
    pixels = np.asarray(images)
    if pixels.ndim != 4 or pixels.shape[1] != 3 or pixels.shape[2] != pixels.shape[3] or pixels.dtype != np.uint8:
        raise FacelibError(f"classical: images must be uint8 [N, 3, S, S], got {pixels.dtype} {list(pixels.shape)}")
    return np.einsum("nchw,c->nhw", pixels.astype(np.float32) / 255.0, GREY)


def hog_features(images) -> np.ndarray:
    """HOG of each grey face: 9 orientations, CELLS x CELLS cells, 2 x 2-cell blocks, L2-Hys."""
    faces = grey(images)
    cell = max(1, faces.shape[-1] // CELLS)
    return np.stack(
        [
            hog(
                face,
                orientations=9,
                pixels_per_cell=(cell, cell),
                cells_per_block=(2, 2),
                block_norm="L2-Hys",
                feature_vector=True,
            )
            for face in faces
        ]
    ).astype(np.float32)


def pixel_features(images) -> np.ndarray:
    """The grey pixels, each face standardised to zero mean and unit variance (removes global lighting)."""
    faces = grey(images).reshape(len(images), -1)
    return (faces - faces.mean(1, keepdims=True)) / (faces.std(1, keepdims=True) + 1e-6)


FEATURES = {"hog": hog_features, "pixels": pixel_features}


@dataclass
class ClassicalPeer:
    """`fit(images, labels)` on training identities, then `transform(images)` -> L2-normalised embeddings."""

    features: str = "hog"
    pca_components: int = 300  # capped by the training data (samples and feature dimensions)
    mirror: bool = True
    pipeline: Pipeline = field(default=None, repr=False)  # set by fit

    def __post_init__(self):
        if self.features not in FEATURES:
            raise FacelibError(f"classical features: expected one of {', '.join(FEATURES)}, got {self.features!r}")

    def fit(self, images, labels):
        labels = np.asarray(labels)
        if len(labels) != len(images):
            raise FacelibError(f"classical fit: {len(images)} images but {len(labels)} labels")
        if len(np.unique(labels)) < 2:
            raise FacelibError("classical fit: needs at least two identities")
        features = self._features(images)
        if self.mirror:  # the mirror image is the same person
            features, labels = np.concatenate([features, self._features(_mirrored(images))]), np.tile(labels, 2)
        components = min(self.pca_components, features.shape[1], len(features) - 1)
        self.pipeline = make_pipeline(
            StandardScaler(), PCA(components, whiten=True, random_state=0), LinearDiscriminantAnalysis()
        )
        self.pipeline.fit(features, labels)
        return self

    def transform(self, images) -> np.ndarray:
        """float32 [N, D] unit-length embeddings (D = identities - 1, or fewer)."""
        if self.pipeline is None:
            raise FacelibError("classical transform: call fit first")
        embeddings = _unit(self.pipeline.transform(self._features(images)))
        if self.mirror:
            embeddings = _unit(embeddings + _unit(self.pipeline.transform(self._features(_mirrored(images)))))
        return embeddings.astype(np.float32)

    def _features(self, images):
        return FEATURES[self.features](images)


def _mirrored(images):
    return np.asarray(images)[..., ::-1]


def _unit(vectors):
    return vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
