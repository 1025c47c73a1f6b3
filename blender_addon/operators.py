"""Operators: thin wrappers that validate, run the plain modules and report to the user."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import bpy
from bpy.props import IntProperty

from . import backend_process, vse
from .backend_process import BackendSettings
from .control_maps import ControlMapError, ControlMapJob, armatures_to_render, job_settings
from .core.client import BackendError
from .generation import GenerationError, GenerationSession, remember_capabilities
from .preferences import preferences

# The interactive run in progress, if any: runtime state only, never saved in the .blend.
running_job: ControlMapJob | None = None
active_session: GenerationSession | None = None


def _busy_message() -> str | None:
    if running_job is not None:
        return "Control maps are being rendered; wait or press Esc to cancel"
    if active_session is not None:
        return "A generation is running; wait or press Esc to cancel it"
    return None


def backend_settings(context) -> BackendSettings:
    prefs = preferences(context)
    return BackendSettings(prefs.host, prefs.port, Path(bpy.path.abspath(prefs.token_file)).expanduser(),
                           bpy.path.abspath(prefs.backend_python) if prefs.backend_python else "")

# Seconds of work per timer tick in the interactive run: long enough to be efficient, short enough
# that the UI stays responsive.
TICK_BUDGET = 0.05


def _publish_strips(scene_name: str, folder, frame_start: int, frame_count: int) -> float | None:
    """Add the strips now, or retry shortly if a render or save is running (as a bpy.app timer)."""
    if vse.render_or_save_running():
        return 0.5
    scene = bpy.data.scenes.get(scene_name)
    if scene is not None:
        for name in ("pose", "face"):
            if (folder / name).is_dir():
                vse.set_image_sequence_strip(scene, name, folder / name, frame_start, frame_count)
    return None


def _redraw_panels(context) -> None:
    for area in context.screen.areas if context.screen else ():
        if area.type == "VIEW_3D":
            area.tag_redraw()


class MARIONETTE_OT_render_control_maps(bpy.types.Operator):
    """Render pose maps and OpenPose keypoints of the characters for every frame of the scene range"""

    bl_idname = "marionette.render_control_maps"
    bl_label = "Render Control Maps"
    bl_options = {"REGISTER"}

    frame_start: IntProperty(name="Start", default=-1, description="First frame; -1 for the scene's",
                             options={"SKIP_SAVE"})
    frame_end: IntProperty(name="End", default=-1, description="Last frame; -1 for the scene's",
                           options={"SKIP_SAVE"})

    _job: ControlMapJob | None = None
    _timer = None

    @classmethod
    def poll(cls, context):
        message = _busy_message()
        if message:
            cls.poll_message_set(message)
            return False
        return True

    def _start(self, context) -> bool:
        scene = context.scene
        try:
            settings = job_settings(scene, preferences(context).max_resolution, self.frame_start, self.frame_end)
            self._job = ControlMapJob(scene, armatures_to_render(scene, context), settings)
        except ControlMapError as error:
            self.report({"ERROR"}, str(error))
            return False
        return True

    def execute(self, context):
        """Blocking run, for scripts and `blender -b` (render farms)."""
        if not self._start(context):
            return {"CANCELLED"}
        try:
            reported = 0
            while self._job.step():
                if bpy.app.background and self._job.progress * 10 >= reported + 1:
                    reported = int(self._job.progress * 10)  # a progress line per 10%, for farm logs
                    print(f"Marionette: control maps {reported * 10}%", flush=True)
            summary = self._job.finish()
        except ControlMapError as error:
            self._job.abort()
            self.report({"ERROR"}, str(error))
            return {"CANCELLED"}
        except BaseException:
            self._job.abort()
            raise
        return self._done(context, summary)

    def invoke(self, context, event):
        if bpy.app.background or context.window is None:
            return self.execute(context)
        global running_job
        if not self._start(context):
            return {"CANCELLED"}
        running_job = self._job
        context.window_manager.progress_begin(0, 100)
        self._timer = context.window_manager.event_timer_add(0.001, window=context.window)
        context.window_manager.modal_handler_add(self)
        return {"RUNNING_MODAL"}

    def modal(self, context, event):
        if event.type in {"ESC", "RIGHTMOUSE"} and event.value == "PRESS":
            self._job.abort()
            self._end_modal(context)
            self.report({"WARNING"}, "Control maps cancelled; earlier outputs are unchanged")
            return {"CANCELLED"}
        if event.type != "TIMER":
            return {"PASS_THROUGH"}
        deadline = time.perf_counter() + TICK_BUDGET
        try:
            more = True
            while more and time.perf_counter() < deadline:
                more = self._job.step()
            progress = 100.0 * self._job.progress
            context.window_manager.progress_update(progress)
            _redraw_panels(context)
            context.workspace.status_text_set(f"Marionette: control maps {progress:.0f}% (Esc to cancel)")
            if more:
                return {"RUNNING_MODAL"}
            summary = self._job.finish()
        except ControlMapError as error:
            self._job.abort()
            self._end_modal(context)
            self.report({"ERROR"}, str(error))
            return {"CANCELLED"}
        except BaseException:
            self._job.abort()
            self._end_modal(context)
            raise
        self._end_modal(context)
        return self._done(context, summary)

    def _end_modal(self, context):
        global running_job
        running_job = None
        context.window_manager.event_timer_remove(self._timer)
        context.window_manager.progress_end()
        context.workspace.status_text_set(None)
        _redraw_panels(context)

    def _done(self, context, summary):
        settings = self._job.settings
        folder = settings.output_dir / "control"
        count = settings.frame_end - settings.frame_start + 1
        if _publish_strips(context.scene.name, folder, settings.frame_start, count) is not None:
            bpy.app.timers.register(
                lambda: _publish_strips(context.scene.name, folder, settings.frame_start, count), first_interval=0.5)
        rate = summary["frames"] / max(summary["seconds"], 1e-9)
        self.report({"INFO"}, f"Rendered {summary['frames']} frames of control maps to {summary['folder']} "
                              f"({rate:.0f} frames/s)")
        return {"FINISHED"}


class MARIONETTE_OT_add_characters(bpy.types.Operator):
    """Add the selected armatures to the characters Marionette renders"""

    bl_idname = "marionette.add_characters"
    bl_label = "Add Selected Armatures"
    bl_options = {"REGISTER", "UNDO"}

    @classmethod
    def poll(cls, context):
        if not any(obj.type == "ARMATURE" for obj in context.selected_objects):
            cls.poll_message_set("Select one or more armatures first")
            return False
        return True

    def execute(self, context):
        characters = context.scene.marionette.characters
        listed = {item.object for item in characters}
        added = 0
        for obj in context.selected_objects:
            if obj.type == "ARMATURE" and obj not in listed:
                characters.add().object = obj
                added += 1
        self.report({"INFO"}, f"Added {added} armature(s)")
        return {"FINISHED"}


class MARIONETTE_OT_remove_character(bpy.types.Operator):
    """Remove the active character from the list"""

    bl_idname = "marionette.remove_character"
    bl_label = "Remove Character"
    bl_options = {"REGISTER", "UNDO"}

    @classmethod
    def poll(cls, context):
        return len(context.scene.marionette.characters) > 0

    def execute(self, context):
        _remove_active(context.scene.marionette, "characters", "active_character_index")
        return {"FINISHED"}


class MARIONETTE_OT_add_keypoint_override(bpy.types.Operator):
    """Bind a keypoint of the active armature to a bone and offset of your choice"""

    bl_idname = "marionette.add_keypoint_override"
    bl_label = "Override Keypoint"
    bl_options = {"REGISTER", "UNDO"}

    @classmethod
    def poll(cls, context):
        obj = context.active_object
        if obj is None or obj.type != "ARMATURE":
            cls.poll_message_set("Make an armature the active object")
            return False
        return True

    def execute(self, context):
        rig = context.active_object.marionette_rig
        item = rig.overrides.add()
        item.bone = context.active_object.data.bones[0].name if context.active_object.data.bones else ""
        rig.active_override_index = len(rig.overrides) - 1
        return {"FINISHED"}


class MARIONETTE_OT_remove_keypoint_override(bpy.types.Operator):
    """Remove the active keypoint override; the preset's binding applies again"""

    bl_idname = "marionette.remove_keypoint_override"
    bl_label = "Remove Override"
    bl_options = {"REGISTER", "UNDO"}

    @classmethod
    def poll(cls, context):
        obj = context.active_object
        return obj is not None and obj.type == "ARMATURE" and len(obj.marionette_rig.overrides) > 0

    def execute(self, context):
        _remove_active(context.active_object.marionette_rig, "overrides", "active_override_index")
        return {"FINISHED"}


