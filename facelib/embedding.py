"""Embeddings of face images: batched, averaged with the mirror image, each distinct image run once.

`embed_images` gives one L2-normalised row per image; `embed_pairs` embeds the distinct images of a pair table
and `Embeddings.scores` scores each pair by looking its two images up. `resolve_model` chooses what runs the
network: torch, or the same network in ONNX Runtime.

The embedding cache: evaluating a model runs the network over every image of the pairs; the notebooks, `compare`,
`predict` and `facelib search` then ask for the same embeddings again (and an evaluation that calibrates on another
split embeds overlapping images). Each result is kept as one .npy file in the facelib cache folder, so asking again
runs no network. Its key covers everything the vectors depend on: the model's architecture and every weight and
buffer (`weights_digest`; an ONNX file's digest), each image file's path, modification time, size and crop
(imagecache.cache_key), the input size, alignment and canonical facing, `flip`, and EMBEDDING_CACHE_FORMAT. So
retraining, a changed image or another option gives a new key and the old file is never read again; old files are
removed by the cache folder's size cap (imagecache.prune, $FACELIB_CACHE_LIMIT_MB).
"""

import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

from facelib import export, imagecache, models, poses
from facelib.errors import FacelibError
from facelib.io_utils import atomic_path

EMBEDDING_CACHE_FORMAT = 1  # bump when embedding changes, so old cache files are not reused


ENGINES = ("torch", "onnx")


METRICS = ("cosine", "euclidean")


def resolve_model(model, device=None, engine="torch"):
    """The embedding model to run. engine "torch": an nn.Module as it is, a checkpoint path loaded with
    `models.load_embedder`. engine "onnx": the same network in ONNX Runtime (CPU), exported once into the cache
    folder (export.onnx_engine). A .onnx file (from `facelib export`) or an export.OnnxEmbedder always runs in
    ONNX Runtime."""
    if engine not in ENGINES:
        raise FacelibError(f"engine: expected one of {', '.join(ENGINES)}, got {engine!r}")
    if isinstance(model, export.OnnxEmbedder):
        return model
    if not isinstance(model, torch.nn.Module) and Path(model).suffix.lower() == ".onnx":
        return export.OnnxEmbedder(model)
    if engine == "onnx":
        net = model if isinstance(model, torch.nn.Module) else models.load_embedder(model, "cpu")
        return export.onnx_engine(net)
    if isinstance(model, torch.nn.Module):
        return model
    return models.load_embedder(model, models.resolve_device(device))


def embed_images(model, images, batch_size=128, flip=True, cache=True, device=None, progress=False):
    """L2-normalised embeddings [N, D] (float32) of `images`, one row per input row.

    `images` is an image table (rows with a `path`; a path listed twice is embedded once, faces come from
    `imagecache.load_images` at `model.image_size`) or a uint8 tensor [N, 3, S, S]. With `flip`, each
    embedding is the mean of the image's and its mirror's (`flip` may also be a bool mask [N] naming the faces
    to average so). A model trained with canonical facing (`.canonical_facing`, set by models.load_embedder) sees
    the faces of a table as it trained: those whose facing is known turned one way (`to_canonical_facing`), and
    averaged with their mirror only where the facing is unknown. `device`: where to run (the model is moved
    there); default: where the model is. `cache`: True (the facelib cache folder), a folder, or False
    (no embedding cache; decoded faces still use the image cache); the key covers the weights, the image
    files (or pixels) and `flip`, so evaluating the same model on the same data again runs no network.
    `model` may also be an export.OnnxEmbedder (ONNX Runtime), whose graph always averages the mirror image.
    """
    if isinstance(model, export.OnnxEmbedder) and not np.all(flip):
        raise FacelibError(f"{model.path}: the ONNX graph averages each face with its mirror; flip=False needs torch")
    if isinstance(images, pd.DataFrame):
        distinct = images.drop_duplicates("path")
        vectors = _embed_cached(model, distinct, batch_size, flip, cache, device, progress)
        return vectors[pd.Index(distinct["path"]).get_indexer(images["path"])]
    return _embed_cached(model, images, batch_size, flip, cache, device, progress)


