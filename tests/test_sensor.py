"""Tests of the glimpse sensor ρ(x, l): every backend against a slow loop written from docs/design.md and against numpy.

The chain of trust: hand-computed glimpses check the slow loop; the slow loop checks the numpy reference (and every
backend) on small cases; the numpy reference checks the compiled backends on many random cases (hypothesis).
"""

from __future__ import annotations

import dataclasses
import itertools
import math
import re
import subprocess
import sys
import tracemalloc

import numpy as np
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from ram_infer.sensor import available_backends, extract_glimpses, extract_glimpses_reference

from conftest import require_backend

# The contract's tolerance between implementations (docs/design.md); images below hold values in [0, 1).
TOLERANCE = 1e-6


def glimpse_by_loop(images: np.ndarray, locations: np.ndarray, g: int, k: int, s: int) -> np.ndarray:
    """ρ(x, l) one output pixel at a time, transcribed from the contract (docs/design.md), not from any implementation.

    Args:
        images (ndarray[N, C, H, W], float32): the images.
        locations (ndarray[N, 2], float32): (x, y) per image.
        g: glimpse_size.  k: num_scales.  s: scale_factor.

    Returns:
        ndarray[N, k, C, g, g], float32.
    """
    n_images, channels, height, width = images.shape
    rho = np.zeros((n_images, k, channels, g, g), dtype=np.float32)
    for n, i, c, oy, ox in itertools.product(range(n_images), range(k), range(channels), range(g), range(g)):
        # "Locations outside [-1, 1] are clamped"; cx = min(floor((x + 1) / 2 · W), W − 1), likewise cy with H.
        x = min(max(float(locations[n, 0]), -1.0), 1.0)
        y = min(max(float(locations[n, 1]), -1.0), 1.0)
        cx, cy = min(math.floor((x + 1) / 2 * width), width - 1), min(math.floor((y + 1) / 2 * height), height - 1)
        # Patch i (side g·sⁱ) covers [cx − side // 2, cx − side // 2 + side), reduced by averaging sⁱ×sⁱ blocks.
        block = s**i
        side = g * block
        top, left = cy - side // 2 + oy * block, cx - side // 2 + ox * block
        total = 0.0
        for row, col in itertools.product(range(top, top + block), range(left, left + block)):
            if 0 <= row < height and 0 <= col < width:  # "pixels outside the image read as 0"
                total += float(images[n, c, row, col])
        rho[n, i, c, oy, ox] = total / block**2
    return rho


@pytest.fixture(scope="module", params=["numpy", "cpu", pytest.param("cuda", marks=pytest.mark.cuda)])
def backend(request: pytest.FixtureRequest) -> str:
    """Every backend usable here (module scope, so hypothesis tests may use it)."""
    return require_backend(request.param)


@pytest.fixture(scope="module", params=["cpu", pytest.param("cuda", marks=pytest.mark.cuda)])
def compiled_backend(request: pytest.FixtureRequest) -> str:
    """The compiled backends usable here, to compare with the numpy reference."""
    return require_backend(request.param)


@pytest.fixture(params=["numpy", "cpu"])
def host_backend(request: pytest.FixtureRequest) -> str:
    """The backends taking host arrays, which share the input checks and their messages."""
    return require_backend(request.param)


def run_backend(backend: str, images: np.ndarray, locations: np.ndarray, g: int, k: int, s: int) -> np.ndarray:
    """Glimpses from `backend` as a host array; the CUDA backend runs on torch CUDA tensors.

    Args:
        backend: "numpy", "cpu" or "cuda".
        images (ndarray[N, C, H, W], float32): the images.
        locations (ndarray[N, 2], float32): (x, y) per image.
        g: glimpse_size.  k: num_scales.  s: scale_factor.

    Returns:
        ndarray[N, k, C, g, g], float32.
    """
    if backend != "cuda":
        return extract_glimpses(images, locations, g, k, s, backend=backend)
    import torch

    rho = extract_glimpses(torch.from_numpy(images).cuda(), torch.from_numpy(locations).cuda(), g, k, s, backend="cuda")
    return rho.cpu().numpy()


