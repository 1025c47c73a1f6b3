"""The 478 canonical face landmarks bound to a mesh, evaluated on the deformed mesh every frame.

A binding stores, per landmark, a triangle of the mesh (three vertex indices) and barycentric
weights, as two ID properties on the mesh object, so it survives saving and follows whatever deforms
the mesh (shape keys, armature, modifiers that keep the vertex count). Binding:
- `bind_canonical_mesh`: for a mesh made from the canonical face model (the demo face): landmark i
  is vertex i; the irises sit at the centres of the eye openings.
- `bind_by_projection`: for any head: the canonical layout, fitted to the head's front view, shot
  onto the mesh along the view axis.
"""

from __future__ import annotations

import json
from pathlib import Path

import bpy
import numpy as np
from mathutils import Vector
from mathutils.bvhtree import BVHTree

from ..core.face import FACE_MESH_COUNT, LEFT_EYE, RIGHT_EYE

TRIANGLES_PROPERTY = "marionette_face_triangles"
WEIGHTS_PROPERTY = "marionette_face_weights"
CANONICAL_FILE = Path(__file__).parent / "model" / "canonical_face_mesh.json"  # the zip carries rigs/face here
IRIS_RADIUS = 0.45  # of the eye opening's half height, for the four iris rim points


class FaceBindingError(Exception):
    """A face binding that cannot be made or used; the message names the object and the fix."""


def canonical_face() -> tuple[np.ndarray, np.ndarray]:
    """The canonical model: (468, 3) vertices in Blender axes and metres (X subject's left, -Y the
    way the face looks, Z up), and (898, 3) triangles."""
    data = json.loads(CANONICAL_FILE.read_text())
    vertices = np.array(data["vertices"]) * 0.01
    return np.stack([vertices[:, 0], -vertices[:, 2], vertices[:, 1]], axis=1), np.array(data["triangles"])


def has_binding(obj: bpy.types.Object) -> bool:
    return obj.type == "MESH" and TRIANGLES_PROPERTY in obj and WEIGHTS_PROPERTY in obj


def store_binding(obj: bpy.types.Object, triangles: np.ndarray, weights: np.ndarray) -> None:
    obj[TRIANGLES_PROPERTY] = [int(i) for i in np.asarray(triangles).reshape(-1)]
    obj[WEIGHTS_PROPERTY] = [float(w) for w in np.asarray(weights).reshape(-1)]


def load_binding(obj: bpy.types.Object) -> tuple[np.ndarray, np.ndarray]:
    triangles = np.array(obj[TRIANGLES_PROPERTY], dtype=np.int64).reshape(FACE_MESH_COUNT, 3)
    weights = np.array(obj[WEIGHTS_PROPERTY], dtype=np.float64).reshape(FACE_MESH_COUNT, 3)
    return triangles, weights


def _iris_points(centre: np.ndarray, eye_points: np.ndarray) -> np.ndarray:
    """Centre then four rim points (subject's left, up, right, down) of an iris, in mesh space."""
    half_height = (eye_points[:, 2].max() - eye_points[:, 2].min()) / 2
    radius = max(half_height * IRIS_RADIUS * 2, 1e-4)
    offsets = [(0, 0, 0), (radius, 0, 0), (0, 0, radius), (-radius, 0, 0), (0, 0, -radius)]
    return np.array([centre + np.array(offset) for offset in offsets])


def _eye_ring(edges) -> list[int]:
    return sorted({index for edge in edges for index in edge})


def bind_canonical_mesh(obj: bpy.types.Object) -> None:
    """Bind a mesh whose first 468 vertices are the canonical model's, in order (the demo face)."""
    mesh = obj.data
    if len(mesh.vertices) < 468:
        raise FaceBindingError(f"mesh '{obj.name}' has {len(mesh.vertices)} vertices; a canonical face has 468")
    triangles = np.zeros((FACE_MESH_COUNT, 3), dtype=np.int64)
    weights = np.zeros((FACE_MESH_COUNT, 3))
    triangles[:468] = np.arange(468)[:, None]
    weights[:468, 0] = 1.0
    coordinates = np.array([v.co for v in mesh.vertices])
    for first, edges in ((468, RIGHT_EYE), (473, LEFT_EYE)):
        ring = coordinates[_eye_ring(edges)]
        for offset, point in enumerate(_iris_points(ring.mean(axis=0), ring)):
            triangles[first + offset], weights[first + offset] = _nearest_on_surface(obj, point)
    store_binding(obj, triangles, weights)


