"""Generate: control maps, then a backend job whose frames stream into the VSE as they are made.

The main thread renders the control maps (bpy) and applies results (strips); a worker thread owns
the backend connection: it submits (or re-attaches), writes each frame it receives to
`<output_dir>/frames/<frame:06d>.png` and reports through a queue. The worker never touches bpy.
"""

from __future__ import annotations

import json
import os
import queue
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import bpy

from . import backend_process, vse
from .backend_process import BackendSettings
from .control_maps import ControlMapError, ControlMapJob, armatures_to_render, job_settings, keypoints_at
from .core.client import BackendError

POLL_SECONDS = 0.25  # how often the worker looks up from a quiet socket to see if it should stop


class GenerationError(Exception):
    """Bad input or a failed job; the message names the cause and the fix."""


@dataclass
class StreamPlan:
    """What the worker thread needs; plain data, no bpy."""
    backend: BackendSettings
    frames_dir: Path
    job: dict | None = None  # a new job to submit (settings: every candidate; the engine's are kept) ...
    reference_png: bytes = b""
    control_dir: Path | None = None  # control/pose and control/face, sent when the engine draws from maps
    maps_style: str = "dwpose"  # the style control/pose was drawn in
    resume_job_id: str | None = None  # ... or a job to re-attach to
    resume_from: int = 0
    auto_start: bool = False
    log_folder: Path = field(default_factory=lambda: Path(tempfile.gettempdir()) / "marionette")


class GenerationSession:
    """One Generate (or Resume) run. Drive it with pump() until it returns False."""

    def __init__(self, context, backend: BackendSettings, max_resolution: int, resume: bool = False,
                 auto_start: bool = False):
        self.scene = context.scene
        self.events: queue.Queue = queue.Queue()
        self.stop = threading.Event()
        self.worker: threading.Thread | None = None
        self.map_job: ControlMapJob | None = None
        self.received = 0
        self.total = 0
        self.job_id: str | None = None
        self.result: str | None = None  # "done", "cancelled" or the error message
        self.failed = False
        self.pending_strip = False
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
            self.phase = "connect"
            self._plan = StreamPlan(backend, self.output_dir / "frames", resume_job_id=self.job_id,
                                    resume_from=self.received, auto_start=auto_start)
        else:
            self._check_inputs(context)
            map_settings = job_settings(self.scene, max_resolution)
            self.frame_start = map_settings.frame_start
            self.armatures = armatures_to_render(self.scene, context)
            self.map_job = ControlMapJob(self.scene, self.armatures, map_settings)
            self.phase = "maps"

    # --- main thread -----------------------------------------------------------------------

    @property
    def progress(self) -> float:
        if self.phase == "maps" and self.map_job is not None:
            return 0.2 * self.map_job.progress
        return 0.2 + 0.8 * (self.received / self.total if self.total else 0.0)

    @property
    def status(self) -> str:
        if self.phase == "maps":
            return "control maps"
        return f"frame {self.received}/{self.total}" if self.total else "waiting for the backend"

    def pump(self, budget: float = 0.05) -> bool:
        """Do a slice of work; False once the session has ended (see `result`, `failed`)."""
        deadline = time.perf_counter() + budget
        if self.phase == "maps":
            try:
                while time.perf_counter() < deadline:
                    if not self.map_job.step():
                        self._maps_done()
                        break
            except ControlMapError as error:
                self.map_job.abort()
                return self._end(str(error), failed=True)
            return True
        if self.phase == "connect":
            self.worker = threading.Thread(target=_stream, args=(self._plan, self.events, self.stop),
                                           name="marionette-backend", daemon=True)
            self.worker.start()
            self.phase = "stream"
        while True:
            try:
                event = self.events.get_nowait()
            except queue.Empty:
                break
            kind = event[0]
            if kind == "capabilities":
                remember_capabilities(event[1])
            elif kind == "accepted":
                self.job_id, self.total = event[1], event[2]
                settings = self.scene.marionette
                settings.last_job_id, settings.last_job_frame_start = self.job_id, self.frame_start
                settings.last_job_frame_count = self.total
            elif kind == "frame":
                self.received = max(self.received, event[1] + 1)
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
        if self.phase == "maps" and self.map_job is not None:
            self.map_job.abort()
            self._end("cancelled")
        else:
            self.stop.set()

    def _maps_done(self) -> None:
        summary = self.map_job.finish()
        settings = self.map_job.settings
        for name in ("pose", "face"):
            if name in summary["passes"]:
                vse.set_image_sequence_strip(self.scene, name, settings.output_dir / "control" / name,
                                             settings.frame_start, summary["frames"])
        self.total = summary["frames"]
        self._plan = self._build_plan(settings)
        self.phase = "connect"

    def _build_plan(self, map_settings) -> StreamPlan:
        marionette = self.scene.marionette
        frames = list(range(map_settings.frame_start, map_settings.frame_end + 1))
        control = map_settings.output_dir / "control"
        poses = [json.loads((control / "keypoints" / f"{frame:06d}.json").read_text()) for frame in frames]
        reference_pose = keypoints_at(self.scene, self.armatures, marionette.reference_frame,
                                      map_settings.width, map_settings.height)
        candidates = {"seed": marionette.seed, "steps": marionette.steps, "guidance": marionette.guidance}
        if marionette.weights_dir:
            candidates["weights"] = bpy.path.abspath(marionette.weights_dir)
        job = {"engine": marionette.engine, "settings": candidates, "width": map_settings.width,
               "height": map_settings.height, "frames": frames, "reference_pose": reference_pose, "poses": poses}
        return StreamPlan(self.backend, self.output_dir / "frames", job=job,
                          reference_png=reference_image_png(marionette.reference_image),
                          control_dir=control, maps_style=map_settings.style, auto_start=self.auto_start)

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