class _GenerateBase:
    """Generate and Resume share this: a blocking run in background mode, a modal one with a window."""

    _session: GenerationSession | None = None
    _timer = None
    resume = False

    @classmethod
    def poll(cls, context):
        message = _busy_message()
        if message:
            cls.poll_message_set(message)
            return False
        return True

    def _start(self, context) -> bool:
        prefs = preferences(context)
        try:
            override = json.loads(self.settings) if getattr(self, "settings", "") else {}
            if not isinstance(override, dict):
                raise ValueError("not an object")
        except ValueError as error:
            self.report({"ERROR"}, f"'settings' must be a JSON object of engine settings, e.g. "
                                   f'{{"steps": 20}}: {error}')
            return False
        try:
            self._session = GenerationSession(context, backend_settings(context), prefs.max_resolution,
                                              resume=self.resume, auto_start=prefs.auto_start,
                                              settings_override=override)
        except (GenerationError, ControlMapError) as error:
            self.report({"ERROR"}, str(error))
            return False
        return True

    def execute(self, context):
        """Blocking run, for scripts and `blender -b` (render farms): fails with an error report."""
        global active_session
        if _busy_message():
            self.report({"ERROR"}, _busy_message())
            return {"CANCELLED"}
        if not self._start(context):
            return {"CANCELLED"}
        active_session = self._session
        try:
            reported = -1
            while self._session.pump(0.5):
                if bpy.app.background and int(self._session.progress * 10) > reported:
                    reported = int(self._session.progress * 10)
                    print(f"Marionette: generate {reported * 10}% ({self._session.status})", flush=True)
                if self._session.phase == "stream":
                    time.sleep(0.02)
        except (GenerationError, ControlMapError) as error:
            self._session.cancel()
            self.report({"ERROR"}, str(error))
            return {"CANCELLED"}
        except BaseException:
            self._session.cancel()  # the worker thread lets go of the backend
            raise
        finally:
            active_session = None
        return self._finished()

    def invoke(self, context, event):
        global active_session
        if bpy.app.background or context.window is None:
            return self.execute(context)
        if not self._start(context):
            return {"CANCELLED"}
        active_session = self._session
        context.window_manager.progress_begin(0, 100)
        self._timer = context.window_manager.event_timer_add(0.05, window=context.window)
        context.window_manager.modal_handler_add(self)
        return {"RUNNING_MODAL"}

    def modal(self, context, event):
        if event.type in {"ESC"} and event.value == "PRESS":
            self._session.cancel()  # the stream ends with "cancelled" once the backend confirms
            return {"RUNNING_MODAL"}
        if event.type != "TIMER":
            return {"PASS_THROUGH"}
        try:
            running = self._session.pump(TICK_BUDGET)
        except (GenerationError, ControlMapError) as error:
            self._session.cancel()
            self._end_modal(context)
            self.report({"ERROR"}, str(error))
            return {"CANCELLED"}
        except BaseException:
            self._session.cancel()  # else the session stays active and refuses every later Generate
            self._end_modal(context)
            raise
        progress = 100.0 * self._session.progress
        context.window_manager.progress_update(progress)
        context.workspace.status_text_set(f"Marionette: {self._session.status} (Esc to cancel)")
        _redraw_panels(context)
        if running:
            return {"RUNNING_MODAL"}
        self._end_modal(context)
        return self._finished()

    def _end_modal(self, context):
        global active_session
        active_session = None
        context.window_manager.event_timer_remove(self._timer)
        context.window_manager.progress_end()
        context.workspace.status_text_set(None)
        _redraw_panels(context)

    def _finished(self):
        session = self._session
        if session.failed:
            self.report({"ERROR"}, f"Generate failed: {session.result}")
            return {"CANCELLED"}
        if session.result == "cancelled":
            self.report({"WARNING"}, f"Generate cancelled; {session.received} frames kept")
            return {"CANCELLED"}
        self.report({"INFO"}, f"Generated {session.received} frames into {session.output_dir / 'frames'}")
        return {"FINISHED"}


