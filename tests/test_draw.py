"""The glimpse-path drawing: frame count, upscaling, and boxes where the sensor contract puts the patches."""

from __future__ import annotations

import numpy as np
import pytest

from ram_infer.draw import COLOURS, MAX_TRACE_PIXELS, draw_glimpses, save_trace
from ram_infer.metadata import InputFormat, SensorSpec

SENSOR = SensorSpec(glimpse_size=4, num_scales=2, scale_factor=2)
MNIST = InputFormat(height=28, width=28, channels=1)
IMAGE = np.zeros((1, 28, 28), np.float32)
LOCATIONS = np.array([[0.0, 0.0], [-0.5, -0.5], [0.5, 0.25]], np.float32)


def test_one_frame_per_glimpse_used():
    assert len(draw_glimpses(IMAGE, LOCATIONS, SENSOR, MNIST, glimpses_used=2)) == 2


def test_image_is_upscaled_by_an_integer_factor():
    assert draw_glimpses(IMAGE, LOCATIONS, SENSOR, MNIST)[0].size == (280, 280)


@pytest.mark.parametrize(("scale", "side"), [(0, 4), (1, 8)])
def test_box_edges_follow_the_sensor_contract(scale, side):
    """Glimpse 1 at (0, 0): centre pixel (14, 14); scale i covers [14 - side // 2, 14 - side // 2 + side)."""
    frame = np.asarray(draw_glimpses(IMAGE, LOCATIONS[:1], SENSOR, MNIST, min_side=28)[0])  # factor 1
    left = 14 - side // 2
    assert tuple(frame[left + side - 1, left + side - 1]) == COLOURS[0]  # bottom-right pixel of the box outline


def test_bad_locations_raise():
    with pytest.raises(ValueError, match=r"locations must have shape \(T, 2\), got \(3,\)"):
        draw_glimpses(IMAGE, np.zeros(3, np.float32), SENSOR, MNIST)


def test_save_trace_without_frames_raises(tmp_path):
    with pytest.raises(ValueError, match=r"frames must not be empty"):
        save_trace(tmp_path / "t.png", [])


@pytest.mark.parametrize(("height", "width", "last_only"), [(1, 8192, False), (1, 8192, True), (4096, 4096, False)])
def test_frames_stay_within_the_pixel_budget(height, width, last_only):
    """A 1×8192 input upscaled to 280 px would be 2.3 G pixels a frame; a GIF holds all frames at once."""
    shape = InputFormat(height=height, width=width, channels=1, placement="canvas")
    locations = np.zeros((6, 2), np.float32)
    frames = draw_glimpses(np.zeros((1, height, width), np.float32), locations, SENSOR, shape, last_only=last_only)
    assert len(frames) == (1 if last_only else 6)
    assert sum(frame.size[0] * frame.size[1] for frame in frames) <= MAX_TRACE_PIXELS


def test_caption_is_written_in_the_bottom_left_corner_of_the_last_frame():
    plain = draw_glimpses(IMAGE, LOCATIONS, SENSOR, MNIST)
    captioned = draw_glimpses(IMAGE, LOCATIONS, SENSOR, MNIST, caption="7 (99.9%)")
    corner = np.asarray(captioned[-1])[-40:, :120]  # (40, 120, 3)
    assert (corner == 255).all(axis=2).any() and not np.array_equal(corner, np.asarray(plain[-1])[-40:, :120])
    assert np.array_equal(np.asarray(captioned[0]), np.asarray(plain[0]))  # only the last frame carries it


def test_trace_grid_lays_the_traces_out_in_rows():
    from ram_infer.draw import trace_grid

    tiles = [draw_glimpses(IMAGE, LOCATIONS, SENSOR, MNIST, last_only=True)[0] for _ in range(6)]  # 280 × 280 each
    grid = trace_grid(tiles, columns=4, gap=8)
    assert grid.size == (4 * 280 + 3 * 8, 2 * 280 + 8)
    assert np.array_equal(np.asarray(grid)[288:568, 288:568], np.asarray(tiles[5]))  # row 2, column 2
    with pytest.raises(ValueError, match=r"tiles must not be empty"):
        trace_grid([])
