"""Face landmarks in real Blender: binding, shape keys, projection, maps, Live Link Face import."""

from pathlib import Path

import pytest

from harness import run_in_blender


def _demo_scene(tmp):
    import bpy
    import scene_helpers as h

    import sys

    if str(h.ROOT / "rigs") not in sys.path:
        sys.path.insert(0, str(h.ROOT / "rigs"))
    import build_demo_scene

    scene = build_demo_scene.build_scene(Path(tmp) / "reference.png")
    bpy.ops.wm.save_as_mainfile(filepath=str(Path(tmp) / "face.blend"))
    return scene, bpy.data.objects["DemoRig"], bpy.data.objects["DemoFace"]


def case_shape_keys_move_their_landmarks(tmp):
    import bpy
    import numpy as np
    from bl_ext.user_default.marionette.face.binding import FaceSampler

    scene, _rig, face = _demo_scene(tmp)
    keys = face.data.shape_keys.key_blocks
    face.data.shape_keys.animation_data_clear()
    scene.frame_set(1)
    sampler = FaceSampler(face)

    def landmarks(**values):
        for block in keys[1:]:
            block.value = 0.0
        for name, value in values.items():
            keys[name].value = value
        bpy.context.view_layer.update()
        return sampler.world_points(bpy.context.evaluated_depsgraph_get(), 1)

    rest = landmarks()
    moved = {}
    for shape in ("eyeBlinkLeft", "eyeBlinkRight", "jawOpen", "browInnerUp", "mouthSmileLeft"):
        delta = np.linalg.norm(landmarks(**{shape: 1.0}) - rest, axis=1)
        moved[shape] = sorted(int(i) for i in np.nonzero(delta > 1e-7)[0])
    return {"moved": moved, "count": len(rest)}


def test_a_shape_key_moves_exactly_its_landmarks(tmp_path):
    result = run_in_blender(case_shape_keys_move_their_landmarks, tmp_path, tmp=str(tmp_path))
    moved = {name: set(indices) for name, indices in result["moved"].items()}
    assert result["count"] == 478
    assert {386, 387, 385} <= moved["eyeBlinkLeft"] and not {159, 158, 160} & moved["eyeBlinkLeft"]
    assert {159, 158, 160} <= moved["eyeBlinkRight"] and not {386, 387, 385} & moved["eyeBlinkRight"]
    # The mouth and the other eye stay exactly where they were when one eye blinks.
    assert not {0, 13, 14, 17, 61, 291} & (moved["eyeBlinkLeft"] | moved["eyeBlinkRight"])
    assert {14, 17, 152} <= moved["jawOpen"] and not {0, 13, 1, 386, 159} & moved["jawOpen"]
    assert {107, 336} <= moved["browInnerUp"] and not {14, 17, 152} & moved["browInnerUp"]
    assert 291 in moved["mouthSmileLeft"] and 61 not in moved["mouthSmileLeft"]


def case_projected_face_matches_the_deformed_mesh(tmp):
    import json

    import bpy
    import numpy as np
    import scene_helpers as h
    from bpy_extras.object_utils import world_to_camera_view

    scene, _rig, face = _demo_scene(tmp)
    camera = scene.camera
    camera.location = (0.0, -0.9, 1.62)  # a close-up, so a pixel is a small distance on the face
    h.render_maps(frame_start=28, frame_end=32)
    worst = 0.0
    for frame in (28, 30, 32):
        scene.frame_set(frame)
        depsgraph = bpy.context.evaluated_depsgraph_get()
        evaluated = face.evaluated_get(depsgraph)
        mesh = evaluated.to_mesh()
        data = json.loads((h.output_dir() / "control" / "keypoints" / f"{frame:06d}.json").read_text())
        person = data["people"][0]
        written = np.array(person["face_mesh_keypoints_2d"]).reshape(-1, 3)
        assert len(person["face_keypoints_2d"]) == 68 * 3 and len(written) == 478
        for index in range(468):
            world = evaluated.matrix_world @ mesh.vertices[index].co
            u, v, depth = world_to_camera_view(scene, camera.evaluated_get(depsgraph), world)
            expected = np.array([u * 512, (1 - v) * 768])
            assert written[index, 2] == 1.0
            worst = max(worst, float(np.linalg.norm(written[index, :2] - expected)))
        evaluated.to_mesh_clear()
    face_maps = sorted(p.name for p in (h.output_dir() / "control" / "face").iterdir())
    return {"worst": worst, "face_maps": face_maps, "strip": h.strip(scene, "Marionette face") is not None}


