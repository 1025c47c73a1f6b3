"""Wan-Animate-2 14B through diffusers' modular pipelines (base and distilled): the reference character
moved the way a driving video's performer moves; from Blender, the rendered performance.

    engine.py     the engine: what it takes, its checks, the frames it yields
    pipeline.py   the pipeline's segment loop, streaming each segment as it is decoded, resumable
    weights.py    the released diffusers folder: checked (and so base or distilled), loaded
"""

ENGINES = {"wan-animate-2": "engine:WanAnimate2Engine"}
