"""Type stub of ram_infer._sensor: the compiled glimpse sensor ρ(x, l) (csrc/bindings.cpp; contract: csrc/sensor.h).

Use ``ram_infer.extract_glimpses``, which picks a backend and checks CUDA arrays; these are its building blocks.
``extract_glimpses_cuda`` exists only in builds with the CUDA sensor, where ``built_with_cuda`` is True.
tests/test_sensor_stub.py checks that this file and the module name the same things with the same parameters.
"""

from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

built_with_cuda: bool
"""True when the module was compiled with the CUDA sensor, i.e. it has ``extract_glimpses_cuda``."""
MAX_IMAGE_SIDE: int
"""csrc/checks.h kMaxImageSide: the largest image height or width."""
MAX_PATCH_SIDE: int
"""csrc/checks.h kMaxPatchSide: the largest patch side g·s^(k-1)."""
MAX_SCALES: int
"""csrc/checks.h kMaxScales: the most scales k."""

def extract_glimpses_cpu(
    images: npt.NDArray[np.float32],
    locations: npt.NDArray[np.float32],
    glimpse_size: int,
    num_scales: int,
    scale_factor: int = 2,
    out: npt.NDArray[np.float32] | None = None,
    threads: int = 0,
) -> npt.NDArray[np.float32]:
    """Takes the glimpse of every image at its location on the CPU, without the GIL.

    Args:
        images (ndarray[N, C, H, W], float32): C-contiguous and aligned; C, H, W >= 1, H and W <= 2^28.
        locations (ndarray[N, 2], float32): C-contiguous ``(x, y)``; values outside ``[-1, 1]`` are clamped.
        glimpse_size: g >= 1, the side of every scale's output.
        num_scales: k >= 1, the number of patches per glimpse.
        scale_factor: s >= 1; patch ``i`` has side ``g·sⁱ``, at most 2^24.
        out (ndarray[N, k, C, g, g], float32): C-contiguous and writeable; written in place and returned if given.
        threads: CPU threads; 0 or less picks the hardware concurrency. The result does not depend on it.

    Returns:
        ndarray[N, k, C, g, g], float32: ``out`` if given, else a new array.

    Raises:
        ValueError: a wrong dtype, shape, contiguity or alignment, a bad parameter, an unusable ``out``, or a NaN
            location (the message names the first such row).
    """

def extract_glimpses_cuda(
    images: int,
    locations: int,
    out: int,
    image_shape: Sequence[int],
    glimpse_size: int,
    num_scales: int,
    scale_factor: int,
    stream: int = 0,
    check_nan: bool = True,
) -> None:
    """Takes the glimpses on the GPU, from and into device memory. Only in builds where ``built_with_cuda`` is True.

    The pointers come from ``__cuda_array_interface__``; this function cannot check their dtype, shape or
    contiguity, which ``ram_infer.extract_glimpses`` does before calling it.

    Args:
        images: device pointer to float32 [N, C, H, W], C-contiguous.
        locations: device pointer to float32 [N, 2], C-contiguous.
        out: device pointer to float32 [N, k, C, g, g], C-contiguous, written.
        image_shape: ``(N, C, H, W)``.
        glimpse_size: g >= 1.
        num_scales: k >= 1.
        scale_factor: s >= 1.
        stream: a ``cudaStream_t`` handle; 0 is the default stream.
        check_nan: read the locations back and reject NaN, which synchronises the stream once before the launch;
            False launches at once (never waiting for the kernel either way), and NaN locations give NaN glimpses.

    Raises:
        ValueError: a bad parameter or image shape, a null pointer, or a NaN location.
        RuntimeError: a CUDA copy or the kernel launch failed (the message carries the CUDA error).
    """

def cuda_device_count() -> int:
    """Number of usable CUDA devices: 0 without a GPU, a driver, or a CUDA build."""
