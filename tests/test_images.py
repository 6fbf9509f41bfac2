"""Image decoding and preparation: formats, modes, transparency, polarity, placement, limits, arrays and errors."""

from __future__ import annotations

import struct
import zlib

import numpy as np
import pytest
from PIL import Image, features

from ram_infer.images import ImageError, load_image, prepare_array
from ram_infer.metadata import InputFormat

MNIST = InputFormat(height=28, width=28, channels=1)
CANVAS = InputFormat(height=60, width=60, channels=1, placement="canvas")
RGB_MODEL = InputFormat(height=28, width=28, channels=3)


@pytest.fixture(scope="module")
def digit(digit_files) -> np.ndarray:
    """A sample MNIST digit, uint8 [28, 28], bright on black."""
    return np.asarray(Image.open(digit_files[0]))


@pytest.fixture(scope="module")
def expected(digit) -> np.ndarray:
    """What every lossless variant of ``digit`` must give for the MNIST model: the pixels / 255."""
    return (digit / np.float32(255))[None]


def test_model_sized_png_is_used_as_is(digit_files, expected):
    assert np.array_equal(load_image(digit_files[0], MNIST), expected)


@pytest.mark.parametrize(
    ("suffix", "atol"),
    [
        (".png", 0),
        (".bmp", 0),
        (".tiff", 0),
        (".gif", 0),
        (".webp", 0.15),
        (".jpg", 0.15),
    ],
)
def test_every_format_decodes(digit, expected, tmp_path, suffix, atol):
    if suffix == ".webp" and not features.check("webp"):
        pytest.skip("Pillow built without WebP")
    path = tmp_path / f"digit{suffix}"
    Image.fromarray(digit).save(path)
    np.testing.assert_allclose(load_image(path, MNIST), expected, rtol=0, atol=atol)


def _as_mode(digit: np.ndarray, mode: str) -> Image.Image:
    grey = Image.fromarray(digit)
    if mode == "I;16":
        return Image.fromarray(digit.astype(np.uint16) * 257)  # the same intensities in 16 bits
    if mode == "LA":
        return Image.merge("LA", (grey, Image.new("L", grey.size, 255)))
    if mode == "P":
        return grey.convert("RGB").quantize(colors=256, method=Image.Quantize.MEDIANCUT)
    return grey.convert(mode)


@pytest.mark.parametrize(("mode", "atol"), [("L", 0), ("RGB", 0), ("RGBA", 0), ("LA", 0), ("I;16", 1e-6), ("P", 0.05)])
def test_every_mode_decodes(digit, expected, tmp_path, mode, atol):
    image = _as_mode(digit, mode)
    assert image.mode == mode
    path = tmp_path / "digit.png"
    image.save(path)
    np.testing.assert_allclose(load_image(path, MNIST), expected, rtol=0, atol=atol)


def test_dark_ink_on_white_is_inverted(digit, expected, tmp_path):
    path = tmp_path / "paper.png"
    Image.fromarray(255 - digit).save(path)
    np.testing.assert_allclose(load_image(path, MNIST), expected, rtol=0, atol=1e-6)


def test_light_background_model_keeps_dark_ink(digit, tmp_path):
    path = tmp_path / "paper.png"
    Image.fromarray(255 - digit).save(path)
    light = InputFormat(height=28, width=28, channels=1, background="light")
    np.testing.assert_allclose(load_image(path, light), (255 - digit)[None] / 255, rtol=0, atol=1e-6)


@pytest.mark.parametrize("ink", [0, 255])
def test_transparent_background_becomes_dark(digit, expected, tmp_path, ink):
    """A digit drawn in any colour on a transparent background: the ink is what is opaque."""
    rgba = np.zeros((28, 28, 4), np.uint8)
    rgba[..., :3] = ink
    rgba[..., 3] = digit
    path = tmp_path / "transparent.png"
    Image.fromarray(rgba, "RGBA").save(path)
    np.testing.assert_allclose(load_image(path, MNIST), expected, rtol=0, atol=1e-6)


def test_grey_becomes_three_channels_for_rgb_models(digit_files, expected):
    assert np.array_equal(load_image(digit_files[0], RGB_MODEL), np.repeat(expected, 3, axis=0))


def test_value_scale_divides_8_bit_values(digit_files, digit):
    scaled = InputFormat(height=28, width=28, channels=1, value_scale=1.0)
    assert np.array_equal(load_image(digit_files[0], scaled), digit[None].astype(np.float32))


def test_first_frame_of_animated_gif_is_used(digit, expected, tmp_path):
    path = tmp_path / "anim.gif"
    frames = [Image.fromarray(digit), Image.fromarray(np.zeros_like(digit))]
    frames[0].save(path, save_all=True, append_images=frames[1:], duration=100)
    assert np.array_equal(load_image(path, MNIST), expected)


def test_exif_orientation_is_applied(digit, tmp_path):
    path = tmp_path / "rotated.jpg"
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90° clockwise to display"
    Image.fromarray(digit).save(path, exif=exif, quality=100)
    shown = np.rot90(digit, k=-1)  # what a viewer displays
    np.testing.assert_allclose(load_image(path, MNIST)[0], shown / 255, rtol=0, atol=0.15)


@pytest.fixture(scope="module")
def large_digit(digit) -> np.ndarray:
    """The digit enlarged 3× and placed off centre on a 120×100 black image (uint8)."""
    big = np.asarray(Image.fromarray(digit).resize((84, 84), Image.Resampling.BILINEAR))
    canvas = np.zeros((100, 120), np.uint8)
    canvas[2:86, 30:114] = big
    return canvas


