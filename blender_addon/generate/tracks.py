"""What Generate must make for an engine: the tracks, sound and texts its declared inputs ask for
(plain data, no bpy), in the words of the one vocabulary (core/styles)."""

from __future__ import annotations

from dataclasses import dataclass, field

from ..core import styles
from ..shared.jobs import MarionetteError

TEXT_INPUTS = ("prompt", "negative_prompt")  # the texts scene.marionette holds
# The styles this extension renders in Blender (renders.py, driving.py, depth.py).
RENDERED_STYLES = ("background", "face-crop", "driving", "depth")


class GenerationError(MarionetteError):
    """Bad input or a failed job; the message names the cause and the fix."""


@dataclass
class TrackPlan:
    """What Generate must render for an engine, from the inputs it declares."""
    pose_style: str | None = None
    face_style: str | None = None
    audio: bool = False
    mask: bool = False
    background: bool = False
    face_crops: bool = False  # face crops rendered in Blender (instead of made by the backend)
    driving: bool = False  # the performance rendered as the driving video
    depth: bool = False  # the scene's depth through the camera
    tracks: dict[str, str] = field(default_factory=dict)  # track name -> control pass folder
    required: set[str] = field(default_factory=set)  # the track names the engine cannot do without
    texts: tuple[str, ...] = ()


def plan_tracks(engine: dict, background_strip: str, settings: dict | None = None,
                render_face_crops: bool = False) -> TrackPlan:
    """The passes and tracks an engine's declared inputs ask for, for these setting values (an input
    declared `when` other values is skipped); GenerationError for one this extension cannot make."""
    plan = TrackPlan()
    texts = []
    declared = engine.get("settings", {})
    values = {name: spec.get("default") for name, spec in declared.items()} | dict(settings or {})
    for spec in engine.get("inputs", []):
        if any(values.get(key) != wanted for key, wanted in (spec.get("when") or {}).items()):
            continue  # e.g. a replace-mode plate when the job animates
        name, kind, style_name = spec.get("name", ""), spec.get("kind"), spec.get("style")
        required = spec.get("required", True)
        if kind == styles.TEXT:
            if name in TEXT_INPUTS:
                texts.append(name)
            continue
        if kind == styles.AUDIO:
            plan.audio = True
            continue
        folder = _pass_of(kind, style_name, render_face_crops)
        if folder == "background" and not background_strip:
            if required:
                raise GenerationError(f"engine '{engine['name']}' needs a background plate; pick the strip in "
                                      f"Marionette > Generate > Background Strip")
            continue
        if folder is None:
            if required:
                what = f"'{name}' images in the '{style_name}' style" if kind == styles.IMAGES else \
                    f"a '{kind}' input ({name})"
                raise GenerationError(f"engine '{engine['name']}' needs {what}, which this version of the "
                                      f"extension cannot make; update Marionette")
            continue
        plan.tracks[name] = folder
        if required:
            plan.required.add(name)
        if folder == styles.POSE:
            plan.pose_style = style_name
        if folder == styles.FACE:
            plan.face_style = style_name
        plan.mask |= folder == styles.MASK
        plan.background |= folder == "background"
        plan.face_crops |= folder == "face_crops"
        plan.driving |= folder == "driving"
        plan.depth |= folder == styles.DEPTH
    plan.texts = tuple(texts)
    return plan


def _pass_of(kind: str, style_name: str | None, render_face_crops: bool) -> str | None:
    """The control pass that holds a track's images, or None when this extension does not make them
    (face crops are made by the backend unless Blender renders them)."""
    if kind != styles.IMAGES or style_name not in styles.STYLES:
        return None
    style = styles.STYLES[style_name]
    if style.draw is None and (style_name not in RENDERED_STYLES or style_name == "face-crop" and not render_face_crops):
        return None
    return style.folder
