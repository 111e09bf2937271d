"""Face identification: look each probe face up in a gallery of known faces.

`rank_gallery` sorts the gallery by cosine similarity for every probe (embeddings are L2-normalised, so
the dot product is the cosine). From that ranking come the CMC curve (rank-k: the share of probes whose
first correct gallery image is among the top k) and the mean average precision (how high *all* of a
probe's correct gallery images rank). In a multi-angle setting the gallery is usually the frontal
images and the probes the side views.
"""

from dataclasses import dataclass

import numpy as np
import pandas as pd


@dataclass
class Ranking:
    """For each probe (row index `probes[i]` of the embedding matrix): the gallery images best first
    (`hits[i]`, row indices), their cosine similarity and whether each is the probe's identity."""

    probes: np.ndarray  # [P]
    hits: np.ndarray  # [P, G]
    similarity: np.ndarray  # [P, G], descending along each row
    correct: np.ndarray  # [P, G] bool

    def cmc(self, k):
        """Share of probes whose first correct gallery image ranks within the top k."""
        return float(self.correct[:, :k].any(axis=1).mean())

    def mean_average_precision(self):
        """Mean over probes of the precision averaged at the rank of each correct gallery image
        (equal to sklearn's average_precision_score per probe when no similarities tie)."""
        precision_at_rank = np.cumsum(self.correct, axis=1) / np.arange(1, self.correct.shape[1] + 1)
        average_precision = (precision_at_rank * self.correct).sum(axis=1) / self.correct.sum(axis=1)
        return float(average_precision.mean())

    def summary(self):
        return {
            "rank1": self.cmc(1),
            "rank5": self.cmc(5),
            "mAP": self.mean_average_precision(),
            "probes": len(self.probes),
            "gallery": self.hits.shape[1],
        }


def rank_gallery(embeddings, identities, gallery, probes=None):
    """Rank the `gallery` rows of `embeddings` for each probe row (default: every row outside the gallery).

    `gallery` / `probes` are boolean masks over the rows; `identities` gives each row's identity. Rows of
    unknown identity are left out, and so are probes whose identity has no gallery image (they cannot be
    found). Returns a `Ranking`, or None when no probe or no gallery image remains.
    """
    identities = pd.Series(identities).reset_index(drop=True)
    known = identities.notna().to_numpy()
    gallery = np.asarray(gallery, dtype=bool) & known
    probes = (~gallery if probes is None else np.asarray(probes, dtype=bool)) & known
    probes &= identities.isin(identities[gallery]).to_numpy()
    if not gallery.any() or not probes.any():
        return None
    gallery_rows, probe_rows = np.flatnonzero(gallery), np.flatnonzero(probes)
    similarity = embeddings[probe_rows] @ embeddings[gallery_rows].T
    order = np.argsort(-similarity, axis=1, kind="stable")
    hits = gallery_rows[order]
    labels = identities.to_numpy()
    return Ranking(
        probes=probe_rows,
        hits=hits,
        similarity=np.take_along_axis(similarity, order, axis=1),
        correct=labels[hits] == labels[probe_rows][:, None],
    )
