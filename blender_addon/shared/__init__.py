"""What the capabilities share (each capability is a folder beside this one, with its panel):

    jobs.py        the one runner of long work: control maps, Generate, lip sync, the renders
    run_state.py   what the panels show of a run in progress, and the backend's status line
    strips.py      Marionette's image-sequence strips in the Video Sequence Editor
    engines.py     the connected backend's engines and each engine's settings on the scene
    panels.py      where the panels live (the sidebar's Marionette tab), and what they draw alike
    registration.py  a package's register() and unregister() from its modules
"""

from . import engines
from .registration import module_registration

register, unregister = module_registration(engines)
