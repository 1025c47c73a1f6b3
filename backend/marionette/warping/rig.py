"""A reference image rigged for warping: it deforms with the motion of the keypoints (CPU, no weights).

The AnimatedDrawings idea on a photo or drawing of the character:
  1. a mask of the character (the alpha channel, else GrabCut seeded by the reference skeleton),
     and a clean plate (the background with the character inpainted away);
  2. a triangle mesh over the mask, with the reference keypoints among its vertices;
  3. bones (torso, head, upper arms, forearms, hands, thighs, shins, feet), each with per-vertex
     weights that fall off with the distance to the bone in the reference;
  4. per frame, each bone's 2D motion from the reference keypoints to the frame's keypoints, the
     vertices moved by the weighted blend of their bones' motions (smooth at the joints), the
     triangles drawn back to front (legs, torso, head, arms) and the image sampled through them;
  5. the moved character composited over the clean plate, so the background fills in where the
     character left;
  6. with face landmarks, the expression on top (face.py): jaw, lids, brows, a dark open mouth.
A bone whose keypoints are missing (c = 0) in a frame follows its parent; the torso, missing,
stays where it was.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from marionette_core.keypoints import BODY_18, FOOT_6, HAND_21, PersonKeypoints

from ..engines.base import EngineError
from .cutout import character_mesh, clean_plate, estimate_mask
from .face import FACE_KEY, FaceWarp

_BODY = {name: index for index, name in enumerate(BODY_18)}
_FOOT = {name: index for index, name in enumerate(FOOT_6)}

# Draw order of the parts, back to front.
LAYER_LEGS, LAYER_TORSO, LAYER_HEAD, LAYER_ARMS = 0, 1, 2, 3
WEIGHT_POWER = 4.0  # how fast a bone's influence falls off with distance


@dataclass(frozen=True)
class BoneSpec:
    name: str
    parent: str | None
    fit: tuple[tuple[str, int], ...]  # (group, index) of the points that define its motion
    segments: tuple[tuple[tuple[str, int], tuple[str, int]], ...]  # where it lies, for the weights
    layer: int
    along_bone: bool  # two-point bone: stretch along its length only


def _body(name):
    return ("pose_keypoints_2d", _BODY[name])


def _bone_specs() -> list[BoneSpec]:
    torso_points = ("neck", "r_shoulder", "l_shoulder", "r_hip", "l_hip")
    specs = [
        BoneSpec("torso", None, tuple(_body(n) for n in torso_points),
                 ((_body("neck"), _body("r_hip")), (_body("neck"), _body("l_hip")),
                  (_body("r_shoulder"), _body("l_shoulder")), (_body("r_hip"), _body("l_hip")),
                  (_body("r_shoulder"), _body("r_hip")), (_body("l_shoulder"), _body("l_hip"))),
                 LAYER_TORSO, False),
        BoneSpec("head", "torso", tuple(_body(n) for n in ("neck", "nose", "r_eye", "l_eye", "r_ear", "l_ear")),
                 ((_body("neck"), _body("nose")), (_body("nose"), _body("r_eye")), (_body("nose"), _body("l_eye")),
                  (_body("r_eye"), _body("r_ear")), (_body("l_eye"), _body("l_ear"))),
                 LAYER_HEAD, False),
    ]
    for side in "rl":
        hand_key = "hand_right_keypoints_2d" if side == "r" else "hand_left_keypoints_2d"
        finger_segments = tuple(((hand_key, a), (hand_key, b)) for a, b in (
            (0, 5), (5, 8), (0, 9), (9, 12), (0, 13), (13, 16), (0, 17), (17, 20), (0, 1), (1, 4)))
        specs += [
            BoneSpec(f"{side}_upper_arm", "torso", (_body(f"{side}_shoulder"), _body(f"{side}_elbow")),
                     ((_body(f"{side}_shoulder"), _body(f"{side}_elbow")),), LAYER_ARMS, True),
            BoneSpec(f"{side}_forearm", f"{side}_upper_arm", (_body(f"{side}_elbow"), _body(f"{side}_wrist")),
                     ((_body(f"{side}_elbow"), _body(f"{side}_wrist")),), LAYER_ARMS, True),
            BoneSpec(f"{side}_hand", f"{side}_forearm", tuple((hand_key, i) for i in range(len(HAND_21))),
                     finger_segments, LAYER_ARMS, False),
            BoneSpec(f"{side}_thigh", "torso", (_body(f"{side}_hip"), _body(f"{side}_knee")),
                     ((_body(f"{side}_hip"), _body(f"{side}_knee")),), LAYER_LEGS, True),
            BoneSpec(f"{side}_shin", f"{side}_thigh", (_body(f"{side}_knee"), _body(f"{side}_ankle")),
                     ((_body(f"{side}_knee"), _body(f"{side}_ankle")),), LAYER_LEGS, True),
            BoneSpec(f"{side}_foot", f"{side}_shin",
                     (_body(f"{side}_ankle"),) + tuple(("foot_keypoints_2d", _FOOT[f"{side}_{n}"])
                                                       for n in ("big_toe", "small_toe", "heel")),
                     tuple((_body(f"{side}_ankle"), ("foot_keypoints_2d", _FOOT[f"{side}_{n}"]))
                           for n in ("big_toe", "small_toe", "heel")), LAYER_LEGS, False),
        ]
    return specs


BONES = _bone_specs()


def _point(person: PersonKeypoints, ref: tuple[str, int]) -> np.ndarray | None:
    group = person.group(ref[0])
    if ref[1] >= len(group) or group[ref[1], 2] <= 0:
        return None
    return group[ref[1], :2]


# --- one reference image, rigged ------------------------------------------------------------

@dataclass
class WarpRig:
    """The reference image prepared for warping: mask, clean plate, mesh, bone weights."""

    rgba: np.ndarray  # (H, W, 4) the reference with the character mask as alpha (soft edge)
    background: np.ndarray | None  # (H, W, 3) clean plate; None when the output keeps alpha
    vertices: np.ndarray  # (V, 2) reference vertex positions
    triangles: np.ndarray  # (T, 3) vertex indices, in drawing order (back to front)
    weights: np.ndarray  # (V, B) bone weights, rows sum to 1
    bones: list[BoneSpec]
    reference: PersonKeypoints
    face: FaceWarp | None = None  # expressions, when the reference has face landmarks

    @classmethod
    def build(cls, reference_image: np.ndarray, reference: PersonKeypoints) -> "WarpRig":
        height, width = reference_image.shape[:2]
        bones = [bone for bone in BONES if len(_bone_points(bone, reference)) >= (2 if bone.along_bone else 1)
                 and _segments(bone, reference)]
        if not any(bone.name in ("torso", "head") for bone in bones):
            raise EngineError("the reference keypoints have no torso or head (neck, shoulders, hips, nose, eyes); "
                              "pose the rig over the reference image at the reference frame")
        image = np.ascontiguousarray(reference_image[..., :3])
        if reference_image.shape[2] == 4:
            alpha = reference_image[..., 3].copy()
            background = None
        else:
            alpha = estimate_mask(image, [segment for bone in bones for segment in _segments(bone, reference)])
            background = clean_plate(image, alpha)
        vertices, triangles = character_mesh(alpha > 127, reference, spacing=max(6, min(width, height) // 30))
        weights = _bone_weights(vertices, reference, bones)
        # Back to front: each triangle takes the layer of its strongest bone.
        layers = np.array([bone.layer for bone in bones])[weights[triangles].sum(axis=1).argmax(axis=1)]
        triangles = triangles[np.argsort(layers, kind="stable")]
        face = reference.points.get(FACE_KEY)
        face_warp = FaceWarp(face) if face is not None and (face[:, 2] > 0).sum() > 100 else None
        return cls(np.dstack([image, alpha]), background, vertices, triangles, weights, bones, reference, face_warp)

    def pose(self, person: PersonKeypoints | None) -> np.ndarray:
        """The reference character moved to `person`'s keypoints, as an RGB (or RGBA) image."""
        transforms = self.bone_transforms(person)
        moved = np.einsum("vb,bij,vj->vi", self.weights, transforms[:, :, :2], self.vertices) + \
            self.weights @ transforms[:, :, 2]
        image = self._draw(moved)
        if self.face is not None and person is not None:
            names = [bone.name for bone in self.bones]
            head = transforms[names.index("head") if "head" in names else 0]
            image = self.face.apply(image, person.points.get(FACE_KEY), head)
        return image

    def bone_transforms(self, person: PersonKeypoints | None) -> np.ndarray:
        """(B, 2, 3) affine maps from reference to frame pixels, one per bone."""
        result: dict[str, np.ndarray] = {}
        identity = np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
        torso_scale = 1.0
        for bone in self.bones:  # parents come before children in BONES
            pairs = [] if person is None else [
                (src, dst) for ref in bone.fit
                if (src := _point(self.reference, ref)) is not None and (dst := _point(person, ref)) is not None]
            parent = result.get(bone.parent, identity) if bone.parent else identity  # a portrait has no torso
            if len(pairs) >= 2:
                source = np.array([p[0] for p in pairs])
                target = np.array([p[1] for p in pairs])
                if bone.along_bone:
                    transform = _stretch_along(source[0], source[1], target[0], target[1], torso_scale)
                else:
                    transform = _similarity(source, target)
            elif len(pairs) == 1:
                # One point: keep the parent's turn and scale, but pin that point.
                transform = parent.copy()
                transform[:, 2] += pairs[0][1] - (parent[:, :2] @ pairs[0][0] + parent[:, 2])
            else:
                transform = parent
            if bone.name == "torso":
                torso_scale = float(np.sqrt(abs(np.linalg.det(transform[:, :2]))))
            result[bone.name] = transform
        return np.stack([result[bone.name] for bone in self.bones])

    def _draw(self, moved: np.ndarray) -> np.ndarray:
        height, width = self.rgba.shape[:2]
        # Each pixel's map back into the reference is the affine map of the triangle in front of it:
        # paint every triangle's coefficients, back to front, then evaluate them all at once.
        back = _affine_maps(moved[self.triangles], self.vertices[self.triangles]).astype(np.float64)
        coefficients_x = np.empty((height, width, 3), np.float32)
        coefficients_y = np.empty((height, width, 3), np.float32)
        coefficients_x[:] = (0.0, 0.0, -1.0)  # uncovered pixels sample outside the image: transparent
        coefficients_y[:] = (0.0, 0.0, -1.0)
        corners = np.round(moved[self.triangles]).astype(np.int32)
        for triangle, (row_x, row_y) in zip(corners, back):
            cv2.fillConvexPoly(coefficients_x, triangle, row_x.tolist())
            cv2.fillConvexPoly(coefficients_y, triangle, row_y.tolist())
        xs, ys = self._grid
        map_x = coefficients_x[..., 0] * xs + coefficients_x[..., 1] * ys + coefficients_x[..., 2]
        map_y = coefficients_y[..., 0] * xs + coefficients_y[..., 1] * ys + coefficients_y[..., 2]
        warped = cv2.remap(self.rgba, map_x, map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=0)
        if self.background is None:
            return warped
        alpha = warped[..., 3].astype(np.float32) * (1.0 / 255.0)
        return cv2.blendLinear(np.ascontiguousarray(warped[..., :3]), self.background, alpha, 1.0 - alpha)

    @property
    def _grid(self) -> tuple[np.ndarray, np.ndarray]:
        if not hasattr(self, "_grid_cache"):
            height, width = self.rgba.shape[:2]
            ys, xs = np.mgrid[0:height, 0:width].astype(np.float32)
            self._grid_cache = (xs, ys)
        return self._grid_cache