class MARIONETTE_OT_generate(_GenerateBase, bpy.types.Operator):
    """Render the control maps, send them with the reference image to the backend and stream the frames
    it makes into the Video Sequence Editor"""

    bl_idname = "marionette.generate"
    bl_label = "Generate"
    bl_options = {"REGISTER"}

    settings: bpy.props.StringProperty(
        name="Settings", default="", options={"SKIP_SAVE"},
        description='Engine settings as JSON, over the panel\'s values, e.g. {"weights": "/models/x", '
                    '"steps": 20} (for scripts and render farms)')


class MARIONETTE_OT_resume(_GenerateBase, bpy.types.Operator):
    """Continue the last generation: receive the frames still missing (after a dropped connection or a
    backend restart)"""

    bl_idname = "marionette.resume"
    bl_label = "Resume"
    bl_options = {"REGISTER"}
    resume = True


# One line about the backend for the panel, set by the backend operators.
backend_status = ""


def _in_background(work, done) -> None:
    """Run `work()` (no bpy) off the main thread and hand its result or BackendError to `done(result,
    error)` on the main thread. In background mode there is no event loop: run it right away."""
    if bpy.app.background:
        try:
            done(work(), None)
        except BackendError as error:
            done(None, error)
        return
    outcome = {}

    def run():
        try:
            outcome["result"] = work()
        except BackendError as error:
            outcome["error"] = error

    thread = threading.Thread(target=run, name="marionette-backend-check", daemon=True)
    thread.start()

    def check():
        if thread.is_alive():
            return 0.2
        done(outcome.get("result"), outcome.get("error"))
        return None

    bpy.app.timers.register(check, first_interval=0.2)


