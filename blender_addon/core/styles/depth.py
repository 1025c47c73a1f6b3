"""`depth`: the scene's depth through the camera, in the convention of VACE's depth annotator.

VACE made its depth maps with MiDaS (dpt_hybrid), whose output is relative inverse depth, normalised
per frame to its own minimum and maximum and scaled to 0..255 (uint8 truncation), grey in all three
channels: near is bright, the farthest point black. Blender renders the exact depth Z of the scene
through the camera; its inverse 1/Z (0 where nothing is hit) normalised the same way is that map
without the estimation error (MiDaS's scale and shift cancel in the normalisation).
"""

from . import DEPTH, Style

STYLE = Style("depth", "Depth", "The scene's depth through the camera, near bright (normalised inverse depth, as "
                                "VACE's depth annotator made it): the set and props shape the scene", DEPTH)
