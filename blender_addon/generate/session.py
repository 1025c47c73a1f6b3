"""Generate: control maps, then a backend job whose frames stream into the VSE as they are made.

One job (shared.jobs) in phases: connect (the worker thread reaches the backend; the engine's
declared inputs say what to draw), maps (the control-map job), render (the background plate, face
crops rendered in Blender), submitted (the worker sends the job), stream (frames arrive, the strip
grows), ended. The main thread renders and applies strips; the worker (stream.py) owns the
connection and never touches bpy. Resume skips to connect and re-attaches.
"""

from __future__ import annotations

import json
import queue
import tempfile
import threading
from pathlib import Path

import bpy

from ..connection.backend import BackendSettings
from ..control_maps.job import ControlMapJob, armatures_to_render, job_settings, keypoints_at, publish_strips
from ..shared import engines, strips
from ..shared.jobs import Job, MarionetteError, Outcome
from .depth import DepthRenderJob
from .driving import DrivingRenderJob
from .renders import BackgroundPlateJob, FaceCropRenderJob
from .sound import mix_scene_sound, require_scene_sound
from .stream import StreamPlan, Submission, stream
from .tracks import GenerationError, plan_tracks

FRAMES = "frames"  # <output_dir>/frames/<frame:06d>.png: the generated frames