def _set_backend_status(text: str) -> None:
    global backend_status
    backend_status = text
    for window in bpy.context.window_manager.windows:
        for area in window.screen.areas:
            if area.type == "VIEW_3D":
                area.tag_redraw()


class MARIONETTE_OT_start_backend(bpy.types.Operator):
    """Start a backend on this machine with the Backend Python from the preferences"""

    bl_idname = "marionette.start_backend"
    bl_label = "Start Local Backend"

    def execute(self, context):
        settings = backend_settings(context)

        def work():
            if backend_process.healthy(settings):
                return "already running"
            backend_process.start(settings, Path(bpy.app.tempdir or "/tmp") / "marionette")
            backend_process.wait_until_healthy(settings, timeout=30.0)
            return f"started (log: {backend_process.log_path()})"

        result = {}

        def done(outcome, error):
            result["error"] = error
            _set_backend_status(f"Backend: {error}" if error else f"Backend at {settings.host}:{settings.port} {outcome}")

        _set_backend_status("Backend: starting...")
        _in_background(work, done)
        if result.get("error"):
            self.report({"ERROR"}, str(result["error"]))
            return {"CANCELLED"}
        return {"FINISHED"}


class MARIONETTE_OT_stop_backend(bpy.types.Operator):
    """Stop the backend this Blender started"""

    bl_idname = "marionette.stop_backend"
    bl_label = "Stop Local Backend"

    def execute(self, context):
        if backend_process.stop():
            _set_backend_status("Backend: stopped")
            self.report({"INFO"}, "Backend stopped")
        else:
            self.report({"WARNING"}, "This Blender started no backend")
        return {"FINISHED"}


class MARIONETTE_OT_test_connection(bpy.types.Operator):
    """Connect to the backend, check the token and list its engines"""

    bl_idname = "marionette.test_connection"
    bl_label = "Test Connection"

    def execute(self, context):
        settings = backend_settings(context)

        def work():
            with settings.client(timeout=5.0) as client:
                client.ping()
                return client.capabilities

        result = {}

        def done(capabilities, error):
            result["error"] = error
            if error:
                _set_backend_status(f"Backend: {error}")
                return
            remember_capabilities(capabilities)
            names = ", ".join(engine["name"] for engine in capabilities["engines"])
            _set_backend_status(f"Connected to {settings.host}:{settings.port}; engines: {names}")

        _set_backend_status("Backend: connecting...")
        _in_background(work, done)
        if result.get("error"):
            self.report({"ERROR"}, str(result["error"]))
            return {"CANCELLED"}
        if bpy.app.background:
            self.report({"INFO"}, backend_status)
        return {"FINISHED"}


