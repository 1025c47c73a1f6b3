"""Face landmark maps (aniportrait-face, echomimic-face) against an OpenCV rendering, and the face
conventions."""

import numpy as np
import pytest

cv2 = pytest.importorskip("cv2")

from marionette_core.face import FACE_MESH_COUNT, IBUG68_FROM_MESH, LEFT_EYE, ibug68, pupils, resize_bilinear
from marionette_core.styles import aniportrait_face, echomimic_face
from marionette_core.styles.aniportrait_face import PARTS as ANIPORTRAIT_PARTS
from marionette_core.styles.echomimic_face import PARTS as ECHOMIMIC_PARTS
from marionette_core.png import encode_png

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
    """Our R, G, B against the channels 0, 1, 2 of AniPortrait's own drawing (its colour tuples, no
    BGR/RGB swap): the channels its pose guider receives."""
    rng = np.random.default_rng(width * 3 + height)
    worst_all = worst_drawn = 1.0
    edges = [part_edges for part_edges, _ in ANIPORTRAIT_PARTS]
    for _ in range(10):
        faces = [random_face(rng, width, height) for _ in range(rng.integers(1, 3))]
        ours = aniportrait_face.draw_faces(faces, width, height)
        reference = opencv_reference.draw_aniportrait_face(faces, width, height, edges)
        close = np.abs(ours.astype(int) - reference.astype(int)).max(axis=2) <= 2
        drawn = (ours.max(axis=2) > 0) | (reference.max(axis=2) > 0)
        assert drawn.sum() > 1000
        worst_all, worst_drawn = min(worst_all, close.mean()), min(worst_drawn, close[drawn].mean())
    assert worst_all >= 0.9999 and worst_drawn >= 0.999, (worst_all, worst_drawn)


def test_aniportrait_face_map_file_holds_the_colour_tuples_in_rgb_order():
    """The subject's left eye is AniPortrait's (180, 200, 10): channel 0 as drawn, R in the file."""
    rng = np.random.default_rng(3)
    face = random_face(rng, 512, 512)
    face[:, 2] = 0
    eye = sorted({i for edge in LEFT_EYE for i in edge})
    face[eye, 2] = 1
    ours = aniportrait_face.draw_faces([face], 512, 512)
    drawn = ours.max(axis=2) > 0
    assert drawn.sum() > 50
    assert {tuple(int(v) for v in pixel) for pixel in ours[drawn]} == {(180, 200, 10)}
    as_drawn = opencv_reference.draw_aniportrait_face([face], 512, 512, [e for e, _ in ANIPORTRAIT_PARTS])
    assert np.array_equal(ours, as_drawn)
    # A PNG reader that returns B, G, R (OpenCV) finds 180 in its last channel: the file's R.
    read = cv2.imdecode(np.frombuffer(encode_png(ours), np.uint8), cv2.IMREAD_COLOR)
    assert np.array_equal(read[..., ::-1], ours) and set(read[drawn][:, 2].tolist()) == {180}


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


@pytest.mark.parametrize("width,height", [(512, 512), (512, 768), (1024, 576)])
def test_echomimic_face_map_matches_opencv(width, height):
    """Eyes and brows as lines, pupils and nose tip as EchoMimic's squares, channels as drawn."""
    rng = np.random.default_rng(width * 7 + height)
    edges = [part_edges for part_edges, _ in ECHOMIMIC_PARTS]
    worst_all = worst_drawn = 1.0
    for trial in range(10):
        faces = [random_face(rng, width, height) for _ in range(rng.integers(1, 3))]
        for face in faces:
            face[[4, 468, 473], 2] = 1  # the marked points present (a missing iris has a fallback; see below)
        if trial == 0:  # squares at the canvas edges follow the original's slice rules
            faces[0][4, :2] = (1.0, 1.0)
            faces[0][468, :2] = (width - 0.5, height * 0.5)
        ours = echomimic_face.draw_faces(faces, width, height)
        reference = opencv_reference.draw_echomimic_face(faces, width, height, edges)
        close = np.abs(ours.astype(int) - reference.astype(int)).max(axis=2) <= 2
        drawn = (ours.max(axis=2) > 0) | (reference.max(axis=2) > 0)
        assert drawn.sum() > 0.002 * width * height
        worst_all, worst_drawn = min(worst_all, close.mean()), min(worst_drawn, close[drawn].mean())
    assert worst_all >= 0.9999 and worst_drawn >= 0.999, (worst_all, worst_drawn)