@pytest.mark.smoke
def test_projected_landmarks_equal_the_deformed_mesh_and_maps_are_written(tmp_path):
    result = run_in_blender(case_projected_face_matches_the_deformed_mesh, tmp_path, tmp=str(tmp_path))
    assert result["worst"] <= 1.0, result["worst"]
    assert result["face_maps"] == [f"{frame:06d}.png" for frame in range(28, 33)]
    assert result["strip"]


def case_live_link_face_import(tmp):
    import bpy
    import scene_helpers as h

    scene, _rig, face = _demo_scene(tmp)
    scene.render.fps, scene.render.fps_base = 24, 1.0
    face.data.shape_keys.animation_data_clear()
    csv_path = Path(tmp) / "take.csv"
    lines = ["Timecode,BlendShapeCount,EyeBlinkLeft,JawOpen,MouthPucker,CheekPuff,HeadYaw,HeadPitch,HeadRoll"]
    for row in range(121):  # two seconds at 60 capture frames per second
        seconds, frames = divmod(row, 60)
        lines.append(f"10:00:{seconds:02d}:{frames:02d}.000,61,{row / 120:.4f},0.5,0.25,0.1,0.2,-0.1,0.05")
    csv_path.write_text("\n".join(lines) + "\n")
    scene.frame_set(10)
    bpy.context.view_layer.objects.active = face
    bpy.ops.marionette.import_face_capture(filepath=str(csv_path), capture_fps=60.0)
    curves = {c.data_path: c for c in h.compat().fcurves(face.data.shape_keys)}
    blink = curves['key_blocks["eyeBlinkLeft"].value']
    points = [(round(p.co.x, 3), round(p.co.y, 4)) for p in blink.keyframe_points]
    yaw = [c for c in h.compat().fcurves(bpy.data.objects["DemoRig"]) if c.data_path == 'pose.bones["head"].rotation_euler' and c.array_index == 1]
    return {"first": points[0], "last": points[-1], "count": len(points),
            "jaw": curves['key_blocks["jawOpen"].value'].evaluate(20),
            "yaw": yaw[0].evaluate(30) if yaw else None, "has_cheek": any("cheekPuff" in k for k in curves)}


def test_live_link_face_csv_keys_the_shape_keys(tmp_path):
    result = run_in_blender(case_live_link_face_import, tmp_path, tmp=str(tmp_path))
    assert result["count"] == 121
    assert result["first"] == [10.0, 0.0]  # starts at the current frame
    assert result["last"] == [58.0, 1.0]  # two seconds later at 24 frames/s
    assert abs(result["jaw"] - 0.5) < 1e-6
    assert abs(result["yaw"] - 0.2) < 1e-6
    assert not result["has_cheek"]  # the demo face has no cheekPuff key: reported, not invented


def case_bind_any_head(tmp):
    import bpy
    import numpy as np
    import scene_helpers as h
    from bl_ext.user_default.marionette.face.binding import FaceSampler

    h.new_scene()
    bpy.ops.mesh.primitive_uv_sphere_add(radius=0.1, location=(0, 0, 1.6), segments=48, ring_count=24)
    head = bpy.context.object
    assert bpy.ops.marionette.bind_face() == {"FINISHED"}
    points = FaceSampler(head).world_points(bpy.context.evaluated_depsgraph_get(), 1)
    radius = np.linalg.norm(points - np.array([0, 0, 1.6]), axis=1)
    front = (points[:, 1] < 0).mean()
    # The layout is adjustable: a smaller layout moved up binds the chin higher on the head.
    assert bpy.ops.marionette.bind_face(scale=0.6, offset=(0.0, 0.02)) == {"FINISHED"}
    adjusted = FaceSampler(head).world_points(bpy.context.evaluated_depsgraph_get(), 1)
    return {"radius_min": float(radius.min()), "radius_max": float(radius.max()), "front": float(front),
            "nose_ahead": bool(points[1, 1] < points[234, 1]), "chin_before": float(points[152, 2]),
            "chin_after": float(adjusted[152, 2])}


def test_bind_by_projection_puts_the_landmarks_on_any_head(tmp_path):
    result = run_in_blender(case_bind_any_head, tmp_path, tmp=str(tmp_path))
    assert 0.095 <= result["radius_min"] and result["radius_max"] <= 0.1001  # on the sphere's surface
    assert result["front"] > 0.9 and result["nose_ahead"]
    assert result["chin_after"] > result["chin_before"] + 0.01