def random_images(n: int, c: int, h: int, w: int, seed: int = 0) -> np.ndarray:
    """Images [N, C, H, W] float32 with values in [0, 1)."""
    return np.random.default_rng(seed).random((n, c, h, w), dtype=np.float32)


def max_difference(actual: np.ndarray, expected: np.ndarray) -> float:
    assert actual.shape == expected.shape, f"shape {actual.shape} != {expected.shape}"
    return float(np.max(np.abs(actual - expected), initial=0.0))


# ---------------------------------------------------------------------------------------------------------------------
# Hand-computed glimpses of a 4×4 image holding 1..16 row by row (pixel (row r, column c) = 4r + c + 1), and of a
# non-square 2×3 image holding 1..6. Every expected value is an exact float32, so every implementation must give it.
IMAGE_4X4 = np.arange(1, 17, dtype=np.float32).reshape(1, 1, 4, 4)
IMAGE_2X3 = np.arange(1, 7, dtype=np.float32).reshape(1, 1, 2, 3)
HAND_CASES = [
    # (-1, -1): centre pixel (0, 0); the 2×2 patch covers rows/cols [-1, 1), so only pixel (0, 0) = 1 is inside.
    # Scale 1 (side 4, blocks 2×2) covers [-2, 2): only its bottom-right block (1 + 2 + 5 + 6) / 4 = 3.5 is inside.
    pytest.param(IMAGE_4X4, (-1.0, -1.0), 2, 2, 2, [[[[0, 0], [0, 1]]], [[[0, 0], [0, 3.5]]]], id="top-left-corner"),
    # x = 1: centre column min(4, W − 1) = 3, the last one; y = 0: centre row 2. Columns [2, 4), rows [1, 3).
    pytest.param(IMAGE_4X4, (1.0, 0.0), 2, 1, 2, [[[[7, 8], [11, 12]]]], id="right-edge"),
    # (1, 1): centre (3, 3), the bottom-right pixel; columns and rows [2, 4).
    pytest.param(IMAGE_4X4, (1.0, 1.0), 2, 1, 2, [[[[11, 12], [15, 16]]]], id="bottom-right-corner"),
    # Just below 1 lands on the same last pixel as 1 itself (a saturated tanh gives either).
    pytest.param(IMAGE_4X4, (np.nextafter(np.float32(1), np.float32(0)), 1.0), 2, 1, 2, [[[[11, 12], [15, 16]]]],
                 id="just-below-one-same-as-one"),
    # Beyond the corner clamps to (1, -1): centre column 3, row 0; columns [2, 4), rows [-1, 1).
    pytest.param(IMAGE_4X4, (1.5, -7.0), 2, 1, 2, [[[[0, 0], [3, 4]]]], id="beyond-top-right-clamped"),
    # (-inf, inf) clamps to (-1, 1): centre column 0, row 3; columns [-1, 1), rows [2, 4).
    pytest.param(IMAGE_4X4, (-np.inf, np.inf), 2, 1, 2, [[[[0, 9], [0, 13]]]], id="infinite-clamped"),
    pytest.param(IMAGE_4X4, (0.0, 0.0), 1, 1, 2, [[[[11]]]], id="1x1-at-centre"),
    # Odd side 3 starts side // 2 = 1 before the centre (2, 2): rows and columns [1, 4).
    pytest.param(IMAGE_4X4, (0.0, 0.0), 3, 1, 2, [[[[6, 7, 8], [10, 11, 12], [14, 15, 16]]]], id="odd-g"),
    # Scale 1 has side 8 > 4: one 8×8 block holding the whole image, 136 / 64.
    pytest.param(IMAGE_4X4, (0.0, 0.0), 1, 2, 8, [[[[11]]], [[[2.125]]]], id="patch-larger-than-image"),
    # s = 1: every scale is the same patch.
    pytest.param(IMAGE_4X4, (0.0, 0.0), 1, 3, 1, [[[[11]]], [[[11]]], [[[11]]]], id="s=1"),
    # W = 3, H = 2 at (0, 0): centre column floor(1.5) = 1, row 1; rows and columns [0, 2).
    pytest.param(IMAGE_2X3, (0.0, 0.0), 2, 1, 2, [[[[1, 2], [4, 5]]]], id="non-square"),
    # (0.5, -0.5) on W = 3, H = 2: centre column floor(2.25) = 2, row floor(0.5) = 0; rows [-1, 1), columns [1, 3).
    pytest.param(IMAGE_2X3, (0.5, -0.5), 2, 1, 2, [[[[0, 0], [2, 3]]]], id="non-square-off-centre"),
]


