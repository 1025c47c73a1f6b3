"""The Backend panel: where the backend is (Preferences), and Test, Start and Stop.

    backend.py     the connection and a local backend process (no bpy)
    operators.py   Test Connection, Start and Stop Local Backend
    panel.py       the panel
"""

from ..shared.registration import module_registration
from . import operators, panel

register, unregister = module_registration(operators, panel)
