"""The Marionette demo rig: a humanoid armature with fingers and face helper bones, and a keyed
four-second motion (arm gestures, a wave, a step and a turn). Runs inside Blender or with bpy.

Armature space: metres, Z up, the character faces -Y (Blender's front view looks at its face),
its left is +X. Bone names are the ones rigs/presets/demo.json maps.
"""

from __future__ import annotations

import math

import bpy
from mathutils import Matrix, Quaternion, Vector

FPS = 24
FRAME_END = 96  # four seconds

# name: (head, tail, parent) for the character's left side and the centre line; the right side
# mirrors the ".L" bones across X.
_CENTRE = {
    "pelvis": ((0, 0, 0.98), (0, 0, 1.10), None),
    "spine": ((0, 0, 1.10), (0, 0, 1.30), "pelvis"),
    "chest": ((0, 0, 1.30), (0, 0, 1.45), "spine"),
    "neck": ((0, 0, 1.45), (0, 0, 1.55), "chest"),
    "head": ((0, 0, 1.55), (0, 0, 1.76), "neck"),
    "nose": ((0, -0.03, 1.62), (0, -0.115, 1.615), "head"),
}
_LEFT = {
    "eye.L": ((0.032, -0.075, 1.665), (0.032, -0.095, 1.665), "head"),
    "ear.L": ((0.078, 0.0, 1.64), (0.085, 0.01, 1.67), "head"),
    "clavicle.L": ((0.02, 0.0, 1.43), (0.17, 0.0, 1.43), "chest"),
    "upper_arm.L": ((0.17, 0.0, 1.43), (0.45, 0.0, 1.43), "clavicle.L"),
    "lower_arm.L": ((0.45, 0.0, 1.43), (0.70, 0.0, 1.43), "upper_arm.L"),
    "hand.L": ((0.70, 0.0, 1.43), (0.78, 0.0, 1.43), "lower_arm.L"),
    "upper_leg.L": ((0.09, 0.0, 0.96), (0.09, -0.01, 0.53), "pelvis"),
    "lower_leg.L": ((0.09, -0.01, 0.53), (0.09, 0.0, 0.10), "upper_leg.L"),
    "foot.L": ((0.09, 0.0, 0.10), (0.09, -0.12, 0.03), "lower_leg.L"),
    "toes.L": ((0.09, -0.12, 0.03), (0.09, -0.19, 0.02), "foot.L"),
    "heel.L": ((0.09, 0.045, 0.0), (0.09, 0.045, 0.04), "foot.L"),
}
# Finger joints along each finger (x, y) at the hand's height, base to tip.
_FINGERS = {
    "thumb": [(0.715, -0.025, 1.42), (0.745, -0.055, 1.415), (0.765, -0.075, 1.41), (0.785, -0.09, 1.405)],
    "index": [(0.78, -0.025, 1.43), (0.82, -0.026, 1.43), (0.845, -0.026, 1.43), (0.865, -0.026, 1.43)],
    "middle": [(0.78, -0.008, 1.43), (0.825, -0.008, 1.43), (0.852, -0.008, 1.43), (0.876, -0.008, 1.43)],
    "ring": [(0.78, 0.01, 1.43), (0.82, 0.01, 1.43), (0.845, 0.01, 1.43), (0.866, 0.01, 1.43)],
    "pinky": [(0.775, 0.027, 1.425), (0.805, 0.027, 1.425), (0.825, 0.027, 1.425), (0.842, 0.027, 1.425)],
}
for _finger, _joints in _FINGERS.items():
    for _i in range(3):
        _LEFT[f"{_finger}{_i + 1}.L"] = (_joints[_i], _joints[_i + 1], "hand.L" if _i == 0 else f"{_finger}{_i}.L")


def _mirror(name: str) -> str:
    return name[:-2] + ".R" if name.endswith(".L") else name


