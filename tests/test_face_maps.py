"""Face landmark maps (aniportrait-face) against an OpenCV rendering, and the face conventions."""

import numpy as np
import pytest

cv2 = pytest.importorskip("cv2")

from marionette_core.face import (ANIPORTRAIT_PARTS, FACE_MESH_COUNT, IBUG68_FROM_MESH, draw_aniportrait_face,
                                  ibug68, pupils, resize_bilinear)

import opencv_reference


def random_face(rng, width, height):
    """A plausible face: the landmark cloud inside an ellipse, some points missing."""
    centre = rng.uniform(0.3, 0.7, 2) * (width, height)
    radius = rng.uniform(0.15, 0.3) * min(width, height)
    angles = rng.uniform(0, 2 * np.pi, FACE_MESH_COUNT)
    distances = np.sqrt(rng.uniform(0, 1, FACE_MESH_COUNT)) * radius
    face = np.zeros((FACE_MESH_COUNT, 3))
    face[:, 0] = centre[0] + np.cos(angles) * distances * 0.8
    face[:, 1] = centre[1] + np.sin(angles) * distances
    face[:, 2] = rng.random(FACE_MESH_COUNT) > 0.05
    return face


@pytest.mark.parametrize("width,height", [(512, 768), (1024, 576), (512, 512)])
def test_aniportrait_face_map_matches_opencv(width, height):
    rng = np.random.default_rng(width * 3 + height)
    worst_all = worst_drawn = 1.0
    for _ in range(10):
        faces = [random_face(rng, width, height) for _ in range(rng.integers(1, 3))]
        ours = draw_aniportrait_face(faces, width, height)
        reference = opencv_reference.draw_aniportrait_face(faces, width, height, ANIPORTRAIT_PARTS)
        close = np.abs(ours.astype(int) - reference.astype(int)).max(axis=2) <= 2
        drawn = (ours.max(axis=2) > 0) | (reference.max(axis=2) > 0)
        assert drawn.sum() > 1000
        worst_all, worst_drawn = min(worst_all, close.mean()), min(worst_drawn, close[drawn].mean())
    assert worst_all >= 0.9999 and worst_drawn >= 0.999, (worst_all, worst_drawn)


@pytest.mark.parametrize("size", [(512, 512), (48, 33), (300, 700), (1024, 576)])
def test_bilinear_resize_matches_opencv(size):
    image = np.random.default_rng(1).integers(0, 256, (512, 512, 3), dtype=np.uint8)
    ours = resize_bilinear(image, *size)
    reference = cv2.resize(image, size)
    assert ours.shape == reference.shape
    assert np.abs(ours.astype(int) - reference.astype(int)).max() <= 1


def test_ibug68_and_pupils():
    face = np.zeros((FACE_MESH_COUNT, 3))
    face[:, 0] = np.arange(FACE_MESH_COUNT)
    face[:, 2] = 1
    points = ibug68(face)
    assert points.shape == (68, 3) and list(points[:, 0].astype(int)) == list(IBUG68_FROM_MESH)
    assert np.allclose(pupils(face)[:, 0], [468, 473])
    face[468:, 2] = 0  # no irises: the pupils come from the eye contours
    assert pupils(face)[:, 2].tolist() == [1.0, 1.0]
