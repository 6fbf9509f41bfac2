"""The bad-input corpus: hostile, broken and unusual image files, generated (no binaries in the repository).

Each ``Case`` is one path in the corpus folder and what ram-infer must do with it: decode and predict, or refuse it
with ``ImageError`` whose message is ``path: problem``. tests/test_bad_inputs.py runs every case through the Python
API and the CLI; run this file to look at the corpus yourself:

    python tests/make_bad_inputs.py /tmp/bad-inputs
"""

from __future__ import annotations

import io
import os
import struct
import sys
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

SIDE = 28
LIMIT = r"pixels is more than the limit of 64000000"
BOMB = r"too many pixels \(more than Pillow's decompression-bomb limit\)"
NOT_AN_IMAGE = r"not an image file of a supported format \(PNG, JPEG, BMP, WebP, TIFF, GIF\)"
# What Pillow would hand to Ghostscript, which would run it: `{} loop` never ends (named .png: Pillow goes by content).
POSTSCRIPT = b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 28 28\n{} loop\n"
SCAN_MARKER = b"\xff\xda"
CANNOT_DECODE = r"cannot decode the image \(.+\)"
SCANS, SLOW = r"JPEG scans", r"\(too slow to decode\)"


@dataclass(frozen=True)
class Case:
    """One corpus entry.

    Attributes:
        name: the path inside the corpus folder (unicode, spaces and all).
        problem: a regex for the message after ``path: `` when the input must be refused; None if it must decode.
        cli_problem: the CLI's message where it differs from the API's (directories are expanded by the CLI).
    """

    name: str
    problem: str | None
    cli_problem: str | None = None

    @property
    def valid(self) -> bool:
        return self.problem is None


def _digit() -> np.ndarray:
    """A bright stroke figure on black, uint8 [28, 28]."""
    x = np.zeros((SIDE, SIDE), np.uint8)
    x[6:22, 12:16] = 255
    x[6:9, 9:16] = 200
    return x


def _encode(image: Image.Image, format: str, **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=format, **options)
    return buffer.getvalue()


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def _png(width: int, height: int, *extra_chunks: bytes) -> bytes:
    """A grey PNG whose header claims width × height; its data is a few bytes (never decoded past the header)."""
    header = _png_chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0))
    data = _png_chunk(b"IDAT", zlib.compress(b"\0" * (width + 1) if width * height <= 4 else b"\0"))
    return b"\x89PNG\r\n\x1a\n" + header + b"".join(extra_chunks) + data + _png_chunk(b"IEND", b"")


def _gif_header(width: int, height: int) -> bytes:
    """A GIF whose logical screen and only frame claim width × height."""
    screen = b"GIF89a" + struct.pack("<HHBBB", width, height, 0, 0, 0)
    frame = b"\x2c" + struct.pack("<HHHHB", 0, 0, width, height, 0)
    return screen + frame + b"\x02\x02\x44\x01\x00\x3b"


def _bmp_header(width: int, height: int) -> bytes:
    """A 24-bit BMP header claiming width × height, without pixel data."""
    file_header = struct.pack("<2sIHHI", b"BM", 54, 0, 0, 54)
    return file_header + struct.pack("<IiiHHIIiiII", 40, width, height, 1, 24, 0, 0, 0, 0, 0, 0)


def _jpeg_with_size(jpeg: bytes, width: int, height: int) -> bytes:
    """A valid JPEG whose start-of-frame marker (baseline or progressive) is edited to claim width × height."""
    frame = next(jpeg.index(marker) for marker in (b"\xff\xc0", b"\xff\xc2") if marker in jpeg)
    edited = bytearray(jpeg)
    edited[frame + 5 : frame + 9] = struct.pack(">HH", height, width)
    return bytes(edited)


def jpeg_with_scans(jpeg: bytes, scans: int) -> bytes:
    """A progressive JPEG (as Pillow writes it) with its last scan repeated until it has ``scans`` scans.

    libjpeg decodes the repeats (it warns of a bogus progression, which Pillow ignores): each is one more pass over
    the whole image, which is what makes thousands of them slow.
    """
    assert jpeg.endswith(b"\xff\xd9") and jpeg.count(SCAN_MARKER) <= scans, "a progressive JPEG of fewer scans"
    last_scan = jpeg[jpeg.rindex(SCAN_MARKER) : -2]  # up to the end-of-image marker
    return jpeg[:-2] + last_scan * (scans - jpeg.count(SCAN_MARKER)) + jpeg[-2:]


