"""Image files and arrays → the model's input format (size, channels, value scale, polarity), with Pillow and numpy.

The steps, in order (each documented where it happens):

1. decode (``load_image``): only the raster formats of ``DECODABLE_FORMATS`` (PNG, JPEG, BMP, WebP, TIFF, GIF),
   whatever the file's name; the first frame of a multi-frame file; images above ``max_pixels`` refused from the
   header, and JPEGs of too many scans from their markers, before decoding; images above ``WORKING_PIXELS`` reduced
   by an integer factor while decoding (JPEG's DCT scaling, else a box filter); the EXIF orientation applied.
2. intensities in [0, 1]: 8-bit modes divided by 255, 16-bit and 32-bit integer modes by 65535, float modes
   clipped; palette, CMYK, YCbCr … converted to RGB. Arrays (``prepare_array``): uint8 / 255, uint16 / 65535, floats
   taken as [0, 1].
3. transparency: the image is composited onto white when its visible pixels are dark on average, else onto black, so
   the transparent background contrasts with the ink whatever its colour.
4. channels: RGB → grey by ITU-R 601 luma (Pillow's ``L``) for one-channel models; grey → RGB repeated for
   three-channel models.
5. polarity (``"auto"`` models only; ``"keep"`` models, trained on photographs, skip it): if the border's mean
   disagrees with the model's background (bright border for a ``"dark"`` model, as in a digit written on paper), the
   image is inverted.
6. placement, only when the size differs from the model's input (an image already of that size is used as is):

   - ``"mnist"`` (the MNIST preprocessing): contrast stretched so the background (the 99th percentile of the border,
     which flattens uneven lighting and noise) is 0 and the brightest pixel 1; cropped to the ink's bounding box
     (pixels above ``INK_THRESHOLD``); resized to fit a 20×20 box keeping the aspect ratio (20/28 of the input's
     shorter side); pasted so its centre of mass is at the input's centre.
   - ``"canvas"`` (translated and cluttered models; pad only): an image larger than the canvas is shrunk to fit
     keeping the aspect ratio; the image is then pasted at the centre of a zero canvas.
   - ``"fit"``: scaled up or down, keeping the aspect ratio, to the largest size that fits; centred on a zero canvas.
   - ``"crop"``: scaled, keeping the aspect ratio, to the smallest size that covers the input; its centre cut out.

   Resizing is Pillow's Lanczos filter (antialiased when shrinking).
7. 8-bit levels and value scale: each intensity becomes the 8-bit level p = round(255 · intensity) (``place_levels``;
   training caches exactly these bytes, so a file gives the model the same tensor in training and at run time), and
   the model's input is p / ``value_scale``.
"""

from __future__ import annotations

import contextlib
import io
import logging
import math
import os
import stat
import struct
import sys
import threading
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import BinaryIO

import numpy as np
import numpy.typing as npt
from PIL import ExifTags, Image, JpegImagePlugin, UnidentifiedImageError

from ram_infer.metadata import InputFormat

# Pillow logs some decoding problems ("More samples per pixel than can be decoded") besides raising; without a handler
# of its own, Python's last-resort handler prints them on stderr, next to the one line a bad file gets. An application
# that configures logging still receives them.
logging.getLogger("PIL").addHandler(logging.NullHandler())

# What preprocess takes: a path, an image file's bytes, a Pillow image, or an array (see prepare_array).
ImageLike = str | os.PathLike | bytes | bytearray | memoryview | Image.Image | npt.ArrayLike

# The formats decoded, with the file suffixes the CLI looks for in a folder: the one home of the list. Pillow
# identifies a file by its content, not its name, and hands EPS/PostScript to Ghostscript (which runs it: `{} loop`
# never ends); so Image.open gets exactly these formats and any other is refused. Camera JPEGs that carry a second
# image identify as MPO: Pillow's JPEG opener returns them (MPO has no opener of its own), so "JPEG" covers them.
_SUFFIXES_BY_FORMAT = {
    "PNG": (".png",),
    "JPEG": (".jpg", ".jpeg"),
    "BMP": (".bmp",),
    "WebP": (".webp",),
    "TIFF": (".tif", ".tiff"),
    "GIF": (".gif",),
}
DECODABLE_FORMATS = tuple(_SUFFIXES_BY_FORMAT)
IMAGE_SUFFIXES = tuple(suffix for suffixes in _SUFFIXES_BY_FORMAT.values() for suffix in suffixes)
_PILLOW_FORMATS = tuple(name.upper() for name in DECODABLE_FORMATS)  # Pillow's identifiers ("WEBP")