@pytest.mark.parametrize("width,height", [(512, 512), (256, 320), (64, 64)])
def test_echomimic_squares_match_opencv_exactly(width, height):
    """The pupil and nose squares alone (no lines), at the canvas edges too: the same pixels."""
    rng = np.random.default_rng(width + height)
    for trial in range(12):
        face = np.zeros((FACE_MESH_COUNT, 3))
        face[[4, 468, 473]] = np.column_stack([rng.uniform(-0.05, 1.05, 3) * width,
                                               rng.uniform(-0.05, 1.05, 3) * height, np.ones(3)])
        if trial == 0:
            face[4, :2], face[468, :2], face[473, :2] = (0.5, 0.5), (width - 0.1, 2.0), (width / 2, height)
        ours = echomimic_face.draw_faces([face], width, height)
        reference = opencv_reference.draw_echomimic_face([face], width, height, [e for e, _ in ECHOMIMIC_PARTS])
        assert np.array_equal(ours, reference), trial


def test_echomimic_face_map_parts_and_colours():
    rng = np.random.default_rng(11)
    face = random_face(rng, 512, 512)
    face[:, 2] = 1
    ours = echomimic_face.draw_faces([face], 512, 512)
    colours = {tuple(int(v) for v in pixel) for pixel in ours[ours.max(axis=2) > 0]}
    assert colours <= {(180, 200, 10), (10, 200, 180), (180, 220, 10), (10, 220, 180), (10, 200, 250),
                       (250, 200, 10), (200, 200, 200)}
    assert {(10, 200, 250), (250, 200, 10), (200, 200, 200)} <= colours
    x, y = (int(v) for v in face[4, :2])
    assert (ours[y - 3:y + 3, x - 3:x + 3] == (200, 200, 200)).all()  # the nose square, drawn last
    # No mouth, no face oval: only eyes, brows and the three squares are drawn.
    only = face.copy()
    only[:, 2] = 0
    only[[4, 468, 473], 2] = 1
    squares = echomimic_face.draw_faces([only], 512, 512)
    assert (squares.max(axis=2) > 0).sum() <= 3 * 36
    # A face without irises still gets pupils, at the eye-contour centres.
    no_iris = face.copy()
    no_iris[468:, 2] = 0
    marked = echomimic_face.draw_faces([no_iris], 512, 512)
    px, py = (int(v) for v in pupils(no_iris)[0][:2])
    assert (marked[py - 3:py + 3, px - 3:px + 3] == (10, 200, 250)).all()


def test_face_styles_draw_through_the_vocabulary():
    """A face style drawn by name from people (the control-map pass's way) is its module's drawing of
    their face meshes; people without a face mesh draw nothing."""
    from marionette_core import styles
    from marionette_core.keypoints import PersonKeypoints

    rng = np.random.default_rng(12)
    faces = [random_face(rng, 300, 200)]
    people = [PersonKeypoints({"face_mesh_keypoints_2d": faces[0]}), PersonKeypoints.empty()]
    assert np.array_equal(styles.draw("aniportrait-face", people, 300, 200), aniportrait_face.draw_faces(faces, 300, 200))
    assert np.array_equal(styles.draw("echomimic-face", people, 300, 200), echomimic_face.draw_faces(faces, 300, 200))
    assert not np.array_equal(echomimic_face.draw_faces(faces, 300, 200), aniportrait_face.draw_faces(faces, 300, 200))
    assert not styles.draw("aniportrait-face", people[1:], 300, 200).any()
    with pytest.raises(ValueError, match="unknown style 'nope'; known styles: .*aniportrait-face"):
        styles.draw("nope", people, 300, 200)
    with pytest.raises(ValueError, match="rendered by Blender"):
        styles.draw("background", people, 300, 200)