_engines_cache: dict[str, dict] = {}


def remember_capabilities(capabilities: dict) -> None:
    """Keep the connected backend's engines, for the panel's engine list and for submitting."""
    _engines_cache.clear()
    for engine in capabilities.get("engines", []):
        _engines_cache[engine["name"]] = engine
    engines = bpy.context.window_manager.marionette_engines
    engines.clear()
    for name, engine in _engines_cache.items():
        item = engines.add()
        item.name, item.description = name, engine.get("description", "")


# --- worker thread (no bpy) ------------------------------------------------------------------

def _stream(plan: StreamPlan, events: queue.Queue, stop: threading.Event) -> None:
    """Connect (starting a local backend if allowed), submit or re-attach, then write every frame
    that arrives until the job ends."""
    try:
        client = _connect(plan)
        events.put(("capabilities", client.capabilities))
        if plan.resume_job_id:
            attached = client.attach(plan.resume_job_id, plan.resume_from)
            job_id, total = attached["job_id"], attached["total"]
        else:
            job, maps = _job_for_engine(plan, client.capabilities)
            accepted = client.submit(job, plan.reference_png, maps)
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
                _write_atomically(plan.frames_dir / f"{message.header['frame']:06d}.png", message.attachments[0])
                events.put(("frame", message.header["index"]))
            elif message.type in ("done", "cancelled") and message.header.get("job_id") == job_id:
                events.put((message.type,))
                break
        client.close()
    except BackendError as error:
        events.put(("error", _explain(error)))
    except OSError as error:
        events.put(("error", f"cannot write frames to {plan.frames_dir}: {error.strerror or error}"))


def _connect(plan: StreamPlan):
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


def _job_for_engine(plan: StreamPlan, capabilities: dict) -> tuple[dict, list[bytes]]:
    """The job with the settings the engine declares, and the control maps if it draws from maps."""
    engines = {engine["name"]: engine for engine in capabilities.get("engines", [])}
    engine = engines.get(plan.job["engine"])
    if engine is None:
        raise BackendError("unknown_engine", f"the backend has no engine '{plan.job['engine']}'; it offers "
                                             f"{', '.join(engines) or 'none'}")
    declared = engine.get("settings", {})
    job = {**plan.job, "settings": {k: v for k, v in plan.job["settings"].items() if k in declared}}
    maps = []
    styles = engine.get("styles", [])
    if "keypoints" not in styles:
        if "aniportrait-face" in styles:
            folder = plan.control_dir / "face"
            if not folder.is_dir():
                raise BackendError("bad_request", f"engine '{engine['name']}' draws from face-landmark maps; bind a "
                                                  f"face to the character (Marionette > Face) and generate again")
        elif plan.maps_style in styles:
            folder = plan.control_dir / "pose"
        else:
            raise BackendError("bad_request", f"engine '{engine['name']}' was trained on {' or '.join(styles)} maps; "
                                              f"set Marionette > Control Maps > Pose Style to match")
        maps = [(folder / f"{frame:06d}.png").read_bytes() for frame in job["frames"]]
    return job, maps


def _explain(error: BackendError) -> str:
    if error.code == "connection":
        return f"{error}; the frames received so far are kept: press Resume when the backend is back"
    return str(error)


def _write_atomically(path: Path, data: bytes) -> None:
    temporary = path.with_name(f".{path.name}.tmp")
    temporary.write_bytes(data)
    os.replace(temporary, path)
