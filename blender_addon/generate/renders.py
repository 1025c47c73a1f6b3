"""What Generate renders in Blender for an engine, frame by frame, after the control maps: the
background plate (a strip of the Sequencer as the Sequencer shows it) and face crops of the
character's head. Each is a job (shared.jobs) that Generate runs in turn."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import bpy
import numpy as np

from .. import compat
from ..core.face import resize_bilinear, wan_face_box
from ..core.png import decode_png, encode_png
from ..shared.jobs import Job, Outcome
from .tracks import GenerationError


class FrameRenderJob(Job):
    """A per-frame render into control/<name>/<frame:06d>.png through a staging folder that replaces
    the pass only when every frame is done; one frame per step(), so the UI stays responsive.
    Subclasses render one frame in render_frame() and give back what they borrowed in close()."""

    def __init__(self, settings, name: str):
        self.frames = list(range(settings.frame_start, settings.frame_end + 1))
        control = settings.output_dir / "control"
        self.folder, self.staging = control / name, control / f".staging-{name}"
        shutil.rmtree(self.staging, ignore_errors=True)
        self.staging.mkdir(parents=True)
        self.next_index = 0
        self.cancelled = False

    @property
    def progress(self) -> float:
        return self.next_index / len(self.frames)

    @property
    def status(self) -> str:
        return f"{self.label} {self.next_index}/{len(self.frames)}"

    def step(self, budget: float) -> bool:
        if self.cancelled or self.next_index >= len(self.frames):
            return False
        frame = self.frames[self.next_index]
        self.render_frame(frame, self.staging / f"{frame:06d}.png")
        self.next_index += 1
        return self.next_index < len(self.frames)

    def finish(self) -> Outcome:
        if self.cancelled:
            return Outcome(f"{self.label} cancelled", cancelled=True)
        shutil.rmtree(self.folder, ignore_errors=True)
        self.staging.rename(self.folder)
        return Outcome(f"rendered {len(self.frames)} frames of {self.label} to {self.folder}")

    def cancel(self) -> None:
        self.cancelled = True

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
        self.borrowed = BorrowedRender(scene)

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
        render.border_min_x, render.border_max_x = x1 / width, x2 / width
        render.border_min_y, render.border_max_y = 1 - y2 / height, 1 - y1 / height
        zoom = self.SIZE / max(x2 - x1, y2 - y1, 1)  # render the box at about the crop's size
        render.resolution_percentage = max(1, min(32767, round(self.borrowed.percentage * zoom)))
        rendered = self.staging / f".render-{frame:06d}.png"
        try:
            self.borrowed.render(frame, rendered)
            image = decode_png(rendered.read_bytes())[..., :3]
        except (RuntimeError, OSError, ValueError) as error:
            raise GenerationError(f"cannot render the face crop of frame {frame}: {error}") from None
        rendered.unlink()
        path.write_bytes(encode_png(resize_bilinear(np.ascontiguousarray(image), self.SIZE, self.SIZE)))

    def close(self) -> None:
        self.borrowed.restore()
        super().close()


class BorrowedRender:
    """The user's scene rendering the camera's view to PNG files for a while: the edit, the
    compositor and a render border switched off, the settings and the frame given back by restore()."""

    FIELDS = ("use_border", "use_crop_to_border", "border_min_x", "border_max_x", "border_min_y", "border_max_y",
              "resolution_percentage", "filepath", "use_sequencer", "use_compositing")

    def __init__(self, scene: bpy.types.Scene):
        self.scene = scene
        render = scene.render
        self.saved = {name: getattr(render, name) for name in self.FIELDS}
        self.saved_format = render.image_settings.file_format, render.image_settings.color_mode, \
            render.image_settings.color_depth
        self.percentage = render.resolution_percentage
        self.original_frame = scene.frame_current
        self.restored = False
        render.use_border = False
        render.use_sequencer = render.use_compositing = False  # the camera's view, not the edit or the comp
        render.image_settings.file_format = "PNG"
        render.image_settings.color_mode, render.image_settings.color_depth = "RGB", "8"

    def render(self, frame: int, path) -> None:
        """Render `frame` to the PNG file `path` (RuntimeError from Blender when it cannot)."""
        self.scene.render.filepath = str(path)
        self.scene.frame_set(frame)
        with bpy.context.temp_override(scene=self.scene):
            bpy.ops.render.render(write_still=True)

    def restore(self) -> None:
        if self.restored:
            return
        self.restored = True
        render = self.scene.render
        for name, value in self.saved.items():
            setattr(render, name, value)
        settings = render.image_settings
        settings.file_format, settings.color_mode, settings.color_depth = self.saved_format
        self.scene.frame_set(self.original_frame)


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
