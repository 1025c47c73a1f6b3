"""OpenPose JSON per frame: the keypoint interchange Marionette writes and reads.

`{"version": 1.3, "people": [{"pose_keypoints_2d": [x, y, c, ...], ...}], "canvas_width": W,
"canvas_height": H}`; pixels, origin top-left, c = 0 for an absent or invisible point.
"""

from __future__ import annotations

import json

import numpy as np

from .keypoints import GROUPS, PersonKeypoints

OPENPOSE_VERSION = 1.3


def to_openpose_dict(people: list[PersonKeypoints], width: int, height: int) -> dict:
    entries = []
    for person in people:
        entry = {}
        for key in GROUPS:
            entry[key] = _flatten(person.group(key))
        for key in ("face_keypoints_2d", "face_mesh_keypoints_2d"):
            if key in person.points:
                entry[key] = _flatten(person.points[key])
        entries.append(entry)
    return {"version": OPENPOSE_VERSION, "people": entries, "canvas_width": width, "canvas_height": height}


def _flatten(points: np.ndarray) -> list[float]:
    # Round to 1/1000 px: exact enough for any consumer, and keeps the files small.
    return [round(float(v), 3) for v in points.reshape(-1)]


def dumps(people: list[PersonKeypoints], width: int, height: int) -> str:
    return json.dumps(to_openpose_dict(people, width, height), separators=(",", ":"))


def loads(text: str) -> tuple[list[PersonKeypoints], int, int]:
    """Parse OpenPose JSON into people and the canvas size (0, 0 if the file does not say)."""
    data = json.loads(text)
    if not isinstance(data, dict) or not isinstance(data.get("people"), list):
        raise ValueError("not OpenPose JSON: expected an object with a 'people' list")
    people = []
    for entry in data["people"]:
        person = PersonKeypoints()
        for key, values in entry.items():
            if not key.endswith("_keypoints_2d") or not values:
                continue
            array = np.asarray(values, dtype=np.float64)
            if array.size % 3:
                raise ValueError(f"OpenPose JSON '{key}' has {array.size} numbers, not a multiple of 3")
            person.points[key] = array.reshape(-1, 3)
        people.append(person)
    return people, int(data.get("canvas_width", 0)), int(data.get("canvas_height", 0))
