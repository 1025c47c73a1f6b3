"""Wan2.1-VACE (1.3B or 14B) through diffusers' WanVACEPipeline: the reference character performing the
rig's motion in the scene a prompt describes, the motion carried by control maps (the rig's pose, or
the scene's depth rendered by Blender).

    engine.py       the engine: what it takes, its checks, the frames it yields
    pipeline.py     the shot clip by clip, each continuing the previous through VACE's masks, resumable
    weights.py      the released diffusers folder: checked (1.3B or 14B read from it), loaded
"""

ENGINES = {"wan-vace": "engine:WanVaceEngine"}