def bone_layout() -> dict[str, tuple[tuple, tuple, str | None]]:
    layout = dict(_CENTRE)
    for name, (head, tail, parent) in _LEFT.items():
        layout[name] = (head, tail, parent)
        mirror = lambda p: (-p[0], p[1], p[2])  # noqa: E731
        layout[_mirror(name)] = (mirror(head), mirror(tail), _mirror(parent) if parent else None)
    return layout


def build_demo_rig(name: str = "DemoRig", keyed: bool = True) -> bpy.types.Object:
    """Create the demo armature in the active scene, with its keyed motion unless keyed=False."""
    data = bpy.data.armatures.new(name)
    obj = bpy.data.objects.new(name, data)
    bpy.context.scene.collection.objects.link(obj)
    bpy.context.view_layer.objects.active = obj
    bpy.ops.object.mode_set(mode="EDIT")
    layout = bone_layout()
    for bone_name, (head, tail, _parent) in layout.items():
        edit_bone = data.edit_bones.new(bone_name)
        edit_bone.head, edit_bone.tail = head, tail
        edit_bone.roll = 0.0
    for bone_name, (_head, _tail, parent) in layout.items():
        if parent:
            data.edit_bones[bone_name].parent = data.edit_bones[parent]
            data.edit_bones[bone_name].use_connect = False
    bpy.ops.object.mode_set(mode="OBJECT")
    for pose_bone in obj.pose.bones:
        pose_bone.rotation_mode = "QUATERNION"
    if keyed:
        key_demo_motion(obj)
    return obj


def _rotation(obj: bpy.types.Object, bone: str, axis: str, degrees: float) -> Quaternion:
    """A pose rotation for `bone` about an armature-space axis at rest (X left, Y back, Z up)."""
    rest = obj.data.bones[bone].matrix_local.to_3x3()
    turn = Matrix.Rotation(math.radians(degrees), 3, axis)
    return (rest.inverted() @ turn @ rest).to_quaternion()


def _key(obj, frame: int, poses: dict[str, list[tuple[str, float]]], pelvis_location=None):
    for bone, rotations in poses.items():
        quaternion = Quaternion()
        for axis, degrees in rotations:
            quaternion = quaternion @ _rotation(obj, bone, axis, degrees)
        pose_bone = obj.pose.bones[bone]
        pose_bone.rotation_quaternion = quaternion
        pose_bone.keyframe_insert("rotation_quaternion", frame=frame)
    if pelvis_location is not None:
        pelvis = obj.pose.bones["pelvis"]
        rest = obj.data.bones["pelvis"].matrix_local.to_3x3()
        pelvis.location = rest.inverted() @ Vector(pelvis_location)
        pelvis.keyframe_insert("location", frame=frame)