@pytest.mark.parametrize(("image", "location", "g", "k", "s", "expected"), HAND_CASES)
def test_loop_reference_matches_hand_computed(image, location, g, k, s, expected):
    locations = np.array([location], dtype=np.float32)
    np.testing.assert_array_equal(glimpse_by_loop(image, locations, g, k, s)[0], np.array(expected, np.float32))


@pytest.mark.parametrize(("image", "location", "g", "k", "s", "expected"), HAND_CASES)
def test_backend_matches_hand_computed(backend, image, location, g, k, s, expected):
    locations = np.array([location], dtype=np.float32)
    np.testing.assert_array_equal(run_backend(backend, image, locations, g, k, s)[0], np.array(expected, np.float32))


def test_channels_keep_their_order(backend):
    image = np.stack([IMAGE_4X4[0, 0] * (c + 1) for c in range(3)])[None]  # (1, 3, 4, 4): channel c = (c + 1) · base
    rho = run_backend(backend, image, np.zeros((1, 2), np.float32), 1, 1, 2)
    np.testing.assert_array_equal(rho[0, 0, :, 0, 0], [11, 22, 33])


# ---------------------------------------------------------------------------------------------------------------------
# Every backend against the slow loop on small cases, each image at one of these locations (corners, edges, beyond).
LOOP_LOCATIONS = np.array(
    [(-1, -1), (1, 1), (1, -1), (-1, 1), (0, 0), (1.2, -1.4), (-0.3, 0.77), (0.999, -0.999)], dtype=np.float32
)
LOOP_CASES = [  # (C, H, W, g, k, s)
    pytest.param(1, 1, 1, 1, 1, 1, id="1x1-image-g1"),
    pytest.param(1, 1, 1, 3, 2, 2, id="1x1-image-patch-larger"),
    pytest.param(3, 5, 7, 2, 3, 2, id="non-square-C3"),
    pytest.param(1, 7, 4, 3, 2, 3, id="tall-odd-g-s3"),
    pytest.param(3, 6, 6, 4, 4, 1, id="s1-k4"),
    pytest.param(1, 3, 9, 5, 1, 2, id="wide-patch-wider-than-image"),
    pytest.param(1, 8, 8, 2, 4, 2, id="k4-largest-patch-16"),
]


@pytest.mark.parametrize(("c", "h", "w", "g", "k", "s"), LOOP_CASES)
def test_backend_matches_loop_reference(backend, c, h, w, g, k, s):
    images = random_images(len(LOOP_LOCATIONS), c, h, w)
    expected = glimpse_by_loop(images, LOOP_LOCATIONS, g, k, s)
    assert max_difference(run_backend(backend, images, LOOP_LOCATIONS, g, k, s), expected) <= TOLERANCE


@dataclasses.dataclass(frozen=True)
class SensorCase:
    """One random sensor call: shapes, parameters, locations, and the seed of its images (so a failure prints short)."""

    c: int
    h: int
    w: int
    g: int
    k: int
    s: int
    locations: tuple[tuple[float, float], ...]
    seed: int

    def arrays(self) -> tuple[np.ndarray, np.ndarray]:
        """Images [N, C, H, W] and locations [N, 2], float32."""
        locations = np.array(self.locations, dtype=np.float32).reshape(-1, 2)
        return random_images(len(locations), self.c, self.h, self.w, self.seed), locations


