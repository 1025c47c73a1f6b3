"""Generate: control maps, then a backend job whose frames stream into the VSE as they are made.

The main thread renders the control maps (bpy) and applies results (strips); a worker thread owns
the backend connection: it submits (or re-attaches), writes each frame it receives to
`<output_dir>/frames/<frame:06d>.png` and reports through a queue. The worker never touches bpy.
"""

from __future__ import annotations

import json
import os
import queue
import shutil
import tempfile
import threading
import time
import wave
from dataclasses import dataclass, field
from pathlib import Path

import bpy
import numpy as np

from . import backend_process, compat, engine_settings, vse
from .backend_process import BackendSettings
from .control_maps import ControlMapError, ControlMapJob, armatures_to_render, job_settings, keypoints_at
from .core.client import BackendError
from .core.face import resize_bilinear, wan_face_box
from .core.png import decode_png, encode_png

POLL_SECONDS = 0.25  # how often the worker looks up from a quiet socket to see if it should stop


class GenerationError(Exception):
    """Bad input or a failed job; the message names the cause and the fix."""


# The track styles this extension knows how to make, and the control-map pass that holds each.
POSE_STYLES = ("dwpose", "openpose", "wan")
FACE_STYLES = ("aniportrait-face", "echomimic-face")
PASS_OF_STYLE = {**{style: "pose" for style in POSE_STYLES}, **{style: "face" for style in FACE_STYLES},
                 "rig-mask": "mask", "background": "background"}
TEXT_INPUTS = ("prompt", "negative_prompt")  # scene.marionette holds these


@dataclass
class StreamPlan:
    """What the worker thread needs to connect; plain data, no bpy."""
    backend: BackendSettings
    frames_dir: Path
    resume_job_id: str | None = None  # re-attach to this job instead of submitting one
    resume_from: int = 0
    auto_start: bool = False
    log_folder: Path = field(default_factory=lambda: Path(tempfile.gettempdir()) / "marionette")


@dataclass
class Submission:
    """A job for the worker to submit, once the control maps are drawn; plain data, no bpy."""
    job: dict
    reference_png: bytes
    track_folders: dict[str, Path]  # track name -> folder of <frame:06d>.png
    audio: bytes | None = None  # the frame range's sound, a 16 kHz mono WAV


@dataclass
class TrackPlan:
    """What Generate must render for an engine, from the inputs it declares."""
    pose_style: str | None = None
    face_style: str | None = None
    audio: bool = False
    mask: bool = False
    background: bool = False
    face_crops: bool = False  # face crops rendered in Blender (instead of made by the backend)
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
        name, kind, style = spec.get("name", ""), spec.get("kind"), spec.get("style")
        required = spec.get("required", True)
        if kind == "text":
            if name in TEXT_INPUTS:
                texts.append(name)
            continue
        if kind == "audio":
            plan.audio = True
            continue
        if kind != "images":
            if required:
                raise GenerationError(f"engine '{engine['name']}' needs a '{kind}' input ({name}), which this "
                                      f"version of the extension cannot send; update Marionette")
            continue
        folder = PASS_OF_STYLE.get(style)
        if style == "face-crop" and render_face_crops:
            folder = "face_crops"
        if folder == "background" and not background_strip:
            if required:
                raise GenerationError(f"engine '{engine['name']}' needs a background plate; pick the strip in "
                                      f"Marionette > Generate > Background Strip")
            continue
        if folder is None:
            if required:
                raise GenerationError(f"engine '{engine['name']}' needs '{name}' images in the '{style}' style, "
                                      f"which this version of the extension cannot make; update Marionette")
            continue
        plan.tracks[name] = folder
        if required:
            plan.required.add(name)
        if folder == "pose":
            plan.pose_style = style
        if folder == "face":
            plan.face_style = style
        plan.mask |= folder == "mask"
        plan.background |= folder == "background"
        plan.face_crops |= folder == "face_crops"
    plan.texts = tuple(texts)
    return plan


