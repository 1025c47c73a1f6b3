"""Warping the reference image with the rig's motion (OpenCV, no weights): the warp engine's whole
work, and the face crops that wan-animate makes from the reference.

    rig.py      the reference rigged: bones and their weights over the mesh; posed per frame
    cutout.py   the character's mask, the clean plate behind it, the mesh over it
    face.py     the face on top: jaw, lids and brows follow the face landmarks, a dark open mouth
"""
