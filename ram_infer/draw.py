"""The glimpse path drawn on the image with Pillow: a PNG of all glimpses, or an animated GIF of one frame per glimpse.

For glimpse t the k boxes are the sensor's patches: scale i covers ``g·sⁱ`` pixels centred on the contract's centre
pixel (``ram_infer.sensor.centre_pixel``), starting ``side // 2`` before it (docs/design.md). Boxes are
numbered 1 … T and the centres joined by a line, on the model input upscaled by an integer factor to at least
``min_side`` pixels, within a budget of pixels over all frames (``MAX_TRACE_PIXELS``; a large input is drawn smaller).
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from ram_infer.images import Placement
from ram_infer.metadata import InputFormat, SensorSpec
from ram_infer.sensor import centre_pixel

DEFAULT_MIN_SIDE = 280
# RGB pixels of all frames together (≈ 100 MB): a GIF of T frames of a 1×8192 input upscaled to 280 px would be 5 GB.
MAX_TRACE_PIXELS = 1 << 25
MAX_CAPTION = 80  # characters of a caption; a model's label may be a megabyte long
FRAME_MILLISECONDS = 600
# One colour per glimpse, cycling: distinct on both dark and light backgrounds.
COLOURS = ((255, 64, 64), (255, 170, 0), (230, 230, 0), (64, 220, 64), (0, 200, 255), (90, 120, 255), (220, 90, 255))


def draw_glimpses(
    image: np.ndarray,
    locations: np.ndarray,
    sensor: SensorSpec,
    input_format: InputFormat,
    *,
    glimpses_used: int | None = None,
    min_side: int = DEFAULT_MIN_SIDE,
    last_only: bool = False,
    caption: str | None = None,
    on: tuple[np.ndarray, Placement] | None = None,
) -> list[Image.Image]:
    """Draws the glimpse path, one frame per glimpse (frame t shows glimpses 1 … t).

    Args:
        image (ndarray[C, H, W], float32): the model input the glimpses were taken on (C = 1 or 3).
        locations (ndarray[T, 2], float32): the glimpse centres as (x, y) in [-1, 1] (``Prediction.locations[i]``).
        sensor: the model's sensor (g, k, s), for the box sizes.
        input_format: the model's input format, to turn values back into 8-bit pixels.
        glimpses_used: draw only the first glimpses (``Prediction.glimpses_used[i]``); None draws all.
        min_side: the picture's shorter side is upscaled by an integer factor to at least this, unless the frames
            would exceed ``MAX_TRACE_PIXELS`` (then the factor is as large as they allow, below 1 if need be).
        last_only: draw only the last frame (a PNG needs no other).
        caption: text written in the bottom-left corner of the last frame, e.g. the answer ``"7 (100.0%)"``.
        on: draw on the image the input was made of instead of the input: its intensities (ndarray[H, W, c] in
            [0, 1], as ``ram_infer.images.read_intensities`` decodes them) and where the input lies in them
            (``ram_infer.images.place_intensities``).

    Returns:
        RGB frames, one per glimpse (or just the last); the last one shows the whole path.

    Raises:
        ValueError: image or locations of the wrong shape.
    """
    if image.ndim != 3 or image.shape[0] not in (1, 3):
        raise ValueError(f"image must have shape (C, H, W) with C = 1 or 3, got {image.shape}")
    if locations.ndim != 2 or locations.shape[1] != 2:
        raise ValueError(f"locations must have shape (T, 2), got {locations.shape}")
    count = len(locations) if glimpses_used is None else min(int(glimpses_used), len(locations))
    _, h, w = image.shape
    first = count if last_only else 1
    picture, placement = (_input_picture(image, input_format), Placement()) if on is None else _user_picture(*on)
    factor = _zoom(picture.height, picture.width, count - first + 1, min_side)
    resample = Image.Resampling.NEAREST if factor >= 1 else Image.Resampling.BOX
    base = picture.resize((max(1, int(picture.width * factor)), max(1, int(picture.height * factor))), resample)

    def at(x: float, y: float) -> tuple[float, float]:
        """A point of the input (pixel units) → the drawing's pixels."""
        image_x, image_y = placement.to_image(x, y)
        return image_x * factor, image_y * factor

    unit = factor * (placement.stretch[0] + placement.stretch[1]) / 2  # the drawing's pixels per input pixel
    path_colour = (255, 255, 255) if np.asarray(picture.convert("L")).mean() < 128 else (0, 0, 0)  # contrasting
    cx = centre_pixel(locations[:count, 0], w)  # (count,)
    cy = centre_pixel(locations[:count, 1], h)  # (count,)
    # Sizes follow the input's pixels on the drawing, within the drawing: an image of 1 × 60 000 pixels stretches one
    # input pixel over hundreds of the drawing's.
    largest = max(10, min(base.size) // 6)
    font = ImageFont.load_default(size=min(largest, max(10, int(3 * unit))))
    thin, thick = (min(max(1, int(unit) // d), max(1, largest // 8)) for d in (5, 4))
    frames = []
    for t in range(first, count + 1):
        frame = base.copy()
        pen = ImageDraw.Draw(frame)
        points = [at(x + 0.5, y + 0.5) for x, y in zip(cx[:t], cy[:t])]
        if len(points) > 1:
            pen.line(points, fill=path_colour, width=thick)
        for i in range(t):
            colour = COLOURS[i % len(COLOURS)]
            for scale in range(sensor.num_scales):
                side = sensor.glimpse_size * sensor.scale_factor**scale
                left, top = int(cx[i]) - side // 2, int(cy[i]) - side // 2
                (x0, y0), (x1, y1) = at(left, top), at(left + side, top + side)
                pen.rectangle((round(x0), round(y0), round(x1) - 1, round(y1) - 1), outline=colour, width=thin)
            corner = int(cx[i]) - sensor.glimpse_size // 2, int(cy[i]) - sensor.glimpse_size // 2  # scale 0's
            pen.text(at(corner[0] + 0.3, corner[1] + 0.1), str(i + 1), fill=colour, font=font)
        frames.append(frame)
    if caption:
        _write_caption(frames[-1], caption if len(caption) <= MAX_CAPTION else caption[: MAX_CAPTION - 1] + "…", font)
    return frames


def _input_picture(image: np.ndarray, input_format: InputFormat) -> Image.Image:
    """The model input ``[C, H, W]`` as the 8-bit RGB picture the model saw (bright ink on dark, for MNIST)."""
    pixels = np.clip(image * input_format.value_scale, 0, 255).round().astype(np.uint8)  # (C, H, W)
    return Image.fromarray(pixels[0] if pixels.shape[0] == 1 else pixels.transpose(1, 2, 0)).convert("RGB")


def _user_picture(values: np.ndarray, placement: Placement) -> tuple[Image.Image, Placement]:
    """Decoded intensities ``[H, W, c]`` (c = 1–4, alpha last) as the RGB picture a viewer shows: on white."""
    colour = values[:, :, :3] if values.shape[2] >= 3 else np.repeat(values[:, :, :1], 3, axis=2)  # (H, W, 3)
    if values.shape[2] in (2, 4):
        alpha = values[:, :, -1:]  # (H, W, 1)
        colour = colour * alpha + (1.0 - alpha)
    return Image.fromarray(np.clip(colour * 255, 0, 255).round().astype(np.uint8)), placement


def _write_caption(frame: Image.Image, caption: str, font: ImageFont.ImageFont) -> None:
    """The caption on a black box in the bottom-left corner, readable on any image."""
    pen = ImageDraw.Draw(frame)
    left, top, right, bottom = pen.textbbox((0, 0), caption, font=font)
    margin = max(2, (bottom - top) // 4)
    origin = (margin, frame.height - (bottom - top) - 2 * margin - top)
    box = (0, origin[1] + top - margin, right - left + 2 * margin, frame.height)
    pen.rectangle(box, fill=(0, 0, 0))
    pen.text(origin, caption, fill=(255, 255, 255), font=font)


def _zoom(height: int, width: int, frames: int, min_side: int) -> float:
    """The drawing's scale: the integer factor that brings the shorter side to ``min_side``, within the budget."""
    factor = max(1, math.ceil(min_side / min(height, width)))
    allowed = math.sqrt(MAX_TRACE_PIXELS / (frames * height * width))
    return factor if factor <= allowed else (math.floor(allowed) if allowed >= 1 else allowed)


def trace_grid(tiles: list[Image.Image], columns: int = 4, gap: int = 8) -> Image.Image:
    """Traces side by side, ``columns`` to a row, on white (a card's picture of several images)."""
    if not tiles:
        raise ValueError("tiles must not be empty")
    width, height = max(tile.width for tile in tiles), max(tile.height for tile in tiles)
    columns = min(columns, len(tiles))
    rows = -(-len(tiles) // columns)
    grid = Image.new("RGB", (columns * (width + gap) - gap, rows * (height + gap) - gap), (255, 255, 255))
    for i, tile in enumerate(tiles):
        grid.paste(tile, ((i % columns) * (width + gap), (i // columns) * (height + gap)))
    return grid


def save_trace(path: str | os.PathLike, frames: list[Image.Image]) -> None:
    """Writes the frames: an animated GIF (one frame per glimpse) for ``.gif``, else the last frame (PNG …).

    Raises:
        ValueError: no frames.
        OSError: the file cannot be written.
    """
    if not frames:
        raise ValueError("frames must not be empty")
    path = Path(path)
    if path.suffix.lower() == ".gif":
        frames[0].save(path, save_all=True, append_images=frames[1:], duration=FRAME_MILLISECONDS, loop=0)
    else:
        frames[-1].save(path)

