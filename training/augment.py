"""Augmentation of the training images: pixel shifts, turns and scales, elastic distortion.

Each kind draws from its own named random stream (training/streams.py), a function of (seed, step, rank): a resumed
run augments exactly as the uninterrupted one did, and adding a kind of augmentation leaves the others' draws, and
so every run that does not use the new kind, as they were.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from .config import TrainConfig
from .streams import numpy_stream, torch_seed


def augment_batch(images: np.ndarray, config: TrainConfig, step: int, rank: int,
                  device: torch.device) -> torch.Tensor:
    """The training batch of ``step`` on ``rank`` augmented as ``config`` says: shifted by whole pixels, then turned,
    scaled and distorted elastically in one bilinear resampling.

    Args:
        images (ndarray[B, 1, H, W], float32): the batch as the data stream gives it.
        config: max_shift, max_rotation, max_scale, elastic_pixels, elastic_spacing and the seed.
        step, rank: whose draws these are.
        device: where the result goes (and where the turns and distortions are computed).

    Returns:
        Tensor[B, 1, H, W], float32, on ``device``.
    """
    c = config
    if c.max_shift:
        images = shift(images, numpy_stream(c.seed, step, rank, "shift"), c.max_shift)
    x = torch.from_numpy(images).to(device)
    if not (c.max_rotation or c.max_scale or c.elastic_pixels):
        return x
    displacement = None
    if c.elastic_pixels:
        displacement = elastic_displacement(x.shape, c.elastic_pixels, c.elastic_spacing,
                                            torch_generator(c.seed, step, rank, "elastic", device), device)
    return random_affine(x, c.max_rotation, c.max_scale, torch_generator(c.seed, step, rank, "affine", device),
                         displacement)


def torch_generator(seed: int, step: int, rank: int, purpose: str, device: torch.device) -> torch.Generator:
    """A torch generator on ``device`` of the named stream ``purpose`` (training/streams.py) for step ``step``."""
    return torch.Generator(device=device).manual_seed(torch_seed(seed, step, rank, purpose))


def shift(images: np.ndarray, rng: np.random.Generator, max_shift: int) -> np.ndarray:
    """Moves each image by a uniform random offset in ``[-max_shift, max_shift]`` per axis; vacated pixels are 0.

    Args:
        images (ndarray[B, 1, H, W], float32): the batch.
        rng: the source of the offsets.
        max_shift: the largest move in pixels.

    Returns:
        ndarray[B, 1, H, W], float32.
    """
    batch, _, height, width = images.shape
    padded = np.pad(images[:, 0], ((0, 0), (max_shift, max_shift), (max_shift, max_shift)))  # (B, H + 2m, W + 2m)
    top = rng.integers(0, 2 * max_shift + 1, size=batch)  # (B,)
    left = rng.integers(0, 2 * max_shift + 1, size=batch)  # (B,)
    rows = top[:, None, None] + np.arange(height)[None, :, None]  # (B, H, 1)
    cols = left[:, None, None] + np.arange(width)[None, None, :]  # (B, 1, W)
    return padded[np.arange(batch)[:, None, None], rows, cols][:, None]  # (B, 1, H, W)


def random_affine(x: torch.Tensor, max_rotation: float, max_scale: float, generator: torch.Generator,
                  displacement: torch.Tensor | None = None) -> torch.Tensor:
    """Each image of x (N, C, H, W) turned by a uniform angle in ±max_rotation degrees and scaled by a uniform factor in
    1 ± max_scale about its centre, then moved pixel by pixel by ``displacement`` (N, H, W, 2) in grid_sample's
    normalised units if given (one resampling for both); bilinear, pixels from outside the image are 0."""
    n = x.shape[0]
    angle = (torch.rand(n, generator=generator, device=x.device) * 2 - 1) * math.radians(max_rotation)  # (N,)
    scale = 1 + (torch.rand(n, generator=generator, device=x.device) * 2 - 1) * max_scale  # (N,)
    # affine_grid maps output to input coordinates: the inverse of "scale, then turn"
    cos, sin, zero = torch.cos(angle) / scale, torch.sin(angle) / scale, torch.zeros_like(angle)
    theta = torch.stack([torch.stack([cos, sin, zero], 1), torch.stack([-sin, cos, zero], 1)], 1)  # (N, 2, 3)
    grid = torch.nn.functional.affine_grid(theta, list(x.shape), align_corners=False)  # (N, H, W, 2)
    if displacement is not None:
        grid = grid + displacement
    return torch.nn.functional.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def elastic_displacement(shape: torch.Size, pixels: float, spacing: float, generator: torch.Generator,
                         device: torch.device) -> torch.Tensor:
    """A smooth random displacement field per image (Simard et al. 2003's elastic distortion), (N, H, W, 2) in
    grid_sample's normalised units: independent normal shifts of standard deviation ``pixels`` at control points
    ``spacing`` pixels apart, interpolated bicubically in between.

    Why control points rather than Simard's Gaussian-blurred per-pixel noise: the blur is a 25-tap convolution of
    every pixel, ≈ 100 ms a batch on one CPU core, longer than the training step itself; the coarse grid takes
    ≈ 9 ms (60×60, batch 128) and gives the same kind of field (smooth over ≈ ``spacing`` pixels).
    """
    n, _, height, width = shape
    points = (math.ceil(height / spacing) + 1, math.ceil(width / spacing) + 1)
    shifts = torch.randn(n, 2, *points, generator=generator, device=device) * pixels  # (N, 2, h, w), x then y
    field = torch.nn.functional.interpolate(shifts, size=(height, width), mode="bicubic", align_corners=True)
    to_grid_units = torch.tensor([2 / width, 2 / height], device=device)  # align_corners=False: a pixel is 2/side
    return field.permute(0, 2, 3, 1) * to_grid_units  # (N, H, W, 2)