def _affine_maps(destination: np.ndarray, source: np.ndarray) -> np.ndarray:
    """(T, 2, 3) float32 affine maps taking each destination triangle onto its source triangle.

    Solved in closed form per triangle; a degenerate (flattened) triangle gets a finite map,
    since no pixel is drawn inside it anyway."""
    d0 = destination[:, 0]
    d = np.stack([destination[:, 1] - d0, destination[:, 2] - d0], axis=2)  # (T, 2, 2) columns
    s = np.stack([source[:, 1] - source[:, 0], source[:, 2] - source[:, 0]], axis=2)
    det = d[:, 0, 0] * d[:, 1, 1] - d[:, 0, 1] * d[:, 1, 0]
    det = np.where(np.abs(det) < 1e-9, 1e-9, det)
    inverse = np.stack([np.stack([d[:, 1, 1], -d[:, 0, 1]], axis=1),
                        np.stack([-d[:, 1, 0], d[:, 0, 0]], axis=1)], axis=1) / det[:, None, None]
    linear = s @ inverse  # (T, 2, 2)
    offset = source[:, 0] - np.einsum("tij,tj->ti", linear, d0)
    return np.concatenate([linear, offset[:, :, None]], axis=2).astype(np.float32)


def _bone_points(bone: BoneSpec, person: PersonKeypoints) -> list[np.ndarray]:
    return [p for ref in bone.fit if (p := _point(person, ref)) is not None]


