"""The character cut out of the reference image: its mask (GrabCut seeded with the skeleton, where
the image has no alpha), the clean plate (the background with the character inpainted away) and the
triangle mesh over it that the rig deforms."""

from __future__ import annotations

import cv2
import numpy as np

from marionette_core.keypoints import PersonKeypoints

from ..engines.base import EngineError


def character_mesh(mask: np.ndarray, reference: PersonKeypoints, spacing: int) -> tuple[np.ndarray, np.ndarray]:
    """Vertices (a grid inside the mask, its outline, the keypoints) and triangles over the mask."""
    height, width = mask.shape
    grown = cv2.dilate(mask.astype(np.uint8), np.ones((3, 3), np.uint8), iterations=2) > 0
    ys, xs = np.mgrid[spacing // 2:height:spacing, spacing // 2:width:spacing]
    inside = grown[ys, xs]
    points = [np.stack([xs[inside], ys[inside]], axis=1).astype(np.float64)]
    contours, _ = cv2.findContours(grown.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
    for contour in contours:
        outline = contour[:, 0, :].astype(np.float64)
        points.append(outline[::max(1, spacing * 2 // 3)])
    keypoints = [group[group[:, 2] > 0, :2] for group in reference.points.values()]
    points += keypoints
    vertices = np.concatenate(points)
    vertices[:, 0] = np.clip(vertices[:, 0], 0, width - 1)
    vertices[:, 1] = np.clip(vertices[:, 1], 0, height - 1)
    # Eighths of a pixel survive Subdiv2D's float32 exactly, so its corners map back to vertices.
    vertices = np.unique(np.round(vertices * 8) / 8, axis=0)
    subdivision = cv2.Subdiv2D((0, 0, width, height))
    subdivision.insert([tuple(map(float, v)) for v in vertices])
    corners = subdivision.getTriangleList().reshape(-1, 3, 2).astype(np.float64)
    # Map corners back to vertex indices and keep triangles whose centre is on the character.
    lookup = {(float(x), float(y)): i for i, (x, y) in enumerate(vertices)}
    triangles = []
    for triangle in corners:
        keys = [(float(x), float(y)) for x, y in triangle]
        if not all(k in lookup for k in keys):
            continue  # a corner of Subdiv2D's outer bounding triangle
        centre = triangle.mean(axis=0).astype(int)
        if grown[min(centre[1], height - 1), min(centre[0], width - 1)]:
            triangles.append([lookup[k] for k in keys])
    if not triangles:
        raise EngineError("the character mask is empty; give the reference image an alpha channel or pose the "
                          "rig over the character")
    return vertices, np.array(triangles, dtype=np.int64)


def estimate_mask(image: np.ndarray, bone_segments: list[tuple[np.ndarray, np.ndarray]]) -> np.ndarray:
    """Character mask by GrabCut, seeded with the reference skeleton (its bones as pixel segments):
    sure foreground along the bones, probable foreground around them, sure background far from them."""
    height, width = image.shape[:2]
    scale = min(1.0, 256.0 / max(height, width))
    small = cv2.resize(image, (max(1, int(width * scale)), max(1, int(height * scale))), interpolation=cv2.INTER_AREA)
    segments = [(a * scale, b * scale) for a, b in bone_segments]
    points = np.array([p for segment in segments for p in segment])
    extent = max(np.ptp(points[:, 0]), np.ptp(points[:, 1]), 8.0)
    seed = np.full(small.shape[:2], cv2.GC_BGD, np.uint8)
    margin = int(extent * 0.25)
    x0, y0 = (points.min(axis=0) - margin).astype(int)
    x1, y1 = (points.max(axis=0) + margin).astype(int)
    seed[max(0, y0):y1 + 1, max(0, x0):x1 + 1] = cv2.GC_PR_BGD
    thick, thin = max(2, int(extent * 0.07)), max(1, int(extent * 0.01))
    for a, b in segments:
        cv2.line(seed, tuple(a.astype(int)), tuple(b.astype(int)), cv2.GC_PR_FGD, thick)
    for a, b in segments:
        cv2.line(seed, tuple(a.astype(int)), tuple(b.astype(int)), cv2.GC_FGD, thin)
    background_model, foreground_model = np.zeros((1, 65)), np.zeros((1, 65))
    try:
        cv2.grabCut(cv2.cvtColor(small, cv2.COLOR_RGB2BGR), seed, None, background_model, foreground_model, 4,
                    cv2.GC_INIT_WITH_MASK)
    except cv2.error:
        pass  # a degenerate seed (e.g. no background at all): keep the seed as the mask
    small_mask = np.isin(seed, (cv2.GC_FGD, cv2.GC_PR_FGD)).astype(np.uint8) * 255
    mask = cv2.resize(small_mask, (width, height), interpolation=cv2.INTER_LINEAR)
    return cv2.GaussianBlur(mask, (3, 3), 0)


def clean_plate(image: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    """The background with the character removed (inpainted at reduced size, then upscaled)."""
    height, width = alpha.shape
    scale = min(1.0, 256.0 / max(height, width))
    size = (max(1, int(width * scale)), max(1, int(height * scale)))
    hole = cv2.dilate((cv2.resize(alpha, size) > 20).astype(np.uint8), np.ones((5, 5), np.uint8))
    small = cv2.inpaint(cv2.resize(image, size, interpolation=cv2.INTER_AREA), hole, 5, cv2.INPAINT_TELEA)
    plate = cv2.resize(small, (width, height), interpolation=cv2.INTER_LINEAR)
    keep = (alpha < 20)[..., None]
    return np.where(keep, image, plate)

