"""The mannequin of the driving video: a neutral body Marionette builds for a character from its
armature, for rigs without meshes of their own (BVH mocap).

The body is laid out from the character's canonical keypoints on its calibration pose (the rig
preset's: the rest pose or the start frame), so it has human proportions on any skeleton: an
elliptical torso from the hips to the shoulders, neck and head, tapered limbs, hands with fingers
where the rig maps them (else mittens), feet from heel to toes. Every vertex is bound with full
weight to the nearest deform bone of its part (the bones between the part's two keypoints in the
hierarchy), through vertex groups and an Armature modifier: Blender moves it with the rig. A bound
face mesh is copied beside it with its eyes, brows and lips painted dark, so the face rig's motion
shows. Sizes follow the shoulder width.

`body_geometry` is plain numpy; `build_mannequin` makes the Blender objects, `remove_mannequin`
takes them away again.
"""

from __future__ import annotations

from dataclasses import dataclass

import bpy
import numpy as np

from ..core.face import (LEFT_BROW, LEFT_EYE, LEFT_IRIS, LIPS_INNER_BOTTOM_LEFT, LIPS_INNER_BOTTOM_RIGHT,
                         LIPS_INNER_TOP_LEFT, LIPS_INNER_TOP_RIGHT, LIPS_OUTER_BOTTOM_LEFT, LIPS_OUTER_BOTTOM_RIGHT,
                         LIPS_OUTER_TOP_LEFT, LIPS_OUTER_TOP_RIGHT, RIGHT_BROW, RIGHT_EYE, RIGHT_IRIS)
from ..face.binding import bound_faces, load_binding
from ..rig.mapping import MappingError, character_frame
from ..rig.sampling import build_mapping, preset_for
from ..shared.jobs import MarionetteError

COLOR_ATTRIBUTE = "marionette_mannequin"
SKIN = (0.78, 0.70, 0.62, 1.0)
FEATURES = (0.10, 0.07, 0.06, 1.0)  # eyes, brows, irises
LIP_COLOR = (0.45, 0.16, 0.15, 1.0)
SEGMENTS = 16  # around each limb
FINGERS = ("thumb", "index", "middle", "ring", "pinky")
LIPS = (LIPS_OUTER_TOP_LEFT + LIPS_OUTER_TOP_RIGHT + LIPS_OUTER_BOTTOM_LEFT + LIPS_OUTER_BOTTOM_RIGHT +
        LIPS_INNER_TOP_LEFT + LIPS_INNER_TOP_RIGHT + LIPS_INNER_BOTTOM_LEFT + LIPS_INNER_BOTTOM_RIGHT)


class MannequinError(MarionetteError):
    """A mannequin that cannot be built; the message names the armature and the fix."""


@dataclass
class Bone:
    """A bone on the calibration pose (armature space) and what the mannequin needs of it."""
    head: np.ndarray
    tail: np.ndarray
    parent: str | None
    deform: bool


@dataclass
class Part:
    """A closed surface of the body, and the bones its vertices may be bound to."""
    name: str
    vertices: np.ndarray  # (N, 3), armature space, calibration pose
    faces: list[tuple[int, ...]]
    bones: list[str]


# --- geometry --------------------------------------------------------------------------------------

def tube(rows: list[tuple[np.ndarray, float, float]], across: np.ndarray, depth: np.ndarray,
         start_pole: np.ndarray, end_pole: np.ndarray, segments: int = SEGMENTS):
    """A closed tube through elliptical rings (centre, radius across, radius in depth), the two axes
    given; poles close its ends. Returns (vertices, faces)."""
    angles = np.linspace(0.0, 2 * np.pi, segments, endpoint=False)
    ring = np.stack([np.cos(angles), np.sin(angles)], axis=1)
    vertices = [start_pole]
    for centre, radius_across, radius_depth in rows:
        vertices.extend(centre + ring[:, :1] * radius_across * across + ring[:, 1:] * radius_depth * depth)
    vertices.append(end_pole)
    faces = [(0, 1 + (i + 1) % segments, 1 + i) for i in range(segments)]
    for row in range(len(rows) - 1):
        first = 1 + row * segments
        faces += [(first + i, first + (i + 1) % segments, first + segments + (i + 1) % segments, first + segments + i)
                  for i in range(segments)]
    last, end = 1 + (len(rows) - 1) * segments, len(vertices) - 1
    faces += [(last + i, last + (i + 1) % segments, end) for i in range(segments)]
    return np.asarray(vertices, dtype=np.float64), faces