def _segments(bone: BoneSpec, person: PersonKeypoints) -> list[tuple[np.ndarray, np.ndarray]]:
    return [(a, b) for ra, rb in bone.segments
            if (a := _point(person, ra)) is not None and (b := _point(person, rb)) is not None]


def _similarity(source: np.ndarray, target: np.ndarray) -> np.ndarray:
    """Least-squares rotation + uniform scale + translation taking source points to target points."""
    source_mean, target_mean = source.mean(axis=0), target.mean(axis=0)
    s, t = source - source_mean, target - target_mean
    denominator = (s ** 2).sum()
    if denominator < 1e-9:
        linear = np.eye(2)
    else:
        a = (s * t).sum() / denominator
        b = (s[:, 0] * t[:, 1] - s[:, 1] * t[:, 0]).sum() / denominator
        linear = np.array([[a, -b], [b, a]])
    return np.concatenate([linear, (target_mean - linear @ source_mean)[:, None]], axis=1)


def _stretch_along(a: np.ndarray, b: np.ndarray, a2: np.ndarray, b2: np.ndarray, width_scale: float) -> np.ndarray:
    """Maps a -> a2 and b -> b2 exactly; across the bone, scales by the torso's scale only, so a
    limb seen end-on gets shorter without getting thinner."""
    along, along2 = b - a, b2 - a2
    length, length2 = np.linalg.norm(along), np.linalg.norm(along2)
    if length < 1e-9:
        linear = np.eye(2) * width_scale
    else:
        u = along / length
        u2 = along2 / length2 if length2 > 1e-9 else u
        n, n2 = np.array([-u[1], u[0]]), np.array([-u2[1], u2[0]])
        linear = (length2 / length) * np.outer(u2, u) + width_scale * np.outer(n2, n)
    return np.concatenate([linear, (a2 - linear @ a)[:, None]], axis=1)


def _segment_distance(points: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    ab = b - a
    t = np.clip(((points - a) @ ab) / max(float(ab @ ab), 1e-9), 0.0, 1.0)
    return np.linalg.norm(points - (a + t[:, None] * ab), axis=1)


def _bone_weights(vertices: np.ndarray, reference: PersonKeypoints, bones: list[BoneSpec]) -> np.ndarray:
    distances = np.stack([
        np.min([_segment_distance(vertices, a, b) for a, b in _segments(bone, reference)], axis=0)
        for bone in bones], axis=1)
    weights = 1.0 / (distances + 1.0) ** WEIGHT_POWER
    return weights / weights.sum(axis=1, keepdims=True)