def bind_by_projection(obj: bpy.types.Object, depsgraph, scale: float = 1.0,
                       offset: tuple[float, float] = (0.0, 0.0)) -> int:
    """Bind any head: the canonical layout is fitted to the mesh's front view (its extent across X
    and Z), then scaled by `scale` and moved by `offset` (X, Z, in the mesh's units) for a head
    whose face does not fill its front, and each landmark is shot onto the mesh along +Y, from in
    front. Returns how many landmarks hit the mesh; the others take the nearest surface point."""
    canonical, _ = canonical_face()
    coordinates = np.array([v.co for v in obj.data.vertices])
    if len(coordinates) < 3:
        raise FaceBindingError(f"mesh '{obj.name}' is too small to hold a face")
    low, high = coordinates.min(axis=0), coordinates.max(axis=0)
    c_low, c_high = canonical.min(axis=0), canonical.max(axis=0)
    fit = min((high[0] - low[0]) / (c_high[0] - c_low[0]), (high[2] - low[2]) / (c_high[2] - c_low[2]))
    centre = (low + high) / 2 + np.array([offset[0], 0.0, offset[1]])
    c_centre = (c_low + c_high) / 2
    layout = (canonical - c_centre) * fit * scale + centre
    tree = BVHTree.FromPolygons([tuple(v) for v in coordinates], [tuple(p.vertices) for p in obj.data.polygons])
    triangles = np.zeros((FACE_MESH_COUNT, 3), dtype=np.int64)
    weights = np.zeros((FACE_MESH_COUNT, 3))
    hits = 0
    start_y = low[1] - (high[1] - low[1]) - 1.0
    points = list(layout)
    for edges in (RIGHT_EYE, LEFT_EYE):
        ring = layout[_eye_ring(edges)]
        points += list(_iris_points(ring.mean(axis=0), ring))
    for index, point in enumerate(points):
        location, _normal, face, _distance = tree.ray_cast(Vector((point[0], start_y, point[2])), Vector((0, 1, 0)))
        if location is None:
            triangles[index], weights[index] = _nearest_on_surface(obj, point)
        else:
            triangles[index], weights[index] = _barycentric(obj, face, np.array(location))
            hits += 1
    store_binding(obj, triangles, weights)
    return hits


def _nearest_on_surface(obj, point) -> tuple[np.ndarray, np.ndarray]:
    mesh = obj.data
    tree = BVHTree.FromPolygons([tuple(v.co) for v in mesh.vertices], [tuple(p.vertices) for p in mesh.polygons])
    location, _normal, face, _distance = tree.find_nearest(Vector(point))
    if location is None:
        raise FaceBindingError(f"mesh '{obj.name}' has no faces to bind landmarks to")
    return _barycentric(obj, face, np.array(location))


def _barycentric(obj, polygon_index: int, location: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The triangle of the polygon (fanned from its first vertex) holding `location`, and weights."""
    polygon = obj.data.polygons[polygon_index]
    indices = list(polygon.vertices)
    best = None
    for k in range(1, len(indices) - 1):
        triangle = np.array([indices[0], indices[k], indices[k + 1]])
        corners = np.array([obj.data.vertices[i].co for i in triangle])
        weights = _weights_in_triangle(corners, location)
        error = np.linalg.norm(weights @ corners - location) + max(0.0, -weights.min())
        if best is None or error < best[0]:
            best = (error, triangle, weights)
    return best[1], best[2]


def _weights_in_triangle(corners: np.ndarray, point: np.ndarray) -> np.ndarray:
    a, b, c = corners
    v0, v1, v2 = b - a, c - a, point - a
    d00, d01, d11 = v0 @ v0, v0 @ v1, v1 @ v1
    d20, d21 = v2 @ v0, v2 @ v1
    denominator = d00 * d11 - d01 * d01
    if abs(denominator) < 1e-18:
        return np.array([1.0, 0.0, 0.0])
    v = (d11 * d20 - d01 * d21) / denominator
    w = (d00 * d21 - d01 * d20) / denominator
    return np.array([1.0 - v - w, v, w])


class FaceSampler:
    """A bound face's 478 landmarks in world space, read from the evaluated (deformed) mesh."""

    def __init__(self, obj: bpy.types.Object):
        if not has_binding(obj):
            raise FaceBindingError(f"mesh '{obj.name}' has no face binding; bind it in Marionette > Face")
        self.obj = obj
        self.triangles, self.weights = load_binding(obj)

    def world_points(self, depsgraph, frame: int) -> np.ndarray:
        evaluated = self.obj.evaluated_get(depsgraph)
        mesh = evaluated.data
        count = len(mesh.vertices)
        if self.triangles.max() >= count:
            raise FaceBindingError(f"mesh '{self.obj.name}' has {count} vertices at frame {frame}, fewer than its "
                                   f"face binding expects; bind it again (a modifier may change its topology)")
        coordinates = np.empty(count * 3, dtype=np.float32)
        mesh.vertices.foreach_get("co", coordinates)
        coordinates = coordinates.reshape(-1, 3).astype(np.float64)
        local = np.einsum("nk,nkj->nj", self.weights, coordinates[self.triangles])
        world = np.array(evaluated.matrix_world)
        points = np.concatenate([local, np.ones((len(local), 1))], axis=1) @ world.T
        return points[:, :3]


def bound_faces(armature: bpy.types.Object) -> list[bpy.types.Object]:
    """Face meshes that belong to a character: bound meshes parented (at any depth) to its armature."""
    faces = []
    for obj in bpy.context.scene.objects:
        parent = obj.parent
        while parent is not None and parent != armature:
            parent = parent.parent
        if parent == armature and has_binding(obj):
            faces.append(obj)
    return faces
