"""`face-crop`: 512 x 512 crops of the character's face that carry the expression (Wan's face
video). Blender renders them from the character's head (Generate > Face Crops: Rendered Head);
otherwise an engine that takes them makes them itself from the reference and the face landmarks."""

from . import Style

STYLE = Style("face-crop", "Face Crops", "512x512 crops of the face, one per frame, that carry the expression",
              "face_crops")
