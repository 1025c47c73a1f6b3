"""Synthetic test characters: a stick-built figure on a textured background, with coloured markers."""

from __future__ import annotations

import math

import cv2
import numpy as np

from marionette_core.keypoints import BODY_18, PersonKeypoints

INDEX = {name: i for i, name in enumerate(BODY_18)}
LIMBS = [("neck", "r_shoulder"), ("neck", "l_shoulder"), ("r_shoulder", "r_elbow"), ("r_elbow", "r_wrist"),
         ("l_shoulder", "l_elbow"), ("l_elbow", "l_wrist"), ("r_hip", "r_knee"), ("r_knee", "r_ankle"),
         ("l_hip", "l_knee"), ("l_knee", "l_ankle"), ("neck", "nose")]
MARKED = ["nose", "r_shoulder", "r_elbow", "r_wrist", "l_shoulder", "l_elbow", "l_wrist", "r_hip", "r_knee",
          "r_ankle", "l_hip", "l_knee", "l_ankle"]


def standing_pose(width=512, height=768) -> np.ndarray:
    """(18, 3) body keypoints of a figure standing with arms out and down, in pixels."""
    cx, s = width / 2, height / 768
    points = {
        "nose": (cx, 150), "neck": (cx, 205), "r_shoulder": (cx - 62, 215), "l_shoulder": (cx + 62, 215),
        "r_elbow": (cx - 110, 320), "l_elbow": (cx + 110, 320), "r_wrist": (cx - 130, 420),
        "l_wrist": (cx + 130, 420), "r_hip": (cx - 40, 420), "l_hip": (cx + 40, 420), "r_knee": (cx - 48, 545),
        "l_knee": (cx + 48, 545), "r_ankle": (cx - 52, 670), "l_ankle": (cx + 52, 670), "r_eye": (cx - 14, 138),
        "l_eye": (cx + 14, 138), "r_ear": (cx - 30, 145), "l_ear": (cx + 30, 145),
    }
    body = np.zeros((18, 3))
    for name, (x, y) in points.items():
        body[INDEX[name]] = (x, y * s, 1)
    return body


def person(body: np.ndarray) -> PersonKeypoints:
    result = PersonKeypoints.empty()
    result.points["pose_keypoints_2d"] = body.copy()
    return result


def marker_colour(index: int) -> tuple[int, int, int]:
    hue = int(180 * index / len(MARKED))
    bgr = cv2.cvtColor(np.uint8([[[hue, 255, 255]]]), cv2.COLOR_HSV2BGR)[0, 0]
    return int(bgr[2]), int(bgr[1]), int(bgr[0])


def character_image(body: np.ndarray, width=512, height=768, alpha=True, markers=True) -> np.ndarray:
    """RGB(A) reference: textured background, a grey figure along the skeleton, coloured markers."""
    rng = np.random.default_rng(3)
    ys, xs = np.mgrid[0:height, 0:width]
    # A textured but unsaturated background, so no part of it passes for a marker colour.
    grey = 110 + 35 * np.sin(xs / 37.0) + 25 * np.cos(ys / 53.0)
    background = np.stack([grey, grey + 10 * np.sin((xs + ys) / 71.0), grey - 8], axis=2)
    background = np.clip(background + rng.normal(0, 6, background.shape), 0, 255).astype(np.uint8)
    figure = np.zeros((height, width), np.uint8)
    point = lambda name: tuple(int(v) for v in body[INDEX[name], :2])  # noqa: E731
    for a, b in LIMBS:
        cv2.line(figure, point(a), point(b), 255, 34)
    torso = np.array([point("r_shoulder"), point("l_shoulder"), point("l_hip"), point("r_hip")])
    cv2.fillConvexPoly(figure, torso, 255)
    cv2.circle(figure, point("nose"), 42, 255, -1)
    image = background.copy()
    skin = np.array([205, 180, 160], np.uint8)
    image[figure > 0] = skin
    shading = (np.sin(xs / 9.0) * 12).astype(np.int16)[..., None]  # texture on the figure too
    image = np.where(figure[..., None] > 0, np.clip(image.astype(np.int16) + shading, 0, 255), image).astype(np.uint8)
    if markers:
        for i, name in enumerate(MARKED):
            cv2.circle(image, point(name), 6, marker_colour(i), -1)
    if alpha:
        return np.dstack([image, figure])
    return image


def marker_centres(image: np.ndarray, tolerance: int = 40, min_pixels: int = 40) -> dict[str, tuple[float, float]]:
    """Centroid of each marker colour found in an RGB(A) image."""
    rgb = image[..., :3].astype(int)
    found = {}
    for i, name in enumerate(MARKED):
        close = np.abs(rgb - np.array(marker_colour(i))).max(axis=2) <= tolerance
        if image.shape[2] == 4:
            close &= image[..., 3] > 200
        ys, xs = np.nonzero(close)
        if len(xs) >= min_pixels:
            found[name] = (float(xs.mean()), float(ys.mean()))
    return found


def rotate_about(body: np.ndarray, names: list[str], pivot: str, degrees: float) -> np.ndarray:
    body = body.copy()
    angle = math.radians(degrees)
    rotation = np.array([[math.cos(angle), -math.sin(angle)], [math.sin(angle), math.cos(angle)]])
    centre = body[INDEX[pivot], :2].copy()
    for name in names:
        body[INDEX[name], :2] = centre + rotation @ (body[INDEX[name], :2] - centre)
    return body


