"""Image decoding and preparation: formats, modes, transparency, polarity, placement, limits, arrays and errors."""

from __future__ import annotations

import io
import math
import os
import struct
import subprocess
import sys
import time
import zlib

import numpy as np
import pytest
from PIL import Image, ImageDraw, features

import ram_infer.images
from ram_infer.images import (
    _SCAN_READ_BYTES,
    DECODABLE_FORMATS,
    IMAGE_SUFFIXES,
    MAX_JPEG_SCAN_PIXELS,
    MAX_JPEG_SCANS,
    WORKING_PIXELS,
    ImageError,
    load_image,
    prepare_array,
    read_intensities,
)
from ram_infer.metadata import InputFormat

from make_bad_inputs import NOT_AN_IMAGE, POSTSCRIPT, SCAN_MARKER, jpeg_with_scans

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


def _encode(image: Image.Image, format: str, **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=format, **options)
    return buffer.getvalue()


# ---------------------------------------------------------------------------------------------------------------------
# The format allow-list: Pillow identifies a file by its content; only DECODABLE_FORMATS are decoded.
def test_suffixes_and_docstring_follow_the_format_list():
    assert DECODABLE_FORMATS == ("PNG", "JPEG", "BMP", "WebP", "TIFF", "GIF")  # the README's list
    suffix_formats = {Image.registered_extensions()[suffix] for suffix in IMAGE_SUFFIXES}
    assert suffix_formats == {name.upper() for name in DECODABLE_FORMATS}
    assert ", ".join(DECODABLE_FORMATS) in ram_infer.images.__doc__


# Formats Pillow both writes and reads (the mode each writer takes): each file is named .png, to show that the content
# decides, and refused.
OTHER_FORMATS = {
    "BLP": "P", "DDS": "L", "DIB": "L", "EPS": "L", "ICNS": "RGBA", "ICO": "L", "MSP": "1", "PCX": "L",
    "PPM": "L", "QOI": "RGB", "SGI": "L", "SPIDER": "F", "TGA": "L", "XBM": "1", "JPEG2000": "L", "AVIF": "RGB",
}  # fmt: skip
OPTIONAL_CODECS = {"JPEG2000": "jpg_2000", "AVIF": "avif"}


@pytest.mark.parametrize("format", list(OTHER_FORMATS))
def test_other_formats_are_refused_whatever_the_name(digit, tmp_path, format):
    if format in OPTIONAL_CODECS and not features.check(OPTIONAL_CODECS[format]):
        pytest.skip(f"Pillow built without {format}")
    path = tmp_path / "digit.png"
    # Written through memory: Pillow's SPIDER writer registers the name's suffix (.png!) as SPIDER for later saves.
    path.write_bytes(_encode(Image.fromarray(digit).convert(OTHER_FORMATS[format]), format))
    with Image.open(path) as image:
        assert image.format == format  # Pillow itself would decode it
    with pytest.raises(ImageError, match=rf"^{path}: {NOT_AN_IMAGE}$"):
        load_image(path, MNIST)


def test_camera_jpeg_with_a_second_image_decodes(digit, expected, tmp_path):
    """Cameras write MPO (a JPEG followed by other images): Pillow's JPEG opener returns it as format "MPO"."""
    path = tmp_path / "camera.jpg"
    Image.fromarray(digit).save(path, format="MPO", save_all=True, append_images=[Image.new("L", (28, 28))])
    with Image.open(path) as image:
        assert (image.format, image.n_frames) == ("MPO", 2)
    np.testing.assert_allclose(load_image(path, MNIST), expected, rtol=0, atol=0.15)


