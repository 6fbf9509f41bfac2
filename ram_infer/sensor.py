"""The glimpse sensor ρ(x, l): the front door that picks a backend, and the numpy reference of the contract.

The contract (one definition, shared with ``csrc/sensor.h``): images ``[N, C, H, W]`` float32 and locations ``[N, 2]``
float32 as ``(x, y)`` in ``[-1, 1]`` (x along the width, ``(-1, -1)`` the top-left corner) give glimpses
``[N, k, C, g, g]``. Scale ``i`` is the square patch of side ``g·sⁱ`` centred on the pixel
``(min(floor((x + 1) / 2 · W), W − 1), min(floor((y + 1) / 2 · H), H − 1))``, starting ``side // 2`` before it,
reduced to ``g × g`` by
averaging non-overlapping ``sⁱ × sⁱ`` blocks. Pixels outside the image count as 0; locations outside ``[-1, 1]`` are
clamped; NaN locations are an error.
"""

from __future__ import annotations

from typing import Any, Protocol

import numpy as np
import numpy.typing as npt

from ram_infer.limits import MAX_IMAGE_SIDE, MAX_PATCH_SIDE, MAX_SCALES  # csrc/checks.h's, for the numpy reference

try:
    from ram_infer import _sensor
except ImportError:  # a source checkout without the compiled module still has the numpy reference
    _sensor = None

BACKENDS = ("numpy", "cpu", "cuda")


class CudaArray(Protocol):
    """An array on a CUDA device that describes itself by ``__cuda_array_interface__`` (torch, CuPy, Numba)."""

    @property
    def __cuda_array_interface__(self) -> dict[str, Any]: ...

def available_backends() -> tuple[str, ...]:
    """Backends usable on this machine, in order of preference for host arrays."""
    found = ["numpy"]
    if _sensor is not None:
        found.insert(0, "cpu")
        if _sensor.built_with_cuda and _sensor.cuda_device_count() > 0:
            found.append("cuda")
    return tuple(found)


def extract_glimpses(
    images: npt.ArrayLike | CudaArray,
    locations: npt.ArrayLike | CudaArray,
    glimpse_size: int,
    num_scales: int,
    scale_factor: int = 2,
    *,
    backend: str = "auto",
    out: npt.NDArray[np.float32] | CudaArray | None = None,
    threads: int | None = None,
    stream: int = 0,
    check_nan: bool = True,
) -> npt.NDArray[np.float32] | CudaArray:
    """Takes the glimpse ρ(x, l) of every image at its location.

    Args:
        images (ndarray[N, C, H, W], float32): C-contiguous. A CUDA array (anything with ``__cuda_array_interface__``,
            e.g. a torch CUDA tensor) runs on the GPU.
        locations (ndarray[N, 2], float32): ``(x, y)`` in ``[-1, 1]``; values outside are clamped.
        glimpse_size: g, the side of every scale's output.
        num_scales: k, the number of patches per glimpse.
        scale_factor: s, patch ``i`` has side ``g·sⁱ``.
        backend: ``"auto"`` (CUDA for device arrays, else the compiled CPU kernel, else numpy), ``"cpu"``,
            ``"numpy"`` or ``"cuda"``.
        out (ndarray[N, k, C, g, g], float32): written in place and returned if given (required for CUDA arrays
            that have no ``new_empty``).
        threads: CPU threads for the compiled kernel; None lets it choose. The result does not depend on it.
        stream: CUDA stream handle for the CUDA backend (0 = the default stream).
        check_nan: CUDA backend only: False skips the NaN check of the locations, which copies them to the host and
            so waits for the stream; NaN locations then give NaN glimpses. The host backends always check.

    Returns:
        ndarray[N, k, C, g, g], float32 (a device array of the input's kind for the CUDA backend).

    Raises:
        ValueError: wrong shape, dtype, contiguity, parameters, or NaN locations.
        RuntimeError: the requested backend is not available here.
    """
    on_device = hasattr(images, "__cuda_array_interface__")
    if backend == "auto":
        backend = "cuda" if on_device else ("cpu" if _sensor is not None else "numpy")
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {('auto',) + BACKENDS}, got {backend!r}")
    if backend == "cuda":
        return _extract_cuda(images, locations, glimpse_size, num_scales, scale_factor, out, stream, check_nan)
    if on_device:
        raise ValueError(f"images are a CUDA array; backend {backend!r} needs host memory (use backend='cuda')")
    images, locations = np.asarray(images), np.asarray(locations)
    if backend == "numpy":
        _check_inputs(images, locations, glimpse_size, num_scales, scale_factor)
        result = extract_glimpses_reference(images, locations, glimpse_size, num_scales, scale_factor)
        if out is None:
            return result
        _check_out(out, result.shape)
        out[...] = result
        return out
    if _sensor is None:
        raise RuntimeError("the compiled sensor ram_infer._sensor is not built; reinstall with `pip install .`")
    return _sensor.extract_glimpses_cpu(
        images, locations, glimpse_size, num_scales, scale_factor, out=out, threads=0 if threads is None else threads
    )