def key_demo_motion(obj: bpy.types.Object) -> None:
    """Arms come down, the right hand waves, the right leg steps forward, then the body turns."""
    fingers_open = {f"{f}{i}.{s}": [("Y", 0.0)] for f in _FINGERS for i in (1, 2, 3) for s in "LR"}
    fingers_curled = {f"{f}{i}.{s}": [("Y", 35.0 if s == "L" else -35.0)] for f in _FINGERS for i in (1, 2, 3)
                      for s in "LR"}
    arms_down = {"upper_arm.L": [("Y", 70)], "upper_arm.R": [("Y", -70)],
                 "lower_arm.L": [("Y", 10)], "lower_arm.R": [("Y", -10)]}
    still_legs = {"upper_leg.L": [("X", 0)], "upper_leg.R": [("X", 0)],
                  "lower_leg.L": [("X", 0)], "lower_leg.R": [("X", 0)], "pelvis": [("Z", 0)], "head": [("Z", 0)]}
    _key(obj, 1, {**arms_down, **still_legs, **fingers_open}, pelvis_location=(0, 0, 0))
    # The right arm rises and waves (the forearm swings in the frontal plane).
    _key(obj, 16, {"upper_arm.R": [("Y", 45)], "lower_arm.R": [("Y", 40)], **fingers_open})
    for frame, swing in ((22, 10), (28, 60), (34, 10), (40, 60)):
        _key(obj, frame, {"lower_arm.R": [("Y", swing)]})
    # A step: the right leg swings forward while the pelvis travels, then the left leg follows.
    _key(obj, 30, {**still_legs, "upper_arm.L": [("Y", 70)]}, pelvis_location=(0, 0, 0))
    _key(obj, 40, {"upper_leg.R": [("X", -30)], "lower_leg.R": [("X", 35)],
                   "upper_leg.L": [("X", 8)]}, pelvis_location=(0, -0.12, -0.02))
    _key(obj, 50, {"upper_leg.R": [("X", -12)], "lower_leg.R": [("X", 5)],
                   "upper_leg.L": [("X", 18)], "lower_leg.L": [("X", 30)]}, pelvis_location=(0, -0.25, -0.03))
    _key(obj, 60, {"upper_leg.R": [("X", 0)], "lower_leg.R": [("X", 0)], "upper_leg.L": [("X", 0)],
                   "lower_leg.L": [("X", 0)], "pelvis": [("Z", 0)], "head": [("Z", 0)]},
         pelvis_location=(0, -0.3, 0))
    # Arm gestures while turning: the right arm comes down, the left points forward, fingers curl.
    _key(obj, 52, {"upper_arm.R": [("Y", 45)], "lower_arm.R": [("Y", 40)], **fingers_open})
    _key(obj, 68, {"upper_arm.R": [("Y", -70)], "lower_arm.R": [("Y", -10)],
                   "upper_arm.L": [("Z", -60), ("Y", 10)], "lower_arm.L": [("Z", -20)], **fingers_curled})
    _key(obj, 96, {"pelvis": [("Z", 75)], "head": [("Z", 15)], "upper_arm.L": [("Y", 70)],
                   "lower_arm.L": [("Y", 10)], **fingers_open}, pelvis_location=(0, -0.3, 0))
    scene = bpy.context.scene
    scene.frame_start, scene.frame_end = 1, FRAME_END
    scene.render.fps = FPS


def add_front_camera(name: str = "Camera", distance: float = 2.9, height: float = 0.95,
                     lens: float = 35.0) -> bpy.types.Object:
    """A camera in front of the character (on -Y) looking at it, set as the scene camera."""
    data = bpy.data.cameras.new(name)
    data.lens = lens
    camera = bpy.data.objects.new(name, data)
    camera.location = (0.0, -distance, height)
    camera.rotation_euler = (math.radians(90), 0.0, 0.0)
    bpy.context.scene.collection.objects.link(camera)
    bpy.context.scene.camera = camera
    return camera


# The demo character's body: simple skinned shapes in four materials, built around the rig's pose
# at one frame, only to render the reference image (the rig is what animates).
_BODY_PARTS = {
    "shirt": (("spine", "chest", "clavicle.L", "clavicle.R", "upper_arm.L", "upper_arm.R", "lower_arm.L",
               "lower_arm.R"), (0.20, 0.36, 0.62, 1.0)),
    "trousers": (("pelvis", "upper_leg.L", "upper_leg.R", "lower_leg.L", "lower_leg.R"), (0.16, 0.17, 0.22, 1.0)),
    "shoes": (("foot.L", "foot.R", "toes.L", "toes.R"), (0.35, 0.18, 0.08, 1.0)),
    "skin": (("neck", "hand.L", "hand.R") + tuple(f"{f}{i}.{s}" for f in _FINGERS for i in (1, 2, 3) for s in "LR"),
             (0.93, 0.72, 0.58, 1.0)),
}
# Extra segments that join a part's bones into one piece: ((bone, at), (bone, at)), at 0 head, 1 tail.
_BRIDGES = {
    "shirt": ((("chest", 1.0), ("clavicle.L", 0.0)), (("chest", 1.0), ("clavicle.R", 0.0)),
              (("pelvis", 0.4), ("spine", 0.0))),
    "trousers": ((("pelvis", 0.0), ("upper_leg.L", 0.0)), (("pelvis", 0.0), ("upper_leg.R", 0.0))),
}
_RADII = {"pelvis": 0.15, "spine": 0.15, "chest": 0.16, "clavicle": 0.07, "upper_arm": 0.05, "lower_arm": 0.042,
          "upper_leg": 0.075, "lower_leg": 0.055, "foot": 0.045, "toes": 0.035, "neck": 0.05, "hand": 0.035}