def _perpendicular(direction: np.ndarray, hint: np.ndarray) -> np.ndarray:
    """A unit vector across `direction`, as close to `hint` as can be."""
    across = hint - direction * np.dot(hint, direction)
    if np.linalg.norm(across) < 1e-6:
        across = np.cross(direction, [0.0, 0.0, 1.0] if abs(direction[2]) < 0.9 else [1.0, 0.0, 0.0])
    return across / np.linalg.norm(across)


def capsule(start: np.ndarray, end: np.ndarray, start_radius: float, end_radius: float, hint: np.ndarray,
            flatten: float = 1.0, cap_rings: int = 3):
    """A tapered limb with rounded ends from `start` to `end`; `flatten` < 1 makes its section an
    ellipse, thinner along the axis across `hint`."""
    axis = end - start
    length = max(float(np.linalg.norm(axis)), 1e-6)
    direction = axis / length
    across = _perpendicular(direction, hint)
    depth = np.cross(direction, across)
    rows = []
    for k in range(cap_rings, 0, -1):  # the start cap, from near the pole to the equator
        angle = np.pi / 2 * k / (cap_rings + 1)
        rows.append((start - direction * start_radius * np.sin(angle), start_radius * np.cos(angle),
                     start_radius * np.cos(angle) * flatten))
    rows += [(start, start_radius, start_radius * flatten), (end, end_radius, end_radius * flatten)]
    for k in range(1, cap_rings + 1):
        angle = np.pi / 2 * k / (cap_rings + 1)
        rows.append((end + direction * end_radius * np.sin(angle), end_radius * np.cos(angle),
                     end_radius * np.cos(angle) * flatten))
    return tube(rows, across, depth, start - direction * start_radius, end + direction * end_radius)


def ellipsoid(centre: np.ndarray, axes: np.ndarray, radii: tuple[float, float, float], rings: int = 10):
    """An ellipsoid; axes' columns: across, depth, up; radii along them."""
    across, depth, up = axes[:, 0], axes[:, 1], axes[:, 2]
    rows = []
    for k in range(1, rings):
        angle = -np.pi / 2 + np.pi * k / rings
        rows.append((centre + up * radii[2] * np.sin(angle), radii[0] * np.cos(angle), radii[1] * np.cos(angle)))
    return tube(rows, across, depth, centre - up * radii[2], centre + up * radii[2])


# --- the body --------------------------------------------------------------------------------------

def bone_chain(bones: dict[str, Bone], first: str, second: str) -> list[str]:
    """The bones from `first` and from `second` up to their nearest common ancestor, that included."""
    def ancestors(name):
        found = []
        while name is not None:
            found.append(name)
            name = bones[name].parent
        return found
    up_first, up_second = ancestors(first), ancestors(second)
    common = next((name for name in up_second if name in up_first), None)
    if common is None:
        return list(dict.fromkeys(up_first + up_second))
    return list(dict.fromkeys(up_first[:up_first.index(common) + 1] + up_second[:up_second.index(common) + 1]))