def test_mnist_placement_gives_the_model_shape_and_range(large_digit):
    x = prepare_array(large_digit, MNIST)
    assert (x.shape, x.dtype, float(x.min()), float(x.max())) == ((1, 28, 28), np.float32, 0.0, 1.0)


def test_mnist_placement_fits_the_ink_in_20_pixels(large_digit):
    rows, cols = np.nonzero(prepare_array(large_digit, MNIST)[0] > 0.1)
    assert max(np.ptp(rows), np.ptp(cols)) + 1 <= 21


def test_mnist_placement_centres_the_centre_of_mass(large_digit):
    x = prepare_array(large_digit, MNIST)[0]
    centre = [(x.sum(axis=1 - axis) @ np.arange(28)) / x.sum() for axis in (0, 1)]
    np.testing.assert_allclose(centre, [14, 14], atol=1.0)


def test_photo_like_example_is_placed_like_mnist():
    from conftest import EXAMPLES

    x = load_image(EXAMPLES / "paper_3.jpg", MNIST)[0]
    border = np.concatenate([x[:3].ravel(), x[-3:].ravel(), x[:, :3].ravel(), x[:, -3:].ravel()])
    assert border.max() < 0.05 and x.max() == 1.0


def test_canvas_placement_pads_a_small_image_centred(digit, expected):
    x = prepare_array(digit, CANVAS)
    assert x.shape == (1, 60, 60) and x[:, :16].sum() == 0 and x[:, 44:].sum() == 0
    assert np.array_equal(x[:, 16:44, 16:44], expected)


def test_canvas_placement_shrinks_a_large_image_to_fit(large_digit):
    x = prepare_array(large_digit, CANVAS)
    assert x.shape == (1, 60, 60) and x[0, :5].sum() == 0 and x[0, -5:].sum() == 0  # 120×100 → 60×50, centred


@pytest.mark.parametrize(
    ("make", "atol"),
    [
        (lambda d: d, 0),
        (lambda d: np.stack([d] * 3, axis=2), 0),
        (lambda d: np.stack([d] * 3, axis=0), 0),
        (lambda d: d.astype(np.uint16) * 257, 1e-6),
        (lambda d: d / np.float32(255), 1e-6),
        (lambda d: d[:, :, None], 0),
    ],
    ids=["grey-uint8", "hwc-rgb", "chw-rgb", "uint16", "float", "hw1"],
)
def test_numpy_arrays_are_accepted(digit, expected, make, atol):
    np.testing.assert_allclose(prepare_array(make(digit), MNIST), expected, rtol=0, atol=atol)


@pytest.mark.parametrize(
    ("array", "message"),
    [
        (np.zeros((28, 28), np.int64), r"array: array dtype must be uint8, uint16 or float, got int64"),
        (np.zeros((2, 28, 28, 1), np.uint8), r"array: array must be \[H, W\], \[H, W, c\] or \[c, H, W\]"),
        (np.zeros((28, 28, 5), np.uint8), r"array must be \[H, W\], \[H, W, c\] or \[c, H, W\] with c in 1\.\.4"),
        (np.zeros((0, 28), np.uint8), r"array: image is empty"),
    ],
)
def test_bad_arrays_raise(array, message):
    with pytest.raises(ImageError, match=message):
        prepare_array(array, MNIST)


def test_model_with_other_channel_count_raises(digit):
    with pytest.raises(ImageError, match=r"array: the model takes 2 channels; images convert to 1 or 3"):
        prepare_array(digit, InputFormat(height=28, width=28, channels=2))


def _png_header_only(path, width: int, height: int) -> None:
    """A PNG whose header claims width × height grey pixels (its data is a few bytes: never decoded)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    chunks = chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0")) + chunk(b"IEND", b"")
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunks)


@pytest.mark.parametrize(
    ("side", "message"),
    [
        (9_000, r"9000×9000 pixels is more than the limit of 64000000"),  # below Pillow's warning
        (10_000, r"10000×10000 pixels is more than the limit of 64000000"),  # Pillow warns: must not escape
        (100_000, r"too many pixels \(more than Pillow's decompression-bomb limit\)"),  # Pillow refuses
    ],
)
def test_huge_image_is_refused_from_its_header(tmp_path, side, message):
    path = tmp_path / "huge.png"
    _png_header_only(path, side, side)
    with pytest.raises(ImageError, match=rf"huge\.png: {message}"):
        load_image(path, MNIST)


def test_pixel_limit_is_configurable(digit_files):
    with pytest.raises(ImageError, match=r"28×28 pixels is more than the limit of 100"):
        load_image(digit_files[0], MNIST, max_pixels=100)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"", r"not an image file"),
        (b"hello, world\n", r"not an image file"),
        (None, r"cannot decode the image"),
    ],
    ids=["empty", "text", "truncated"],
)
def test_unreadable_file_raises(digit_files, tmp_path, content, message):
    path = tmp_path / "bad.png"
    path.write_bytes(digit_files[0].read_bytes()[:60] if content is None else content)
    with pytest.raises(ImageError, match=rf"bad\.png: {message}"):
        load_image(path, MNIST)


def test_missing_file_raises(tmp_path):
    with pytest.raises(ImageError, match=r"missing\.png: no such file"):
        load_image(tmp_path / "missing.png", MNIST)


def test_directory_raises(tmp_path):
    with pytest.raises(ImageError, match=r"is a directory, not an image"):
        load_image(tmp_path, MNIST)