def _radius(bone: str) -> float:
    base = bone.split(".")[0]
    return _RADII.get(base, 0.011)  # fingers


def build_demo_body(rig: bpy.types.Object, frame: int = 1) -> list[bpy.types.Object]:
    """Meshes (skin modifier over the bones' posed segments) and a head, in the rig's pose at `frame`."""
    scene = bpy.context.scene
    scene.frame_set(frame)
    depsgraph = bpy.context.evaluated_depsgraph_get()
    evaluated = rig.evaluated_get(depsgraph)
    world = evaluated.matrix_world
    parts = []
    for part, (bones, colour) in _BODY_PARTS.items():
        material = bpy.data.materials.new(f"Demo {part}")
        material.diffuse_color = colour
        vertices, edges, radii, index_of = [], [], [], {}

        def vertex(position, radius):  # joints shared by two bones become one vertex
            key = tuple(round(c, 4) for c in position)
            if key not in index_of:
                index_of[key] = len(vertices)
                vertices.append(position)
                radii.append(radius)
            return index_of[key]

        for bone in bones:
            pose_bone = evaluated.pose.bones[bone]
            radius = _radius(bone)
            edges.append((vertex(world @ pose_bone.head, radius), vertex(world @ pose_bone.tail, radius)))
        for (bone_a, at_a), (bone_b, at_b) in _BRIDGES.get(part, ()):
            a, b = evaluated.pose.bones[bone_a], evaluated.pose.bones[bone_b]
            edges.append((vertex(world @ a.head.lerp(a.tail, at_a), _radius(bone_a)),
                          vertex(world @ b.head.lerp(b.tail, at_b), _radius(bone_b))))
        mesh = bpy.data.meshes.new(f"Demo {part}")
        mesh.from_pydata([tuple(v) for v in vertices], edges, [])
        obj = bpy.data.objects.new(f"Demo {part}", mesh)
        scene.collection.objects.link(obj)
        obj.modifiers.new("Skin", "SKIN")
        component = list(range(len(vertices)))  # union-find: the skin modifier wants a root per piece

        def find(i):
            while component[i] != i:
                component[i] = component[component[i]]
                i = component[i]
            return i

        for a, b in edges:
            component[find(a)] = find(b)
        roots = set()
        for index, (skin_vertex, radius) in enumerate(zip(mesh.skin_vertices[0].data, radii)):
            skin_vertex.radius = (radius, radius)
            skin_vertex.use_root = find(index) not in roots
            roots.add(find(index))
        obj.modifiers.new("Smooth", "SUBSURF").levels = 2
        obj.data.materials.append(material)
        parts.append(obj)
    head_bone = evaluated.pose.bones["head"]
    centre = world @ head_bone.head.lerp(head_bone.tail, 0.45)
    bpy.ops.mesh.primitive_uv_sphere_add(radius=0.115, location=centre, segments=48, ring_count=24)
    head = bpy.context.object
    head.name = "Demo head"
    head.scale = (0.9, 1.0, 1.12)
    head.data.materials.append(bpy.data.materials["Demo skin"])
    for side in (-1, 1):
        eye = world @ evaluated.pose.bones["eye.R" if side < 0 else "eye.L"].head
        eye = centre + (eye - centre).normalized() * 0.1  # on the face's surface
        bpy.ops.mesh.primitive_uv_sphere_add(radius=0.016, location=eye, segments=16, ring_count=8)
        pupil = bpy.context.object
        material = bpy.data.materials.get("Demo eye") or bpy.data.materials.new("Demo eye")
        material.diffuse_color = (0.05, 0.05, 0.06, 1.0)
        pupil.data.materials.append(material)
        parts.append(pupil)
    eye_mid = (world @ evaluated.pose.bones["eye.L"].head + world @ evaluated.pose.bones["eye.R"].head) / 2
    mouth = centre + (eye_mid - Vector((0, 0, 0.06)) - centre).normalized() * 0.112
    bpy.ops.mesh.primitive_uv_sphere_add(radius=0.022, location=mouth, segments=24, ring_count=12)
    lips = bpy.context.object
    lips.scale = (1.0, 0.5, 0.4)
    lips_material = bpy.data.materials.new("Demo lips")
    lips_material.diffuse_color = (0.55, 0.16, 0.16, 1.0)
    lips.data.materials.append(lips_material)
    parts.append(lips)
    hair_material = bpy.data.materials.new("Demo hair")
    hair_material.diffuse_color = (0.22, 0.12, 0.06, 1.0)
    bpy.ops.mesh.primitive_uv_sphere_add(radius=0.11, location=centre + Vector((0, 0.025, 0.035)), segments=32,
                                         ring_count=16)
    hair = bpy.context.object
    hair.scale = (0.95, 1.0, 1.05)
    hair.data.materials.append(hair_material)
    return parts + [head, hair]