class GenerationSession:
    """One Generate (or Resume) run. Drive it with pump() until it returns False.

    Generate first connects (the engine's declared inputs say which control maps to draw), then
    draws the maps on the main thread, then hands the job to the worker, which submits it and
    writes the frames as they arrive. Resume connects and re-attaches.
    """

    def __init__(self, context, backend: BackendSettings, max_resolution: int, resume: bool = False,
                 auto_start: bool = False, settings_override: dict | None = None):
        self.scene = context.scene
        self.context_armatures = armatures_to_render(self.scene, context)
        self.events: queue.Queue = queue.Queue()
        self.submissions: queue.Queue = queue.Queue()  # main thread -> worker: the job, or None
        self.stop = threading.Event()
        self.worker: threading.Thread | None = None
        self.map_job: ControlMapJob | None = None
        self.render_jobs: list = []  # after the maps, in turn: the background plate, rendered face crops
        self.received = 0
        self.total = 0
        self.job_id: str | None = None
        self.result: str | None = None  # "done", "cancelled" or the error message
        self.failed = False
        self.pending_strip = False
        self.extra_passes: set[str] = set()  # engine outputs beside the frames (e.g. face crops)
        self.max_resolution = max_resolution
        self.settings_override = dict(settings_override or {})
        settings = self.scene.marionette
        self.output_dir = Path(bpy.path.abspath(settings.output_dir))
        self.backend = backend
        self.auto_start = auto_start
        if resume:
            if not settings.last_job_id:
                raise GenerationError("nothing to resume: no job was started from this scene")
            self.frame_start = settings.last_job_frame_start
            self.total = settings.last_job_frame_count
            self.job_id = settings.last_job_id
            self.received = _frames_on_disk(self.output_dir / "frames", self.frame_start, self.total)
            plan = StreamPlan(backend, self.output_dir / "frames", resume_job_id=self.job_id,
                              resume_from=self.received, auto_start=auto_start)
        else:
            self._check_inputs(context)
            self.map_settings = job_settings(self.scene, max_resolution)  # validated before connecting
            self.frame_start = self.map_settings.frame_start
            plan = StreamPlan(backend, self.output_dir / "frames", auto_start=auto_start)
        self.phase = "connect"
        self.worker = threading.Thread(target=_stream, args=(plan, self.events, self.submissions, self.stop),
                                       name="marionette-backend", daemon=True)
        self.worker.start()

    # --- main thread -----------------------------------------------------------------------

    @property
    def progress(self) -> float:
        if self.phase == "maps" and self.map_job is not None:
            return 0.2 * self.map_job.progress
        if self.phase == "render" and self.render_jobs:
            return 0.2 * self.render_jobs[0].progress
        return 0.2 + 0.8 * (self.received / self.total if self.total else 0.0)

    @property
    def status(self) -> str:
        if self.phase == "connect":
            return "connecting"
        if self.phase == "maps":
            return "control maps"
        if self.phase == "render" and self.render_jobs:
            return self.render_jobs[0].label
        return f"frame {self.received}/{self.total}" if self.total else "waiting for the backend"

    def pump(self, budget: float = 0.05) -> bool:
        """Do a slice of work; False once the session has ended (see `result`, `failed`)."""
        deadline = time.perf_counter() + budget
        try:
            if self.phase == "maps":
                while time.perf_counter() < deadline:
                    if not self.map_job.step():
                        self._maps_done()
                        break
                return True
            if self.phase == "render":
                while time.perf_counter() < deadline:
                    if not self.render_jobs[0].step():
                        self.render_jobs.pop(0)
                        if not self.render_jobs:
                            self._submit()
                        break
                return True
        except (ControlMapError, GenerationError) as error:
            if self.map_job is not None and self.phase == "maps":
                self.map_job.abort()
            for job in self.render_jobs:
                job.close()
            self.submissions.put(None)
            return self._end(str(error), failed=True)
        while True:
            try:
                event = self.events.get_nowait()
            except queue.Empty:
                break
            kind = event[0]
            if kind == "capabilities":
                remember_capabilities(event[1])
                if self.phase == "connect" and self.job_id is None:
                    try:
                        self._start_maps()
                    except (ControlMapError, GenerationError) as error:
                        self.submissions.put(None)
                        return self._end(str(error), failed=True)
                    return True
                self.phase = "stream"
            elif kind == "accepted":
                self.job_id, self.total = event[1], event[2]
                settings = self.scene.marionette
                settings.last_job_id, settings.last_job_frame_start = self.job_id, self.frame_start
                settings.last_job_frame_count = self.total
                self.phase = "stream"
            elif kind == "frame":
                self.received = max(self.received, event[1] + 1)
                self.extra_passes.update(event[2])
                self.pending_strip = True
            elif kind in ("done", "cancelled"):
                self._update_strip()
                return self._end(kind)
            elif kind == "error":
                self._update_strip()
                return self._end(event[1], failed=True)
        self._update_strip()
        return True

    def cancel(self) -> None:
        """Esc: stop the control maps, or ask the backend to cancel the job; frames so far stay."""
        if self.phase in ("connect", "maps", "render"):
            if self.map_job is not None and self.phase == "maps":
                self.map_job.abort()
            for job in self.render_jobs:
                job.close()  # helper scenes, staged frames and borrowed render settings go back
            self.stop.set()
            self.submissions.put(None)
            self._end("cancelled")
        else:
            self.stop.set()

    def _start_maps(self) -> None:
        """The backend answered: draw what its engine asks for."""
        marionette = self.scene.marionette
        engine = engine_settings.declared_engines.get(marionette.engine)
        if engine is None:
            raise GenerationError(f"the backend has no engine '{marionette.engine}'; it offers "
                                  f"{', '.join(engine_settings.declared_engines) or 'none'}")
        self.engine = engine
        declared = engine.get("settings", {})
        unknown = sorted(set(self.settings_override) - set(declared))
        if unknown:  # before drawing anything: a typo must not cost a whole shot of control maps
            raise GenerationError(f"engine '{engine['name']}' has no setting {', '.join(unknown)}; it has "
                                  f"{', '.join(declared) or 'none'}")
        values = {**engine_settings.settings_for(self.scene, engine["name"]), **self.settings_override}
        self.tracks = plan_tracks(engine, marionette.background_strip, values,
                                  marionette.face_crops_source == "RENDER")
        if self.tracks.audio:
            require_scene_sound(self.scene)
        if self.tracks.pose_style:
            self.map_settings.style = self.tracks.pose_style
        if self.tracks.face_style:
            self.map_settings.face_style = self.tracks.face_style
        self.map_settings.mask = self.map_settings.mask or self.tracks.mask
        self.armatures = self.context_armatures
        self.map_job = ControlMapJob(self.scene, self.armatures, self.map_settings)
        if self.tracks.face_style and not self.map_job.has_faces:
            face_tracks = [name for name, folder in self.tracks.tracks.items() if folder == "face"]
            if self.tracks.required.intersection(face_tracks):
                self.map_job.abort()
                raise GenerationError(f"engine '{engine['name']}' draws from face-landmark maps; bind a face to "
                                      f"the character (Marionette > Face) and generate again")
            for name in face_tracks:  # optional: the engine does without them
                del self.tracks.tracks[name]
        self.phase = "maps"

    def _maps_done(self) -> None:
        summary = self.map_job.finish()
        settings = self.map_job.settings
        for name in ("pose", "face", "mask"):
            if name in summary["passes"]:
                vse.set_image_sequence_strip(self.scene, name, settings.output_dir / "control" / name,
                                             settings.frame_start, summary["frames"])
        self.total = summary["frames"]
        if self.tracks.background:
            self.render_jobs.append(BackgroundPlateJob(self.scene, self.scene.marionette.background_strip, settings))
        if self.tracks.face_crops:
            self.render_jobs.append(FaceCropRenderJob(self.scene, settings))
        if self.render_jobs:
            self.phase = "render"
        else:
            self._submit()

    def _submit(self) -> None:
        settings = self.map_settings
        marionette = self.scene.marionette
        frames = list(range(settings.frame_start, settings.frame_end + 1))
        control = settings.output_dir / "control"
        poses = [json.loads((control / "keypoints" / f"{frame:06d}.json").read_text()) for frame in frames]
        reference_pose = keypoints_at(self.scene, self.armatures, marionette.reference_frame,
                                      settings.width, settings.height)
        values = {**engine_settings.settings_for(self.scene, marionette.engine), **self.settings_override}
        declared = self.engine.get("settings", {})
        job = {"engine": marionette.engine, "settings": {k: v for k, v in values.items() if k in declared},
               "width": settings.width, "height": settings.height, "frames": frames,
               "reference_pose": reference_pose, "poses": poses,
               "fps": self.scene.render.fps / self.scene.render.fps_base,
               "text": {name: getattr(marionette, name) for name in self.tracks.texts if getattr(marionette, name)}}
        folders = {track: control / folder for track, folder in self.tracks.tracks.items()}
        audio = mix_scene_sound(self.scene, settings.frame_start, settings.frame_end, control) \
            if self.tracks.audio else None
        self.submissions.put(Submission(job, reference_image_png(marionette.reference_image), folders, audio))
        self.phase = "submitted"

    def _check_inputs(self, context) -> None:
        settings = self.scene.marionette
        if settings.reference_image is None:
            raise GenerationError("no reference image; pick one in Marionette > Generate")
        if not settings.engine:
            raise GenerationError("no engine; connect to the backend and pick one in Marionette > Generate")

    def _update_strip(self) -> None:
        if not self.pending_strip or vse.render_or_save_running():
            return  # never touch the VSE while Blender renders or saves; the next pump does it
        vse.set_image_sequence_strip(self.scene, "frames", self.output_dir / "frames", self.frame_start,
                                     self.received, grow=True)
        for name in sorted(self.extra_passes):
            vse.set_image_sequence_strip(self.scene, name, self.output_dir / name, self.frame_start,
                                         self.received, grow=True)
        self.pending_strip = False

    def _end(self, result: str, failed: bool = False) -> bool:
        self.result, self.failed = result, failed
        self.phase = "ended"
        return False