def coordinate(size: int) -> st.SearchStrategy[float]:
    """A location coordinate along an axis of `size` pixels: anywhere in [-1.5, 1.5], exactly ±1 or 0, or (up to
    float32 rounding) on a pixel boundary 2j / size − 1, where the floor of the centre rule is most fragile."""
    return st.one_of(
        st.sampled_from([-1.5, -1.0, 0.0, 1.0, 1.5]),
        st.floats(-1.5, 1.5, width=32),
        st.integers(0, size).map(lambda j: 2 * j / size - 1),
    )


@st.composite
def sensor_cases(draw, max_batch: int, max_side: int, max_g: int, max_s: int = 3) -> SensorCase:
    c = draw(st.sampled_from([1, 3]))
    h, w = draw(st.integers(1, max_side)), draw(st.integers(1, max_side))
    n = draw(st.integers(1, max_batch))
    locations = draw(st.lists(st.tuples(coordinate(w), coordinate(h)), min_size=n, max_size=n))
    return SensorCase(
        c=c,
        h=h,
        w=w,
        g=draw(st.integers(1, max_g)),
        k=draw(st.integers(1, 4)),
        s=draw(st.integers(1, max_s)),
        locations=tuple(locations),
        seed=draw(st.integers(0, 2**32 - 1)),
    )


def large_batch_case(n: int, c: int, h: int, w: int) -> SensorCase:
    """A batch of `n` random locations in [-1.5, 1.5], for the explicit large-batch examples."""
    locations = np.random.default_rng(n).uniform(-1.5, 1.5, (n, 2)).astype(np.float32)
    return SensorCase(c=c, h=h, w=w, g=8, k=3, s=2, locations=tuple(map(tuple, locations.tolist())), seed=n)


@settings(max_examples=300, deadline=None)
@given(case=sensor_cases(max_batch=16, max_side=70, max_g=12))
@example(case=large_batch_case(256, 3, 60, 45))
@example(case=large_batch_case(512, 1, 28, 100))
def test_compiled_matches_numpy_reference(compiled_backend, case):
    images, locations = case.arrays()
    expected = extract_glimpses_reference(images, locations, case.g, case.k, case.s)
    actual = run_backend(compiled_backend, images, locations, case.g, case.k, case.s)
    assert max_difference(actual, expected) <= TOLERANCE


@settings(max_examples=150, deadline=None)
@given(case=sensor_cases(max_batch=3, max_side=12, max_g=4, max_s=2))
def test_numpy_reference_matches_loop_reference(case):
    images, locations = case.arrays()
    expected = glimpse_by_loop(images, locations, case.g, case.k, case.s)
    actual = extract_glimpses_reference(images, locations, case.g, case.k, case.s)
    assert max_difference(actual, expected) <= TOLERANCE


# g = 1, k = 3, s = 4096: patches up to 4096² = 2^24 pixels a side, the largest allowed, around small images. The whole
# patch of scale 2 would hold 2^48 pixels; only its part inside the image may be read.
LARGEST_PATCHES = (1, 3, 4096)


def test_numpy_reference_reads_only_the_image_part_of_huge_patches():
    tracemalloc.start()  # numpy reports its array memory to tracemalloc
    try:
        rho = extract_glimpses_reference(IMAGE_4X4, np.zeros((1, 2), np.float32), *LARGEST_PATCHES)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    # The centre pixel 11, then the image's sum 136 over blocks of 4096² and 4096⁴ pixels (exact in float32).
    np.testing.assert_array_equal(rho.ravel(), np.array([11, 136 / 2.0**24, 136 / 2.0**48], np.float32))
    assert peak < 1 << 20, f"{peak} bytes for a 4×4 image"


def test_compiled_matches_numpy_reference_on_huge_patches(compiled_backend):
    images = random_images(len(LOOP_LOCATIONS), 2, 5, 7)
    expected = extract_glimpses_reference(images, LOOP_LOCATIONS, *LARGEST_PATCHES)
    # Equal bits, not TOLERANCE, which the means over 2^48 pixels (about 1e-13) would meet whatever they were: both
    # sum each block in float64 in row-major order.
    np.testing.assert_array_equal(run_backend(compiled_backend, images, LOOP_LOCATIONS, *LARGEST_PATCHES), expected)


