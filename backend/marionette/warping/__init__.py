"""Warping the reference image with the rig's motion (OpenCV, no weights): the warp engine's whole
work, and the face crops that wan-animate makes from the reference.

    rig.py    the reference rigged: mask, clean plate, mesh, bone weights; posed per frame
    face.py   the face on top: jaw, lids and brows follow the face landmarks, a dark open mouth
"""
