"""The depth pass: the scene's depth through the scene camera at the job's size, frame by frame, into
control/depth/ (engines that take the `depth` style: wan-vace), in the convention of VACE's depth
annotator (core/styles/depth.py: inverse depth normalised per frame, near bright).

Exact, not estimated: Workbench renders the scene's Z pass (every object that renders: the set and
props the animator blocked out, the characters), which the compositor sends out as the image, saved
as a 32-bit OpenEXR and read back. It renders in a linked copy of the scene (same objects, its own
render settings and compositor), removed afterwards, so the user's scene is left as it was.
"""

from __future__ import annotations

import bpy
import numpy as np

from .. import compat
from ..core.png import encode_png
from ..core.styles.depth import from_distance
from .driving import camera_at
from .renders import FrameRenderJob
from .tracks import GenerationError


class DepthRenderJob(FrameRenderJob):
    label = "depth pass"

    def __init__(self, scene: bpy.types.Scene, settings):
        super().__init__(settings, "depth")
        self.scene = scene
        self.exr = self.staging.parent / ".depth-render.exr"  # beside the staging folder, which becomes the pass
        self.stage = scene.copy()  # a linked copy: the scene's objects, settings of its own
        try:
            self.stage.name = "Marionette depth"
            render = self.stage.render
            render.engine = "BLENDER_WORKBENCH"  # the depth pass costs no shading
            render.resolution_x, render.resolution_y, render.resolution_percentage = settings.width, settings.height, 100
            render.use_border = False
            render.use_sequencer = False
            for layer in self.stage.view_layers:
                layer.use_pass_z = True
            compat.compositor_output_of(self.stage, "Depth")
            compat.use_image_output(render.image_settings, "OPEN_EXR")
            render.image_settings.color_depth, render.image_settings.exr_codec = "32", "ZIP"
            render.filepath = str(self.exr)
        except BaseException:
            self.close()
            raise

    def render_frame(self, frame: int, path) -> None:
        camera = camera_at(self.scene, frame)
        if camera is None:
            raise GenerationError("the depth pass renders through the scene camera; set one (Scene > Camera)")
        try:
            self.stage.camera = camera
            self.stage.frame_set(frame)
            with bpy.context.temp_override(scene=self.stage):
                bpy.ops.render.render(write_still=True)
            image = bpy.data.images.load(str(self.exr), check_existing=False)
            try:
                height, width = image.size[1], image.size[0]
                pixels = np.empty(width * height * 4, dtype=np.float32)
                image.pixels.foreach_get(pixels)
            finally:
                bpy.data.images.remove(image)
        except (RuntimeError, OSError) as error:
            raise GenerationError(f"cannot render the depth pass at frame {frame}: {error}") from None
        depth = pixels.reshape(height, width, 4)[::-1, :, 0]  # Blender's rows run bottom to top
        path.write_bytes(encode_png(from_distance(depth)))

    def close(self) -> None:
        self.exr.unlink(missing_ok=True)
        if self.stage is not None:
            compat.remove_compositor(self.stage)
            bpy.data.scenes.remove(self.stage)
            self.stage = None
        super().close()
