"""Benchmark: render_control_maps on an animated Rigify rig against Blender's Workbench engine.

Same run, same rig, same frames, 512x768:
  1. Marionette: bpy.ops.marionette.render_control_maps() over 240 frames, style dwpose (blocking,
     as on a render farm), frames per second, and the share spent evaluating the rig (frame_set).
  2. Workbench: the mesh way of making pose maps (a sphere per joint and a cylinder per limb and
     finger bone, parented to the rig's bones, flat object colours, about what the dwpose map shows)
     rendered with BLENDER_WORKBENCH, seconds per frame.

    HOME=<private folder> .venv-blender/bin/python benchmarks/bench_control_maps.py --zip dist/marionette-X.zip
"""

import argparse
import math
import os
import platform
import random
import sys
import tempfile
import time
from pathlib import Path

FRAMES = 240
WORKBENCH_FRAMES = 24
WIDTH, HEIGHT = 512, 768


def build_rigify_scene():
    import addon_utils
    import bpy

    bpy.ops.wm.read_homefile(use_empty=True)
    scene = bpy.context.scene
    scene.render.resolution_x, scene.render.resolution_y, scene.render.resolution_percentage = WIDTH, HEIGHT, 100
    addon_utils.enable("rigify", default_set=True)
    bpy.ops.object.armature_human_metarig_add()
    bpy.ops.pose.rigify_generate()
    rig = bpy.data.objects["rig"]
    bpy.data.objects.remove(bpy.data.objects["metarig"])
    # Animate the FK controls: a key every 10 frames, interpolated in between.
    rng = random.Random(1)
    controls = [name for name in ("torso", "chest", "head", "upper_arm_fk.L", "upper_arm_fk.R", "forearm_fk.L",
                                  "forearm_fk.R", "thigh_fk.L", "thigh_fk.R", "shin_fk.L", "shin_fk.R")
                if name in rig.pose.bones]
    for name in ("upper_arm_parent.L", "upper_arm_parent.R", "thigh_parent.L", "thigh_parent.R"):
        if name in rig.pose.bones:
            rig.pose.bones[name]["IK_FK"] = 1.0
    for frame in range(1, FRAMES + 1, 10):
        for name in controls:
            bone = rig.pose.bones[name]
            bone.rotation_mode = "XYZ"
            bone.rotation_euler = [rng.uniform(-0.5, 0.5) for _ in range(3)]
            bone.keyframe_insert("rotation_euler", frame=frame)
    scene.frame_start, scene.frame_end = 1, FRAMES
    camera = bpy.data.objects.new("Camera", bpy.data.cameras.new("Camera"))
    scene.collection.objects.link(camera)
    camera.location = (0.0, -3.2, 1.0)
    camera.rotation_euler = (math.radians(90), 0.0, 0.0)
    scene.camera = camera
    return scene, rig


def time_frame_set(scene):
    start = time.perf_counter()
    for frame in range(1, FRAMES + 1):
        scene.frame_set(frame)
    return (time.perf_counter() - start) / FRAMES


def add_mesh_pose_rig(rig):
    """Spheres on the joints and cylinders along the limbs, parented to the rig's deform bones."""
    import bpy

    fingers = [f"DEF-{f}.0{i}.{s}" for s in "LR" for f in ("thumb", "f_index", "f_middle", "f_ring", "f_pinky")
               for i in (1, 2, 3)]
    limbs = [f"DEF-{b}.{s}" for s in "LR" for b in ("upper_arm", "forearm", "thigh", "shin", "shoulder")]
    limbs += ["DEF-spine.004", "DEF-spine.006"] + fingers
    joints = limbs + [f"DEF-hand.{s}" for s in "LR"] + [f"DEF-foot.{s}" for s in "LR"] + [
        f"ORG-eye.{s}" for s in "LR"] + [f"DEF-ear.{s}" for s in "LR"]
    for index, bone_name in enumerate(joints):
        bone = rig.data.bones[bone_name]
        bpy.ops.mesh.primitive_uv_sphere_add(radius=0.03, segments=16, ring_count=8)
        sphere = bpy.context.object
        sphere.color = (index / len(joints), 1.0 - index / len(joints), 0.5, 1.0)
        _parent_to_bone(sphere, rig, bone_name, head=True)
        if bone_name in limbs:
            bpy.ops.mesh.primitive_cylinder_add(radius=0.015, depth=bone.length, vertices=12)
            cylinder = bpy.context.object
            cylinder.color = sphere.color
            cylinder.rotation_euler = (math.radians(-90), 0.0, 0.0)  # along the bone's Y
            cylinder.location = (0.0, bone.length / 2, 0.0)
            _parent_to_bone(cylinder, rig, bone_name, head=False)