def body_geometry(points: dict[str, np.ndarray], point_bones: dict[str, str], bones: dict[str, Bone],
                  has_face: bool) -> list[Part]:
    """The mannequin's parts from the canonical keypoints on the calibration pose (armature space)
    and the bones that carry them."""
    axes, shoulder_width = character_frame(points)
    left, forward, up = axes[:, 0], axes[:, 1], axes[:, 2]
    S = shoulder_width
    parts: list[Part] = []

    def chain(*names: str) -> list[str]:
        found = []
        for first, second in zip(names, names[1:]):
            found += bone_chain(bones, point_bones[first], point_bones[second])
        return list(dict.fromkeys(found))

    def add(name, geometry, candidates):
        parts.append(Part(name, geometry[0], geometry[1], candidates))

    # Torso: elliptical rings from below the hips to the shoulders, bound to the spine between them.
    pelvis = (points["l_hip"] + points["r_hip"]) / 2
    neck = (points["l_shoulder"] + points["r_shoulder"]) / 2
    height = float(np.dot(neck - pelvis, up))
    hips = 0.5 * float(np.linalg.norm(points["l_hip"] - points["r_hip"])) + 0.14 * S
    chest = 0.44 * S
    waist = 0.82 * min(hips, chest)
    rows = [(pelvis + up * height * t, across, depth) for t, across, depth in (
        (-0.14, 0.86 * hips, 0.45 * hips), (0.0, hips, 0.58 * hips), (0.38, waist, 0.62 * waist),
        (0.7, chest, 0.55 * chest), (0.9, 0.96 * chest, 0.48 * chest), (1.0, 0.72 * chest, 0.36 * chest))]
    limbs = {point_bones[name] for name in ("l_hip", "r_hip", "l_shoulder", "r_shoulder")}
    spine = [name for name in chain("l_hip", "l_shoulder") + chain("r_hip", "r_shoulder") if name not in limbs]
    add("torso", tube(rows, left, forward, pelvis - up * height * 0.2, neck + up * height * 0.05),
        list(dict.fromkeys(spine)) or chain("l_hip", "l_shoulder"))

    # Neck and head, bound to the bones from the shoulders to the head.
    ears = float(np.linalg.norm(points["l_ear"] - points["r_ear"]))
    head_centre = (points["l_ear"] + points["r_ear"]) / 2 + up * 0.12 * ears
    neck_top = head_centre - up * 0.45 * ears
    add("neck", capsule(neck, neck_top, 0.27 * ears, 0.25 * ears, left),
        [name for name in chain("l_shoulder", "nose") + chain("r_shoulder", "nose") if name not in limbs])
    # With a bound face the head stays behind it, so the face mesh shows in front.
    depth = 0.42 * ears if has_face else 0.62 * ears
    centre = head_centre - forward * (0.12 * ears if has_face else -0.08 * ears)
    add("head", ellipsoid(centre, axes, (0.62 * ears, depth, 0.72 * ears)), chain("nose", "l_ear", "r_ear"))

    for side in ("l", "r"):
        p = {name: points[f"{side}_{name}"] for name in ("shoulder", "elbow", "wrist", "hip", "knee", "ankle")}
        add(f"{side}_upper_arm", capsule(p["shoulder"], p["elbow"], 0.16 * S, 0.12 * S, forward),
            chain(f"{side}_shoulder", f"{side}_elbow"))
        add(f"{side}_forearm", capsule(p["elbow"], p["wrist"], 0.12 * S, 0.085 * S, forward),
            chain(f"{side}_elbow", f"{side}_wrist"))
        add(f"{side}_thigh", capsule(p["hip"], p["knee"], 0.21 * S, 0.145 * S, forward),
            chain(f"{side}_hip", f"{side}_knee"))
        add(f"{side}_shin", capsule(p["knee"], p["ankle"], 0.135 * S, 0.09 * S, forward),
            chain(f"{side}_knee", f"{side}_ankle"))
        # Joints: a ball on the bone that turns about it, so a bent limb shows no gap.
        for joint, radius in (("shoulder", 0.16), ("elbow", 0.12), ("wrist", 0.085), ("hip", 0.2), ("knee", 0.14),
                              ("ankle", 0.09)):
            name = f"{side}_{joint}"
            add(f"{name}_joint", ellipsoid(p[joint], axes, (radius * S,) * 3, rings=8), chain(name, name))
        _add_foot(add, points, side, p, forward, up, S, chain)
        _add_hand(add, points, side, p, forward, up, S, chain)
    return parts


def _add_foot(add, points, side, p, forward, up, S, chain) -> None:
    """Heel to toes where the rig maps them; else a foot reaching forward from the ankle."""
    toes = [points[f"{side}_{name}"] for name in ("big_toe", "small_toe") if f"{side}_{name}" in points]
    if toes:
        tip = np.mean(toes, axis=0)
        heel = points.get(f"{side}_heel", p["ankle"] - forward * 0.12 * S - up * 0.12 * S)
        candidates = chain(f"{side}_ankle", f"{side}_big_toe" if f"{side}_big_toe" in points else f"{side}_small_toe")
    else:
        heel = p["ankle"] - forward * 0.1 * S - up * 0.12 * S
        tip = p["ankle"] + forward * 0.5 * S - up * 0.16 * S
        candidates = chain(f"{side}_ankle", f"{side}_ankle")
    add(f"{side}_foot", capsule(heel, tip, 0.085 * S, 0.065 * S, up, flatten=0.7), candidates)
    add(f"{side}_ankle", capsule(p["ankle"], heel + (tip - heel) * 0.3, 0.09 * S, 0.085 * S, forward), candidates)


