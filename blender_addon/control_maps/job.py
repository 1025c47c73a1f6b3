"""The control-map job: sample every frame, draw and write in worker threads, publish at once.

Frames are written into a staging folder beside the outputs; only a run that completes replaces
`<output_dir>/control/<pass>/`, so a failed or cancelled run leaves the previous outputs as they were
and no half-written file. Sampling touches bpy and runs on the main thread; drawing, PNG encoding
and file writing never touch bpy and run in a thread pool (numpy and zlib release the GIL).
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import bpy

from ..core import openpose_json, styles
from ..core.keypoints import PersonKeypoints
from ..core.png import encode_png
from ..face.binding import FaceBindingError, FaceSampler, bound_faces
from ..rig.mapping import MappingError
from ..rig.sampling import (CharacterSampler, SamplingError, add_face, build_mapping, camera_matrices, project_person,
                            render_size)
from ..shared import strips
from ..shared.jobs import Job, MarionetteError, Outcome

KEYPOINTS = "keypoints"  # the pass of OpenPose JSON files beside the drawn passes
PASSES = (styles.POSE, KEYPOINTS, styles.FACE, styles.MASK)  # face: with a bound face; mask: when asked for
GIL_SWITCH_INTERVAL = 0.0002  # seconds


class ControlMapError(MarionetteError):
    """Bad input for a control-map run; the message names the cause and the fix."""


@dataclass
class JobSettings:
    output_dir: Path
    style: str  # the pose maps' style (marionette core styles)
    depth_order: bool
    width: int
    height: int
    frame_start: int
    frame_end: int
    mask: bool = False  # also the rig mask pass (white = the characters)
    face_style: str = "aniportrait-face"  # the face maps' style (with a bound face)


def armatures_to_render(scene: bpy.types.Scene, context) -> list[bpy.types.Object]:
    """The armatures listed in scene.marionette, else the selected armatures."""
    listed = [item.object for item in scene.marionette.characters if item.object is not None]
    if listed:
        return listed
    selected = getattr(context, "selected_objects", None) or []
    return [obj for obj in selected if obj.type == "ARMATURE"]


def job_settings(scene: bpy.types.Scene, max_resolution: int, frame_start: int | None = None,
                 frame_end: int | None = None) -> JobSettings:
    """Validate the scene for a run; raises ControlMapError naming what is wrong."""
    settings = scene.marionette
    if scene.camera is None:
        raise ControlMapError("the scene has no camera; add one and set it as the scene camera")
    start = scene.frame_start if frame_start is None or frame_start < 0 else frame_start
    end = scene.frame_end if frame_end is None or frame_end < 0 else frame_end
    if end < start:
        raise ControlMapError(f"the frame range {start}-{end} is empty; set an end frame at or after the start")
    width, height = render_size(scene)
    if width > max_resolution or height > max_resolution:
        raise ControlMapError(
            f"the render size {width}x{height} is over the limit of {max_resolution} px per side set in "
            f"Marionette's preferences; lower the resolution or its percentage")
    if settings.output_dir.startswith("//") and not bpy.data.filepath:
        raise ControlMapError(f"the output folder '{settings.output_dir}' is relative to the .blend file, "
                              f"which is not saved yet; save it or choose an absolute folder")
    output = Path(bpy.path.abspath(settings.output_dir))
    return JobSettings(output, settings.pose_style, settings.depth_order, width, height, start, end,
                       settings.mask_pass)


class ControlMapJob(Job):
    """One run over a frame range (shared.jobs vocabulary). After finish(), `summary` says what was
    written: {"frames", "seconds", "folder", "passes"}; the passes' strips are in the Sequencer."""

    label = "control maps"
    tick = 0.001

    def __init__(self, scene: bpy.types.Scene, armatures: list[bpy.types.Object], settings: JobSettings):
        if not armatures:
            raise ControlMapError("no armature to render; add one in Marionette > Characters or select one")
        self.scene = scene
        self.settings = settings
        self.armatures = armatures
        self.frames = list(range(settings.frame_start, settings.frame_end + 1))
        self.next_index = 0
        self.cancelled = self.closed = False
        self.summary: dict | None = None
        self.original_frame = scene.frame_current
        self.started = time.perf_counter()
        self.staging = _make_staging(settings.output_dir)
        self.workers = max(1, os.cpu_count() or 1)
        self.pool = ThreadPoolExecutor(max_workers=self.workers, thread_name_prefix="marionette-maps")
        self.pending: list[Future] = []
        # The main thread (rig evaluation) and the drawing threads share the GIL; Python's default
        # 5 ms switch interval makes each wait for the other's whole time slice. Hand over sooner
        # for the length of the run.
        self.switch_interval = sys.getswitchinterval()
        sys.setswitchinterval(GIL_SWITCH_INTERVAL)
        try:
            self._set_frame(self.frames[0])
            depsgraph = bpy.context.evaluated_depsgraph_get()
            self.samplers = _samplers(armatures, depsgraph)
        except BaseException:
            self.close()
            raise

    @property
    def has_faces(self) -> bool:
        return any(sampler.face is not None for sampler in self.samplers)

    @property
    def passes(self) -> tuple[str, ...]:
        wanted = {styles.POSE, KEYPOINTS, styles.FACE if self.has_faces else "", styles.MASK if self.settings.mask else ""}
        return tuple(name for name in PASSES if name in wanted)

    @property
    def progress(self) -> float:
        return self.next_index / len(self.frames)

    @property
    def status(self) -> str:
        return f"control maps {100 * self.progress:.0f}%"

    def step(self, budget: float) -> bool:
        """Sample frames and queue their drawing for up to `budget` seconds; False when every frame
        is queued (or the run was cancelled)."""
        deadline = time.perf_counter() + budget
        while not self.cancelled and self.next_index < len(self.frames):
            frame = self.frames[self.next_index]
            people = sample_people(self.scene, self.samplers, frame, self.settings.width, self.settings.height)
            self._collect_finished(limit=2 * self.workers)
            self.pending.append(self.pool.submit(_write_frame, self.staging, frame, people, self.settings,
                                                 self.passes))
            self.next_index += 1
            if time.perf_counter() >= deadline:
                break
        return not self.cancelled and self.next_index < len(self.frames)

    def finish(self) -> Outcome:
        """Wait for the writers, then move the staged passes into place and show them as strips."""
        if self.cancelled:
            return Outcome("Control maps cancelled; earlier outputs are unchanged", cancelled=True)
        self._collect_finished(limit=0)
        self.pool.shutdown()
        control = self.settings.output_dir / "control"
        for name in self.passes:
            _replace_folder(self.staging / name, control / name)
        for name in (styles.FACE, styles.MASK):
            if name not in self.passes and (control / name).is_dir():
                shutil.rmtree(control / name)  # an earlier run's maps would not match this one
        seconds = time.perf_counter() - self.started
        self.summary = {"frames": len(self.frames), "seconds": seconds, "folder": str(control), "passes": self.passes}
        self.close()
        publish_strips(self.scene.name, control, self.settings.frame_start, len(self.frames))
        rate = len(self.frames) / max(seconds, 1e-9)
        return Outcome(f"Rendered {len(self.frames)} frames of control maps to {control} ({rate:.0f} frames/s)")

    def cancel(self) -> None:
        self.cancelled = True

    def close(self) -> None:
        """Stop the writers, drop what is staged (nothing once finish() moved it) and put the scene's
        frame and the GIL switch interval back."""
        if self.closed:
            return
        self.closed = True
        for future in self.pending:
            future.cancel()
        self.pool.shutdown(wait=True, cancel_futures=True)
        self.pending.clear()
        shutil.rmtree(self.staging, ignore_errors=True)
        self._set_frame(self.original_frame)
        sys.setswitchinterval(self.switch_interval)

    def _collect_finished(self, limit: int) -> None:
        """Re-raise a writer's error; block while more than `limit` frames are in flight."""
        while self.pending and (len(self.pending) > limit or self.pending[0].done()):
            future = self.pending.pop(0)
            try:
                future.result()
            except OSError as error:
                raise ControlMapError(f"cannot write control maps to '{self.settings.output_dir}': "
                                      f"{error.strerror or error}") from None

    def _set_frame(self, frame: int) -> None:
        # Always through frame_set, even for the current frame: it is what evaluates the animation.
        self.scene.frame_set(frame)