# ---------------------------------------------------------------------------------------------------------------------
# Invalid inputs: the host backends make the same checks with the same messages.
def _read_only(array: np.ndarray) -> np.ndarray:
    array.flags.writeable = False
    return array


VALID = {
    "images": np.zeros((2, 1, 5, 5), np.float32),
    "locations": np.zeros((2, 2), np.float32),
    "glimpse_size": 2,
    "num_scales": 2,
    "scale_factor": 2,
}
INVALID_CASES = [
    pytest.param({"images": np.zeros((2, 1, 5, 5))}, "images must be float32, got float64", id="float64-images"),
    pytest.param({"images": np.zeros((2, 1, 5, 5), np.int32)}, "images must be float32, got int32", id="int-images"),
    pytest.param({"images": np.zeros((2, 5, 5), np.float32)}, "images must have shape (N, C, H, W), got (2, 5, 5)",
                 id="3d-images"),
    pytest.param({"images": np.zeros((2, 1, 0, 5), np.float32)},
                 "images must have shape (N, C, H, W) with C, H, W >= 1, got (2, 1, 0, 5)", id="empty-height"),
    pytest.param({"images": np.zeros((2, 1, 5, 5), np.float32).transpose(0, 1, 3, 2)}, "images must be C-contiguous",
                 id="transposed-images"),
    pytest.param({"images": np.zeros((2, 1, 5, 10), np.float32)[..., ::2]}, "images must be C-contiguous",
                 id="sliced-images"),
    pytest.param({"locations": np.zeros((2, 3), np.float32)}, "locations must have shape (2, 2), got (2, 3)",
                 id="locations-3-columns"),
    pytest.param({"locations": np.zeros((3, 2), np.float32)}, "locations must have shape (2, 2), got (3, 2)",
                 id="locations-wrong-batch"),
    pytest.param({"locations": np.zeros(4, np.float32)}, "locations must have shape (2, 2), got (4,)",
                 id="locations-1d"),
    pytest.param({"locations": np.zeros((2, 2))}, "locations must be float32, got float64", id="float64-locations"),
    pytest.param({"locations": np.array([[0, 0], [0, np.nan]], np.float32)}, "locations must not be NaN (row 1)",
                 id="nan-location"),
    pytest.param({"glimpse_size": 0}, "glimpse_size must be >= 1, got 0", id="g=0"),
    pytest.param({"glimpse_size": -3}, "glimpse_size must be >= 1, got -3", id="g<0"),
    pytest.param({"num_scales": 0}, "num_scales must be >= 1, got 0", id="k=0"),
    pytest.param({"scale_factor": 0}, "scale_factor must be >= 1, got 0", id="s=0"),
    # g·s^(k-1) = 2^64 would overflow int64; both backends refuse any patch side beyond 2^24 before computing it.
    pytest.param({"num_scales": 64}, "must be <= 16777216", id="k*s-overflow"),
    pytest.param({"glimpse_size": 2**25, "num_scales": 1}, "must be <= 16777216", id="g-too-large"),
    pytest.param({"out": np.zeros((2, 2, 1, 2, 2))}, "out must be float32, got float64", id="float64-out"),
    pytest.param({"out": np.zeros((2, 2, 1, 2, 3), np.float32)},
                 "out must have shape (N, k, C, g, g) = (2, 2, 1, 2, 2), got (2, 2, 1, 2, 3)", id="out-wrong-shape"),
    pytest.param({"out": np.zeros((2, 2, 1, 2, 4), np.float32)[..., ::2]}, "out must be C-contiguous",
                 id="out-non-contiguous"),
    pytest.param({"out": _read_only(np.zeros((2, 2, 1, 2, 2), np.float32))}, "out must be writeable",
                 id="out-read-only"),
]