def _mpo(*arrays: np.ndarray) -> bytes:
    """A camera-style JPEG with a second image (MPO): Pillow opens it through its JPEG opener as format "MPO"."""
    return _frames(*arrays, format="MPO", quality=95)


def _frames(*arrays: np.ndarray, format: str, **options) -> bytes:
    first, *rest = (Image.fromarray(a) for a in arrays)
    return _encode(first, format, save_all=True, append_images=rest, **options)


def _exif_garbage_jpeg(digit: np.ndarray) -> bytes:
    """A JPEG whose EXIF block is damaged (Pillow warns when reading it); the pixels are fine."""
    jpeg = _encode(Image.fromarray(digit), "JPEG", quality=95)
    exif = b"Exif\0\0II*\0" + struct.pack("<I", 8) + struct.pack("<H", 3) + b"\x12\x01\x03\x00" + b"\xff" * 10
    segment = b"\xff\xe1" + struct.pack(">H", len(exif) + 2) + exif
    return jpeg[:2] + segment + jpeg[2:]


def _broken_lzw_tiff(digit: np.ndarray) -> bytes:
    """A TIFF whose LZW-compressed strip has garbage codes (its header intact)."""
    buffer = io.BytesIO()
    Image.fromarray(digit).save(buffer, format="TIFF", compression="tiff_lzw")
    data = bytearray(buffer.getvalue())
    for i in range(20, 60):  # the strip data follows the 8-byte header
        data[i] ^= 0x5A
    return bytes(data)


