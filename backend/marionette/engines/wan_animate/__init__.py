"""Wan2.2-Animate-14B through diffusers' WanAnimatePipeline: whole body and face from the rig,
prompts, replace mode into a plate.

    engine.py       the engine: what it takes, its checks, the frames it yields
    pipeline.py     the pipeline's segment loop, streaming each segment as it is decoded, resumable
    weights.py      the released diffusers folder: checked, loaded (with offloading)
    face_crops.py   Wan's face-crop rule, and face crops from the reference warped to the rig's face
"""

ENGINES = {"wan-animate": "engine:WanAnimateEngine"}