def moved_pose(body: np.ndarray) -> np.ndarray:
    """The standing pose articulated: arms swung, a knee lifted, the head tilted, the body shifted."""
    body = rotate_about(body, ["r_elbow", "r_wrist"], "r_shoulder", 30)
    body = rotate_about(body, ["r_wrist"], "r_elbow", -35)
    body = rotate_about(body, ["l_elbow", "l_wrist"], "l_shoulder", -35)
    body = rotate_about(body, ["r_knee", "r_ankle"], "r_hip", 25)
    body = rotate_about(body, ["r_ankle"], "r_knee", -45)
    body = rotate_about(body, ["nose", "r_eye", "l_eye", "r_ear", "l_ear"], "neck", 12)
    body[:, :2] += (8, -12)
    return body


def job_files(frames: int, width=256, height=384, alpha=False):
    """(reference PNG bytes, reference OpenPose dict, per-frame OpenPose dicts) of a small job:
    the standing figure waving its right arm."""
    from marionette_core import openpose_json
    from marionette.images import encode_png

    scale = width / 512
    body = standing_pose(512, 768)
    image = character_image(body, 512, 768, alpha=alpha, markers=False)
    image = cv2.resize(image, (width, height), interpolation=cv2.INTER_AREA)
    reference = body.copy()
    reference[:, :2] *= scale
    poses = []
    for index in range(frames):
        moved = rotate_about(body, ["r_elbow", "r_wrist"], "r_shoulder", 60 * math.sin(index / 4))
        moved[:, :2] *= scale
        poses.append(openpose_json.to_openpose_dict([person(moved)], width, height))
    return encode_png(image), openpose_json.to_openpose_dict([person(reference)], width, height), poses


def warp_job(frames: int, **kwargs) -> tuple[dict, bytes]:
    reference_png, reference_pose, poses = job_files(frames, **kwargs)
    job = {"engine": "warp", "reference_pose": reference_pose, "poses": poses,
           "frames": list(range(101, 101 + frames))}
    return job, reference_png


def canonical_face_2d(centre=(256.0, 300.0), pixels_per_cm=18.0) -> np.ndarray:
    """(478, 3) face landmarks of the canonical face seen from the front, in pixels (irises at the
    eye-contour centres)."""
    import json
    from pathlib import Path

    from marionette_core.face import LEFT_EYE, RIGHT_EYE

    data = json.loads((Path(__file__).resolve().parents[2] / "rigs" / "face" / "canonical_face_mesh.json").read_text())
    vertices = np.array(data["vertices"])
    face = np.zeros((478, 3))
    face[:468, 0] = centre[0] + vertices[:, 0] * pixels_per_cm
    face[:468, 1] = centre[1] - vertices[:, 1] * pixels_per_cm
    face[:468, 2] = 1
    for first, eye in ((468, RIGHT_EYE), (473, LEFT_EYE)):
        ring = sorted({i for edge in eye for i in edge})
        face[first:first + 5] = (*face[ring, :2].mean(axis=0), 1)
    return face


FACE_MARKERS = {14: (255, 0, 0), 17: (0, 200, 0), 159: (0, 0, 255), 386: (255, 0, 255), 0: (255, 200, 0)}


def portrait(face: np.ndarray, width=512, height=640) -> tuple[np.ndarray, PersonKeypoints]:
    """An RGBA portrait built on the landmarks, markers on lip and eyelid landmarks, and its keypoints."""
    from marionette_core.face import FACE_OVAL

    image = np.zeros((height, width, 4), np.uint8)
    oval = np.array([face[a, :2] for a, _b in FACE_OVAL] + [face[10, :2], face[338, :2], face[109, :2]])
    hull = cv2.convexHull(np.round(oval).astype(np.int32))
    cv2.fillConvexPoly(image, hull, (214, 180, 160, 255))
    centre = tuple(int(v) for v in face[1, :2])
    cv2.ellipse(image, (centre[0], int(face[152, 1]) + 80), (120, 90), 0, 0, 360, (60, 80, 140, 255), -1)  # shoulders
    ys, xs = np.mgrid[0:height, 0:width]
    texture = ((np.sin(xs / 5.0) + np.cos(ys / 7.0)) * 6).astype(np.int16)
    skin = image[..., 3] > 0
    image[..., :3] = np.where(skin[..., None], np.clip(image[..., :3].astype(np.int16) + texture[..., None], 0, 255),
                              image[..., :3]).astype(np.uint8)
    for index, colour in FACE_MARKERS.items():
        cv2.circle(image, tuple(int(v) for v in face[index, :2]), 3, (*colour, 255), -1)
    person = PersonKeypoints.empty()
    body = np.zeros((18, 3))
    for name, index in (("nose", 1), ("r_eye", 468), ("l_eye", 473), ("r_ear", 234), ("l_ear", 454)):
        body[INDEX[name]] = (*face[index, :2], 1)
    body[INDEX["neck"]] = (face[152, 0], face[152, 1] + 40, 1)
    person.points["pose_keypoints_2d"] = body
    person.points["face_mesh_keypoints_2d"] = face.copy()
    return image, person


def expression(face: np.ndarray, jaw: float, blink: float) -> np.ndarray:
    """Jaw dropped by `jaw` pixels below the mouth line; both upper lids `blink` of the way closed."""
    moved = face.copy()
    mouth_line = (face[13, 1] + face[14, 1]) / 2
    below = np.clip((face[:468, 1] - mouth_line) / 6.0, 0, 1)
    moved[:468, 1] += jaw * below
    for upper, lower in ((159, 145), (386, 374), (158, 153), (160, 144), (385, 380), (387, 373)):
        moved[upper, :2] = face[upper, :2] + blink * (face[lower, :2] - face[upper, :2])
    return moved