def _frames_on_disk(folder: Path, frame_start: int, count: int) -> int:
    """How many frames from frame_start on are already there, without a gap."""
    index = 0
    while index < count and (folder / f"{frame_start + index:06d}.png").is_file():
        index += 1
    return index


def reference_image_png(image: bpy.types.Image) -> bytes:
    """The reference image as PNG bytes: its file if it is a PNG on disk, else saved to a temporary PNG."""
    path = Path(bpy.path.abspath(image.filepath)) if image.filepath else None
    if path is not None and path.suffix.lower() == ".png" and path.is_file() and not image.packed_file:
        return path.read_bytes()
    if not image.has_data and image.source == "FILE":
        raise GenerationError(f"the reference image '{image.name}' cannot be read from {image.filepath}")
    with tempfile.TemporaryDirectory() as folder:
        target = Path(folder) / "reference.png"
        copy = image.copy()
        try:
            copy.filepath_raw = str(target)
            copy.file_format = "PNG"
            copy.save()
        finally:
            bpy.data.images.remove(copy)
        return target.read_bytes()


def remember_capabilities(capabilities: dict) -> None:
    """Keep the connected backend's engines: the panel's engine list and each engine's settings."""
    engine_settings.remember_engines(capabilities)
    engines = bpy.context.window_manager.marionette_engines
    engines.clear()
    for name, engine in engine_settings.declared_engines.items():
        item = engines.add()
        item.name, item.description = name, engine.get("description", "")
    for scene in bpy.data.scenes:
        engine_settings.sync_scene(scene)


