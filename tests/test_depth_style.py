"""The `depth` style's conversion of Blender's depth pass into VACE's depth-annotator convention:
inverse depth, minus its minimum, divided by its maximum, times 255, truncated; nothing hit is black."""

import numpy as np

from marionette_core.styles.depth import from_distance


def test_inverse_depth_normalised_per_frame_near_bright():
    depth = np.array([[1.0, 2.0], [4.0, 1e10]])  # 1e10: Blender's value where nothing is hit
    grey = from_distance(depth)
    assert grey.shape == (2, 2, 3) and grey.dtype == np.uint8
    assert (grey[..., 0] == grey[..., 1]).all() and (grey[..., 0] == grey[..., 2]).all()
    # 1/z = 1, 0.5, 0.25, 0 -> x 255, truncated as the annotator's astype(uint8)
    assert grey[..., 0].tolist() == [[255, 127], [63, 0]]


def test_without_background_the_farthest_point_is_black():
    depth = np.array([[2.0, 4.0, 8.0]])
    # 1/z = 0.5, 0.25, 0.125: minus 0.125, over 0.375 -> 1, 1/3, 0
    assert from_distance(depth)[..., 0].tolist() == [[255, 85, 0]]


def test_a_frame_of_one_depth_or_of_nothing_is_black():
    assert not from_distance(np.full((3, 4), 5.0)).any()
    assert not from_distance(np.full((3, 4), 1e10)).any()
