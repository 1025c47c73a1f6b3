"""Generate and Resume."""

from __future__ import annotations

import json

import bpy

from ..preferences import backend_settings, preferences
from ..shared.jobs import JobOperator
from .session import GenerateJob
from .tracks import GenerationError


class _GenerateOperator(JobOperator):
    resume = False

    def make_job(self, context) -> GenerateJob:
        try:
            override = json.loads(self.settings) if getattr(self, "settings", "") else {}
            if not isinstance(override, dict):
                raise ValueError("not an object")
        except ValueError as error:
            raise GenerationError(f"'settings' must be a JSON object of engine settings, e.g. "
                                  f'{{"steps": 20}}: {error}') from None
        prefs = preferences(context)
        return GenerateJob(context, backend_settings(context), prefs.max_resolution, resume=self.resume,
                           auto_start=prefs.auto_start, settings_override=override)


class MARIONETTE_OT_generate(_GenerateOperator, bpy.types.Operator):
    """Render the control maps, send them with the reference image to the backend and stream the frames
    it makes into the Video Sequence Editor"""

    bl_idname = "marionette.generate"
    bl_label = "Generate"
    bl_options = {"REGISTER"}

    settings: bpy.props.StringProperty(
        name="Settings", default="", options={"SKIP_SAVE"},
        description='Engine settings as JSON, over the panel\'s values, e.g. {"weights": "/models/x", '
                    '"steps": 20} (for scripts and render farms)')


class MARIONETTE_OT_resume(_GenerateOperator, bpy.types.Operator):
    """Continue the last generation: receive the frames still missing (after a dropped connection or a
    backend restart)"""

    bl_idname = "marionette.resume"
    bl_label = "Resume"
    bl_options = {"REGISTER"}
    resume = True


classes = (MARIONETTE_OT_generate, MARIONETTE_OT_resume)

register, unregister = bpy.utils.register_classes_factory(classes)