DEFAULT_MAX_PIXELS = 64_000_000
# An image file's size at most. Decoders read what a file holds besides its pixels (metadata chunks, tags, markers)
# into memory or walk through it: a 1 GB chunk in a PNG of a few pixels took 2 GB. A photograph of the pixel limit is
# a few tens of MB as a JPEG, about 200 MB as an uncompressed RGB PNG or TIFF.
MAX_FILE_BYTES = 256 << 20
# Decoding budget. A progressive JPEG is decoded scan by scan, each scan a pass over the coefficients of the whole
# image, so the work is scans × pixels, whatever the file size: 10 000 empty refinement scans over 8000×8000 pixels
# (a 1.3 MB file) decoded for 45 s to 6 min (≈ 0.6 ns per scan and pixel, measured with Pillow 13's libjpeg-turbo).
# A standard progressive script has 10 scans (libjpeg's default for colour, 6 for grey). The scan markers are
# counted before decoding, and a JPEG refused above either limit:
MAX_JPEG_SCANS = 256  # whatever the size, as many scans of a tiny image cost per scan (nvImageCodec's default)
MAX_JPEG_SCAN_PIXELS = 40 * DEFAULT_MAX_PIXELS  # 40 scans at the default pixel limit: ≈ 1.5 s of empty scans
# Images above this many pixels are reduced by an integer factor while decoding, before any conversion to floats, so
# that the float work (4 channels × 4 bytes a pixel, a few copies) stays ≈ 64 MB a copy however large the file. The
# models read at most 100×100 pixels; 2000×2000 is 20 times that side, and keeps a digit that spans 1/100 of a
# photo's side at the 20 pixels of the MNIST box. Smaller images decode exactly, at full resolution.
WORKING_PIXELS = 4_000_000
INK_THRESHOLD = 0.25  # normalised intensity above which a pixel counts as ink for the "mnist" bounding box
BACKGROUND_PERCENTILE = 99  # of the border pixels: the background level that "mnist" placement maps to 0
_MNIST_BOX = 20 / 28  # MNIST fits each digit in 20×20 inside 28×28
_ALPHA_MODES = ("RGBA", "LA", "PA", "RGBa", "La")
_GREY_MODES = ("1", "L", "LA", "La")  # 8-bit grey (16-bit and float modes are read directly)
_SCAN_MARKER = b"\xff\xda"  # JPEG start of scan; entropy-coded data stuffs a 0x00 after every 0xFF, so never this
_SCAN_READ_BYTES = 1 << 20  # the scan markers are counted a chunk at a time, not by reading a large file at once
_EXIF_TRANSPOSE = {  # EXIF orientation → what turns the stored pixels into the displayed ones (as ImageOps does)
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}
# What Pillow raises on truncated or corrupt data: OSError mostly, but its format parsers also raise SyntaxError,
# EOFError, ValueError ("Truncated IHDR chunk", "invalid palette size", text chunks above MAX_TEXT_CHUNK …),
# struct.error, IndexError, KeyError, TypeError, ZeroDivisionError and OverflowError (found by fuzz/fuzz_images.py).
_DECODE_ERRORS = (
    OSError,
    SyntaxError,
    EOFError,
    ValueError,
    struct.error,
    IndexError,
    KeyError,
    TypeError,
    ZeroDivisionError,
    OverflowError,
)


class ImageError(ValueError):
    """An image cannot be used: unreadable, not an image, too large, or of an unusable shape.

    The message reads ``path: problem``.
    """


