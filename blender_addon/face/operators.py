"""Bind Face Landmarks and Import Live Link Face CSV."""

from __future__ import annotations

from pathlib import Path

import bpy

from .binding import FaceBindingError, bind_by_projection, bind_canonical_mesh
from .capture import CaptureError, apply_capture, read_capture


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


classes = (MARIONETTE_OT_bind_face, MARIONETTE_OT_import_face_capture)

register, unregister = bpy.utils.register_classes_factory(classes)