@pytest.mark.skipif(sys.platform == "win32", reason="a shell script stands in for Ghostscript")
def test_postscript_named_png_never_starts_ghostscript(tmp_path):
    """PostScript named .png is refused without starting a helper: a fake ``gs`` first on PATH records any start.

    The second run is the control: Pillow left to identify the file starts that same ``gs`` (the real one would run
    the PostScript, and its ``{} loop`` never ends), so the first run's silence is meaningful.
    """
    helpers, marker, path = tmp_path / "bin", tmp_path / "gs started", tmp_path / "x.png"
    helpers.mkdir()
    (helpers / "gs").write_text(f"#!/bin/sh\ntouch '{marker}'\nexit 1\n")
    (helpers / "gs").chmod(0o755)
    path.write_bytes(POSTSCRIPT)
    env = {**os.environ, "PATH": f"{helpers}{os.pathsep}{os.environ['PATH']}"}

    def python(code: str) -> str:
        result = subprocess.run([sys.executable, "-c", code, str(path)], env=env, capture_output=True, timeout=120)
        return result.stdout.decode()

    ours = "import sys, ram_infer.images as m\ntry: m.read_intensities(sys.argv[1])\nexcept m.ImageError as e: print(e)"
    assert python(ours) == f"{path}: not an image file of a supported format (PNG, JPEG, BMP, WebP, TIFF, GIF)\n"
    assert not marker.exists()
    python("import sys; from PIL import Image\ntry: Image.open(sys.argv[1]).load()\nexcept OSError: pass")
    assert marker.exists()


# ---------------------------------------------------------------------------------------------------------------------
# The JPEG scan budget: scans are counted from the markers, before decoding.
@pytest.fixture(scope="module")
def progressive_digit(digit) -> bytes:
    return _encode(Image.fromarray(digit), "JPEG", progressive=True)


def test_jpeg_at_the_scan_cap_decodes_and_one_more_scan_is_refused(progressive_digit, tmp_path):
    at_cap, above = tmp_path / "at cap.jpg", tmp_path / "above.jpg"
    at_cap.write_bytes(jpeg_with_scans(progressive_digit, MAX_JPEG_SCANS))
    above.write_bytes(jpeg_with_scans(progressive_digit, MAX_JPEG_SCANS + 1))
    assert load_image(at_cap, MNIST).shape == (1, 28, 28)
    with pytest.raises(ImageError, match=rf"above\.jpg: more than {MAX_JPEG_SCANS} JPEG scans at 28×28 pixels"):
        load_image(above, MNIST)


