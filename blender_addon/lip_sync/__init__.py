"""The Lip Sync panel: a sound keyed onto the bound face's shape keys through the backend's
audio2mesh.

    solver.py       the offsets solved onto shape keys by bounded least squares (numpy, no bpy)
    scene.py        the face, the sound and the keys in the scene
    job.py          the job: the backend's offsets on a thread, then the keys
    operator.py     Lip Sync from Audio
    properties.py   its scene settings (part of scene.marionette)
    panel.py        the panel
"""

from ..shared.registration import module_registration
from . import operator, panel

register, unregister = module_registration(operator, panel)
