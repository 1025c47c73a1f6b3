"""Rig presets: which bone (and bone-local offset) gives each canonical keypoint.

A preset (JSON in the extension's `rig/presets/` folder, authored in rigs/presets/) names, per keypoint,
a bone and where on it the point lies:
  "at":          fraction along the bone, 0 = head (default), 1 = tail;
  "rest_offset": [left, forward, up] added in the character's own frame, in shoulder widths
                 (subject's left; forward is where the character faces), for points that are no
                 joint (nose, eyes, ears, toes, heel). It is turned into a bone-local offset once,
                 on the calibration pose (the rest pose, or the start frame for rigs whose rest
                 pose is not a standing pose), so one preset fits rigs of any size and bone roll.
A resolved mapping holds for each point a bone and a bone-local offset in units of the bone's
length ((0, 0, 0) head, (0, 1, 0) tail), the form the user can override in the UI.

This module does no bpy calls: bones come in as plain matrices.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import numpy as np

from ..core.keypoints import RIG_POINTS, REQUIRED_BODY_POINTS

PRESET_FOLDER = Path(__file__).parent / "presets"


class MappingError(Exception):
    """A rig cannot be mapped to the canonical keypoints; the message says what to fix."""


@dataclass(frozen=True)
class PointBinding:
    bone: str
    offset: tuple[float, float, float] = (0.0, 0.0, 0.0)  # bone-local, in bone lengths


@dataclass(frozen=True)
class RigPreset:
    id: str
    name: str
    description: str
    detect: tuple[str, ...]
    calibration: str  # "rest" or "start_frame"
    points: dict = field(hash=False)

    def bones(self) -> set[str]:
        return {spec["bone"] for spec in self.points.values()}

    def required_bones(self) -> set[str]:
        return set(self.detect) | {self.points[name]["bone"] for name in REQUIRED_BODY_POINTS
                                   if name in self.points}


@dataclass
class RigMapping:
    preset_id: str
    points: dict[str, PointBinding]


@dataclass(frozen=True)
class BoneFrame:
    """A bone in armature space on the calibration pose: 4x4 matrix (Y runs head to tail) and length."""
    matrix: np.ndarray
    length: float


@lru_cache(maxsize=None)
def load_presets(folder: Path = PRESET_FOLDER) -> dict[str, RigPreset]:
    """All presets in `folder` by id (read once; they ship with the extension)."""
    presets = {}
    for path in sorted(folder.glob("*.json")):
        data = json.loads(path.read_text(encoding="utf-8"))
        unknown = set(data["points"]) - set(RIG_POINTS)
        if unknown:
            raise ValueError(f"rig preset {path.name} names unknown keypoints: {sorted(unknown)}")
        presets[data["id"]] = RigPreset(
            id=data["id"], name=data["name"], description=data.get("description", ""),
            detect=tuple(data.get("detect", ())), calibration=data.get("calibration", "rest"),
            points=data["points"])
    return presets


def detect_preset(armature_name: str, bone_names: set[str], presets: dict[str, RigPreset]) -> RigPreset:
    """The preset whose required bones the armature has, preferring the one mapping the most bones.

    Raises MappingError naming the bones the closest preset misses.
    """
    matches = [p for p in presets.values() if p.required_bones() <= bone_names]
    if matches:
        return max(matches, key=lambda p: (len(p.bones() & bone_names), p.id))
    closest = max(presets.values(), key=lambda p: len(p.required_bones() & bone_names) / len(p.required_bones()))
    missing = sorted(closest.required_bones() - bone_names)
    raise MappingError(
        f"armature '{armature_name}' matches no rig preset; the closest, '{closest.name}', needs the bones "
        f"{', '.join(missing)}. Pick a preset or map those keypoints in Marionette > Rig Mapping")


def character_frame(positions: dict[str, np.ndarray]) -> tuple[np.ndarray, float]:
    """The character's own axes (columns: left, forward, up) and its shoulder width, from the
    calibration-pose positions of its shoulders and hips (armature space)."""
    left = positions["l_shoulder"] - positions["r_shoulder"]
    shoulder_width = float(np.linalg.norm(left))
    up = (positions["l_shoulder"] + positions["r_shoulder"]) / 2 - (positions["l_hip"] + positions["r_hip"]) / 2
    if shoulder_width < 1e-9 or np.linalg.norm(up) < 1e-9:
        raise MappingError("the rig's shoulders or hips coincide on the calibration pose; cannot tell its axes")
    left = left / shoulder_width
    forward = np.cross(left, up)
    forward /= np.linalg.norm(forward)
    up = np.cross(forward, left)
    return np.stack([left, forward, up], axis=1), shoulder_width


def resolve_mapping(preset: RigPreset, calibration: dict[str, BoneFrame],
                    overrides: dict[str, PointBinding] | None = None, armature_name: str = "") -> RigMapping:
    """Bone-local bindings for every keypoint the preset maps and the rig has.

    `calibration` holds the armature's bones on the calibration pose. `overrides` replace the
    preset's binding of a keypoint. Missing optional bones leave their keypoint absent; missing
    body bones raise MappingError naming them.
    """
    overrides = overrides or {}
    missing = sorted({preset.points[name]["bone"] for name in REQUIRED_BODY_POINTS
                      if name in preset.points and name not in overrides
                      and preset.points[name]["bone"] not in calibration})
    missing += sorted(binding.bone for binding in overrides.values() if binding.bone not in calibration)
    if missing:
        raise MappingError(f"armature '{armature_name}' has no bone {', '.join(missing)} that preset "
                           f"'{preset.name}' maps; map those keypoints in Marionette > Rig Mapping")

    def position(spec) -> np.ndarray:
        bone = calibration[spec["bone"]]
        local = np.array([0.0, spec.get("at", 0.0) * bone.length, 0.0, 1.0])
        return (bone.matrix @ local)[:3]

    joints = {name: position(preset.points[name]) for name in ("l_shoulder", "r_shoulder", "l_hip", "r_hip")}
    axes, shoulder_width = character_frame(joints)

    points = {}
    for name, spec in preset.points.items():
        bone = calibration.get(spec["bone"])
        if bone is None:
            continue  # an optional point (hands, feet, face) this rig does not have
        offset = np.array([0.0, spec.get("at", 0.0), 0.0])
        if "rest_offset" in spec:
            shift = axes @ np.asarray(spec["rest_offset"], dtype=np.float64) * shoulder_width
            rotation = bone.matrix[:3, :3]
            offset += np.linalg.solve(rotation, shift) / max(bone.length, 1e-9)
        points[name] = PointBinding(spec["bone"], tuple(float(v) for v in offset))
    points.update(overrides)
    return RigMapping(preset.id, points)