def cases_and_writers() -> list[tuple[Case, Callable[[Path], None] | None]]:
    """Every case with the function that creates it at a path (None: the path must not exist)."""
    digit = _digit()
    png = _encode(Image.fromarray(digit), "PNG")
    jpeg = _encode(Image.fromarray(np.dstack([digit] * 3)), "JPEG", quality=90)
    progressive = _encode(Image.fromarray(digit), "JPEG", progressive=True)
    nan_plane = (digit / 255).astype(np.float32)
    nan_plane[0, 0], nan_plane[1, 1], nan_plane[2, 2] = np.nan, np.inf, -np.inf
    palette_with_alpha = Image.fromarray(np.dstack([digit] * 3)).quantize(8)
    palette_with_alpha.info["transparency"] = 0

    def data(content: bytes) -> Callable[[Path], None]:
        return lambda path: path.write_bytes(content)

    def image(img: Image.Image, format: str, **options) -> Callable[[Path], None]:
        return data(_encode(img, format, **options))

    def directory(path: Path) -> None:
        path.mkdir()

    def fifo(path: Path) -> None:
        os.mkfifo(path)

    def dangling_link(path: Path) -> None:
        path.symlink_to(path.with_name("nowhere.png"))

    def link_loop(path: Path) -> None:
        path.symlink_to(path.name)

    big = np.zeros((2, 3), np.uint8)
    entries = [
        # Not images at all.
        (Case("empty.png", NOT_AN_IMAGE), data(b"")),
        (Case("text named.png", NOT_AN_IMAGE), data(b"hello, world\n")),
        (Case("page.jpg", NOT_AN_IMAGE), data(b"<!doctype html><title>404</title>\n")),
        (Case("zeros.gif", NOT_AN_IMAGE), data(bytes(4096))),
        # Images of formats outside the allow-list, whatever their name: never decoded, no helper program started.
        (Case("postscript.png", NOT_AN_IMAGE), data(POSTSCRIPT)),
        (Case("eps named.jpg", NOT_AN_IMAGE), image(Image.fromarray(digit), "EPS")),
        (Case("portable graymap.png", NOT_AN_IMAGE), image(Image.fromarray(digit), "PPM")),
        (Case("paintbrush.pcx", NOT_AN_IMAGE), image(Image.fromarray(digit), "PCX")),
        # Broken images.
        (Case("truncated.png", CANNOT_DECODE), data(png[:60])),
        (Case("truncated header.png", CANNOT_DECODE), data(png[:20])),
        (Case("truncated.jpg", CANNOT_DECODE), data(jpeg[:-50])),  # cut inside the scan data
        (Case("truncated tables.jpg", CANNOT_DECODE), data(jpeg[:200])),  # cut inside the header
        (Case("bad crc.png", NOT_AN_IMAGE), data(png[:29] + bytes([png[29] ^ 0xFF]) + png[30:])),
        (Case("header only.gif", NOT_AN_IMAGE), data(_gif_header(SIDE, SIDE)[:-6])),
        # libtiff prints its own warning about the broken LZW code on file descriptor 2; only our line may remain.
        (Case("broken lzw.tiff", CANNOT_DECODE), data(_broken_lzw_tiff(digit))),
        (Case("text bomb.png", CANNOT_DECODE),
         data(_png(2, 2, _png_chunk(b"zTXt", b"k\0\0" + zlib.compress(bytes(8 << 20), 9))))),
        # Too large, refused from the header before decoding (the default limit is 64 000 000 pixels).
        (Case("limit.png", rf"9000×9000 {LIMIT}"), data(_png(9000, 9000))),
        (Case("wide.png", rf"1000000×100 {LIMIT}"), data(_png(1_000_000, 100))),
        (Case("bomb.png", BOMB), data(_png(100_000, 100_000))),
        (Case("bomb.gif", BOMB), data(_gif_header(65535, 65535))),
        (Case("bomb.bmp", BOMB), data(_bmp_header(50_000, 50_000))),
        (Case("bomb.jpg", BOMB), data(_jpeg_with_size(jpeg, 65000, 65000))),
        (Case("limit.jpg", rf"9000×9000 {LIMIT}"), data(_jpeg_with_size(jpeg, 9000, 9000))),
        # Progressive JPEGs of absurd scan counts (each scan a pass over the image), refused from their markers.
        (Case("many scans.jpg", rf"more than 256 {SCANS} at 28×28 pixels {SLOW}"),
         data(jpeg_with_scans(progressive, 257))),
        (Case("scan bomb.jpg", rf"more than 40 {SCANS} at 8000×8000 pixels {SLOW}"),
         data(_jpeg_with_size(jpeg_with_scans(progressive, 41), 8000, 8000))),
        # Paths that are not files.
        (Case("missing.png", r"no such file"), None),
        (Case("dangling link.png", r"no such file"), dangling_link),
        (Case("loop.png", r"cannot read the file \(Too many levels of symbolic links\)"), link_loop),
        (Case("folder.png", r"is a directory, not an image", cli_problem=r"directory has no image files"), directory),
        (Case("fifo.png", r"not a regular file \(a pipe, device or socket\)"), fifo),
        # Unusual but valid: these must decode and predict.
        (Case("one pixel.png", None), image(Image.new("L", (1, 1), 255), "PNG")),
        (Case("one row.png", None), image(Image.new("L", (500, 1), 128), "PNG")),
        (Case("数字 七 é.png", None), data(png)),
        (Case("name with  spaces.png", None), data(png)),
        (Case("animated.gif", None), data(_frames(digit, 255 - digit, digit[::-1], format="GIF", duration=50))),
        (Case("pages.tiff", None), data(_frames(digit, 255 - digit, format="TIFF"))),
        (Case("cmyk.jpg", None), image(Image.fromarray(np.dstack([digit] * 3)).convert("CMYK"), "JPEG")),
        (Case("progressive.jpg", None), data(progressive)),
        (Case("256 scans.jpg", None), data(jpeg_with_scans(progressive, 256))),
        (Case("camera mpo.jpg", None), data(_mpo(digit, 255 - digit))),
        (Case("16 bit.png", None), image(Image.fromarray(digit.astype(np.uint16) * 257), "PNG")),
        (Case("16 bit.tiff", None), image(Image.fromarray(digit.astype(np.uint16) * 257), "TIFF")),
        (Case("palette.png", None), image(Image.fromarray(np.dstack([digit] * 3)).quantize(16), "PNG")),
        (Case("palette alpha.png", None), image(palette_with_alpha, "PNG")),
        (Case("one bit.png", None), image(Image.fromarray(digit).convert("1"), "PNG")),
        (Case("nan inf.tiff", None), image(Image.fromarray(nan_plane, "F"), "TIFF")),
        (Case("bad exif.jpg", None), data(_exif_garbage_jpeg(digit))),
        (Case("small.bmp", None), image(Image.fromarray(big), "BMP")),
        (Case("UPPER.PNG", None), data(png)),
    ]
    if sys.platform == "win32":  # no FIFOs or symlinks for unprivileged users
        entries = [(case, write) for case, write in entries if write not in (fifo, dangling_link, link_loop)]
    return entries


def make_corpus(directory: str | os.PathLike) -> list[Case]:
    """Writes the corpus into ``directory`` (created if needed).

    Returns:
        The cases, in a fixed order; each ``case.name`` is a path relative to ``directory``.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    cases = []
    for case, write in cases_and_writers():
        if write is not None:
            write(directory / case.name)
        cases.append(case)
    return cases


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: python tests/make_bad_inputs.py OUT_DIR")
    for case in make_corpus(sys.argv[1]):
        print(f"{case.name}: {'decodes' if case.valid else case.problem}")
