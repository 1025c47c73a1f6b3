"""Make golden.npz: VACE's own pose annotator (PoseBodyFaceAnnotator, the "pose" task) drawing the
keypoints of random scenes at several frame sizes. See README.md beside this file for the command.

The annotator runs unmodified from a checkout of ali-vilab/VACE: its forward() (the input flipped to
BGR and resized to a 1024 short side), process() (the keypoints normalised, split, drawn with its
DWPose util, the drawing resized back and its channels reversed). Only the detector is replaced:
instead of running the two ONNX networks on the image it returns the scene's keypoints, in the
resized image's pixels, as the DWPose detector returns them.
"""

from __future__ import annotations

import importlib
import sys
import types
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
SIZES = [(832, 480), (480, 832), (512, 512), (1280, 720), (1920, 1080)]  # width, height
SCENES_PER_SIZE = 2


def load_annotator(annotators: Path):
    # Stand-ins for imports the pose path never uses (the ONNX runtime, COCO mask coding), and a parent
    # package holding only the modules the pose annotator imports, so that vace/annotators/__init__.py
    # (which imports every annotator and their networks) is not run.
    for name in ("onnxruntime", "pycocotools", "pycocotools.mask"):
        sys.modules[name] = types.ModuleType(name)
    sys.modules["onnxruntime"].InferenceSession = object  # named in a type annotation only
    for name, folder in (("vace_annotators", annotators), ("vace_annotators.dwpose", annotators / "dwpose")):
        package = types.ModuleType(name)
        package.__path__ = [str(folder)]
        sys.modules[name] = package
    return importlib.import_module("vace_annotators.pose")


def random_scene(rng, width, height):
    """1-3 people: body (n, 18, 3) and face (n, 68, 3) keypoints in frame pixels, c 1 or 0."""
    people = rng.integers(1, 4)
    bodies, faces = np.zeros((people, 18, 3)), np.zeros((people, 68, 3))
    for i in range(people):
        scale = rng.uniform(0.15, 0.6) * min(width, height)
        centre = rng.uniform(0.1, 0.9, 2) * (width, height)
        bodies[i, :, :2] = rng.normal(centre, scale * 0.5, size=(18, 2))
        bodies[i, :, 2] = rng.random(18) > 0.1
        faces[i, :, :2] = bodies[i, 0, :2] + rng.normal(0, scale * 0.05, size=(68, 2))
        faces[i, :, 2] = rng.random(68) > 0.1
    for points in (bodies, faces):  # the detector returns no point off the image
        off = (points[..., 0] < 0) | (points[..., 1] < 0) | (points[..., 0] >= width) | (points[..., 1] >= height)
        points[off] = 0
    return bodies, faces


class Detector:
    """Returns the scene as DWPose's Wholebody does: candidate (people, 134, 2) in the pixels of the
    image it is given, subset (people, 134) scores; body 0-17, feet 18-23, face 24-91, hands 92-133."""

    def __init__(self, bodies, faces, width, height):
        self.bodies, self.faces, self.width, self.height = bodies, faces, width, height

    def __call__(self, image):
        height, width = image.shape[:2]
        people = len(self.bodies)
        candidate, subset = np.zeros((people, 134, 2)), np.zeros((people, 134))
        for part, first in ((self.bodies, 0), (self.faces, 24)):
            count = part.shape[1]
            candidate[:, first:first + count, 0] = part[..., 0] / self.width * width
            candidate[:, first:first + count, 1] = part[..., 1] / self.height * height
            subset[:, first:first + count] = part[..., 2]
        return candidate, subset, np.zeros((0, 4))


def main(annotators: Path) -> None:
    pose = load_annotator(annotators)
    rng = np.random.default_rng(2025)
    data = {}
    for width, height in SIZES:
        for scene in range(SCENES_PER_SIZE):
            bodies, faces = random_scene(rng, width, height)
            annotator = pose.PoseBodyFaceAnnotator.__new__(pose.PoseBodyFaceAnnotator)
            annotator.resize_size, annotator.use_body, annotator.use_face, annotator.use_hand = 1024, True, True, False
            annotator.pose_estimation = Detector(bodies, faces, width, height)
            drawn = annotator.forward(np.zeros((height, width, 3), np.uint8))
            key = f"{width}x{height}_{scene}"
            data[f"{key}_bodies"], data[f"{key}_faces"], data[f"{key}_map"] = bodies, faces, drawn
    np.savez_compressed(HERE / "golden.npz", **data)
    print(f"{len(data) // 3} scenes written to {HERE / 'golden.npz'}")


if __name__ == "__main__":
    # argv: the annotators folder of a VACE checkout, then optionally a folder of the packages its util
    # imports that the environment lacks (matplotlib, imageio), searched after the environment's own.
    sys.path.extend(sys.argv[2:])
    main(Path(sys.argv[1]))
