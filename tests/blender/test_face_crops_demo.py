"""wan-animate's face crops on the demo: the crop of a frame where the demo face's jawOpen is keyed
shows an open (dark) mouth; the crop of a closed-mouth frame does not.

Blender renders the demo's keypoints (face landmarks included) and the reference pose; the backend's
face-crop code (in .venv: OpenCV) warps the reference face to each frame's landmarks and crops it.
"""

import json
import subprocess
from pathlib import Path

from harness import ROOT, run_in_blender

BACKEND_PYTHON = str(ROOT / ".venv" / "bin" / "python")
CLOSED, OPEN = 20, 30  # the demo keys jawOpen 0 at frame 20 and 1 at frame 30


def case_demo_keypoints(tmp):
    import sys

    import bpy
    import scene_helpers as h
    from bl_ext.user_default.marionette.control_maps.job import keypoints_at

    if str(h.ROOT / "rigs") not in sys.path:
        sys.path.insert(0, str(h.ROOT / "rigs"))
    import build_demo_scene

    scene = build_demo_scene.build_scene(Path(tmp) / "reference.png")
    bpy.ops.wm.save_as_mainfile(filepath=str(Path(tmp) / "demo.blend"))
    h.render_maps(frame_start=CLOSED, frame_end=OPEN)
    rig = bpy.data.objects["DemoRig"]
    width, height = scene.render.resolution_x, scene.render.resolution_y
    reference = keypoints_at(scene, [rig], scene.marionette.reference_frame, width, height)
    (Path(tmp) / "reference_pose.json").write_text(json.dumps(reference))
    keypoints = h.output_dir() / "control" / "keypoints"
    return {"closed": str(keypoints / f"{CLOSED:06d}.json"), "open": str(keypoints / f"{OPEN:06d}.json")}


MEASURE = r'''
import json, sys
import numpy as np
from marionette.images import decode_image
from marionette.job_inputs import people_from_openpose
from marionette.engines.wan_animate.face_crops import FaceCropper

folder, closed, opened = sys.argv[1:4]
reference = decode_image(open(f"{folder}/reference.png", "rb").read())
height, width = reference.shape[:2]
reference_person = people_from_openpose(json.load(open(f"{folder}/reference_pose.json")), width, height, "ref")[0]
cropper = FaceCropper(reference, reference_person)
result = {}
for name, path in (("closed", closed), ("open", opened)):
    person = people_from_openpose(json.load(open(path)), width, height, name)[0]
    box = cropper.box(person)
    crop = cropper.crop(person, box).astype(np.float64)
    mesh = person.points["face_mesh_keypoints_2d"][:, :2]
    x1, x2, y1, y2 = box
    scale = np.array([512 / (x2 - x1), 512 / (y2 - y1)])
    to_crop = lambda p: (p - np.array([x1, y1])) * scale
    upper, lower = to_crop(mesh[13]), to_crop(mesh[14])  # the inner lips' middle points
    left, right = to_crop(mesh[78]), to_crop(mesh[308])  # the inner mouth corners
    centre = (upper + lower) / 2
    half_w, half_h = abs(right[0] - left[0]) * 0.25, max(abs(right[0] - left[0]) * 0.06, 2.0)
    x0, x1 = int(centre[0] - half_w), int(centre[0] + half_w) + 1
    y0, y1 = int(centre[1] - half_h), int(centre[1] + half_h) + 1
    result[name] = {"crop": list(crop.shape), "mouth_brightness": float(crop[y0:y1, x0:x1].mean()),
                    "lip_gap": float(np.linalg.norm(lower - upper))}
print(json.dumps(result))
'''


def test_demo_face_crop_opens_its_mouth_when_jaw_open_is_keyed(tmp_path):
    paths = run_in_blender(case_demo_keypoints, tmp_path, tmp=str(tmp_path))
    measured = subprocess.run([BACKEND_PYTHON, "-c", MEASURE, str(tmp_path), paths["closed"], paths["open"]],
                              capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert measured.returncode == 0, measured.stderr[-3000:]
    result = json.loads(measured.stdout.strip().splitlines()[-1])
    assert result["closed"]["crop"] == result["open"]["crop"] == [512, 512, 3]
    assert result["open"]["lip_gap"] > 2 * max(result["closed"]["lip_gap"], 1.0), result
    # The open mouth is painted dark inside: far darker than the closed lips.
    assert result["open"]["mouth_brightness"] < result["closed"]["mouth_brightness"] - 30, result
