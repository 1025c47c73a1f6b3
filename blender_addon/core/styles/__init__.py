"""The one vocabulary of what engines take, and how each kind of image is made.

Input kinds: "images" (one image per frame: a track), "text" and "audio". Image styles: each module
in this folder declares one, STYLE = Style(...): its name (as engines declare it), what it shows,
the control pass that holds its images (control/<folder>/<frame:06d>.png), and, for a style drawn
from the rig's keypoints, the function that draws it. The backend's engine declarations, the
extension's panel, properties and Generate, and the command line all read the styles from here;
a new style is a new module here.
"""

from __future__ import annotations

import importlib
import pkgutil
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np

from ..keypoints import PersonKeypoints

IMAGES, TEXT, AUDIO = "images", "text", "audio"
INPUT_KINDS = (IMAGES, TEXT, AUDIO)

# Control passes (folders under control/) and how their images come about.
POSE, FACE, MASK = "pose", "face", "mask"  # drawn from the keypoints by the extension
DRAWN_PASSES = (POSE, FACE, MASK)
DEPTH = "depth"  # rendered by Blender through the scene camera
CONTROL_MAP_PASSES = (POSE, FACE, DEPTH)  # the maps a model is steered by (the command line's --maps)


@dataclass(frozen=True)
class Style:
    """One kind of per-frame image an engine can take.

    folder: the control pass that holds the images: "pose" (one pose style per run), "face" (one
        face style per run, with a bound face), "mask", or a pass Blender renders ("background",
        "face_crops").
    draw: for drawn styles, (people, width, height, depth_order) -> (height, width, 3) uint8 RGB
        ((height, width) for a mask); keypoints in pixels, origin top-left. None for styles Blender
        renders.
    number: a stable number for the style in saved .blend files (Blender saves enum items by number).
    """
    name: str
    label: str
    description: str
    folder: str
    draw: Callable[[Sequence[PersonKeypoints], int, int, bool], np.ndarray] | None = None
    number: int = 0


def _discover() -> dict[str, Style]:
    found = {}
    for module_info in pkgutil.iter_modules(__path__):
        style = importlib.import_module(f"{__name__}.{module_info.name}").STYLE
        found[style.name] = style
    return dict(sorted(found.items(), key=lambda item: (item[1].folder, item[1].number)))


STYLES: dict[str, Style] = _discover()


def style(name: str) -> Style:
    try:
        return STYLES[name]
    except KeyError:
        raise ValueError(f"unknown style {name!r}; known styles: {', '.join(STYLES)}") from None


def styles_of(folder: str) -> list[Style]:
    """The styles whose images go to control/<folder>, in their stable order (the panel's lists)."""
    return [s for s in STYLES.values() if s.folder == folder]


def draw(name: str, people: Sequence[PersonKeypoints], width: int, height: int,
         depth_order: bool = False) -> np.ndarray:
    """One frame of a drawn style: (height, width, 3) uint8 RGB. With `depth_order` (pose styles),
    limbs, joints and hand edges are drawn far to near instead of in the convention's fixed order,
    which gives occlusion cues the released models did not see in training."""
    drawn = style(name)
    if drawn.draw is None:
        raise ValueError(f"the {name!r} style is rendered by Blender, not drawn from keypoints")
    return drawn.draw(people, width, height, depth_order)