def require_scene_sound(scene: bpy.types.Scene) -> None:
    if not vse.sound_strips(scene, audible=True):
        raise GenerationError("this engine animates to the scene's sound: add the dialogue or song as a sound strip "
                              "in the Video Sequencer")


def mix_scene_sound(scene: bpy.types.Scene, frame_start: int, frame_end: int, folder: Path) -> bytes:
    """The scene's sound over the frame range, mixed by Blender as a 16 kHz mono WAV (frame i of the
    job is at i / fps seconds into it)."""
    require_scene_sound(scene)
    path = folder / "sound.wav"
    saved = scene.frame_start, scene.frame_end
    try:
        scene.frame_start, scene.frame_end = frame_start, frame_end
        with bpy.context.temp_override(scene=scene):
            result = bpy.ops.sound.mixdown(filepath=str(path), check_existing=False, container="WAV", codec="PCM",
                                           format="S16", mixrate=16000, channels="MONO")
    finally:
        scene.frame_start, scene.frame_end = saved
    if result != {"FINISHED"} or not path.is_file():
        raise GenerationError(f"Blender could not mix the scene's sound into {path}")
    # The mixdown ends on a whole mixing buffer, up to a few hundred ms past the range: cut it there.
    fps = scene.render.fps / scene.render.fps_base
    with wave.open(str(path), "rb") as mixed:
        params = mixed.getparams()
        samples = mixed.readframes(min(params.nframes, round((frame_end - frame_start + 1) * params.framerate / fps)))
    with wave.open(str(path), "wb") as trimmed:
        trimmed.setparams(params)
        trimmed.writeframes(samples)
    return path.read_bytes()


