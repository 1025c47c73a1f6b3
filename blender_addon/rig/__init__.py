"""The Rig Mapping panel: which bones of an armature give the canonical keypoints.

    mapping.py      rig presets and their resolution on a rig (no bpy)
    sampling.py     keypoints read off posed armatures and projected through the camera
    properties.py   object.marionette_rig: preset and keypoint overrides
    panel.py        the panel (its override list drawn with Blender's draw_ui_list)
"""

from ..shared.registration import module_registration
from . import panel, properties

register, unregister = module_registration(properties, panel)