def _distance_to_bone(point: Vector, pose_bone) -> float:
    segment = pose_bone.tail - pose_bone.head
    along = min(max((point - pose_bone.head).dot(segment) / max(segment.length_squared, 1e-12), 0.0), 1.0)
    return (point - pose_bone.head.lerp(pose_bone.tail, along)).length


def bind_demo_body(rig: bpy.types.Object, parts: list[bpy.types.Object], frame: int = 1) -> None:
    """Make build_demo_body's meshes (built in the pose of `frame`) follow the rig: each skin mesh's
    joints bound to the nearest of its bones by an Armature modifier under its Skin modifier, the
    head's spheres parented to the head bone."""
    scene = bpy.context.scene
    scene.frame_set(frame)
    evaluated = rig.evaluated_get(bpy.context.evaluated_depsgraph_get())
    to_armature = rig.matrix_world.inverted()
    for obj in parts:
        part = obj.name.removeprefix("Demo ")
        if part not in _BODY_PARTS:
            world = obj.matrix_world.copy()
            obj.parent, obj.parent_type, obj.parent_bone = rig, "BONE", "head"
            obj.matrix_world = world
            continue
        groups = {}
        for vertex in obj.data.vertices:
            point = to_armature @ (obj.matrix_world @ vertex.co)
            name = min(_BODY_PARTS[part][0], key=lambda bone: _distance_to_bone(point, evaluated.pose.bones[bone]))
            # Back to the rest pose, where the Armature modifier binds.
            vertex.co = rig.data.bones[name].matrix_local @ evaluated.pose.bones[name].matrix.inverted() @ point
            groups.setdefault(name, []).append(vertex.index)
        obj.parent = rig
        obj.matrix_parent_inverse.identity()
        obj.matrix_basis.identity()
        for name, indices in groups.items():
            obj.vertex_groups.new(name=name).add(indices, 1.0, "REPLACE")
        obj.modifiers.new("Armature", "ARMATURE").object = rig
        obj.modifiers.move(len(obj.modifiers) - 1, 0)  # before the Skin modifier: the skin grows on the posed joints


def render_reference_image(path: str, frame: int = 1) -> None:
    """Render the scene camera's view at `frame` with Workbench (studio light, material colours,
    a plain backdrop) to a PNG: the reference image of the demo character."""
    scene = bpy.context.scene
    scene.frame_set(frame)
    scene.render.engine = "BLENDER_WORKBENCH"
    scene.display.shading.light = "STUDIO"
    scene.display.shading.color_type = "MATERIAL"
    scene.display.shading.show_cavity = True
    scene.view_settings.view_transform = "Standard"
    if scene.world is None:
        scene.world = bpy.data.worlds.new("Backdrop")
    scene.world.color = (0.62, 0.66, 0.70)
    scene.render.film_transparent = False
    scene.render.use_sequencer = False
    scene.render.image_settings.file_format = "PNG"
    scene.render.image_settings.color_mode = "RGB"
    scene.render.filepath = path
    bpy.ops.render.render(write_still=True)
    scene.render.use_sequencer = True


