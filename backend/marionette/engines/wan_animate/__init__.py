"""The `wan-animate` engine's model side: Wan2.2-Animate-14B through diffusers' WanAnimatePipeline.

    loading.py      the released diffusers folder -> a WanAnimatePipeline (checked before loading)
    generation.py   the pipeline's segment loop, streaming each segment as it is decoded, resumable
    face_crops.py   Wan's face-crop rule, and face crops from the reference warped to the rig's face
"""
