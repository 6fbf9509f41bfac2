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

from ram_infer.metadata import InputFormat, SensorSpec
from ram_infer.sensor import centre_pixel

DEFAULT_MIN_SIDE = 280
# RGB pixels of all frames together (≈ 100 MB): a GIF of T frames of a 1×8192 input upscaled to 280 px would be 5 GB.
MAX_TRACE_PIXELS = 1 << 25
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
    factor = _zoom(h, w, count - first + 1, min_side)
    pixels = np.clip(image * input_format.value_scale, 0, 255).round().astype(np.uint8)  # (C, H, W)
    base = Image.fromarray(pixels[0] if pixels.shape[0] == 1 else pixels.transpose(1, 2, 0)).convert("RGB")
    resample = Image.Resampling.NEAREST if factor >= 1 else Image.Resampling.BOX
    base = base.resize((max(1, int(w * factor)), max(1, int(h * factor))), resample)
    cx = centre_pixel(locations[:count, 0], w)  # (count,)
    cy = centre_pixel(locations[:count, 1], h)  # (count,)
    font = ImageFont.load_default(size=max(10, int(3 * factor)))
    thin, thick = max(1, int(factor) // 5), max(1, int(factor) // 4)
    frames = []
    for t in range(first, count + 1):
        frame = base.copy()
        pen = ImageDraw.Draw(frame)
        points = [((x + 0.5) * factor, (y + 0.5) * factor) for x, y in zip(cx[:t], cy[:t])]
        if len(points) > 1:
            pen.line(points, fill=(255, 255, 255), width=thick)
        for i in range(t):
            colour = COLOURS[i % len(COLOURS)]
            for scale in range(sensor.num_scales):
                side = sensor.glimpse_size * sensor.scale_factor**scale
                left, top = int(cx[i]) - side // 2, int(cy[i]) - side // 2
                box = [round(v * factor) for v in (left, top, left + side, top + side)]
                pen.rectangle((box[0], box[1], box[2] - 1, box[3] - 1), outline=colour, width=thin)
            corner = int(cx[i]) - sensor.glimpse_size // 2, int(cy[i]) - sensor.glimpse_size // 2  # scale 0's
            pen.text(((corner[0] + 0.3) * factor, (corner[1] + 0.1) * factor), str(i + 1), fill=colour, font=font)
        frames.append(frame)
    if caption:
        _write_caption(frames[-1], caption, font)
    return frames


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

