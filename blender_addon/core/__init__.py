"""Parts the extension and the backend share: the keypoint model, the pose-map rasteriser,
PNG writing and the OpenPose JSON interchange. Imports only the standard library and numpy,
so it runs inside Blender and in the backend alike."""