# --- the demo face ----------------------------------------------------------------------------

ARKIT_SHAPES = ("jawOpen", "mouthSmileLeft", "mouthSmileRight", "eyeBlinkLeft", "eyeBlinkRight", "browInnerUp",
                "browDownLeft", "browDownRight", "mouthFunnel", "mouthPucker")

# MediaPipe landmark groups (subject's left/right) the shape keys move.
_UPPER_LID = {"L": (466, 388, 387, 386, 385, 384, 398), "R": (246, 161, 160, 159, 158, 157, 173)}
_LOWER_LID = {"L": (249, 390, 373, 374, 380, 381, 382), "R": (7, 163, 144, 145, 153, 154, 155)}
_BROW = {"L": (276, 283, 282, 295, 285, 300, 293, 334, 296, 336), "R": (46, 53, 52, 65, 55, 70, 63, 105, 66, 107)}
_INNER_BROW = {"L": (285, 295, 336, 296), "R": (55, 65, 107, 66)}
_MOUTH_CORNER = {"L": 291, "R": 61}
_UPPER_LIP = (185, 40, 39, 37, 0, 267, 269, 270, 409, 191, 80, 81, 82, 13, 312, 311, 310, 415)
_LIPS = (61, 146, 91, 181, 84, 17, 314, 405, 321, 375, 291, 185, 40, 39, 37, 0, 267, 269, 270, 409,
         78, 95, 88, 178, 87, 14, 317, 402, 318, 324, 308, 191, 80, 81, 82, 13, 312, 311, 310, 415)


def _falloff(vertices, centre, radius):
    distance = ((vertices - centre) ** 2).sum(axis=1) ** 0.5
    t = (1.0 - distance / radius).clip(0.0, 1.0)
    return t * t * (3 - 2 * t)  # smooth, exactly zero beyond the radius


def _shape_offsets(vertices):
    """Per ARKit shape, an (N, 3) offset of the face's vertices (metres, face-local)."""
    import numpy as np

    offsets = {name: np.zeros_like(vertices) for name in ARKIT_SHAPES}
    for side in "LR":
        upper, lower = _UPPER_LID[side], _LOWER_LID[side]
        for u, l in zip(upper, lower):  # the lid closes onto the lower lid, its neighbours follow
            move = (vertices[l] - vertices[u]) * 0.9
            offsets[f"eyeBlink{'Left' if side == 'L' else 'Right'}"] += \
                _falloff(vertices, vertices[u], 0.006)[:, None] * move
        brow_centre = vertices[list(_BROW[side])].mean(axis=0)
        offsets[f"browDown{'Left' if side == 'L' else 'Right'}"][:, 2] -= 0.005 * _falloff(vertices, brow_centre, 0.03)
        for index in _INNER_BROW[side]:
            offsets["browInnerUp"][:, 2] += 0.0025 * _falloff(vertices, vertices[index], 0.012)
        corner = vertices[_MOUTH_CORNER[side]]
        sign = 1.0 if side == "L" else -1.0
        smile = _falloff(vertices, corner, 0.018)[:, None] * np.array([0.004 * sign, 0.0, 0.006])
        offsets[f"mouthSmile{'Left' if side == 'L' else 'Right'}"] += smile
    lips = np.zeros(len(vertices), dtype=bool)
    lips[list(_LIPS)] = True
    mouth_centre = vertices[list(_LIPS)].mean(axis=0)
    near_mouth = _falloff(vertices, mouth_centre, 0.035)
    offsets["mouthFunnel"][:, 1] -= 0.006 * near_mouth  # forward is -Y
    offsets["mouthFunnel"] += (vertices - mouth_centre) * 0.15 * near_mouth[:, None] * lips[:, None]
    offsets["mouthPucker"][:, 1] -= 0.007 * near_mouth
    offsets["mouthPucker"][:, 0] -= (vertices[:, 0] - mouth_centre[0]) * 0.35 * near_mouth
    # jawOpen: everything under the mouth line turns down about a hinge behind the cheeks.
    upper = np.zeros(len(vertices), dtype=bool)
    upper[list(_UPPER_LIP)] = True
    mouth_line = (vertices[13, 2] + vertices[14, 2]) / 2
    below = ((mouth_line - vertices[:, 2]) / 0.006).clip(0.0, 1.0) * ~upper
    hinge = np.array([0.0, vertices[:, 1].max(), vertices[234, 2]])
    angle = np.radians(16) * below
    relative = vertices - hinge
    rotated_y = relative[:, 1] * np.cos(angle) - relative[:, 2] * np.sin(angle)
    rotated_z = relative[:, 1] * np.sin(angle) + relative[:, 2] * np.cos(angle)
    offsets["jawOpen"][:, 1] = rotated_y - relative[:, 1]
    offsets["jawOpen"][:, 2] = rotated_z - relative[:, 2]
    return offsets


