"""The canonical keypoint model: names, groups and the per-person container.

Coordinates are pixels with the origin at the top-left of the frame; each point is (x, y, c) with
c = 1 for a visible point and c = 0 (and x = y = 0) for one that is absent, behind the camera or
outside the frame, as OpenPose writes undetected points. Left and right are the subject's own.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

# OpenPose BODY-18 order.
BODY_18 = (
    "nose", "neck",
    "r_shoulder", "r_elbow", "r_wrist",
    "l_shoulder", "l_elbow", "l_wrist",
    "r_hip", "r_knee", "r_ankle",
    "l_hip", "l_knee", "l_ankle",
    "r_eye", "l_eye", "r_ear", "l_ear",
)

# COCO-WholeBody foot order.
FOOT_6 = ("l_big_toe", "l_small_toe", "l_heel", "r_big_toe", "r_small_toe", "r_heel")

# OpenPose 21-point hand, without the side prefix; point 0 is the body's wrist.
HAND_21 = (
    "wrist",
    "thumb1", "thumb2", "thumb3", "thumb4",
    "index1", "index2", "index3", "index4",
    "middle1", "middle2", "middle3", "middle4",
    "ring1", "ring2", "ring3", "ring4",
    "pinky1", "pinky2", "pinky3", "pinky4",
)
LEFT_HAND_21 = tuple("l_" + name for name in HAND_21)
RIGHT_HAND_21 = tuple("r_" + name for name in HAND_21)

# Point groups in the order of the OpenPose JSON keys that carry them.
GROUPS = {
    "pose_keypoints_2d": BODY_18,
    "foot_keypoints_2d": FOOT_6,
    "hand_left_keypoints_2d": LEFT_HAND_21,
    "hand_right_keypoints_2d": RIGHT_HAND_21,
}

# Every point a rig can map to a bone, in a stable order (the hand wrists are the body's wrists).
RIG_POINTS = BODY_18 + FOOT_6 + LEFT_HAND_21[1:] + RIGHT_HAND_21[1:]

# Points a rig preset must provide for the body map to be complete; the neck is derived.
REQUIRED_BODY_POINTS = tuple(name for name in BODY_18 if name != "neck")

FACE_68_COUNT = 68
FACE_MESH_COUNT = 478

# Points per OpenPose JSON key, the face keys included.
GROUP_SIZES = {key: len(names) for key, names in GROUPS.items()} | {
    "face_keypoints_2d": FACE_68_COUNT, "face_mesh_keypoints_2d": FACE_MESH_COUNT}


@dataclass
class PersonKeypoints:
    """One character's 2D keypoints in one frame.

    `points` maps an OpenPose JSON key to an (N, 3) float array of (x, y, c) in pixels;
    `depth` maps the same key to an (N,) array of distances from the camera along its view axis
    (world units, larger is farther), used to draw far limbs first when asked.
    """

    points: dict[str, np.ndarray] = field(default_factory=dict)
    depth: dict[str, np.ndarray] = field(default_factory=dict)

    @classmethod
    def empty(cls) -> "PersonKeypoints":
        person = cls()
        for key, names in GROUPS.items():
            person.points[key] = np.zeros((len(names), 3), dtype=np.float64)
            person.depth[key] = np.zeros(len(names), dtype=np.float64)
        return person

    def group(self, key: str) -> np.ndarray:
        """The (N, 3) array for a JSON key; an all-absent array if the person has none."""
        if key in self.points:
            return self.points[key]
        return np.zeros((GROUP_SIZES[key], 3), dtype=np.float64)

    def group_depth(self, key: str) -> np.ndarray:
        if key in self.depth:
            return self.depth[key]
        return np.zeros(len(self.group(key)), dtype=np.float64)