def _parent_to_bone(obj, rig, bone_name, head):
    obj.parent = rig
    obj.parent_type = "BONE"
    obj.parent_bone = bone_name
    # Bone parenting places the child at the bone's tail; move it back along the bone.
    length = rig.data.bones[bone_name].length
    if head:
        obj.location = (0.0, -length, 0.0)
    else:
        obj.location = (obj.location[0], obj.location[1] - length, obj.location[2])


def time_workbench(scene, folder):
    import bpy

    scene.render.engine = "BLENDER_WORKBENCH"
    scene.render.use_sequencer = False  # render the 3D scene, not Marionette's strips
    scene.render.use_compositing = False
    scene.view_settings.view_transform = "Standard"
    scene.display.shading.light = "FLAT"
    scene.display.shading.color_type = "OBJECT"
    scene.render.image_settings.file_format = "PNG"
    scene.frame_set(1)
    scene.render.filepath = str(Path(folder) / "warmup.png")
    bpy.ops.render.render(write_still=True)  # first render sets up the GPU context
    start = time.perf_counter()
    for frame in range(1, WORKBENCH_FRAMES + 1):
        scene.frame_set(frame)
        scene.render.filepath = str(Path(folder) / f"{frame:06d}.png")
        bpy.ops.render.render(write_still=True)
    return (time.perf_counter() - start) / WORKBENCH_FRAMES


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--zip", required=True)
    args = parser.parse_args()
    import bpy

    bpy.ops.wm.read_factory_settings(use_empty=True)
    bpy.ops.extensions.package_install_files(filepath=str(Path(args.zip).resolve()), repo="user_default",
                                             enable_on_install=True)
    scene, rig = build_rigify_scene()
    work = Path(tempfile.mkdtemp(prefix="marionette-bench-"))
    bpy.ops.wm.save_as_mainfile(filepath=str(work / "bench.blend"))
    scene.marionette.characters.add().object = rig
    scene.marionette.pose_style = "dwpose"

    frame_set_seconds = time_frame_set(scene)
    bpy.ops.marionette.render_control_maps(frame_start=1, frame_end=24)  # warm-up (caches, thread pool)
    start = time.perf_counter()
    bpy.ops.marionette.render_control_maps()
    marionette_seconds = (time.perf_counter() - start) / FRAMES
    written = len(list((work / "marionette" / "control" / "pose").iterdir()))
    assert written == FRAMES, written

    add_mesh_pose_rig(rig)
    workbench_seconds = time_workbench(scene, work / "workbench")

    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, {platform.python_implementation()} "
          f"{platform.python_version()}, Blender {bpy.app.version_string}")
    print(f"rig: Rigify generated human ({len(rig.data.bones)} bones), {FRAMES} animated frames, "
          f"{WIDTH}x{HEIGHT}, dwpose")
    print(f"rig evaluation (scene.frame_set) alone: {frame_set_seconds * 1000:.2f} ms/frame")
    print(f"Marionette render_control_maps: {marionette_seconds * 1000:.2f} ms/frame = "
          f"{1 / marionette_seconds:.0f} frames/s")
    print(f"Workbench mesh pose rig ({WORKBENCH_FRAMES} frames): {workbench_seconds * 1000:.1f} ms/frame = "
          f"{1 / workbench_seconds:.1f} frames/s")
    print(f"speed-up over Workbench: {workbench_seconds / marionette_seconds:.0f}x")
    return 0


if __name__ == "__main__":
    code = main()
    sys.stdout.flush()
    os._exit(code)
