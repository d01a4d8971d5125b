"""Letterbox geometry: exact placement of non-square images and exact inverse box mapping."""

from __future__ import annotations

import numpy as np
import pytest

from shared.imaging.geometry import box_sizes_mm, clip_boxes, letterbox


def test_landscape_is_scaled_by_its_width_and_padded_top_and_bottom() -> None:
    g = letterbox(640, 480, 384)
    assert (g.resized_width, g.resized_height) == (384, 288)
    assert (g.pad_left, g.pad_top) == (0, 48)
    np.testing.assert_allclose(g.to_input([[100, 50, 300, 200]]), [[60, 78, 180, 168]])
    np.testing.assert_allclose(g.to_original([[60, 78, 180, 168]]), [[100, 50, 300, 200]])


def test_portrait_with_rounding_maps_back_exactly() -> None:
    g = letterbox(300, 500, 384)
    # 300 * 384 / 500 = 230.4 -> 230 px wide, centred: (384 - 230) // 2 = 77 px on the left.
    assert (g.resized_width, g.resized_height, g.pad_left, g.pad_top) == (230, 384, 77, 0)
    assert g.scale_x == pytest.approx(230 / 300)
    boxes = np.array([[0, 0, 300, 500], [12.5, 40, 99, 260.25]])
    np.testing.assert_allclose(g.to_input(boxes)[0], [77, 0, 307, 384])
    np.testing.assert_allclose(g.to_original(g.to_input(boxes)), boxes, atol=1e-9)


def test_boxes_in_the_padding_are_clipped_to_the_image() -> None:
    g = letterbox(640, 480, 384)
    # A box reaching into the top padding band (y < 48) and past the right edge.
    np.testing.assert_allclose(g.to_original([[300, 10, 400, 100]]), [[500, 0, 640, 86.6666667]])


def test_small_image_is_scaled_up() -> None:
    g = letterbox(64, 32, 128)
    assert (g.resized_width, g.resized_height, g.pad_top) == (128, 64, 32)
    np.testing.assert_allclose(g.to_original([[0, 32, 128, 96]]), [[0, 0, 64, 32]])


def test_clip_and_mm_sizes() -> None:
    np.testing.assert_allclose(clip_boxes([[-5, -1, 700, 500]], 640, 480), [[0, 0, 640, 480]])
    # PixelSpacing is (row, column): 0.5 mm between rows (vertical), 0.25 mm between columns.
    np.testing.assert_allclose(box_sizes_mm([[10, 10, 50, 30]], (0.5, 0.25)), [[10.0, 10.0]])


def test_rejects_empty_images() -> None:
    with pytest.raises(ValueError, match="positive"):
        letterbox(0, 10, 384)