def _add_hand(add, points, side, p, forward, up, S, chain) -> None:
    """A palm and five fingers where the rig maps them; else a mitten along the forearm."""
    wrist = p["wrist"]
    names = {finger: [f"{side}_{finger}{k}" for k in range(1, 5)] for finger in FINGERS}
    if all(name in points for joints in names.values() for name in joints):
        knuckles = [points[names[finger][0]] for finger in ("index", "middle", "ring", "pinky")]
        spread = float(np.linalg.norm(knuckles[0] - knuckles[3]))
        palm_end = np.mean(knuckles, axis=0)
        hint = knuckles[0] - knuckles[3]
        radius = max(spread * 0.14, 0.012 * S)
        add(f"{side}_palm", capsule(wrist, palm_end, spread * 0.42, spread * 0.5, hint, flatten=0.42),
            chain(f"{side}_wrist", f"{side}_middle1"))
        for finger, joints in names.items():
            path = [wrist, *[points[name] for name in joints]] if finger == "thumb" else [points[n] for n in joints]
            path_names = [f"{side}_wrist", *joints] if finger == "thumb" else joints
            for k in range(len(path) - 1):
                scale = 1.25 if finger == "thumb" else 1.0
                add(f"{side}_{finger}_{k}", capsule(path[k], path[k + 1], radius * scale, radius * scale * 0.85,
                                                    hint, cap_rings=2),
                    chain(path_names[k], path_names[k + 1]))
    else:
        direction = wrist - p["elbow"]
        direction /= max(float(np.linalg.norm(direction)), 1e-9)
        add(f"{side}_hand", capsule(wrist, wrist + direction * 0.36 * S, 0.075 * S, 0.06 * S, forward, flatten=0.5),
            chain(f"{side}_wrist", f"{side}_wrist"))


def bind_to_bones(part: Part, bones: dict[str, Bone]) -> list[str]:
    """Per vertex, the nearest deform bone among the part's (by distance to the bone's segment); the
    nearest deform bone of the whole armature where the part has none."""
    candidates = [name for name in part.bones if bones[name].deform] or \
        [name for name, bone in bones.items() if bone.deform]
    heads = np.array([bones[name].head for name in candidates])
    tails = np.array([bones[name].tail for name in candidates])
    segment = tails - heads
    lengths = np.maximum((segment ** 2).sum(axis=1), 1e-12)
    offsets = part.vertices[:, None, :] - heads[None]
    along = np.clip((offsets * segment[None]).sum(axis=2) / lengths[None], 0.0, 1.0)
    distances = np.linalg.norm(offsets - along[..., None] * segment[None], axis=2)
    return [candidates[i] for i in distances.argmin(axis=1)]


# --- in Blender ------------------------------------------------------------------------------------

def calibration_bones(armature: bpy.types.Object, depsgraph, calibration: str) -> tuple[dict, dict, dict]:
    """Bones on the calibration pose (armature space), and per bone the matrix that takes a point
    there back to the rest pose (what the Armature modifier binds to), and the calibration matrices."""
    rest = {bone.name: np.array(bone.matrix_local) for bone in armature.data.bones}
    if calibration == "rest":
        posed = rest
    else:
        posed = {pb.name: np.array(pb.matrix) for pb in armature.evaluated_get(depsgraph).pose.bones}
    bones = {}
    for bone in armature.data.bones:
        matrix = posed[bone.name]
        bones[bone.name] = Bone(matrix[:3, 3].copy(), (matrix @ np.array([0.0, bone.length, 0.0, 1.0]))[:3],
                                bone.parent.name if bone.parent else None, bone.use_deform)
    to_rest = {name: rest[name] @ np.linalg.inv(posed[name]) for name in rest}
    return bones, to_rest, posed


