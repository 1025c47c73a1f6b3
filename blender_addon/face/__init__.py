"""The Face panel: face landmarks bound to a head mesh, and face captures keyed onto it.

    binding.py     the 478 canonical landmarks bound to a mesh, evaluated on the deformed mesh
    capture.py     Live Link Face CSV files, keyed onto ARKit-named shape keys
    operators.py   Bind Face Landmarks, Import Live Link Face CSV
    panel.py       the panel
    model/         the canonical face model (MediaPipe, Apache-2.0): the zip carries rigs/face here
"""

from ..shared.registration import module_registration
from . import operators, panel

register, unregister = module_registration(operators, panel)