def extract_glimpses_reference(
    images: np.ndarray, locations: np.ndarray, glimpse_size: int, num_scales: int, scale_factor: int = 2
) -> np.ndarray:
    """The contract in plain numpy (float64 sums), used as the reference and as the fallback without the extension.

    Only the part of each patch inside the image is read, so memory stays within a few times the images' size however
    large the patch (up to 2^24 pixels a side); the pixels outside count as 0 and need no memory. Each block is summed
    in float64 in row-major order, as csrc/sensor.h's block_mean does, so the result has the same bits.

    Args:
        images (ndarray[N, C, H, W], float32): already validated.
        locations (ndarray[N, 2], float32): already validated (no NaN).
        glimpse_size: g.  num_scales: k.  scale_factor: s.

    Returns:
        ndarray[N, k, C, g, g], float32.
    """
    n, c, h, w = images.shape
    cx = centre_pixel(locations[:, 0], w)  # (N,)
    cy = centre_pixel(locations[:, 1], h)  # (N,)
    rho = np.empty((n, num_scales, c, glimpse_size, glimpse_size), dtype=np.float32)
    for i in range(num_scales):
        rho[:, i] = _scale_glimpses(images, cx, cy, glimpse_size, scale_factor**i)
    return rho


def _scale_glimpses(images: np.ndarray, cx: np.ndarray, cy: np.ndarray, g: int, b: int) -> np.ndarray:
    """One scale of every glimpse: the g × g means of the blocks of side ``b`` of the patch centred on (cx, cy).

    Args:
        images (ndarray[N, C, H, W], float32): the images.
        cx (ndarray[N], int64): centre columns.  cy (ndarray[N], int64): centre rows.
        g: glimpse_size.  b: the block side sⁱ.

    Returns:
        ndarray[N, C, g, g], float32.
    """
    n, c, h, w = images.shape
    rows, row_blocks = _patch_window(cy, g, b, h)  # (N, Lh)
    cols, col_blocks = _patch_window(cx, g, b, w)  # (N, Lw)
    pixels = images[np.arange(n)[:, None, None, None], np.arange(c)[:, None, None], rows[:, None, :, None],
                    cols[:, None, None, :]]  # (N, C, Lh, Lw)
    # Pixel -> index of its block in the flat output (N, C, g, g); window pixels outside the patch go to one extra bin.
    outside = n * c * g * g
    block = (np.arange(n * c).reshape(n, c, 1, 1) * g + row_blocks[:, None, :, None]) * g + col_blocks[:, None, None, :]
    in_patch = (row_blocks >= 0)[:, None, :, None] & (col_blocks >= 0)[:, None, None, :]
    # np.bincount adds the weights in the order given: row-major within each block, like block_mean, in float64.
    sums = np.bincount(np.where(in_patch, block, outside).ravel(), weights=pixels.ravel(), minlength=outside + 1)
    return (sums[:outside] / (b * b)).astype(np.float32).reshape(n, c, g, g)