def build_demo_face(rig: bpy.types.Object, canonical_file) -> bpy.types.Object:
    """The demo face: MediaPipe's canonical face mesh (so landmark i is vertex i) on the demo head,
    parented to the head bone, with ARKit-named shape keys. Hidden in renders: it drives the face
    landmarks, the reference image shows the character."""
    import json

    import numpy as np

    data = json.loads(open(canonical_file, encoding="utf-8").read())
    raw = np.array(data["vertices"]) * 0.01
    vertices = np.stack([raw[:, 0], -raw[:, 2], raw[:, 1]], axis=1)  # Blender axes, facing -Y
    head = rig.data.bones["head"]
    eyes = (rig.data.bones["eye.L"].head_local + rig.data.bones["eye.R"].head_local) / 2
    eye_ring = list(_UPPER_LID["L"] + _LOWER_LID["L"] + _UPPER_LID["R"] + _LOWER_LID["R"])
    offset = np.array(eyes) - vertices[eye_ring].mean(axis=0)
    offset[1] += 0.012  # sit the canonical surface slightly behind the eye bones' tips
    placed = vertices + offset
    mesh = bpy.data.meshes.new("DemoFace")
    mesh.from_pydata([tuple(v) for v in placed], [], [tuple(t) for t in data["triangles"]])
    face = bpy.data.objects.new("DemoFace", mesh)
    bpy.context.scene.collection.objects.link(face)
    face.hide_render = True
    face.display_type = "WIRE"
    # Parent to the head bone, keeping the rest placement (bone parenting measures from the tail).
    face.parent, face.parent_type, face.parent_bone = rig, "BONE", "head"
    face.matrix_parent_inverse = (rig.matrix_world @ Matrix.Translation(head.tail_local) @
                                  head.matrix_local.to_3x3().to_4x4()).inverted()
    face.shape_key_add(name="Basis")
    for name, shape in _shape_offsets(placed).items():
        key = face.shape_key_add(name=name, from_mix=False)
        key.data.foreach_set("co", (placed + shape).astype(np.float32).reshape(-1))
    return face


def key_demo_expression(face: bpy.types.Object) -> None:
    """A short expression over the demo motion: a smile, a blink, the jaw opening, raised brows."""
    keys = face.data.shape_keys.key_blocks
    timeline = {
        "jawOpen": ((1, 0), (20, 0), (30, 1), (40, 0.2), (50, 0.8), (60, 0)),
        "mouthSmileLeft": ((1, 0), (60, 0), (72, 1), (96, 0.6)),
        "mouthSmileRight": ((1, 0), (60, 0), (72, 1), (96, 0.6)),
        "eyeBlinkLeft": ((1, 0), (10, 0), (13, 1), (16, 0), (80, 0), (83, 1), (86, 0)),
        "eyeBlinkRight": ((1, 0), (10, 0), (13, 1), (16, 0), (80, 0), (83, 1), (86, 0)),
        "browInnerUp": ((1, 0), (22, 1), (40, 0)),
    }
    for name, points in timeline.items():
        for frame, value in points:
            keys[name].value = value
            keys[name].keyframe_insert("value", frame=frame)