class FrameRenderJob:
    """A per-frame render into control/<name>/<frame:06d>.png through a staging folder that replaces
    the pass only when every frame is done; one frame per step(), so the UI stays responsive.
    Subclasses render one frame in render_frame() and give back what they borrowed in close()."""

    label = ""

    def __init__(self, settings, name: str):
        self.frames = list(range(settings.frame_start, settings.frame_end + 1))
        control = settings.output_dir / "control"
        self.folder, self.staging = control / name, control / f".staging-{name}"
        shutil.rmtree(self.staging, ignore_errors=True)
        self.staging.mkdir(parents=True)
        self.next_index = 0

    @property
    def progress(self) -> float:
        return self.next_index / len(self.frames)

    def step(self) -> bool:
        if self.next_index >= len(self.frames):
            return False
        frame = self.frames[self.next_index]
        try:
            self.render_frame(frame, self.staging / f"{frame:06d}.png")
        except GenerationError:
            self.close()
            raise
        self.next_index += 1
        if self.next_index < len(self.frames):
            return True
        shutil.rmtree(self.folder, ignore_errors=True)
        self.staging.rename(self.folder)
        self.close()
        return False

    def render_frame(self, frame: int, path) -> None:
        raise NotImplementedError

    def close(self) -> None:
        shutil.rmtree(self.staging, ignore_errors=True)


class BackgroundPlateJob(FrameRenderJob):
    """The background plate of a replace-mode job: the chosen VSE strip rendered alone, frame by frame,
    at the job's size into control/background/<frame:06d>.png (image sequences and movies alike,
    placed as the Sequencer shows them: fit, transform, crop, flips, trim). Frames the strip does not
    show are black. One frame per step(), so the UI stays responsive."""

    label = "background plate"

    def __init__(self, scene: bpy.types.Scene, strip_name: str, settings):
        editor = scene.sequence_editor
        strip = compat.strips(editor).get(strip_name) if editor is not None else None
        if strip is None or strip.type not in ("IMAGE", "MOVIE"):
            raise GenerationError(f"the background strip '{strip_name}' is not an image-sequence or movie strip "
                                  f"of this scene; pick one in Marionette > Generate")
        super().__init__(settings, "background")
        first = compat.strip_left_handle(strip)
        self.shown = range(round(first), round(first + compat.strip_duration(strip)))
        self.size = settings.width, settings.height
        self.plate = bpy.data.scenes.new("Marionette background plate")
        try:
            render = self.plate.render
            # The scene's resolution and percentage (their product is the job's size): strip transforms
            # are in the scene's pixels, and the Sequencer scales them with the percentage.
            render.resolution_x, render.resolution_y = scene.render.resolution_x, scene.render.resolution_y
            render.resolution_percentage = scene.render.resolution_percentage
            render.use_sequencer = True
            render.image_settings.file_format = "PNG"
            render.image_settings.color_mode = "RGB"
            render.fps, render.fps_base = scene.render.fps, scene.render.fps_base
            # The plate's own pixels: no view transform or look (a new scene gets AgX or Filmic).
            self.plate.display_settings.display_device = scene.display_settings.display_device
            self.plate.view_settings.view_transform = "Standard"
            self.plate.view_settings.look = "None"
            self.plate.sequencer_colorspace_settings.name = scene.sequencer_colorspace_settings.name
            strip_copy(strip, self.plate)
        except BaseException:
            self.close()
            raise

    def render_frame(self, frame: int, path) -> None:
        if frame in self.shown:
            self.plate.frame_set(frame)
            self.plate.render.filepath = str(path)
            try:
                # As the context scene: with render(scene=...) the plate renders at the context scene's frame.
                with bpy.context.temp_override(scene=self.plate):
                    bpy.ops.render.render(write_still=True)
            except RuntimeError as error:
                raise GenerationError(f"cannot render the background plate at frame {frame}: {error}") from None
        else:
            width, height = self.size
            path.write_bytes(encode_png(np.zeros((height, width, 3), dtype=np.uint8)))

    def close(self) -> None:
        if getattr(self, "plate", None) is not None:
            bpy.data.scenes.remove(self.plate)
            self.plate = None
        super().close()