def _patch_window(centre: np.ndarray, g: int, b: int, size: int) -> tuple[np.ndarray, np.ndarray]:
    """Along an axis of ``size`` pixels: a window of min(g·b, size) pixels inside the image that holds every image
    pixel of the patch (side g·b, starting side // 2 before ``centre``), and the block of the patch each one is in.

    Args:
        centre (ndarray[N], int64): centre pixels.
        g: glimpse_size.  b: block side.  size: the axis' length.

    Returns:
        (ndarray[N, L], int64, ndarray[N, L], int64): the window's pixels (ascending, in [0, size)), and their block
        index in [0, g), or -1 for the pixels outside the patch.
    """
    side = g * b
    length = min(side, size)
    start = centre - side // 2  # (N,)
    # The patch's pixels inside the image, [max(start, 0), min(start + side, size)), are at most `length` many; a
    # window of that length starting at start clipped to [0, size - length] holds them all.
    pixels = np.minimum(np.maximum(start, 0), size - length)[:, None] + np.arange(length)  # (N, L)
    offset = pixels - start[:, None]
    return pixels, np.where((offset >= 0) & (offset < side), offset // b, -1)


def centre_pixel(l: np.ndarray, size: int) -> np.ndarray:
    """The contract's centre pixel along an axis of ``size`` pixels for coordinates ``l`` in [-1, 1] (clamped).

    float64 makes ``(l + 1) / 2 · size`` exact for float32 l, so the floor agrees with C++, CUDA and ONNX at pixel
    boundaries; l = 1 maps to the last pixel, so a saturated policy (tanh giving 1.0 or 0.99999994) glimpses one place.

    Args:
        l (ndarray[...], float32): coordinates along the axis.
        size: the axis' length in pixels.

    Returns:
        ndarray[...], int64 in [0, size).
    """
    pixel = np.floor((np.clip(np.asarray(l, dtype=np.float64), -1.0, 1.0) + 1.0) * 0.5 * size).astype(np.int64)
    return np.minimum(pixel, size - 1)


def _check_inputs(images: Any, locations: Any, glimpse_size: int, num_scales: int, scale_factor: int) -> None:
    """The checks the compiled binding makes, for the numpy and CUDA paths (same messages)."""
    for name, value in (("glimpse_size", glimpse_size), ("num_scales", num_scales), ("scale_factor", scale_factor)):
        if int(value) < 1:
            raise ValueError(f"{name} must be >= 1, got {value}")
    if num_scales > MAX_SCALES:
        raise ValueError(f"num_scales must be <= {MAX_SCALES}, got {num_scales}")
    if glimpse_size * scale_factor ** (num_scales - 1) > MAX_PATCH_SIDE:
        raise ValueError(f"largest patch side glimpse_size * scale_factor^(num_scales - 1) must be <= {MAX_PATCH_SIDE}")
    _check_float32_c_contiguous(images, "images")
    if len(images.shape) != 4:
        raise ValueError(f"images must have shape (N, C, H, W), got {tuple(images.shape)}")
    n, c, h, w = images.shape
    if min(c, h, w) < 1:
        raise ValueError(f"images must have shape (N, C, H, W) with C, H, W >= 1, got {tuple(images.shape)}")
    if max(h, w) > MAX_IMAGE_SIDE:
        raise ValueError(f"image height and width must be <= {MAX_IMAGE_SIDE}")
    _check_float32_c_contiguous(locations, "locations")
    if tuple(locations.shape) != (n, 2):
        raise ValueError(f"locations must have shape ({n}, 2), got {tuple(locations.shape)}")
    if isinstance(locations, np.ndarray) and np.isnan(locations).any():
        raise ValueError(f"locations must not be NaN (row {int(np.argwhere(np.isnan(locations))[0, 0])})")


def _check_float32_c_contiguous(array: np.ndarray, name: str) -> None:
    """The binding's check_float32_c_contiguous (same order and messages), so every backend rejects the same arrays."""
    if np.dtype(array.dtype) != np.float32:
        raise ValueError(f"{name} must be float32, got {array.dtype}")
    if not array.flags.c_contiguous:
        raise ValueError(f"{name} must be C-contiguous")
    if not array.flags.aligned:
        raise ValueError(f"{name} must be aligned")


def _check_out(out: Any, shape: tuple[int, ...]) -> None:
    if not isinstance(out, np.ndarray):
        raise TypeError(f"out must be a numpy ndarray, got {type(out).__name__}")
    _check_float32_c_contiguous(out, "out")
    if not out.flags.writeable:
        raise ValueError("out must be writeable")
    if out.shape != tuple(shape):
        raise ValueError(f"out must have shape (N, k, C, g, g) = {tuple(shape)}, got {out.shape}")


def _device_pointer(array: Any, name: str, shape: tuple[int, ...] | None = None) -> int:
    """The device pointer of a C-contiguous float32 CUDA array, after checking its interface."""
    interface = array.__cuda_array_interface__
    if np.dtype(interface["typestr"]) != np.float32:
        raise ValueError(f"{name} must be float32, got {np.dtype(interface['typestr'])}")
    if interface.get("strides") is not None:
        expected = tuple(int(np.prod(interface["shape"][i + 1 :])) * 4 for i in range(len(interface["shape"])))
        if tuple(interface["strides"]) != expected:
            raise ValueError(f"{name} must be C-contiguous")
    if shape is not None and tuple(interface["shape"]) != tuple(shape):
        raise ValueError(f"{name} must have shape {tuple(shape)}, got {tuple(interface['shape'])}")
    return int(interface["data"][0])


def _extract_cuda(images, locations, glimpse_size, num_scales, scale_factor, out, stream, check_nan):
    if _sensor is None or not _sensor.built_with_cuda:
        raise RuntimeError(
            "this build of ram_infer has no CUDA sensor (rebuild with RAM_INFER_CUDA=ON and nvcc on PATH)"
        )
    if _sensor.cuda_device_count() == 0:
        raise RuntimeError("the CUDA sensor is built but no CUDA device is usable (no GPU or driver)")
    if not hasattr(locations, "__cuda_array_interface__"):
        raise ValueError("with CUDA images, locations must be a CUDA array too")
    shape = tuple(images.__cuda_array_interface__["shape"])
    if len(shape) != 4:
        raise ValueError(f"images must have shape (N, C, H, W), got {shape}")
    n, c = shape[0], shape[1]
    out_shape = (n, num_scales, c, glimpse_size, glimpse_size)
    if out is None:
        if not hasattr(images, "new_empty"):
            raise ValueError("pass out= (a float32 CUDA array of shape (N, k, C, g, g)) for this kind of CUDA array")
        out = images.new_empty(out_shape)
    _sensor.extract_glimpses_cuda(
        _device_pointer(images, "images"),
        _device_pointer(locations, "locations", (n, 2)),
        _device_pointer(out, "out", out_shape),
        list(shape),
        glimpse_size,
        num_scales,
        scale_factor,
        stream,
        check_nan,
    )
    return out