@pytest.mark.parametrize(("changes", "message"), INVALID_CASES)
def test_invalid_input_raises(host_backend, changes, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        extract_glimpses(**{**VALID, **changes}, backend=host_backend)


def test_unknown_backend_raises():
    message = "backend must be one of ('auto', 'numpy', 'cpu', 'cuda'), got 'tpu'"
    with pytest.raises(ValueError, match=re.escape(message)):
        extract_glimpses(**VALID, backend="tpu")


def test_cuda_backend_unavailable_raises():
    if "cuda" in available_backends():
        pytest.skip("a CUDA device is usable here")
    with pytest.raises(RuntimeError, match="no CUDA (sensor|device)"):
        extract_glimpses(**VALID, backend="cuda")


# ---------------------------------------------------------------------------------------------------------------------
# Interface behaviours.
def test_empty_batch_gives_empty_glimpses(backend):
    images, locations = np.zeros((0, 3, 5, 6), np.float32), np.zeros((0, 2), np.float32)
    rho = run_backend(backend, images, locations, 3, 2, 2)
    assert rho.shape == (0, 2, 3, 3, 3)
    assert rho.dtype == np.float32


def test_out_is_written_in_place(host_backend):
    images, locations = random_images(3, 1, 9, 7), LOOP_LOCATIONS[:3]
    out = np.full((3, 2, 1, 4, 4), np.nan, np.float32)
    result = extract_glimpses(images, locations, 4, 2, 2, backend=host_backend, out=out)
    assert result is out
    np.testing.assert_array_equal(out, extract_glimpses_reference(images, locations, 4, 2, 2))


def test_non_ndarray_out_raises(host_backend):
    with pytest.raises(TypeError):
        extract_glimpses(**VALID, out=[[0.0]], backend=host_backend)


@pytest.mark.parametrize("backend_name", ["auto", "numpy", "cpu"])
def test_torch_cpu_tensors_are_accepted(backend_name):
    torch = pytest.importorskip("torch")
    if backend_name != "auto":
        require_backend(backend_name)
    images, locations = random_images(4, 3, 11, 13), LOOP_LOCATIONS[:4]
    rho = extract_glimpses(torch.from_numpy(images), torch.from_numpy(locations), 3, 2, 2, backend=backend_name)
    np.testing.assert_array_equal(rho, extract_glimpses_reference(images, locations, 3, 2, 2))


@pytest.mark.cuda
def test_cuda_nan_location_raises():
    require_backend("cuda")
    import torch

    locations = torch.tensor([[0.0, float("nan")]], device="cuda")
    with pytest.raises(ValueError, match=re.escape("locations must not be NaN (row 0)")):
        extract_glimpses(torch.zeros((1, 1, 4, 4), device="cuda"), locations, 2, 1, 2)


@pytest.mark.cuda
def test_cuda_without_the_nan_check_gives_nan_glimpses_for_nan_locations_only():
    require_backend("cuda")
    import torch

    images, locations = random_images(4, 2, 9, 7), LOOP_LOCATIONS[:4].copy()
    locations[1, 0] = locations[3, 1] = np.nan
    rho = extract_glimpses(torch.from_numpy(images).cuda(), torch.from_numpy(locations).cuda(), 3, 2, 2,
                           check_nan=False)
    torch.cuda.synchronize()
    rho = rho.cpu().numpy()
    assert np.isnan(rho[[1, 3]]).all()
    np.testing.assert_array_equal(rho[[0, 2]], extract_glimpses_reference(images[[0, 2]], locations[[0, 2]], 3, 2, 2))


@pytest.mark.cuda
def test_cuda_host_locations_raise():
    require_backend("cuda")
    import torch

    with pytest.raises(ValueError, match="locations must be a CUDA array too"):
        extract_glimpses(torch.zeros((1, 1, 4, 4), device="cuda"), np.zeros((1, 2), np.float32), 2, 1, 2)


# ---------------------------------------------------------------------------------------------------------------------
# Determinism: the same bits on every call and for every thread count (each image is summed in one fixed order).
DETERMINISM_SPEC = (8, 3, 2)  # g, k, s: the paper's MNIST-like sensor


@pytest.fixture(scope="module")
def determinism_batch() -> tuple[np.ndarray, np.ndarray]:
    """512 images [512, 1, 100, 100] (enough work for the CPU kernel to start threads) and their locations [512, 2]."""
    locations = np.random.default_rng(1).uniform(-1.2, 1.2, (512, 2)).astype(np.float32)
    return random_images(512, 1, 100, 100), locations


def test_repeated_calls_are_bit_identical(backend, determinism_batch):
    first = run_backend(backend, *determinism_batch, *DETERMINISM_SPEC)
    assert np.array_equal(run_backend(backend, *determinism_batch, *DETERMINISM_SPEC), first)


@pytest.fixture(scope="module")
def single_thread_glimpses(determinism_batch) -> np.ndarray:
    """The compiled CPU kernel's glimpses [512, k, 1, g, g] of the determinism batch on one thread."""
    return extract_glimpses(*determinism_batch, *DETERMINISM_SPEC, backend=require_backend("cpu"), threads=1)


@pytest.mark.parametrize("threads", [2, 3, 64, None])
def test_thread_count_does_not_change_bits(threads, determinism_batch, single_thread_glimpses):
    rho = extract_glimpses(*determinism_batch, *DETERMINISM_SPEC, backend="cpu", threads=threads)
    assert np.array_equal(rho, single_thread_glimpses)


# A child whose address space is capped a little above what it has mapped, so that the kernel's thread stacks (8 MiB,
# the RLIMIT_STACK it starts with) cannot all be mapped and pthread_create fails with EAGAIN, as under a process limit.
# RLIMIT_NPROC would say so more directly but does not bind root, which CI runs as.
THREAD_STACK = 8 << 20
REFUSED_THREADS_CHILD = """
import resource, sys
import numpy as np
from ram_infer import _sensor

# 512 glimpses (8, 3, 2) are enough work for 10 threads.
images = np.random.default_rng(0).random((512, 1, 32, 32), dtype=np.float32)
locations = np.random.default_rng(1).uniform(-1.2, 1.2, (512, 2)).astype(np.float32)
single = _sensor.extract_glimpses_cpu(images, locations, 8, 3, 2, threads=1)
out = np.empty_like(single)
with open("/proc/self/status") as status:
    mapped = next(int(line.split()[1]) * 1024 for line in status if line.startswith("VmSize:"))
resource.setrlimit(resource.RLIMIT_AS, (mapped + int(sys.argv[1]), resource.getrlimit(resource.RLIMIT_AS)[1]))
_sensor.extract_glimpses_cpu(images, locations, 8, 3, 2, out=out, threads=64)
sys.exit(0 if np.array_equal(out, single) else 3)
"""


@pytest.mark.skipif(sys.platform != "linux", reason="reads /proc/self/status")
@pytest.mark.parametrize(
    "room", [pytest.param(THREAD_STACK // 2, id="none-starts"), pytest.param(5 * THREAD_STACK // 2, id="two-start")]
)
def test_refused_threads_are_done_without(room):
    require_backend("cpu")
    import resource

    def thread_stacks_of_8_mib() -> None:  # glibc sizes thread stacks by RLIMIT_STACK at the child's start
        resource.setrlimit(resource.RLIMIT_STACK, (THREAD_STACK, resource.getrlimit(resource.RLIMIT_STACK)[1]))

    child = subprocess.run([sys.executable, "-c", REFUSED_THREADS_CHILD, str(room)], capture_output=True, text=True,
                           timeout=120, preexec_fn=thread_stacks_of_8_mib)
    # Before threads were optional: an exception (RuntimeError, exit 1) or an abort (-6, SIGABRT), when a thread
    # was refused after others had started.
    assert child.returncode == 0, f"exit {child.returncode}: {child.stderr}"


@pytest.mark.parametrize("name", ["MAX_IMAGE_SIDE", "MAX_PATCH_SIDE", "MAX_SCALES"])
def test_python_limits_are_the_compiled_sensors(name):
    """One home (csrc/checks.h): the numpy reference's copies and the metadata check must agree with it."""
    from ram_infer import metadata, sensor

    if sensor._sensor is None:
        pytest.skip("the compiled sensor is not built")
    assert getattr(sensor, name) == getattr(sensor._sensor, name)
    assert metadata.MAX_PATCH_SIDE is sensor.MAX_PATCH_SIDE
