"""The embedded default engine: warps the reference image with the rig's motion (CPU, no weights).

    engine.py   the engine (the warping itself is marionette.warping, shared with wan-animate's face crops)
"""

ENGINES = {"warp": "engine:WarpEngine"}