class MARIONETTE_OT_bind_face(bpy.types.Operator):
    """Bind the 478 canonical face landmarks to the active mesh (a canonical face mesh is bound
    vertex for vertex; any other head by projecting the canonical layout onto its front)"""

    bl_idname = "marionette.bind_face"
    bl_label = "Bind Face Landmarks"
    bl_options = {"REGISTER", "UNDO"}

    # Adjust in the redo panel after binding a non-canonical head (the layout is refitted live).
    scale: bpy.props.FloatProperty(name="Layout Scale", default=1.0, min=0.2, max=3.0,
                                   description="Size of the landmark layout relative to the head's front")
    offset: bpy.props.FloatVectorProperty(name="Layout Offset", size=2, subtype="XYZ", unit="LENGTH",
                                          description="Moves the layout across the face (X) and up (Z)")

    @classmethod
    def poll(cls, context):
        obj = context.active_object
        if obj is None or obj.type != "MESH":
            cls.poll_message_set("Make the head mesh the active object")
            return False
        return True

    def execute(self, context):
        from .face_binding import FaceBindingError, bind_by_projection, bind_canonical_mesh

        obj = context.active_object
        try:
            if len(obj.data.vertices) == 468:
                bind_canonical_mesh(obj)
                self.report({"INFO"}, f"Bound the canonical landmarks to '{obj.name}' vertex for vertex")
            else:
                hits = bind_by_projection(obj, context.evaluated_depsgraph_get(), self.scale, tuple(self.offset))
                self.report({"INFO"}, f"Bound '{obj.name}': {hits} of 478 landmarks projected onto its front; "
                                      f"parent it to the character's armature")
        except FaceBindingError as error:
            self.report({"ERROR"}, str(error))
            return {"CANCELLED"}
        return {"FINISHED"}


class MARIONETTE_OT_import_face_capture(bpy.types.Operator):
    """Key a Live Link Face CSV (ARKit blendshapes, head rotation) onto the active mesh's shape keys"""

    bl_idname = "marionette.import_face_capture"
    bl_label = "Import Live Link Face CSV"
    bl_options = {"REGISTER", "UNDO"}

    filepath: bpy.props.StringProperty(subtype="FILE_PATH")
    filter_glob: bpy.props.StringProperty(default="*.csv", options={"HIDDEN"})
    capture_fps: bpy.props.FloatProperty(name="Capture Rate", default=60.0, min=1.0,
                                         description="Frames per second of the capture's timecode")

    @classmethod
    def poll(cls, context):
        obj = context.active_object
        if obj is None or obj.type != "MESH" or obj.data.shape_keys is None:
            cls.poll_message_set("Make a mesh with ARKit-named shape keys the active object")
            return False
        return True

    def invoke(self, context, event):
        context.window_manager.fileselect_add(self)
        return {"RUNNING_MODAL"}

    def execute(self, context):
        from .face_capture import CaptureError, apply_capture, read_capture

        face = context.active_object
        head_bone = None
        if face.parent is not None and face.parent.type == "ARMATURE" and face.parent_bone:
            head_bone = face.parent.pose.bones.get(face.parent_bone)
        scene = context.scene
        try:
            capture = read_capture(Path(bpy.path.abspath(self.filepath)), self.capture_fps)
        except CaptureError as error:
            self.report({"ERROR"}, str(error))
            return {"CANCELLED"}
        fps = scene.render.fps / scene.render.fps_base
        result = apply_capture(capture, face, head_bone, fps, scene.frame_current)
        message = f"Keyed {result['shapes']} shape keys over {result['seconds']:.1f} s ({result['rows']} rows)"
        if result["missing"]:
            message += f"; the mesh has no shape keys {', '.join(result['missing'][:6])}"
        self.report({"WARNING"} if result["missing"] else {"INFO"}, message)
        return {"FINISHED"}


def _remove_active(owner, collection_name: str, index_name: str) -> None:
    """Remove the active item of a UI list's collection and keep the active index in range."""
    collection = getattr(owner, collection_name)
    index = getattr(owner, index_name)
    if 0 <= index < len(collection):
        collection.remove(index)
    setattr(owner, index_name, max(0, min(index, len(collection) - 1)))


classes = (
    MARIONETTE_OT_render_control_maps,
    MARIONETTE_OT_generate,
    MARIONETTE_OT_resume,
    MARIONETTE_OT_start_backend,
    MARIONETTE_OT_stop_backend,
    MARIONETTE_OT_test_connection,
    MARIONETTE_OT_bind_face,
    MARIONETTE_OT_import_face_capture,
    MARIONETTE_OT_add_characters,
    MARIONETTE_OT_remove_character,
    MARIONETTE_OT_add_keypoint_override,
    MARIONETTE_OT_remove_keypoint_override,
)


register, unregister = bpy.utils.register_classes_factory(classes)
