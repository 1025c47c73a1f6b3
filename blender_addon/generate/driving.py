"""The driving video: the performance rendered through the scene camera at the job's size, frame by
frame, into control/driving/ (engines that take the `driving` style: wan-animate-2). Three looks:

- SCENE: the scene as its own render engine draws it (the characters' meshes and shape keys, the
  user's lights and materials); the edit, the compositor and a render border are left out.
- MANNEQUIN: a neutral body built for each character from its armature (mannequin.py), rendered
  with Workbench's studio light on a plain grey background in a scene of its own that holds only
  the mannequins, their armatures and the camera; all of it is removed afterwards.
- POSE: the pose maps themselves.
AUTO is SCENE when a character has a mesh of its own that renders, else MANNEQUIN.
"""

from __future__ import annotations

import shutil

import bpy

from ..face.binding import has_binding
from ..shared.jobs import MarionetteError
from .mannequin import build_mannequin, remove_mannequin
from .renders import BorrowedRender, FrameRenderJob
from .tracks import GenerationError

LOOKS = (
    ("AUTO", "Auto", "The scene when a character has meshes of its own, else the mannequin"),
    ("SCENE", "Scene", "The scene as its render engine draws it: the characters' own meshes, shape keys, lights"),
    ("MANNEQUIN", "Mannequin", "A neutral body built from each armature (and its bound face), in Workbench's studio "
                               "light on a plain background"),
    ("POSE", "Pose Maps", "The pose maps themselves"),
)
BACKGROUND = (0.05, 0.05, 0.055)  # the mannequin's plain background (linear): dark grey, lit body on it


def character_meshes(armatures: list[bpy.types.Object]) -> list[bpy.types.Object]:
    """Meshes that render and belong to a character: deformed by or parented to one of its
    armatures; a bound face alone is no body."""
    found = []
    for obj in bpy.context.scene.objects:
        if obj.type != "MESH" or obj.hide_render or has_binding(obj):
            continue
        deformed = any(m.type == "ARMATURE" and m.object in armatures for m in obj.modifiers)
        parent = obj.parent
        while parent is not None and parent not in armatures:
            parent = parent.parent
        if deformed or parent is not None:
            found.append(obj)
    return found


def resolve_look(look: str, armatures: list[bpy.types.Object]) -> str:
    if look != "AUTO":
        return look
    return "SCENE" if character_meshes(armatures) else "MANNEQUIN"


def camera_at(scene: bpy.types.Scene, frame: int):
    """The camera the scene shows at `frame`: the last camera marker at or before it, else its camera."""
    markers = [m for m in scene.timeline_markers if m.camera is not None and m.frame <= frame]
    return max(markers, key=lambda m: m.frame).camera if markers else scene.camera


class DrivingRenderJob(FrameRenderJob):
    """The driving video in one look (see the module docstring), one frame per step(); a cancelled or
    failed render leaves control/driving/ as it was."""

    label = "driving video"

    def __init__(self, scene: bpy.types.Scene, armatures: list[bpy.types.Object], settings, look: str):
        super().__init__(settings, "driving")
        self.scene, self.settings = scene, settings
        self.look = resolve_look(look, armatures)
        self.borrowed = self.stage = None
        self.mannequins: list = []
        self.world = None
        try:
            if self.look == "SCENE":
                self.borrowed = BorrowedRender(scene)
            elif self.look == "MANNEQUIN":
                self._build_stage(armatures)
            elif self.look == "POSE":
                self.pose = settings.output_dir / "control" / "pose"
            else:
                raise GenerationError(f"unknown driving look '{look}'; pick Auto, Scene, Mannequin or Pose Maps")
        except BaseException:
            self.close()
            raise

    @property
    def status(self) -> str:
        return f"{self.label} ({self.look.lower()}) {self.next_index}/{len(self.frames)}"

    def _build_stage(self, armatures) -> None:
        """A scene of its own: the armatures, their mannequins, the cameras; Workbench, studio light."""
        scene, settings = self.scene, self.settings
        self.stage = stage = bpy.data.scenes.new("Marionette driving")
        render = stage.render
        render.engine = "BLENDER_WORKBENCH"
        render.resolution_x, render.resolution_y, render.resolution_percentage = settings.width, settings.height, 100
        render.pixel_aspect_x, render.pixel_aspect_y = scene.render.pixel_aspect_x, scene.render.pixel_aspect_y
        render.fps, render.fps_base = scene.render.fps, scene.render.fps_base
        render.use_sequencer = render.use_compositing = False
        render.image_settings.file_format = "PNG"
        render.image_settings.color_mode, render.image_settings.color_depth = "RGB", "8"
        stage.display.render_aa = "FXAA"
        shading = stage.display.shading
        shading.light, shading.color_type = "STUDIO", "VERTEX"  # VERTEX: the mannequin's colour attribute
        stage.view_settings.view_transform, stage.view_settings.look = "Standard", "None"
        stage.display_settings.display_device = scene.display_settings.display_device
        self.world = bpy.data.worlds.new("Marionette driving")
        self.world.color = BACKGROUND
        stage.world = self.world
        for obj in armatures:
            stage.collection.objects.link(obj)
        cameras = {scene.camera} | {m.camera for m in scene.timeline_markers if m.camera is not None}
        for camera in cameras - {None}:
            stage.collection.objects.link(camera)
        # The mannequins are laid out on the calibration pose: the rest pose, or the start frame.
        original = scene.frame_current
        try:
            scene.frame_set(settings.frame_start)
            depsgraph = bpy.context.evaluated_depsgraph_get()
            for obj in armatures:
                self.mannequins += build_mannequin(obj, stage.collection, depsgraph)
        except MarionetteError as error:
            raise GenerationError(f"cannot build the mannequin: {error}") from None
        finally:
            scene.frame_set(original)

    def render_frame(self, frame: int, path) -> None:
        try:
            if self.look == "POSE":
                shutil.copyfile(self.pose / f"{frame:06d}.png", path)
            elif self.look == "SCENE":
                self.borrowed.render(frame, path)
            else:
                self.stage.camera = camera_at(self.scene, frame)
                self.stage.render.filepath = str(path)
                self.stage.frame_set(frame)
                with bpy.context.temp_override(scene=self.stage):  # as the context scene: at its own frame
                    bpy.ops.render.render(write_still=True)
        except (RuntimeError, OSError) as error:
            raise GenerationError(f"cannot render the driving video ({self.look.lower()}) at frame {frame}: "
                                  f"{error}") from None
        if not path.is_file():
            raise GenerationError(f"the driving video's frame {frame} was not written; is the scene camera set?")

    def close(self) -> None:
        if self.borrowed is not None:
            self.borrowed.restore()
        remove_mannequin(self.mannequins)
        self.mannequins = []
        if self.stage is not None:
            bpy.data.scenes.remove(self.stage)
            self.stage = None
        if self.world is not None:
            bpy.data.worlds.remove(self.world)
            self.world = None
        super().close()