def publish_strips(scene_name: str, control: Path, frame_start: int, frame_count: int,
                   passes: tuple[str, ...] = styles.DRAWN_PASSES) -> float | None:
    """Show the passes (the drawn ones by default) as strips, now or, while Blender renders or saves
    (when the Sequencer must not be touched), shortly after from a timer."""
    if strips.render_or_save_running():
        bpy.app.timers.register(lambda: publish_strips(scene_name, control, frame_start, frame_count, passes),
                                first_interval=0.5)
        return None
    scene = bpy.data.scenes.get(scene_name)
    if scene is not None:
        for name in passes:
            if (control / name).is_dir():
                strips.set_image_sequence_strip(scene, name, control / name, frame_start, frame_count)
    return None


def sample_people(scene: bpy.types.Scene, samplers: list[CharacterSampler], frame: int, width: int,
                  height: int) -> list[PersonKeypoints]:
    """Every character's keypoints at `frame` (sets the scene to that frame), in pixels."""
    scene.frame_set(frame)
    depsgraph = bpy.context.evaluated_depsgraph_get()
    view, projection = camera_matrices(scene, depsgraph, width, height)
    people = []
    try:
        for sampler in samplers:
            person = project_person(sampler.world_points(depsgraph, frame), view, projection, width, height)
            if sampler.face is not None:
                add_face(person, sampler.face.world_points(depsgraph, frame), view, projection, width, height)
            people.append(person)
    except (SamplingError, FaceBindingError) as error:
        raise ControlMapError(str(error)) from None
    return people