def load_image(
    path: str | os.PathLike, input_format: InputFormat, *, max_pixels: int = DEFAULT_MAX_PIXELS
) -> np.ndarray:
    """Decodes an image file into the model's input format.

    Args:
        path: an image file of one of ``DECODABLE_FORMATS`` (PNG, JPEG, BMP, WebP, TIFF, GIF).
        input_format: the model's input (``Engine.info.input``).
        max_pixels: larger images (width × height) are refused from their header, before decoding.

    Returns:
        ndarray[C, H, W], float32, ready for ``Engine.predict`` (stack several along a new first axis).

    Raises:
        ImageError: the file is missing, not a regular file (a directory, pipe or device), unreadable, not an
            image of a decodable format, truncated or corrupt (any decoder error), too large, a JPEG of too many
            scans, or empty.
    """
    return prepare_intensities(read_intensities(path, max_pixels=max_pixels), input_format, source=str(path))


def read_intensities(path: str | os.PathLike, *, max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """Decodes an image file into intensities in [0, 1], with its alpha channel if it has one (steps 1–2).

    Returns:
        ndarray[H, W, c], float32, c = 1 (grey), 2 (grey + alpha), 3 (RGB) or 4 (RGBA); reduced by an integer
        factor to at most ``WORKING_PIXELS`` pixels.

    Raises:
        ImageError: see ``load_image``.
    """
    source = str(path)
    _check_regular_file(path, source)
    return _decode(lambda: open(path, "rb"), source, max_pixels)


def read_intensities_from_bytes(
    data: bytes, *, source: str = "-", max_pixels: int = DEFAULT_MAX_PIXELS
) -> np.ndarray:
    """``read_intensities`` of an image file's bytes (standard input, a download, an archive member).

    Raises:
        ImageError: as ``load_image``; the message starts with ``source``.
    """
    return _decode(lambda: io.BytesIO(data), source, max_pixels)


def preprocess(
    image: ImageLike, input_format: InputFormat, *, source: str | None = None, max_pixels: int = DEFAULT_MAX_PIXELS
) -> npt.NDArray[np.float32]:
    """Any image, of any size, in the model's input format: the one entry point for files, bytes, Pillow images and
    arrays (``Engine.preprocess`` passes the model's format).

    Args:
        image: a path (``str`` or ``os.PathLike``), the bytes of an image file, a ``PIL.Image.Image``, or an array
            as ``prepare_array`` takes it.
        input_format: the model's input (``Engine.info.input``).
        source: a name for error messages (default: the path, ``"bytes"``, ``"image"`` or ``"array"``).
        max_pixels: larger images (width × height) are refused.

    Returns:
        ndarray[C, H, W], float32, ready for ``Engine.predict`` (stack several along a new first axis).

    Raises:
        ImageError: as ``load_image`` and ``prepare_array``.
    """
    if isinstance(image, (str, os.PathLike)):
        return load_image(image, input_format, max_pixels=max_pixels)
    if isinstance(image, (bytes, bytearray, memoryview)):
        name = source or "bytes"
        values = read_intensities_from_bytes(bytes(image), source=name, max_pixels=max_pixels)
        return prepare_intensities(values, input_format, source=name)
    if isinstance(image, Image.Image):
        name = source or "image"
        _check_size(image, name, max_pixels)
        try:
            values = _intensities(_working_image(image, draft=False))
        except _DECODE_ERRORS as error:  # a lazily loaded image decodes here
            raise ImageError(f"{name}: cannot decode the image ({error})") from None
        return prepare_intensities(values, input_format, source=name)
    return prepare_array(image, input_format, source=source or "array")


def read_header(path: str | os.PathLike) -> tuple[int, int, bool]:
    """An image file's height, width and whether it is in colour, from its header alone (no pixels decoded), with
    the same checks as ``read_intensities``: a regular file of a decodable format.

    Raises:
        ImageError: not a regular file, unreadable, or not an image of a decodable format.
    """
    source = str(path)
    _check_regular_file(path, source)
    try:
        with warnings.catch_warnings(), open(path, "rb") as file, Image.open(file, formats=_PILLOW_FORMATS) as image:
            warnings.simplefilter("ignore")  # a header's oddities are the decoder's business, later
            return image.height, image.width, _mode_to_read(image) in ("RGB", "RGBA")
    except (UnidentifiedImageError, Image.DecompressionBombError, *_DECODE_ERRORS) as error:
        raise ImageError(f"{source}: not an image file of a supported format ({error})") from None


def _decode(open_file: Callable[[], BinaryIO], source: str, max_pixels: int) -> np.ndarray:
    """Steps 1–2 on the stream ``open_file()`` gives (opened again to count a JPEG's scans)."""
    try:
        with warnings.catch_warnings():
            # Pillow warns above its own limit; ours (max_pixels) is checked just below, from the header. Its warnings
            # about damaged metadata (EXIF, TIFF tags) are not the caller's business: the pixels decode or they don't.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            warnings.filterwarnings("ignore", category=UserWarning, module=r"PIL\.")
            with open_file() as file, Image.open(file, formats=_PILLOW_FORMATS) as image:
                _check_size(image, source, max_pixels)
                if isinstance(image, JpegImagePlugin.JpegImageFile):  # MPO included
                    _check_jpeg_scans(open_file, image, source)
                with _libtiff_silenced(image.format == "TIFF"):
                    image.seek(0)
                    return _intensities(_working_image(image))
    except ImageError:
        raise
    except Image.DecompressionBombError:
        raise ImageError(f"{source}: too many pixels (more than Pillow's decompression-bomb limit)") from None
    except UnidentifiedImageError:
        formats = ", ".join(DECODABLE_FORMATS)
        raise ImageError(f"{source}: not an image file of a supported format ({formats})") from None
    except PermissionError:
        raise ImageError(f"{source}: cannot read the file (permission denied)") from None
    except MemoryError:
        raise ImageError(f"{source}: not enough memory to decode the image") from None
    except _DECODE_ERRORS as error:
        raise ImageError(f"{source}: cannot decode the image ({error})") from None


@contextlib.contextmanager
def _libtiff_silenced(active: bool) -> Iterator[None]:
    """Sends file descriptor 2 to /dev/null while libtiff decodes: it prints its warnings and errors there itself
    ("Using code not yet in table."), next to the one line a bad file gets; Pillow raises for the errors anyway.

    The descriptor is the process's, so another thread's stderr output in that window is lost too; only TIFF needs it.
    Decodes in several threads share one redirection (the first saves the real stderr, the last puts it back).
    """
    if not active:
        yield
        return
    with _stderr_lock:
        if _stderr_saved[1] == 0:
            sys.stderr.flush()
            _stderr_saved[0] = os.dup(2)
            with open(os.devnull, "wb") as devnull:
                os.dup2(devnull.fileno(), 2)
        _stderr_saved[1] += 1
    try:
        yield
    finally:
        with _stderr_lock:
            _stderr_saved[1] -= 1
            if _stderr_saved[1] == 0:
                restore_stderr()


def restore_stderr() -> None:
    """Puts the real stderr back on file descriptor 2 if a TIFF decode holds it (the CLI's Ctrl-C line needs it)."""
    if _stderr_saved[0] is not None:
        os.dup2(_stderr_saved[0], 2)
        os.close(_stderr_saved[0])
        _stderr_saved[0] = None


_stderr_lock = threading.Lock()
_stderr_saved: list = [None, 0]  # the real stderr's descriptor while redirected, and the decodes holding it


def _check_regular_file(path: str | os.PathLike, source: str) -> None:
    try:
        info = os.stat(path)
        kind = info.st_mode
    except FileNotFoundError:
        raise ImageError(f"{source}: no such file") from None
    except OSError as error:
        raise ImageError(f"{source}: cannot read the file ({error.strerror or error})") from None
    if stat.S_ISDIR(kind):
        raise ImageError(f"{source}: is a directory, not an image")
    if not stat.S_ISREG(kind):
        # Opening a FIFO blocks until someone writes to it, and a device may never end: neither is an image file.
        raise ImageError(f"{source}: not a regular file (a pipe, device or socket)")
    if info.st_size > MAX_FILE_BYTES:
        raise ImageError(f"{source}: {info.st_size} bytes is more than an image file's limit of {MAX_FILE_BYTES}")


def _check_size(image: Image.Image, source: str, max_pixels: int) -> None:
    width, height = image.size
    if width * height > max_pixels:
        raise ImageError(f"{source}: {width}×{height} pixels is more than the limit of {max_pixels}")
    if width == 0 or height == 0:
        raise ImageError(f"{source}: image is empty ({width}×{height})")


def _check_jpeg_scans(open_file: Callable[[], BinaryIO], image: Image.Image, source: str) -> None:
    """Refuses a JPEG whose scans × pixels exceed the budget (MAX_JPEG_SCANS, MAX_JPEG_SCAN_PIXELS), from its markers.

    A single scan is always allowed: its cost is that of the pixels, which ``max_pixels`` bounds.
    """
    width, height = image.size
    allowed = max(1, min(MAX_JPEG_SCANS, MAX_JPEG_SCAN_PIXELS // (width * height)))
    if _count_scan_markers(open_file, stop_above=allowed) > allowed:
        raise ImageError(f"{source}: more than {allowed} JPEG scans at {width}×{height} pixels (too slow to decode)")


def _count_scan_markers(open_file: Callable[[], BinaryIO], *, stop_above: int) -> int:
    """Start-of-scan markers in the file, counted a chunk at a time; stops once the count exceeds ``stop_above``.

    A marker inside metadata (an EXIF thumbnail's scan, bytes of an ICC profile) counts too: at most a few extra.
    """
    count = 0
    carry = b""  # the previous chunk's last byte: a marker may straddle two chunks
    with open_file() as file:
        while count <= stop_above and (chunk := file.read(_SCAN_READ_BYTES)):
            window = carry + chunk
            count += window.count(_SCAN_MARKER)
            carry = window[-1:]
    return count


def _working_image(image: Image.Image, *, draft: bool = True) -> Image.Image:
    """The opened file's current frame decoded, in the mode ``_intensities`` reads, within ``WORKING_PIXELS``, and
    turned as its EXIF orientation says.

    The reduction happens before the conversion to floats: JPEGs decode at 1/2, 1/4 or 1/8 scale (DCT scaling,
    ``Image.draft``; other formats ignore it), then Pillow's box filter (``Image.reduce``) divides by what remains.
    ``draft=False`` for a caller's own Pillow image, which ``draft`` would change.
    """
    factor = _reduction_factor(*image.size)
    if draft and factor > 1:
        image.draft(None, (math.ceil(image.width / factor), math.ceil(image.height / factor)))
    image.load()
    transpose = _EXIF_TRANSPOSE.get(image.getexif().get(ExifTags.Base.Orientation))
    factor = _reduction_factor(*image.size)  # what the DCT scaling left
    mode = _mode_to_read(image)
    if factor > 1 and mode.startswith("I;16"):
        mode = "I"  # Pillow's reduce has no 16-bit mode
    working = image if image.mode == mode else image.convert(mode)
    if factor > 1:
        working = working.reduce(factor)
    return working if transpose is None else working.transpose(transpose)


def _reduction_factor(width: int, height: int) -> int:
    """The smallest integer factor that brings the image (its sides rounded up) within ``WORKING_PIXELS``."""
    factor = max(1, math.isqrt(width * height // WORKING_PIXELS))
    while math.ceil(width / factor) * math.ceil(height / factor) > WORKING_PIXELS:
        factor += 1
    return factor


def _mode_to_read(image: Image.Image) -> str:
    """16-bit and float modes as they are; any other as 8-bit grey or RGB, with alpha if it has transparency."""
    mode = image.mode
    if mode.startswith("I;16") or mode in ("I", "F"):
        return mode
    has_alpha = mode in _ALPHA_MODES or "transparency" in image.info
    grey = mode in _GREY_MODES or (mode == "P" and _palette_is_grey(image))
    return ("LA" if has_alpha else "L") if grey else ("RGBA" if has_alpha else "RGB")


def prepare_array(
    array: npt.ArrayLike, input_format: InputFormat, *, source: str = "array"
) -> npt.NDArray[np.float32]:
    """Converts an image array into the model's input format (steps 2–7 of the module docstring).

    Args:
        array: 2-D grey ``[H, W]``, ``[H, W, c]`` or ``[c, H, W]`` with c in 1–4 (grey, grey + alpha, RGB, RGBA);
            uint8 (/255), uint16 (/65535), or float or bool already in [0, 1] (bright = 1). A 3-D array whose
            last axis is longer than 4 and first axis is not is read as ``[c, H, W]``.
        input_format: the model's input (``Engine.info.input``).
        source: a name for error messages.

    Returns:
        ndarray[C, H, W], float32.

    Raises:
        ImageError: an unusable shape, dtype, or an empty array.
    """
    a = np.asarray(array)
    if a.dtype == np.uint8:
        values = a.astype(np.float32) / 255
    elif a.dtype == np.uint16:
        values = a.astype(np.float32) / 65535
    elif np.issubdtype(a.dtype, np.floating) or a.dtype == np.bool_:
        values = np.clip(np.nan_to_num(a.astype(np.float32)), 0.0, 1.0)
    else:
        raise ImageError(f"{source}: array dtype must be uint8, uint16 or float, got {a.dtype}")
    if values.ndim == 2:
        values = values[:, :, None]
    elif values.ndim == 3 and values.shape[2] > 4 and values.shape[0] <= 4:
        values = values.transpose(1, 2, 0)  # (c, H, W) → (H, W, c)
    if values.ndim != 3 or not 1 <= values.shape[2] <= 4:
        raise ImageError(f"{source}: array must be [H, W], [H, W, c] or [c, H, W] with c in 1..4, got {a.shape}")
    if values.shape[0] == 0 or values.shape[1] == 0:
        raise ImageError(f"{source}: image is empty ({a.shape})")
    return prepare_intensities(values, input_format, source=source)


@dataclass(frozen=True)
class Placement:
    """Where the model input's pixels came from in the image it was made of (step 6), to draw on that image.

    A point (x, y) of the input, in pixel units from its top-left corner, is the point
    ``origin + (point - offset) * stretch`` of the image (per axis, each pair as (x, y)).
    """

    origin: tuple[float, float] = (0.0, 0.0)
    offset: tuple[float, float] = (0.0, 0.0)
    stretch: tuple[float, float] = (1.0, 1.0)

    def to_image(self, x: float, y: float) -> tuple[float, float]:
        return (
            self.origin[0] + (x - self.offset[0]) * self.stretch[0],
            self.origin[1] + (y - self.offset[1]) * self.stretch[1],
        )


def prepare_intensities(values: np.ndarray, input_format: InputFormat, *, source: str) -> np.ndarray:
    """Steps 3–7: intensities ``[H, W, c]`` in [0, 1] (c = 1–4, alpha last if 2 or 4) → input ``[C, H, W]``."""
    return place_intensities(values, input_format, source=source)[0]


def place_intensities(
    values: np.ndarray, input_format: InputFormat, *, source: str
) -> tuple[np.ndarray, Placement]:
    """``prepare_intensities``, and where the input's pixels lie in ``values`` (for a trace on the user's image)."""
    levels, placement = place_levels(values, input_format, source=source)
    return levels_to_input(levels, input_format), placement


def load_levels(
    path: str | os.PathLike, input_format: InputFormat, *, max_pixels: int = DEFAULT_MAX_PIXELS
) -> npt.NDArray[np.uint8]:
    """The 8-bit levels ``[C, H, W]`` of an image file in the model's input format (steps 1–7 but the division):
    what ``ram-train`` caches, so that ``levels_to_input`` of them is exactly ``load_image``'s tensor.

    Raises:
        ImageError: as ``load_image``.
    """
    source = str(path)
    return place_levels(read_intensities(path, max_pixels=max_pixels), input_format, source=source)[0]


def levels_to_input(levels: np.ndarray, input_format: InputFormat) -> npt.NDArray[np.float32]:
    """8-bit levels (any shape, uint8) → the model's input values, p / value_scale in float32 (step 7).

    Training divides its cached levels the same way (one IEEE float32 division), so both sides agree to the bit.
    """
    return np.divide(levels, np.float32(input_format.value_scale), dtype=np.float32)


def place_levels(
    values: np.ndarray, input_format: InputFormat, *, source: str
) -> tuple[npt.NDArray[np.uint8], Placement]:
    """Steps 3–7 up to the 8-bit levels ``[C, H, W]``, and where they lie in ``values``."""
    if input_format.channels not in (1, 3):
        raise ImageError(f"{source}: the model takes {input_format.channels} channels; images convert to 1 or 3")
    colour = values[:, :, :3] if values.shape[2] >= 3 else values[:, :, :1]  # (H, W, 1 or 3)
    if values.shape[2] in (2, 4):
        colour = _flatten_alpha(colour, values[:, :, -1:])
    if input_format.channels == 1 and colour.shape[2] == 3:
        colour = _luma(colour)  # (H, W, 1)
    elif input_format.channels == 3 and colour.shape[2] == 1:
        colour = np.repeat(colour, 3, axis=2)  # (H, W, 3)
    if input_format.polarity == "auto" and (border_pixels(colour).mean() > 0.5) == (input_format.background == "dark"):
        colour = 1.0 - colour
    placement = Placement()
    if colour.shape[:2] != (input_format.height, input_format.width):
        colour, placement = _PLACE[input_format.placement](colour, input_format.height, input_format.width)
    levels = np.rint(np.clip(colour, 0.0, 1.0) * np.float32(255)).astype(np.uint8)  # (H, W, C)
    return np.ascontiguousarray(levels.transpose(2, 0, 1)), placement


def _intensities(image: Image.Image) -> np.ndarray:
    """A decoded image in a mode of ``_mode_to_read`` → ``[H, W, c]`` float32 in [0, 1] (c = 1–4, alpha last).

    One float32 array, scaled and clipped in place: the memory is 4 bytes a pixel and channel, plus the pixels as
    Pillow holds them.
    """
    values = np.array(image, dtype=np.float32)  # (H, W) or (H, W, c), a copy of its own
    if image.mode == "F":
        np.nan_to_num(values, copy=False)
        np.clip(values, 0.0, 1.0, out=values)
    elif image.mode.startswith("I"):  # I;16…, I
        np.clip(values, 0, 65535, out=values)
        values /= 65535
    else:
        values /= 255
    return values[:, :, None] if values.ndim == 2 else values


def _palette_is_grey(image: Image.Image) -> bool:
    palette = np.asarray(image.getpalette("RGB") or [], np.uint8).reshape(-1, 3)
    return bool(np.all(palette == palette[:, :1]))


def _luma(rgb: np.ndarray) -> np.ndarray:
    """``[H, W, 3]`` → ``[H, W, 1]`` by ITU-R 601 (Pillow's ``L``); grey pixels keep their exact value."""
    if np.array_equal(rgb[:, :, 0], rgb[:, :, 1]) and np.array_equal(rgb[:, :, 0], rgb[:, :, 2]):
        return rgb[:, :, :1]
    return rgb @ np.array([[0.299], [0.587], [0.114]], np.float32)


def _flatten_alpha(colour: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    """Composites onto white if the visible pixels are dark on average, else onto black (step 3)."""
    visible = alpha[:, :, 0] > 0.5
    mean = colour[visible].mean() if visible.any() else 0.0
    background = np.float32(1.0 if mean < 0.5 else 0.0)
    return colour * alpha + background * (1.0 - alpha)


def border_pixels(values: np.ndarray) -> np.ndarray:
    """The pixels of the outermost rows and columns, ``[n, c]``."""
    h, w = values.shape[:2]
    if h <= 2 or w <= 2:
        return values.reshape(-1, values.shape[2])
    return np.concatenate([values[0], values[-1], values[1:-1, 0], values[1:-1, -1]])


def _resize(values: np.ndarray, height: int, width: int) -> np.ndarray:
    """Resizes ``[h, w, c]`` float32 with Pillow's Lanczos filter (antialiased when shrinking), clipped to [0, 1]."""
    planes = [
        np.asarray(Image.fromarray(values[:, :, c], mode="F").resize((width, height), Image.Resampling.LANCZOS))
        for c in range(values.shape[2])
    ]
    return np.clip(np.stack(planes, axis=2), 0.0, 1.0)


def _place_mnist(values: np.ndarray, height: int, width: int) -> tuple[np.ndarray, Placement]:
    """Crop to the ink, fit in the 20×20-of-28×28 box, centre the centre of mass (step 6, "mnist")."""
    luma = values.mean(axis=2)  # (h, w)
    level = float(np.percentile(border_pixels(luma[:, :, None]), BACKGROUND_PERCENTILE))
    top = float(luma.max())
    canvas = np.zeros((height, width, values.shape[2]), np.float32)
    if top - level < 1 / 255:  # a blank image: no ink to place; the whole image stands for the input
        return canvas, Placement(stretch=(values.shape[1] / width, values.shape[0] / height))
    values = np.clip((values - level) / (top - level), 0.0, 1.0)
    rows, cols = np.nonzero(values.mean(axis=2) > INK_THRESHOLD)
    ink = values[rows.min() : rows.max() + 1, cols.min() : cols.max() + 1]  # (h', w', c)
    box = max(1, round(min(height, width) * _MNIST_BOX))
    scale = box / max(ink.shape[:2])
    resized = _resize(ink, max(1, round(ink.shape[0] * scale)), max(1, round(ink.shape[1] * scale)))
    mass = resized.mean(axis=2)  # (h', w')
    total = mass.sum()
    cy = (mass.sum(axis=1) @ np.arange(resized.shape[0])) / total if total > 0 else (resized.shape[0] - 1) / 2
    cx = (mass.sum(axis=0) @ np.arange(resized.shape[1])) / total if total > 0 else (resized.shape[1] - 1) / 2
    top_left = int(round(height / 2 - cy)), int(round(width / 2 - cx))
    _paste(canvas, resized, *top_left)
    stretch = (ink.shape[1] / resized.shape[1], ink.shape[0] / resized.shape[0])
    return canvas, Placement((float(cols.min()), float(rows.min())), (top_left[1], top_left[0]), stretch)


def _place_canvas(values: np.ndarray, height: int, width: int) -> tuple[np.ndarray, Placement]:
    """Shrink to fit if larger, then centre on a zero canvas (step 6, "canvas")."""
    h, w = values.shape[:2]
    if h > height or w > width:
        scale = min(height / h, width / w)
        values = _resize(values, max(1, round(h * scale)), max(1, round(w * scale)))
    canvas = np.zeros((height, width, values.shape[2]), np.float32)
    top_left = (height - values.shape[0]) // 2, (width - values.shape[1]) // 2
    _paste(canvas, values, *top_left)
    return canvas, Placement(offset=(top_left[1], top_left[0]), stretch=(w / values.shape[1], h / values.shape[0]))


def _place_fit(values: np.ndarray, height: int, width: int) -> tuple[np.ndarray, Placement]:
    """Scale, keeping the aspect ratio, to the largest size inside the input; centre on a zero canvas ("fit")."""
    h, w = values.shape[:2]
    scale = min(height / h, width / w)
    resized = _resize(values, min(height, max(1, round(h * scale))), min(width, max(1, round(w * scale))))
    canvas = np.zeros((height, width, values.shape[2]), np.float32)
    top_left = (height - resized.shape[0]) // 2, (width - resized.shape[1]) // 2
    _paste(canvas, resized, *top_left)
    stretch = (w / resized.shape[1], h / resized.shape[0])
    return canvas, Placement(offset=(top_left[1], top_left[0]), stretch=stretch)


def _place_crop(values: np.ndarray, height: int, width: int) -> tuple[np.ndarray, Placement]:
    """Scale, keeping the aspect ratio, to the smallest size covering the input; cut out its centre ("crop")."""
    h, w = values.shape[:2]
    scale = max(height / h, width / w)
    resized = _resize(values, max(height, round(h * scale)), max(width, round(w * scale)))
    top, left = (resized.shape[0] - height) // 2, (resized.shape[1] - width) // 2
    stretch = (w / resized.shape[1], h / resized.shape[0])
    # Input pixel p is resized pixel p + (left, top), i.e. image point (p + (left, top)) · stretch.
    return resized[top : top + height, left : left + width], Placement(offset=(-left, -top), stretch=stretch)


_PLACE = {"mnist": _place_mnist, "canvas": _place_canvas, "fit": _place_fit, "crop": _place_crop}


def _paste(canvas: np.ndarray, patch: np.ndarray, top: int, left: int) -> None:
    """Writes ``patch`` into ``canvas`` at (top, left), clipping whatever falls outside."""
    h, w = patch.shape[:2]
    y0, x0 = max(top, 0), max(left, 0)
    y1, x1 = min(top + h, canvas.shape[0]), min(left + w, canvas.shape[1])
    if y0 < y1 and x0 < x1:
        canvas[y0:y1, x0:x1] = patch[y0 - top : y1 - top, x0 - left : x1 - left]
