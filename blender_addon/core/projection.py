"""World points to pixels through a camera, given its matrices (no bpy)."""

from __future__ import annotations

import numpy as np


def project_points(world: np.ndarray, view: np.ndarray, projection: np.ndarray,
                   width: int, height: int) -> tuple[np.ndarray, np.ndarray]:
    """Project (N, 3) world points (Blender units) into a width x height frame.

    `view` is the camera's world-to-camera 4x4 matrix (camera looks down its -Z), `projection` the
    camera-to-clip 4x4 matrix (perspective or orthographic, lens shift and sensor fit included).
    Returns (N, 3) (x, y, c) in pixels, origin top-left, c = 1 for points in front of the camera and
    inside the frame, else (0, 0, 0); and (N,) depths along the view axis (larger is farther).
    Non-finite input points come out absent.
    """
    count = len(world)
    homogeneous = np.concatenate([world, np.ones((count, 1))], axis=1)
    camera = homogeneous @ view.T
    depth = -camera[:, 2]
    clip = camera @ projection.T
    with np.errstate(divide="ignore", invalid="ignore"):
        ndc = clip[:, :2] / clip[:, 3:4]
    x = (ndc[:, 0] + 1.0) * 0.5 * width
    y = (1.0 - ndc[:, 1]) * 0.5 * height
    visible = (np.isfinite(x) & np.isfinite(y) & np.isfinite(depth) & (depth > 0)
               & (x >= 0) & (x < width) & (y >= 0) & (y < height))
    points = np.zeros((count, 3))
    points[visible, 0] = x[visible]
    points[visible, 1] = y[visible]
    points[visible, 2] = 1.0
    return points, np.where(np.isfinite(depth), depth, 0.0)