def _embed_cached(model, images, batch_size, flip, cache, device, progress):
    if not cache:
        return _embed(model, *_faces(model, images, flip, None, progress), batch_size, device, progress)
    cache_dir = imagecache.cache_folder(None if cache is True else cache)
    limit = imagecache.cache_limit_bytes()  # a bad setting fails before the embedding, not after
    cache_file = cache_dir / f"embeddings-{len(images)}-{_embedding_key(model, images, flip)[:24]}.npy"
    if cache_file.exists():
        try:
            vectors = np.load(cache_file)
            imagecache.touch(cache_file)
            return vectors
        except (OSError, ValueError):
            pass  # unreadable cache file: embed again and replace it
    vectors = _embed(model, *_faces(model, images, flip, cache_dir, progress), batch_size, device, progress)
    with atomic_path(cache_file) as tmp, open(tmp, "wb") as file:  # a file object: np.save adds no suffix
        np.save(file, vectors)
    imagecache.prune(cache_dir, keep=cache_file, limit=limit)
    return vectors


def _faces(model, images, flip, cache_dir, progress):
    """(faces, flip): the model's input faces and which of them to average with their mirror image."""
    if not isinstance(images, pd.DataFrame):
        return images, flip
    faces = imagecache.load_images(
        images, _image_size(model), cache_dir=cache_dir, progress=progress, align=_aligned(model)
    )
    if _canonical(model):
        flip = to_canonical_facing(faces, images) & np.asarray(flip, dtype=bool)
    return faces, flip


def to_canonical_facing(faces, images):
    """Mirror, in place, the faces (uint8 [N, 3, S, S], rows of `images`) that canonical facing turns round
    (poses.canonical_facing); return which faces may still be averaged with their mirror image: those of unknown
    facing, as a model trained on canonical facing never saw the others turned the other way. In place costs
    little: imagecache.load_images maps its file copy-on-write, so only the mirrored faces are copied."""
    known, mirrored = poses.canonical_facing(images)
    rows = torch.from_numpy(np.flatnonzero(mirrored))
    faces[rows] = faces[rows].flip(-1)
    return ~known


def _image_size(model):
    if not hasattr(model, "image_size"):
        raise FacelibError(f"{type(model).__name__}: the model has no image_size; embed a uint8 tensor instead")
    return int(model.image_size)


def _canonical(model):
    """Whether `model` trained on canonical facing (`.canonical_facing`, set by models.load_embedder)."""
    return bool(getattr(model, "canonical_facing", False))


def _aligned(model):
    """Whether `model` takes landmark-aligned faces (`.align`, set by models.load_embedder); else boxes."""
    return bool(getattr(model, "align", False))


def _embedding_key(model, images, flip):
    canonical = " canonical" if _canonical(model) else ""
    flip = bool(flip) if np.ndim(flip) == 0 else np.asarray(flip, dtype=bool).tobytes().hex()  # a mask: its rows
    digest = hashlib.sha256(f"facelib-embeddings v{EMBEDDING_CACHE_FORMAT} flip={flip}{canonical}\n".encode())
    digest.update(weights_digest(model))
    if isinstance(images, pd.DataFrame):
        digest.update(imagecache.cache_key(images, _image_size(model), _aligned(model)).encode())
    else:
        digest.update(str(tuple(images.shape)).encode())
        digest.update(images.contiguous().cpu().numpy().tobytes())
    return digest.hexdigest()