def build_mannequin(armature: bpy.types.Object, collection: bpy.types.Collection, depsgraph) -> list:
    """The mannequin of one armature (its body and copies of its bound faces), linked into
    `collection`; the scene must stand at the calibration frame. Returns the objects made."""
    if not any(bone.use_deform for bone in armature.data.bones):
        raise MannequinError(f"armature '{armature.name}' has no deform bones to bind a mannequin to; tick Deform "
                             f"on its bones, or pick the Scene or Pose look")
    try:
        mapping = build_mapping(armature, depsgraph)
        calibration = preset_for(armature).calibration
    except MappingError as error:
        raise MannequinError(str(error)) from None
    bones, to_rest, posed = calibration_bones(armature, depsgraph, calibration)
    points, point_bones = {}, {}
    for name, binding in mapping.points.items():
        length = armature.data.bones[binding.bone].length
        local = np.array([*(np.array(binding.offset) * length), 1.0])
        points[name] = (posed[binding.bone] @ local)[:3]
        point_bones[name] = binding.bone
    faces = bound_faces(armature)
    try:
        parts = body_geometry(points, point_bones, bones, has_face=bool(faces))
    except MappingError as error:
        raise MannequinError(f"armature '{armature.name}': {error}") from None

    vertices, polygons, groups = [], [], []
    for part in parts:
        bound = bind_to_bones(part, bones)
        rest = np.einsum("nij,nj->ni", np.array([to_rest[name] for name in bound]),
                         np.concatenate([part.vertices, np.ones((len(part.vertices), 1))], axis=1))[:, :3]
        offset = sum(len(v) for v in vertices)
        vertices.append(rest)
        polygons += [tuple(offset + i for i in face) for face in part.faces]
        groups += bound
    mesh = bpy.data.meshes.new(f"Marionette mannequin {armature.name}")
    mesh.from_pydata(np.concatenate(vertices).tolist(), [], polygons)
    mesh.polygons.foreach_set("use_smooth", [True] * len(mesh.polygons))
    _paint(mesh, np.tile(SKIN, (len(mesh.vertices), 1)))
    body = bpy.data.objects.new(mesh.name, mesh)
    made = [body]
    try:
        for name in dict.fromkeys(groups):
            group = body.vertex_groups.new(name=name)
            group.add([i for i, bone in enumerate(groups) if bone == name], 1.0, "REPLACE")
        body.parent = armature
        modifier = body.modifiers.new("Armature", "ARMATURE")
        modifier.object = armature
        modifier.use_vertex_groups, modifier.use_bone_envelopes = True, False
        collection.objects.link(body)
        for face in faces:
            made.append(_face_copy(face, collection))
    except BaseException:
        remove_mannequin(made)
        raise
    return made


def _face_copy(face: bpy.types.Object, collection: bpy.types.Collection) -> bpy.types.Object:
    """A copy of a bound face (its own mesh, shape keys and modifiers, the same parent), skin-coloured
    with its eyes, brows, irises and lips painted where its landmarks lie."""
    copy = face.copy()
    copy.data = face.data.copy()
    copy.name = copy.data.name = f"Marionette mannequin {face.name}"
    copy.hide_render = copy.hide_viewport = False
    colors = np.tile(SKIN, (len(copy.data.vertices), 1))
    triangles, weights = load_binding(face)
    nearest = triangles[np.arange(len(triangles)), weights.argmax(axis=1)]  # the vertex of each landmark

    def landmarks(lines):
        return sorted({i for line in lines for i in line})
    for indices, color in ((landmarks(LEFT_EYE + RIGHT_EYE + LEFT_BROW + RIGHT_BROW), FEATURES),
                           (list(LEFT_IRIS + RIGHT_IRIS), FEATURES), (landmarks(LIPS), LIP_COLOR)):
        colors[nearest[indices]] = color
    _paint(copy.data, colors)
    collection.objects.link(copy)
    return copy


def _paint(mesh: bpy.types.Mesh, colors: np.ndarray) -> None:
    """Per-vertex colours in the attribute Workbench shows (its Attribute colour type)."""
    attribute = mesh.color_attributes.new(COLOR_ATTRIBUTE, "FLOAT_COLOR", "POINT")
    attribute.data.foreach_set("color", np.asarray(colors, dtype=np.float32).ravel())
    mesh.color_attributes.active_color = attribute
    index = list(mesh.color_attributes).index(attribute)
    mesh.color_attributes.render_color_index = index


def remove_mannequin(objects: list) -> None:
    """Remove what build_mannequin made, meshes (and their shape keys) too."""
    for obj in objects:
        mesh = obj.data
        bpy.data.objects.remove(obj)
        if mesh is not None and mesh.users == 0:
            bpy.data.meshes.remove(mesh)
