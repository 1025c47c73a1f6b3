"""Face crops for Wan-Animate's face video, and where they come from when the input is a rig.

Wan's rule (`get_face_bboxes` in Wan2.2's wan/modules/animate/preprocess/utils.py, called from
process_pipepline.py with scale 1.3 on the 68 face points of COCO-WholeBody, indices 23-90, every
one whatever its score): the bounding box w0 x h0 of the 68 points, its area scaled by 1.3 keeping
its aspect (new_w = sqrt(1.3 w0 h0 * w0 / h0), new_h = sqrt(1.3 w0 h0 * h0 / w0)), padded by
(new_w - w0) / 2 left and right, 3/4 of (new_h - h0) on top and 1/4 below (room for the forehead);
each side clamped to the image (0 .. width, 0 .. height), then truncated to int. The crop is
frame[y1:y2, x1:x2] (not square) resized to 512 x 512 with cv2.resize's default, bilinear.

From a rig there is no driving video to crop. The default source is the reference image moved by
the warp engine (body warp plus its face warp) to each frame's keypoints: the reference's own face
with the rig's expression (mouth, lids, brows), cropped with the box of that frame's face points.
A frame without face points gets the reference's face points carried by the head's motion (the
similarity fitted to the nose, eyes, ears and neck); a reference without face points gets a box
estimated from the head points.
"""

from __future__ import annotations

from typing import Sequence

import cv2
import numpy as np

from marionette_core.face import FaceBox as Box
from marionette_core.face import ibug68
from marionette_core.face import wan_face_box as face_box
from marionette_core.keypoints import BODY_18, PersonKeypoints

from ...warping.rig import WarpRig
from .weights import WanAnimateError

FACE_CROP_SIZE = 512  # pixels, square: what the motion encoder takes
FACE_68_KEY = "face_keypoints_2d"
FACE_MESH_KEY = "face_mesh_keypoints_2d"
_HEAD = {name: BODY_18.index(name) for name in ("nose", "r_eye", "l_eye", "r_ear", "l_ear")}



def crop_face(image: np.ndarray, box: Box, size: int = FACE_CROP_SIZE) -> np.ndarray:
    """image[y1:y2, x1:x2] resized to size x size as Wan's preprocessing does (cv2 bilinear); at least
    one pixel is kept where the box is empty."""
    x1, x2, y1, y2 = box
    height, width = image.shape[:2]
    x1, y1 = min(max(x1, 0), width - 1), min(max(y1, 0), height - 1)
    x2, y2 = max(x2, x1 + 1), max(y2, y1 + 1)
    return cv2.resize(np.ascontiguousarray(image[y1:y2, x1:x2]), (size, size))


def face_points(person: PersonKeypoints | None) -> np.ndarray | None:
    """The visible iBUG-68 points of a person ((N, 2) pixels): the 68 face points, else those of its
    478-point face mesh; None when fewer than 3 are visible."""
    if person is None:
        return None
    for key in (FACE_68_KEY, FACE_MESH_KEY):
        points = person.points.get(key)
        if points is None or len(points) == 0:
            continue
        points = points if key == FACE_68_KEY else ibug68(points)
        visible = points[points[:, 2] > 0, :2]
        if len(visible) >= 3:
            return visible
    return None


def head_box_points(person: PersonKeypoints | None) -> np.ndarray | None:
    """Corners of an estimated face box ((2, 2) pixels) from the head points (nose, eyes, ears) when
    there are no face points: as wide as the head points spread (at least twice the eye distance),
    from a third of that above the eyes to 0.8 of it below them; None with fewer than 2 head points."""
    if person is None:
        return None
    body = person.group("pose_keypoints_2d")
    visible = {name: body[index, :2] for name, index in _HEAD.items() if body[index, 2] > 0}
    if len(visible) < 2:
        return None
    points = np.array(list(visible.values()))
    size = float(np.ptp(points[:, 0]))
    eyes = [visible[name] for name in ("r_eye", "l_eye") if name in visible]
    if len(eyes) == 2:
        size = max(size, 2.0 * float(np.linalg.norm(eyes[0] - eyes[1])))
    size = max(size, 8.0)
    centre_x = float(points[:, 0].mean())
    eye_y = float(np.mean([e[1] for e in eyes])) if eyes else float(points[:, 1].mean())
    return np.array([[centre_x - size / 2, eye_y - size / 3], [centre_x + size / 2, eye_y + 0.8 * size]])


def _flatten(image: np.ndarray) -> np.ndarray:
    """RGB; an RGBA image (the warp keeps a reference's alpha) over black."""
    if image.shape[2] == 3:
        return image
    alpha = image[..., 3:].astype(np.float32) / 255.0
    return np.round(image[..., :3].astype(np.float32) * alpha).astype(np.uint8)


class FaceCropper:
    """Face crops of the reference image moved to each frame's keypoints by the warp engine.

    reference: (H, W, 3|4) uint8 RGB(A) at the output size; reference_person: the rig posed over it
    (output pixels). Needs the reference's head or torso points, as the warp engine does."""

    def __init__(self, reference: np.ndarray, reference_person: PersonKeypoints):
        self.rig = WarpRig.build(reference, reference_person)
        self.height, self.width = reference.shape[:2]
        self.reference_face = face_points(reference_person)
        names = [bone.name for bone in self.rig.bones]
        self.head = names.index("head") if "head" in names else 0

    def points(self, person: PersonKeypoints | None) -> np.ndarray | None:
        """The points whose Wan box is this frame's crop box (pixels), None when nothing tells."""
        points = face_points(person)
        if points is not None:
            return points
        if self.reference_face is not None:  # the reference's face, carried with the head
            head = self.rig.bone_transforms(person)[self.head]
            return self.reference_face @ head[:, :2].T + head[:, 2]
        return head_box_points(person)

    def box(self, person: PersonKeypoints | None) -> Box | None:
        points = self.points(person)
        return None if points is None else face_box(points, self.width, self.height)

    def crop(self, person: PersonKeypoints | None, box: Box | None = None) -> np.ndarray:
        """(512, 512, 3) uint8 RGB: the moved reference cropped with `box` (default: this frame's)."""
        box = box or self.box(person) or (0, self.width, 0, self.height)
        return crop_face(_flatten(self.rig.pose(person)), box)


def face_crops(reference: np.ndarray, reference_person: PersonKeypoints,
               frames_people: Sequence[PersonKeypoints | None], width: int, height: int) -> list[np.ndarray]:
    """One (512, 512, 3) uint8 RGB face crop per frame for Wan-Animate's face video.

    reference: (height, width, 3|4) uint8 RGB(A), the character at the output size; reference_person:
    the rig posed over it; frames_people: per frame the animated character's keypoints (None where
    it has none), all in output pixels, origin top-left. Each crop is the reference moved to that
    frame's keypoints (warp engine: body, then face expression), cropped with Wan's box of the frame's
    face points (see the module docstring for frames without them); a frame where nothing places a
    face reuses the previous frame's box (the whole frame at first)."""
    if reference.shape[:2] != (height, width):
        raise WanAnimateError(f"the reference is {reference.shape[1]}x{reference.shape[0]}, not the output size "
                              f"{width}x{height}; the keypoints are in output pixels")
    cropper = FaceCropper(reference, reference_person)
    crops, previous = [], None
    for person in frames_people:
        box = cropper.box(person) or previous
        previous = box
        crops.append(cropper.crop(person, box))
    return crops
