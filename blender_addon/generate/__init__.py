"""The Generate panel: the control maps and the reference image sent to the backend, the frames
streamed back into the Video Sequence Editor.

    tracks.py       what an engine's declared inputs ask Generate to make (no bpy)
    session.py      the Generate job: connect, draw, render, submit, stream
    stream.py       its worker thread: the backend connection (no bpy)
    renders.py      the background plate and face crops rendered in Blender
    sound.py        the scene's sound for engines that take it
    properties.py   its scene settings (part of scene.marionette)
    operators.py    Generate, Resume
    weights.py      the engine's weights on the backend: Check, Fetch Weights
    panel.py        the panel
"""

from ..shared.registration import module_registration
from . import operators, panel, weights

register, unregister = module_registration(operators, weights, panel)