def _comments(total: int) -> bytes:
    """JPEG comment segments of ``total`` bytes in all (at least 4 a segment, at most 60 000)."""
    count = math.ceil(total / 60_000)
    sizes = [total // count + (i < total % count) for i in range(count)]
    return b"".join(b"\xff\xfe" + struct.pack(">H", size - 2) + bytes(size - 4) for size in sizes)


def test_scan_markers_are_counted_across_read_chunks(progressive_digit, tmp_path):
    """One scan over the cap, the first marker's two bytes in two chunks of the count: still refused."""
    jpeg = jpeg_with_scans(progressive_digit, MAX_JPEG_SCANS + 1)
    padding = _SCAN_READ_BYTES - 1 - jpeg.index(SCAN_MARKER)
    data = jpeg[:2] + _comments(padding) + jpeg[2:]  # after the start-of-image marker
    assert data[_SCAN_READ_BYTES - 1 : _SCAN_READ_BYTES + 1] == SCAN_MARKER
    path = tmp_path / "padded.jpg"
    path.write_bytes(data)
    with pytest.raises(ImageError, match=rf"more than {MAX_JPEG_SCANS} JPEG scans"):
        load_image(path, MNIST)


@pytest.fixture(scope="module")
def large_progressive() -> bytes:
    """A real 8000×8000 progressive JPEG (10 scans, 250 kB): a bright bar on grey."""
    image = Image.new("L", (8000, 8000), 30)
    ImageDraw.Draw(image).rectangle((3600, 2000, 4400, 6000), fill=220)
    return _encode(image, "JPEG", progressive=True)


def test_scans_times_pixels_is_bounded(large_progressive, tmp_path):
    """Under the absolute cap but over scans × pixels: the 8000×8000 file may have 40 scans, not 41."""
    allowed = MAX_JPEG_SCAN_PIXELS // 8000**2
    assert allowed < MAX_JPEG_SCANS
    path = tmp_path / "41 scans.jpg"
    path.write_bytes(jpeg_with_scans(large_progressive, allowed + 1))
    with pytest.raises(ImageError, match=rf"more than {allowed} JPEG scans at 8000×8000 pixels \(too slow to decode"):
        load_image(path, MNIST)


def test_scan_bomb_is_refused_at_once(large_progressive, tmp_path):
    """The issue's file: 10 000 scans over 8000×8000 pixels in 1.3 MB decoded for 6 minutes; refused in a moment."""
    path = tmp_path / "bomb.jpg"
    path.write_bytes(jpeg_with_scans(large_progressive, 10_000))
    began = time.monotonic()
    with pytest.raises(ImageError, match=r"JPEG scans at 8000×8000 pixels"):
        load_image(path, MNIST)
    assert time.monotonic() - began < 2


# ---------------------------------------------------------------------------------------------------------------------
# The working resolution: images above WORKING_PIXELS are reduced by an integer factor while decoding.
def _blocks(small: np.ndarray, factor: int) -> np.ndarray:
    """Each pixel of ``small`` repeated as a factor × factor block: the box filter gives ``small`` back exactly."""
    return np.kron(small, np.ones((factor, factor), small.dtype))


def test_image_within_the_working_budget_decodes_at_full_resolution(tmp_path):
    side = math.isqrt(WORKING_PIXELS)
    pixels = np.random.default_rng(0).integers(0, 256, (side, side), np.uint8)
    path = tmp_path / "budget.png"
    Image.fromarray(pixels).save(path, compress_level=1)
    assert np.array_equal(read_intensities(path), (pixels / np.float32(255))[:, :, None])


@pytest.mark.parametrize("mode", ["L", "I;16"])
def test_larger_image_is_reduced_by_an_integer_factor(tmp_path, mode):
    """Just above the budget (2000×2001 blocks of 2×2): halved, each block its value, 16-bit included."""
    side = math.isqrt(WORKING_PIXELS) // 2
    small = np.random.default_rng(1).integers(0, 256, (side, side + 1), np.uint8)
    scale = 257 if mode == "I;16" else 1
    path = tmp_path / "large.png"
    Image.fromarray(_blocks(small, 2).astype(np.uint16 if mode == "I;16" else np.uint8) * scale).save(path)
    np.testing.assert_allclose(read_intensities(path)[:, :, 0], small / np.float32(255), rtol=0, atol=1e-6)


def test_palette_is_converted_to_colours_before_reduction(tmp_path):
    """Black and white pixels (palette entries 0 and 2; entry 1 red) average to grey, not to the mean entry, red."""
    indices = np.indices((2002, 2000)).sum(axis=0) % 2 * 2  # a checkerboard of entries 0 and 2
    image = Image.fromarray(indices.astype(np.uint8), "P")
    image.putpalette([0, 0, 0, 255, 0, 0, 255, 255, 255])
    path = tmp_path / "palette.png"
    image.save(path)
    values = read_intensities(path)
    assert values.shape == (1001, 1000, 3) and np.all(values == np.float32(128 / 255))


def test_large_jpeg_is_decoded_at_a_dct_scale(tmp_path):
    """A 4000×4000 JPEG comes out as libjpeg's 1/2-scale decode (Image.draft), never decoded in full."""
    pixels = np.random.default_rng(2).integers(0, 256, (500, 500), np.uint8)
    path = tmp_path / "photo.jpg"
    Image.fromarray(pixels).resize((4000, 4000), Image.Resampling.BILINEAR).save(path, quality=90)
    with Image.open(path) as image:
        image.draft(None, (2000, 2000))
        scaled = np.asarray(image) / np.float32(255)
    assert scaled.shape == (2000, 2000)
    assert np.array_equal(read_intensities(path)[:, :, 0], scaled)


def test_exif_orientation_is_applied_after_reduction(tmp_path):
    """Stored 4000 wide × 2000 high with a mark at the top left, orientation 6 (turn 90° clockwise to display)."""
    stored = np.zeros((2000, 4000), np.uint8)
    stored[:400, :400] = 255
    exif = Image.Exif()
    exif[0x0112] = 6
    path = tmp_path / "portrait.jpg"
    Image.fromarray(stored).save(path, exif=exif)
    values = read_intensities(path)[:, :, 0]
    assert values.shape == (2000, 1000)  # halved, then turned
    assert values[:150, -150:].min() > 0.9 and values[:, :-250].max() < 0.1  # the mark at the top right


@pytest.mark.skipif(sys.platform != "linux", reason="ru_maxrss is in kB on Linux")
def test_large_png_decodes_in_memory_proportional_to_its_pixels(tmp_path):
    """An 8000×8000 RGBA PNG of 250 kB took 2.8 GB (float64 and full-size float32 copies) and 11 s; now the decoded
    bytes (256 MB), the premultiplied copy the box filter works on (256 MB) and floats of 4 Mpx."""
    image = Image.new("RGBA", (8000, 8000))
    ImageDraw.Draw(image).rectangle((3600, 2000, 4400, 6000), fill=(255, 255, 255, 255))
    path = tmp_path / "large.png"
    image.save(path)
    del image
    code = (
        "import resource, sys\n"
        "from ram_infer.images import load_image\n"
        "from ram_infer.metadata import InputFormat\n"
        "before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\n"
        "x = load_image(sys.argv[1], InputFormat(height=28, width=28, channels=1))\n"
        "print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before, x.max())"
    )
    result = subprocess.run([sys.executable, "-c", code, str(path)], capture_output=True, text=True, timeout=120)
    grown_kb, brightest = result.stdout.split()
    assert float(brightest) == 1.0
    assert int(grown_kb) < 640_000, f"{int(grown_kb) >> 10} MB"


def test_placement_maps_the_canvas_input_back_to_the_image():
    """Padded (30×20 into 60×60) the input pixel (u, v) is the image pixel placement.to_image(u, v), exactly;
    shrunk (120×120 into 60×60) the input's corners are the image's."""
    from ram_infer.images import place_intensities

    canvas = InputFormat(height=60, width=60, channels=1, placement="canvas")
    values = np.random.default_rng(0).uniform(0.0, 0.4, (20, 30, 1)).astype(np.float32)  # dark: no inversion
    x, placement = place_intensities(values, canvas, source="padded")
    for u, v in [(15, 20), (44, 39), (30, 30)]:
        image_x, image_y = placement.to_image(u, v)
        assert x[0, v, u] == np.rint(values[int(image_y), int(image_x), 0] * 255) / np.float32(canvas.value_scale)
    _, shrunk = place_intensities(np.zeros((120, 120, 1), np.float32), canvas, source="shrunk")
    assert shrunk.to_image(0, 0) == (0, 0) and shrunk.to_image(60, 60) == (120, 120)


def test_an_image_file_above_the_size_limit_is_refused_from_its_size(tmp_path):
    """A PNG of a few pixels with a chunk of MAX_FILE_BYTES: decoders read such chunks into memory."""
    from ram_infer.images import MAX_FILE_BYTES

    path = tmp_path / "padded.png"
    with open(path, "wb") as file:
        image = io.BytesIO()
        Image.new("L", (2, 2)).save(image, format="PNG")
        file.write(image.getvalue())
        file.truncate(MAX_FILE_BYTES + 1)  # a sparse file: nothing written to the disk
    with pytest.raises(ImageError, match=rf"padded\.png: {MAX_FILE_BYTES + 1} bytes is more than an image file"):
        load_image(path, MNIST)


def test_tiff_decodes_in_threads_give_stderr_back(tmp_path):
    """libtiff's messages go to /dev/null while it decodes; decodes in several threads share that and restore it."""
    code = """
import os, threading
from ram_infer.images import load_image
from ram_infer.metadata import InputFormat
threads = [threading.Thread(target=lambda: [load_image(os.environ["TIFF"], InputFormat(28, 28, 1)) for _ in range(30)])
           for _ in range(4)]
[t.start() for t in threads]
[t.join() for t in threads]
os.write(2, b"stderr is back\\n")
"""
    tiff = tmp_path / "digit.tiff"
    Image.fromarray(np.eye(28, dtype=np.uint8) * 255).save(tiff, compression="tiff_lzw")
    result = subprocess.run([sys.executable, "-c", code], env={**os.environ, "TIFF": str(tiff)},
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0 and result.stderr == "stderr is back\n"


def test_fit_scales_up_keeping_the_aspect_ratio_and_pads():
    """A 30×20 (w×h) image in a 60×60 "fit" input: doubled to 60×40, centred, 10 zero rows above and below."""
    from ram_infer.images import place_intensities

    fit = InputFormat(height=60, width=60, channels=1, placement="fit", polarity="keep")
    values = np.full((20, 30, 1), 0.75, np.float32)
    x, placement = place_intensities(values, fit, source="fit")
    assert np.all(x[0, :10] == 0) and np.all(x[0, 50:] == 0)
    assert np.all(x[0, 11:49] == np.float32(191) / np.float32(255))  # round(0.75 · 255) = 191, away from the edges
    assert placement.to_image(0, 10) == (0, 0) and placement.to_image(60, 50) == (30, 20)


def test_crop_covers_the_input_and_maps_its_corners_into_the_image():
    """A 40×20 (w×h) image in a 30×30 "crop" input: scaled by 1.5 to 60×30, the middle 30 columns kept."""
    from ram_infer.images import place_intensities

    crop = InputFormat(height=30, width=30, channels=1, placement="crop", polarity="keep")
    values = np.tile(np.linspace(0, 1, 40, dtype=np.float32), (20, 1))[:, :, None]  # brighter to the right
    x, placement = place_intensities(values, crop, source="crop")
    assert x.shape == (1, 30, 30) and np.all(x > 0.2) and np.all(x < 0.8)  # the dark and bright ends were cut
    assert placement.to_image(0, 0) == (10, 0) and placement.to_image(30, 30) == (30, 20)


@pytest.mark.parametrize(("polarity", "inverted"), [("auto", True), ("keep", False)])
def test_polarity_keep_never_inverts_a_bright_bordered_photo(polarity, inverted):
    from ram_infer.images import prepare_intensities

    photo = np.full((8, 8, 3), 0.9, np.float32)
    photo[3:5, 3:5] = (0.1, 0.2, 0.3)
    x = prepare_intensities(photo, InputFormat(8, 8, 3, polarity=polarity), source="photo")
    assert (x[:, 0, 0] < 0.5).all() == inverted


@pytest.mark.parametrize("placement", ["mnist", "canvas", "fit", "crop"])
def test_cached_levels_give_exactly_the_runtime_input(tmp_path, placement):
    """What ram-train caches (load_levels, uint8) divided by levels_to_input is load_image's tensor, bit for bit."""
    from ram_infer.images import levels_to_input, load_levels

    rng = np.random.default_rng(3)
    path = tmp_path / "odd.png"
    Image.fromarray(rng.integers(0, 256, (37, 53, 3), dtype=np.uint8)).save(path)
    shape = InputFormat(height=24, width=32, channels=3, placement=placement, polarity="keep", value_scale=200.0)
    levels = load_levels(path, shape)
    assert levels.dtype == np.uint8 and levels.shape == (3, 24, 32)
    np.testing.assert_array_equal(levels_to_input(levels, shape), load_image(path, shape))


def test_read_header_gives_the_size_and_colour_and_refuses_what_decoding_refuses(tmp_path):
    from ram_infer.images import read_header

    Image.new("RGB", (30, 20), (10, 200, 30)).save(tmp_path / "colour.png")
    Image.new("RGB", (30, 20), (90, 90, 90)).convert("L").save(tmp_path / "grey.jpg")
    assert read_header(tmp_path / "colour.png") == (20, 30, True)
    assert read_header(tmp_path / "grey.jpg") == (20, 30, False)
    (tmp_path / "eps.png").write_bytes(POSTSCRIPT)
    for bad in ("eps.png", "missing.png"):
        with pytest.raises(ImageError):
            read_header(tmp_path / bad)
