"""`depth`: the scene's depth through the camera, in the convention of VACE's depth annotator.

VACE made its depth maps with MiDaS (dpt_hybrid), whose output is relative inverse depth, normalised
per frame to its own minimum and maximum and scaled to 0..255 (uint8 truncation), grey in all three
channels: near is bright, the farthest point black. Blender renders the exact depth Z of the scene
through the camera; its inverse 1/Z (0 where nothing is hit) normalised the same way is that map
without the estimation error (MiDaS's scale and shift cancel in the normalisation).
"""

import numpy as np

from . import DEPTH, Style

STYLE = Style("depth", "Depth", "The scene's depth through the camera, near bright (normalised inverse depth, as "
                                "VACE's depth annotator made it): the set and props shape the scene", DEPTH)

NO_HIT = 1e9  # Blender's depth pass gives 1e10 where a ray hits nothing


def from_distance(depth: np.ndarray) -> np.ndarray:
    """(H, W) camera depth (distance along the view axis; >= NO_HIT or 0 where nothing is hit) ->
    the (H, W, 3) uint8 map: inverse depth, minus its minimum, divided by its maximum, times 255,
    truncated, as VACE's annotator treats MiDaS's output. A frame of one depth is all black."""
    depth = np.asarray(depth, dtype=np.float64)
    hit = (depth > 0) & (depth < NO_HIT)
    inverse = np.where(hit, 1.0 / np.where(hit, depth, 1.0), 0.0)
    inverse -= inverse.min()
    top = inverse.max()
    if top > 0:
        inverse /= top
    grey = (inverse * 255.0).clip(0, 255).astype(np.uint8)
    return np.repeat(grey[..., None], 3, axis=2)
