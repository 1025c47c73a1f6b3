"""`driving`: the performance as a video, which Wan-Animate-2 moves the reference character by.
Blender renders it through the scene camera at the job's size, frame by frame, in a look the
Generate panel offers: the scene as its render engine draws it, a mannequin built from each
armature, or the pose maps."""

from . import Style

STYLE = Style("driving", "Driving Video", "The performance rendered through the scene camera: the scene, a "
                                          "mannequin of the rig, or its pose maps", "driving")