# What the Sequencer does to a strip's pixels beside its transform and crop (where the version has it).
STRIP_LOOK = ("use_flip_x", "use_flip_y", "use_reverse_frames", "color_saturation", "color_multiply", "alpha_mode")


class FaceCropRenderJob(FrameRenderJob):
    """Face crops rendered from the character's head in Blender, for engines that take them (Wan's
    face video): per frame the scene camera's view of Wan's face box (from the frame's 68 face
    points), rendered with the scene's own engine through a render border at about 512 px and
    resized to 512x512, into control/face_crops/<frame:06d>.png. One frame per step(); the scene's
    render settings are restored afterwards."""

    label = "face crops"
    SIZE = 512

    def __init__(self, scene: bpy.types.Scene, settings):
        super().__init__(settings, "face_crops")
        self.scene, self.settings = scene, settings
        self.keypoints = settings.output_dir / "control" / "keypoints"
        render = scene.render
        self.saved = {name: getattr(render, name) for name in (
            "use_border", "use_crop_to_border", "border_min_x", "border_max_x", "border_min_y", "border_max_y",
            "resolution_percentage", "filepath", "use_sequencer", "use_compositing")}
        self.saved_format = render.image_settings.file_format, render.image_settings.color_mode
        self.original_frame = scene.frame_current
        self.closed = False

    def render_frame(self, frame: int, path) -> None:
        width, height = self.settings.width, self.settings.height
        people = json.loads((self.keypoints / f"{frame:06d}.json").read_text()).get("people", [])
        faces = [np.asarray(p.get("face_keypoints_2d", []), dtype=np.float64).reshape(-1, 3) for p in people]
        points = next((f[f[:, 2] > 0] for f in faces if (f[:, 2] > 0).sum() >= 10), None)
        if points is None:
            raise GenerationError(f"frame {frame} has no face landmarks to render a face crop from; bind a face to "
                                  f"the character (Marionette > Face), or let the backend make the crops")
        x1, x2, y1, y2 = wan_face_box(points, width, height)
        render = self.scene.render
        render.use_border, render.use_crop_to_border = True, True
        render.use_sequencer = render.use_compositing = False  # the camera's view, not the edit or the comp
        render.border_min_x, render.border_max_x = x1 / width, x2 / width
        render.border_min_y, render.border_max_y = 1 - y2 / height, 1 - y1 / height
        zoom = self.SIZE / max(x2 - x1, y2 - y1, 1)  # render the box at about the crop's size
        render.resolution_percentage = max(1, min(32767, round(self.saved["resolution_percentage"] * zoom)))
        render.image_settings.file_format, render.image_settings.color_mode = "PNG", "RGB"
        rendered = self.staging / f".render-{frame:06d}.png"
        render.filepath = str(rendered)
        self.scene.frame_set(frame)
        try:
            with bpy.context.temp_override(scene=self.scene):
                bpy.ops.render.render(write_still=True)
            image = decode_png(rendered.read_bytes())[..., :3]
        except (RuntimeError, OSError, ValueError) as error:
            raise GenerationError(f"cannot render the face crop of frame {frame}: {error}") from None
        rendered.unlink()
        path.write_bytes(encode_png(resize_bilinear(np.ascontiguousarray(image), self.SIZE, self.SIZE)))

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        render = self.scene.render
        for name, value in self.saved.items():
            setattr(render, name, value)
        render.image_settings.file_format, render.image_settings.color_mode = self.saved_format
        self.scene.frame_set(self.original_frame)
        super().close()


def strip_copy(strip, scene: bpy.types.Scene):
    """The same media as `strip`, at the same frames and placed the same way, as a strip of `scene`."""
    editor = scene.sequence_editor or scene.sequence_editor_create()
    strips = compat.strips(editor)
    start = round(compat.strip_content_start(strip))  # a float in the API; the constructors take an int
    if strip.type == "MOVIE":
        copy = strips.new_movie(name=strip.name, filepath=bpy.path.abspath(strip.filepath), channel=1,
                                frame_start=start)
    else:
        directory = bpy.path.abspath(strip.directory)
        copy = strips.new_image(name=strip.name, filepath=str(Path(directory) / strip.elements[0].filename),
                                channel=1, frame_start=start)
        for element in strip.elements[1:]:
            copy.elements.append(element.filename)
    # The fit chosen when the strip was added lives in its transform's scale; copy it all.
    for group in ("transform", "crop"):
        source, target = getattr(strip, group), getattr(copy, group)
        for prop in source.bl_rna.properties:
            if not prop.is_readonly and prop.identifier != "rna_type":
                setattr(target, prop.identifier, getattr(source, prop.identifier))
    for name in STRIP_LOOK:
        if name in strip.bl_rna.properties:
            setattr(copy, name, getattr(strip, name))
    copy.colorspace_settings.name = strip.colorspace_settings.name
    return copy