def _samplers(armatures: list[bpy.types.Object], depsgraph) -> list[CharacterSampler]:
    """A sampler per armature, with the first bound face mesh parented to it (if any)."""
    samplers = []
    try:
        for obj in armatures:
            faces = bound_faces(obj)
            samplers.append(CharacterSampler(obj, build_mapping(obj, depsgraph),
                                             FaceSampler(faces[0]) if faces else None))
    except (MappingError, FaceBindingError) as error:
        raise ControlMapError(str(error)) from None
    return samplers


def keypoints_at(scene: bpy.types.Scene, armatures: list[bpy.types.Object], frame: int, width: int,
                 height: int) -> dict:
    """OpenPose JSON of the characters at one frame (the reference frame), without writing files."""
    original = scene.frame_current
    try:
        scene.frame_set(frame)
        depsgraph = bpy.context.evaluated_depsgraph_get()
        samplers = _samplers(armatures, depsgraph)
        people = sample_people(scene, samplers, frame, width, height)
    finally:
        scene.frame_set(original)
    return openpose_json.to_openpose_dict(people, width, height)


def _make_staging(output_dir: Path) -> Path:
    control = output_dir / "control"
    try:
        control.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=".staging-", dir=control))
        for name in PASSES:
            (staging / name).mkdir()  # an unused face folder is dropped with the staging folder
    except OSError as error:
        raise ControlMapError(f"cannot write to the output folder '{output_dir}': {error.strerror or error}; "
                              f"choose a folder you can write to") from None
    return staging


def _write_frame(staging: Path, frame: int, people: list[PersonKeypoints], settings: JobSettings,
                 passes: tuple[str, ...]) -> None:
    """Worker thread: draw and write one frame's files (no bpy here)."""
    stem = f"{frame:06d}"
    drawn = {styles.POSE: settings.style, styles.FACE: settings.face_style, styles.MASK: "rig-mask"}
    for name, style in drawn.items():
        if name in passes:
            image = styles.draw(style, people, settings.width, settings.height, settings.depth_order)
            (staging / name / f"{stem}.png").write_bytes(encode_png(image))
    (staging / KEYPOINTS / f"{stem}.json").write_text(
        openpose_json.dumps(people, settings.width, settings.height), encoding="utf-8")


def _replace_folder(new: Path, final: Path) -> None:
    """Swap a complete folder into place with renames, so readers see the old or the new one."""
    old = final.with_name(f".old-{final.name}-{os.getpid()}")
    if final.exists():
        final.rename(old)
    new.rename(final)
    shutil.rmtree(old, ignore_errors=True)