def weights_digest(model):
    """Digest of the architecture and every weight and buffer: the same checkpoint gives the same key
    wherever it is stored, and retraining in place gives a new one. An ONNX model: its file's digest."""
    if isinstance(model, export.OnnxEmbedder):
        return b"onnx" + model.digest
    digest = hashlib.sha256(type(model).__name__.encode())
    for name, value in model.state_dict().items():
        digest.update(name.encode())
        digest.update(value.detach().cpu().reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.digest()


def _embed(model, faces, flip, batch_size, device, progress):
    if isinstance(model, export.OnnxEmbedder):  # flip averaging and normalisation are inside the graph
        batches = torch.split(faces, batch_size)
        batches = tqdm(batches, desc="embedding (onnxruntime)", unit="batch", disable=not progress, leave=False)
        chunks = [model(imagecache.to_model_input(batch)) for batch in batches]
        return torch.cat(chunks).numpy() if chunks else np.zeros((0, 0), dtype=np.float32)
    if device:
        model.to(device)
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    chunks = []
    flip = torch.as_tensor(np.broadcast_to(flip, len(faces)).copy()).to(device)  # per face
    try:
        with torch.inference_mode():
            for start in tqdm(
                range(0, len(faces), batch_size), desc="embedding", unit="batch", disable=not progress, leave=False
            ):
                x = imagecache.to_model_input(faces[start : start + batch_size].to(device))
                averaged = flip[start : start + batch_size]
                if averaged.any():  # one forward pass over the batch and its mirror image, each view weighing the same
                    original, mirrored = model(torch.cat([x, x.flip(-1)])).float().chunk(2)
                    mirrored = torch.where(averaged[:, None], mirrored, original)  # the others count themselves twice
                    chunks.append(
                        torch.nn.functional.normalize(original, dim=1) + torch.nn.functional.normalize(mirrored, dim=1)
                    )
                else:
                    chunks.append(model(x).float())
    finally:
        model.train(was_training)
    if not chunks:
        return np.zeros((0, 0), dtype=np.float32)
    return torch.nn.functional.normalize(torch.cat(chunks), dim=1).cpu().numpy()


@dataclass
class Embeddings:
    """Distinct images (`images`, one row each) and their embeddings (`vectors`, row i = images row i);
    pairs of these images are scored by lookup."""

    images: pd.DataFrame
    vectors: np.ndarray

    def rows(self, paths):
        rows = pd.Index(self.images["path"]).get_indexer(paths)
        if (rows < 0).any():
            raise FacelibError(f"pair image not among the embedded images: {list(paths)[int(np.argmin(rows))]}")
        return rows

    def scores(self, pairs, metric="cosine"):
        """One score per pair (higher = more alike), looked up from the embedding matrix."""
        return score_vectors(self.vectors[self.rows(pairs["a"])], self.vectors[self.rows(pairs["b"])], metric)


def score_vectors(a, b, metric="cosine"):
    """Row-wise scores of two matrices of L2-normalised embeddings: cosine, or the negated euclidean distance."""
    if metric == "cosine":
        return np.einsum("ij,ij->i", a, b).astype(np.float64)
    if metric == "euclidean":
        return -np.linalg.norm(a - b, axis=1).astype(np.float64)
    raise FacelibError(f"metric: expected one of {', '.join(METRICS)}, got {metric!r}")


def embed_pairs(model, images, pairs, batch_size=128, flip=True, cache=True, device=None, progress=False):
    """Embeddings of the distinct images of `pairs` (in order of first appearance, looked up by path in
    the image table, with a `pose` column added)."""
    paths = pd.unique(pairs[["a", "b"]].to_numpy().ravel())
    table = images.drop_duplicates("path").set_index("path")
    missing = [path for path in paths if path not in table.index]
    if missing:
        raise FacelibError(f"pair image not in the image table: {missing[0]}")
    chosen = table.loc[paths].reset_index()
    chosen["pose"] = poses.pose_labels(chosen)
    vectors = embed_images(
        model, chosen, batch_size=batch_size, flip=flip, cache=cache, device=device, progress=progress
    )
    return Embeddings(chosen, vectors)