# --- worker thread (no bpy) ------------------------------------------------------------------

def _stream(plan: StreamPlan, events: queue.Queue, submissions: queue.Queue, stop: threading.Event) -> None:
    """Connect (starting a local backend if allowed); then re-attach, or wait for the job the main
    thread prepares and submit it; then write every frame that arrives until the job ends."""
    client = None
    try:
        client = connect_backend(plan)
        events.put(("capabilities", client.capabilities))
        if plan.resume_job_id:
            attached = client.attach(plan.resume_job_id, plan.resume_from)
            job_id, total = attached["job_id"], attached["total"]
        else:
            submission = _wait_for(submissions, stop)
            if submission is None:
                return  # cancelled, or the control maps failed: the main thread has said so
            accepted = client.submit(submission.job, submission.reference_png, _read_tracks(submission),
                                     submission.audio)
            job_id, total = accepted["job_id"], accepted["total"]
        events.put(("accepted", job_id, total))
        plan.frames_dir.mkdir(parents=True, exist_ok=True)
        client.sock.settimeout(POLL_SECONDS)
        cancel_sent = False
        while True:
            if stop.is_set() and not cancel_sent:
                client.cancel(job_id)
                cancel_sent = True
            try:
                message = client.receive()
            except BackendError as error:
                if error.code == "timeout":
                    continue
                raise
            if message.type == "frame" and message.header["job_id"] == job_id:
                frame = message.header["frame"]
                extras = []
                for meta, data in zip(message.header.get("attachments", [])[1:], message.attachments[1:]):
                    name = meta["name"].removesuffix(".png")  # an engine output beside the frame
                    folder = plan.frames_dir.parent / name
                    folder.mkdir(exist_ok=True)
                    _write_atomically(folder / f"{frame:06d}.png", data)
                    extras.append(name)
                _write_atomically(plan.frames_dir / f"{frame:06d}.png", message.attachments[0])
                events.put(("frame", message.header["index"], extras))
            elif message.type in ("done", "cancelled") and message.header.get("job_id") == job_id:
                events.put((message.type,))
                break
    except BackendError as error:
        events.put(("error", _explain(error)))
    except OSError as error:
        events.put(("error", f"cannot write frames to {plan.frames_dir}: {error.strerror or error}"))
    finally:
        if client is not None:
            client.close()


def _wait_for(submissions: queue.Queue, stop: threading.Event):
    while not stop.is_set():
        try:
            return submissions.get(timeout=POLL_SECONDS)
        except queue.Empty:
            continue
    return None


def _read_tracks(submission: Submission) -> dict[str, list[bytes]]:
    """Each track's PNGs, one per job frame, in frame order."""
    tracks = {}
    for name, folder in submission.track_folders.items():
        try:
            tracks[name] = [(folder / f"{frame:06d}.png").read_bytes() for frame in submission.job["frames"]]
        except OSError as error:
            raise BackendError("bad_request", f"the '{name}' images are missing in {folder}: "
                                              f"{error.strerror or error}") from None
    return tracks


def connect_backend(plan: StreamPlan):
    """A connected client; with auto-start, a missing local backend (or its token) starts one."""
    try:
        client = plan.backend.client(timeout=60.0)
        client.connect()
        return client
    except BackendError as error:
        if error.code not in ("connect", "token") or not plan.auto_start:
            raise
    backend_process.start(plan.backend, plan.log_folder)
    backend_process.wait_until_healthy(plan.backend)
    client = plan.backend.client(timeout=60.0)
    client.connect()
    return client


def _explain(error: BackendError) -> str:
    if error.code == "connection":
        return f"{error}; the frames received so far are kept: press Resume when the backend is back"
    return str(error)


def _write_atomically(path: Path, data: bytes) -> None:
    temporary = path.with_name(f".{path.name}.tmp")
    temporary.write_bytes(data)
    os.replace(temporary, path)
