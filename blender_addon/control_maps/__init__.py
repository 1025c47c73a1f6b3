"""The Control Maps panel: pose maps, face maps, rig masks and OpenPose keypoints of the characters,
frame by frame, as files and strips.

    job.py          the render job: sample on the main thread, draw and write in worker threads
    properties.py   its scene settings (part of scene.marionette) and the characters list
    operators.py    Render Control Maps, Add Selected Armatures
    panel.py        the panel
"""

from ..shared.registration import module_registration
from . import operators, panel, properties

register, unregister = module_registration(properties, operators, panel)
