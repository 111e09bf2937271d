"""A trained model answering a user's questions: are these two photos the same person (`verify`), and who in
this gallery looks most like this photo (`search`).

Photos of any size are read as the data layer reads a face without a box: the centre square, resized to the
model's input size (imagecache.decode_face); a model trained on landmark-aligned faces (`--align`) gets the same
centre square, since a user's photo carries no landmarks. Embeddings come from embedding.embed_images (mirror-averaged,
L2-normalised), with torch or ONNX Runtime (`engine`). A gallery's embeddings are cached by embed_images under
a key of the model's weights and every image's path, modification time and size, so a second search embeds
only the probe, and a changed model or image gives a new key.
"""

from pathlib import Path

import numpy as np
import pandas as pd
import torch

from facelib import embedding, imagecache, layouts, metrics
from facelib.errors import FacelibError


def verify(a, b, model, threshold=None, engine="torch", device=None):
    """Whether photos `a` and `b` show the same person: a dict with same, score, threshold, threshold_source,
    metric, a, b. The threshold is `threshold` if given, else the one the run chose on its validation pairs."""
    _require_files([a, b])
    net = embedding.resolve_model(model, device, engine)
    threshold, source, metric = decision_threshold(net, threshold)
    vectors = embed_photos(net, [a, b])
    score = float(embedding.score_vectors(vectors[:1], vectors[1:], metric)[0])
    return {
        "same": bool(metrics.predicted_same(score, threshold)),
        "score": score,
        "threshold": threshold,
        "threshold_source": source,
        "metric": metric,
        "a": str(a),
        "b": str(b),
    }


def decision_threshold(model, threshold=None):
    """(threshold, where it came from, metric): the given one (cosine), else the model's stored one."""
    if threshold is not None:
        return float(threshold), "given", "cosine"
    stored = getattr(model, "verification", None)
    if not stored:
        raise FacelibError("the model stores no threshold (its run had no validation pairs): give one with --threshold")
    return float(stored["threshold"]), "chosen on the run's validation pairs", str(stored["metric"])


def search(probe, gallery, model, top=5, engine="torch", device=None, cache=True):
    """The `top` gallery identities most like the `probe` photo, best first: a table with rank, identity,
    score (cosine of the probe and the identity's closest image), image (that image) and images (how many
    the identity has). `gallery`: a folder of identity folders (identity = folder name) and / or images
    (identity = file name without suffix). `cache`: as in embedding.embed_images."""
    if top < 1:
        raise FacelibError(f"--top: expected a positive number of identities, got {top}")
    _require_files([probe])
    images = gallery_images(gallery)
    net = embedding.resolve_model(model, device, engine)
    vectors = embedding.embed_images(net, images, cache=cache)
    similarity = vectors @ embed_photos(net, [probe])[0]
    ranked = images.assign(score=similarity.astype(np.float64)).sort_values("score", ascending=False, kind="stable")
    best = ranked.drop_duplicates("identity").head(top)
    counts = images["identity"].value_counts()
    return pd.DataFrame(
        {
            "rank": range(1, len(best) + 1),
            "identity": best["identity"].to_numpy(),
            "score": best["score"].to_numpy(),
            "image": best["path"].to_numpy(),
            "images": counts.reindex(best["identity"]).to_numpy(),
        }
    )


def gallery_images(folder):
    """Image table (path, identity) of a gallery folder: the images in each sub-folder (identity = its name)
    and the images directly inside (identity = the file name without suffix)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FacelibError(f"--gallery {folder}: folder not found")
    rows = []
    for entry in sorted(folder.iterdir()):
        if entry.is_dir():
            rows += [(str(path), entry.name) for path in sorted(entry.iterdir()) if _is_image(path)]
        elif _is_image(entry):
            rows.append((str(entry), entry.stem))
    if not rows:
        raise FacelibError(f"--gallery {folder}: no images (expected identity folders of images, or images)")
    return pd.DataFrame(rows, columns=["path", "identity"])


def embed_photos(model, paths):
    """Embeddings [len(paths), D] of photos of any size (centre square, resized), not cached."""
    faces = torch.stack([imagecache.decode_face(path, None, model.image_size) for path in paths])
    return embedding.embed_images(model, faces, cache=False)


def _is_image(path):
    return path.is_file() and path.suffix.lower() in layouts.IMAGE_SUFFIXES


def _require_files(paths):
    for path in paths:
        if not Path(path).is_file():
            raise FacelibError(f"{path}: image file not found")
