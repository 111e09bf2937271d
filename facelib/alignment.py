"""Landmark alignment: warp a face so that its landmarks land on a canonical template for its view.

A square box around the landmarks (facelib.layouts) keeps each face's roll and its position within the box;
a similarity transform (rotation, uniform scale, shift: no shear, so faces keep their shape) fitted by least
squares to a few landmarks removes both, so every face of a view puts its eye, nose and mouth on the same pixels.
The warp runs once, when the image cache decodes the faces (facelib.imagecache), so training pays nothing per step.

Coordinates: landmarks are in source pixels with pixel centres at whole numbers (as CFP's fiducials and numpy
index them); templates are in the output's unit square, (0, 0) its top-left corner and (1, 1) its bottom-right,
so a template point (u, v) lies at output pixel (u * size - 0.5, v * size - 0.5).
"""

import numpy as np
import torch
import torch.nn.functional as F
from torchvision.transforms.v2 import functional as TF

# Template points per view, in the order facelib.layouts gives the landmarks (CFP_ALIGNMENT_POINTS):
#   frontal: visible eye's centre, nose tip, mouth corner, mouth centre (CFP marks one half of a frontal face:
#            the eye and mouth corner on the image's left, the nose tip and mouth centre on the midline);
#   profile: visible eye's centre, nose tip, mouth corner, chin, for a face whose nose points to the image's
#            right (`template` mirrors it for faces facing left).
# Obtained from CFP folds 1-8 (faces whose landmarks all lie inside the image; profiles facing left mirrored):
# the landmarks in the coordinates of the square box facelib.layouts crops (as the unit square), their
# generalised Procrustes mean (each face fitted to the mean by `similarity`, three rounds), then fitted onto the
# plain mean of those box coordinates. Aligned faces thus keep, on average, the box's framing and margin.
TEMPLATES = {
    "frontal": np.array([[0.3241, 0.2668], [0.5092, 0.4712], [0.3622, 0.6523], [0.5141, 0.6639]]),
    "profile": np.array([[0.6440, 0.2862], [0.8979, 0.4978], [0.6407, 0.6797], [0.7207, 0.9319]]),
}


def template(view, facing=None):
    """The template points [4, 2] of a view ('frontal' or 'profile'); a profile facing 'left' gets the mirror
    image of the right-facing one, so alignment never flips a face (canonical facing is a separate choice)."""
    if view not in TEMPLATES:
        raise ValueError(f"alignment template: expected view 'frontal' or 'profile', got {view!r}")
    points = TEMPLATES[view].copy()
    if view == "profile" and facing == "left":
        points[:, 0] = 1.0 - points[:, 0]
    return points


def similarity(source, target):
    """The similarity transform [2, 3] (x' = A @ (x, y, 1)) that maps the points `source` [n, 2] closest to
    `target` [n, 2] in the least-squares sense (Umeyama 1991; never a reflection)."""
    source, target = np.asarray(source, float), np.asarray(target, float)
    source_mean, target_mean = source.mean(0), target.mean(0)
    source_centred, target_centred = source - source_mean, target - target_mean
    u, singular, vt = np.linalg.svd(target_centred.T @ source_centred / len(source))
    sign = np.diag([1.0, np.sign(np.linalg.det(u) * np.linalg.det(vt)) or 1.0])
    rotation = u @ sign @ vt
    scale = np.trace(np.diag(singular) @ sign) / (source_centred**2).sum(1).mean()
    return np.column_stack([scale * rotation, target_mean - scale * rotation @ source_mean])


def warp(image, landmarks, target, size):
    """uint8 [3, size, size]: `image` (uint8 [3, H, W]) moved by the similarity that puts `landmarks` (source
    pixels) on `target` (unit square), zero where the output reaches beyond the image. It is sampled at the
    source's own scale, then resized with antialiasing, so a large face shrinks without aliasing."""
    height, width = image.shape[-2:]
    to_unit = np.vstack([similarity(np.asarray(landmarks, float) + 0.5, target), [0, 0, 1]])  # pixel centres
    side = max(size, round(1 / np.sqrt(abs(np.linalg.det(to_unit[:2, :2])))))  # the unit square, in source pixels
    # output [-1, 1] (affine_grid) -> unit square -> source pixels -> source [-1, 1] (grid_sample)
    from_output = np.array([[0.5, 0, 0.5], [0, 0.5, 0.5], [0, 0, 1]])
    to_source = np.array([[2 / width, 0, -1], [0, 2 / height, -1], [0, 0, 1]])
    theta = torch.as_tensor(to_source @ np.linalg.inv(to_unit) @ from_output, dtype=torch.float32)[None, :2]
    grid = F.affine_grid(theta, [1, 3, side, side], align_corners=False)
    warped = F.grid_sample(image[None].float(), grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    resized = TF.resize(warped[0], [size, size], antialias=True)
    return resized.round().clamp(0, 255).to(torch.uint8)