class GenerateJob(Job):
    """One Generate (or Resume) run; see the module docstring. After it ended: `result` ("done",
    "cancelled" or the error), `failed`, `received` (frames on disk from the first, without a gap)."""

    label = "a generation"

    def __init__(self, context, backend: BackendSettings, max_resolution: int, resume: bool = False,
                 auto_start: bool = False, settings_override: dict | None = None):
        self.scene = context.scene
        self.context_armatures = armatures_to_render(self.scene, context)
        self.events: queue.Queue = queue.Queue()
        self.submissions: queue.Queue = queue.Queue()  # main thread -> worker: the job, or None
        self.stop = threading.Event()
        self.map_job: ControlMapJob | None = None
        self.render_jobs: list = []  # after the maps, in turn: the background plate, rendered face crops
        self.received = 0
        self.total = 0
        self.job_id: str | None = None
        self.result: str | None = None  # "done", "cancelled" or the error message
        self.failed = False
        self.resumed = resume
        self.pending_strip = False
        self.extra_passes: set[str] = set()  # engine outputs beside the frames (e.g. face crops)
        self.settings_override = dict(settings_override or {})
        settings = self.scene.marionette
        self.output_dir = Path(bpy.path.abspath(settings.output_dir))
        if resume:
            if not settings.last_job_id:
                raise GenerationError("nothing to resume: no job was started from this scene")
            self.frame_start = settings.last_job_frame_start
            self.total = settings.last_job_frame_count
            self.job_id = settings.last_job_id
            self.received = _frames_on_disk(self.output_dir / FRAMES, self.frame_start, self.total)
            plan = StreamPlan(backend, self.output_dir / FRAMES, resume_job_id=self.job_id,
                              resume_from=self.received, auto_start=auto_start)
        else:
            if settings.reference_image is None:
                raise GenerationError("no reference image; pick one in Marionette > Generate")
            if not settings.engine:
                raise GenerationError("no engine; connect to the backend and pick one in Marionette > Generate")
            self.map_settings = job_settings(self.scene, max_resolution)  # validated before connecting
            self.frame_start = self.map_settings.frame_start
            plan = StreamPlan(backend, self.output_dir / FRAMES, auto_start=auto_start)
        self.phase = "connect"
        self.worker = threading.Thread(target=stream, args=(plan, self.events, self.submissions, self.stop),
                                       name="marionette-backend", daemon=True)
        self.worker.start()

    # --- the job vocabulary -------------------------------------------------------------------

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
            return self.render_jobs[0].status  # e.g. "driving video (mannequin) 12/48"
        return f"frame {self.received}/{self.total}" if self.total else "waiting for the backend"

    def step(self, budget: float) -> bool:
        """Draw or render for up to `budget` seconds, or take in what the worker reported; False once
        the run has ended."""
        if self.phase == "ended":
            return False
        try:
            if self.phase == "maps":
                if not self.map_job.step(budget):
                    self._maps_done()
                return True
            if self.phase == "render":
                if not self.render_jobs[0].step(budget):
                    self._render_done()
                return True
        except MarionetteError as error:  # a control map, a render, the sound: named in the message
            self.submissions.put(None)
            return self._end(str(error), failed=True)
        self.waiting = True
        while self.phase != "ended":
            try:
                event = self.events.get_nowait()
            except queue.Empty:
                break
            self.waiting = False
            self._take(event)
        self._update_strip()
        return self.phase != "ended"

    def finish(self) -> Outcome:
        if self.failed:
            raise GenerationError(f"Generate failed: {self.result}")
        if self.result == "cancelled":
            return Outcome(f"Generate cancelled; {self.received} frames kept", cancelled=True)
        return Outcome(f"Generated {self.received} frames into {self.output_dir / FRAMES}")

    def cancel(self) -> None:
        """Esc: stop the control maps, or ask the backend to cancel the job; frames so far stay."""
        self.stop.set()
        if self.phase in ("connect", "maps", "render"):
            self.submissions.put(None)
            self._end("cancelled")

    def close(self) -> None:
        """Give back the control-map job's and the renders' borrowings; let the worker go."""
        if self.map_job is not None:
            self.map_job.close()
        for job in self.render_jobs:
            job.close()
        self.render_jobs.clear()
        if self.phase != "ended":
            self.stop.set()
            self.submissions.put(None)

    # --- the phases -----------------------------------------------------------------------------

    def _take(self, event: tuple) -> None:
        kind = event[0]
        if kind == "capabilities":
            engines.remember_capabilities(event[1])
            if self.phase == "connect" and not self.resumed:
                try:
                    self._start_maps()
                except MarionetteError as error:
                    self.submissions.put(None)
                    self._end(str(error), failed=True)
                return
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
            self._end(kind)
        elif kind == "error":
            self._end(event[1], failed=True)

    def _start_maps(self) -> None:
        """The backend answered: draw what its engine asks for."""
        marionette = self.scene.marionette
        engine = engines.declared_engines.get(marionette.engine)
        if engine is None:
            reason = engines.unavailable_engines.get(marionette.engine)
            if reason is not None:
                raise GenerationError(f"the backend cannot run the engine '{marionette.engine}': {reason}")
            raise GenerationError(f"the backend has no engine '{marionette.engine}'; it offers "
                                  f"{', '.join(engines.declared_engines) or 'none'}")
        self.engine = engine
        declared = engine.get("settings", {})
        unknown = sorted(set(self.settings_override) - set(declared))
        if unknown:  # before drawing anything: a typo must not cost a whole shot of control maps
            raise GenerationError(f"engine '{engine['name']}' has no setting {', '.join(unknown)}; it has "
                                  f"{', '.join(declared) or 'none'}")
        values = {**engines.settings_for(self.scene, engine["name"]), **self.settings_override}
        try:
            self.engine_settings = engines.absolute_paths(engine, {k: v for k, v in values.items() if k in declared})
        except engines.EngineSettingError as error:
            raise GenerationError(str(error)) from None
        self.tracks = plan_tracks(engine, marionette.background_strip, values,
                                  marionette.face_crops_source == "RENDER")
        if self.tracks.audio:
            require_scene_sound(self.scene)
        if self.tracks.pose_style:
            self.map_settings.style = self.tracks.pose_style
        if self.tracks.face_style:
            self.map_settings.face_style = self.tracks.face_style
        self.map_settings.mask = self.map_settings.mask or self.tracks.mask
        self.map_job = ControlMapJob(self.scene, self.context_armatures, self.map_settings)
        if self.tracks.face_style and not self.map_job.has_faces:
            face_tracks = [name for name, folder in self.tracks.tracks.items() if folder == "face"]
            if self.tracks.required.intersection(face_tracks):
                raise GenerationError(f"engine '{engine['name']}' draws from face-landmark maps; bind a face to "
                                      f"the character (Marionette > Face) and generate again")
            for name in face_tracks:  # optional: the engine does without them
                del self.tracks.tracks[name]
        self.phase = "maps"

    def _maps_done(self) -> None:
        self.map_job.finish()
        settings = self.map_job.settings
        self.total = self.map_job.summary["frames"]
        if self.tracks.background:
            self.render_jobs.append(BackgroundPlateJob(self.scene, self.scene.marionette.background_strip, settings))
        if self.tracks.face_crops:
            self.render_jobs.append(FaceCropRenderJob(self.scene, settings))
        if self.tracks.driving:
            self.render_jobs.append(DrivingRenderJob(self.scene, self.context_armatures, settings,
                                                     self.scene.marionette.driving_look))
        if self.tracks.depth:
            self.render_jobs.append(DepthRenderJob(self.scene, settings))
        if self.render_jobs:
            self.phase = "render"
        else:
            self._submit()

    def _render_done(self) -> None:
        job = self.render_jobs.pop(0)
        try:
            job.finish()
        finally:
            job.close()
        if isinstance(job, (DrivingRenderJob, DepthRenderJob)):  # what drove the model, beside the maps in the VSE
            publish_strips(self.scene.name, job.folder.parent, self.frame_start, len(job.frames), (job.folder.name,))
        if not self.render_jobs:
            self._submit()

    def _submit(self) -> None:
        settings = self.map_settings
        marionette = self.scene.marionette
        frames = list(range(settings.frame_start, settings.frame_end + 1))
        control = settings.output_dir / "control"
        poses = [json.loads((control / "keypoints" / f"{frame:06d}.json").read_text()) for frame in frames]
        reference_pose = keypoints_at(self.scene, self.context_armatures, marionette.reference_frame,
                                      settings.width, settings.height)
        job = {"engine": marionette.engine, "settings": self.engine_settings, "width": settings.width,
               "height": settings.height, "frames": frames, "reference_pose": reference_pose, "poses": poses,
               "fps": self.scene.render.fps / self.scene.render.fps_base,
               "text": {name: getattr(marionette, name) for name in self.tracks.texts if getattr(marionette, name)}}
        folders = {track: control / folder for track, folder in self.tracks.tracks.items()}
        audio = mix_scene_sound(self.scene, settings.frame_start, settings.frame_end, control) \
            if self.tracks.audio else None
        self.submissions.put(Submission(job, reference_image_png(marionette.reference_image), folders, audio))
        self.phase = "submitted"

    def _update_strip(self) -> None:
        if not self.pending_strip or strips.render_or_save_running():
            return  # never touch the VSE while Blender renders or saves; the next step does it
        strips.set_image_sequence_strip(self.scene, FRAMES, self.output_dir / FRAMES, self.frame_start,
                                        self.received, grow=True)
        for name in sorted(self.extra_passes):
            strips.set_image_sequence_strip(self.scene, name, self.output_dir / name, self.frame_start,
                                            self.received, grow=True)
        self.pending_strip = False

    def _end(self, result: str, failed: bool = False) -> bool:
        self.result, self.failed = result, failed
        self.phase = "ended"
        self.waiting = False
        self._publish_last_strips()
        return False

    def _publish_last_strips(self) -> float | None:
        """The strips as the run left them, now or, while Blender renders or saves, from a timer."""
        if strips.render_or_save_running():
            bpy.app.timers.register(self._publish_last_strips, first_interval=0.5)
            return None
        self._update_strip()
        if not self.resumed and self.received:
            # Outputs an earlier job made beside its frames, which this job did not make, no longer match.
            for name in strips.output_strips(self.scene, self.output_dir) - self.extra_passes - {FRAMES}:
                strips.remove_strip(self.scene, name)
        return None


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
