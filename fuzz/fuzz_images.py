"""Random-mutation fuzzer of image decoding: mutated PNG, JPEG, GIF, BMP, TIFF and WebP files → ``load_image``.

Every input must either decode into the model's input format or raise ``ImageError`` (the one exception type the
runtime documents for images) within a time bound (images above ``MAX_PIXELS`` are refused from their header, as
``--max-pixels`` does), without starting any process; anything else, or a slow decode, is a finding. Findings are
saved with the exception so they can be replayed. Pure Python, no sanitizer: the compiled sensor has its own
libFuzzer target (fuzz/fuzz_sensor.cpp); this one covers Pillow plus ram_infer/images.py, where a crash would be a
Python exception escaping, or a hang.

The seeds include the edge of the format allow-list: files of formats Pillow reads but the runtime must refuse (EPS
and bare PostScript, which Pillow would hand to Ghostscript; PCX, TGA, PPM, ICO …) and a JPEG of too many scans.
Unmutated, each of them must be refused. Every other input is decoded with a tiny working resolution, so that the
reduction while decoding (JPEG DCT scaling, the box filter, the mode conversions before it) is fuzzed too.

    python fuzz/fuzz_images.py --seconds 600 --out build/fuzz/images   # see fuzz/README.md
"""

from __future__ import annotations

import argparse
import io
import random
import sys
import time
import traceback
from collections import Counter
from pathlib import Path

import numpy as np
from PIL import Image, features

import ram_infer.images
from ram_infer.images import MAX_JPEG_SCANS, ImageError, load_image
from ram_infer.metadata import InputFormat

MODEL_INPUTS = (
    InputFormat(height=28, width=28, channels=1),
    InputFormat(height=60, width=60, channels=3, placement="canvas"),
)
# Mutated headers often claim millions of pixels, which the runtime rightly decodes in seconds while they are under
# its limit (64 Mpx by default; a 1 kB TIFF can claim 40 Mpx). With this lower limit a slow decode is a real finding.
MAX_PIXELS = 1_000_000
SLOW_SECONDS = 5.0  # a decode of at most MAX_PIXELS slower than this is reported as a possible hang
SPECIAL_BYTES = (0x00, 0x01, 0x7F, 0x80, 0xFE, 0xFF)
# The seeds are at most 24×20 pixels: with this working resolution every other input is reduced while decoding.
WORKING_PIXELS = (ram_infer.images.WORKING_PIXELS, 100)
# What Pillow would hand to Ghostscript, which would run it (`{} loop` never ends).
POSTSCRIPT = b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 28 28\n{} loop\nshowpage\n"
# Formats Pillow reads and writes that the runtime refuses (mode each writer takes); JPEG 2000 when Pillow has it.
REFUSED_FORMATS = {"EPS": "L", "PCX": "L", "TGA": "L", "PPM": "L", "ICO": "L", "SGI": "L", "QOI": "RGB", "DDS": "L",
                   "XBM": "1", "MSP": "1", "SPIDER": "F", "BLP": "P"}  # fmt: skip
# Python's audit events for starting a process: a decoder that runs a helper program (Ghostscript) raises one.
PROCESS_EVENTS = {"subprocess.Popen", "os.system", "os.posix_spawn", "os.exec", "os.spawn", "os.fork", "os.forkpty"}


def seed_files() -> dict[str, bytes]:
    """Small valid files of every format and mode the decoder handles, made with Pillow (no binaries in the repo)."""
    rng = np.random.default_rng(0)
    grey = (rng.random((24, 20)) * 255).astype(np.uint8)
    rgb = (rng.random((16, 18, 3)) * 255).astype(np.uint8)
    images = {
        "grey.png": (Image.fromarray(grey), {}),
        "rgba.png": (Image.fromarray(np.dstack([rgb, rgb[..., :1]]), "RGBA"), {}),
        "palette.png": (Image.fromarray(rgb).quantize(16), {}),
        "i16.png": (Image.fromarray(grey.astype(np.uint16) * 257), {}),
        "rgb.png": (Image.fromarray(rgb), {"optimize": True}),
        "baseline.jpg": (Image.fromarray(rgb), {"quality": 80}),
        "progressive.jpg": (Image.fromarray(grey), {"progressive": True}),
        "cmyk.jpg": (Image.fromarray(rgb).convert("CMYK"), {}),
        "still.gif": (Image.fromarray(grey), {}),
        "grey.bmp": (Image.fromarray(grey), {}),
        "rgb.bmp": (Image.fromarray(rgb), {}),
        "raw.tiff": (Image.fromarray(rgb), {}),
        "lzw.tiff": (Image.fromarray(grey), {"compression": "tiff_lzw"}),
        "float.tiff": (Image.fromarray(grey.astype(np.float32) / 255, "F"), {}),
    }
    if features.check("webp"):
        images["lossy.webp"] = (Image.fromarray(rgb), {"quality": 50})
    files = {}
    for name, (image, options) in images.items():
        buffer = io.BytesIO()
        image.save(buffer, format=_format(name), **options)
        files[name] = buffer.getvalue()
    frames = [Image.fromarray(grey), Image.fromarray(255 - grey)]
    for name in ("frames.gif", "pages.tiff", "camera.mpo"):
        buffer = io.BytesIO()
        frames[0].save(buffer, format=_format(name), save_all=True, append_images=frames[1:])
        files[name] = buffer.getvalue()
    files["256 scans.jpg"] = _with_scans(files["progressive.jpg"], MAX_JPEG_SCANS)
    return files


def refused_seed_files() -> dict[str, bytes]:
    """Files the runtime must refuse: formats outside its allow-list, and a JPEG of one scan too many."""
    grey = (np.random.default_rng(1).random((24, 20)) * 255).astype(np.uint8)
    formats = {**REFUSED_FORMATS, **({"JPEG2000": "L"} if features.check("jpg_2000") else {})}
    progressive = _encode(grey, "JPEG", progressive=True)
    files = {"postscript.ps": POSTSCRIPT, "257 scans.jpg": _with_scans(progressive, MAX_JPEG_SCANS + 1)}
    for format, mode in formats.items():
        files[f"{format.lower()}.{format.lower()}"] = _encode(grey, format, mode)
    return files


def _encode(grey: np.ndarray, format: str, mode: str = "L", **options) -> bytes:
    buffer = io.BytesIO()  # never a file name: Pillow's SPIDER writer registers the name's suffix as SPIDER
    Image.fromarray(grey).convert(mode).save(buffer, format=format, **options)
    return buffer.getvalue()


def _with_scans(jpeg: bytes, scans: int) -> bytes:
    """A progressive JPEG (as Pillow writes it) with its last scan repeated until it has ``scans`` scans."""
    marker = b"\xff\xda"
    last_scan = jpeg[jpeg.rindex(marker) : -2]  # up to the end-of-image marker
    return jpeg[:-2] + last_scan * (scans - jpeg.count(marker)) + jpeg[-2:]


def _format(name: str) -> str:
    suffix = name.rsplit(".", 1)[1]
    formats = {"jpg": "JPEG", "tiff": "TIFF", "png": "PNG", "gif": "GIF", "bmp": "BMP", "webp": "WEBP", "mpo": "MPO"}
    return formats[suffix]


class ProcessWatch:
    """Records the processes started while it is on (Python audit events), from any library, Pillow included.

    An audit hook cannot be removed: one hook per process, which does nothing while no watch is on.
    """

    _on: ProcessWatch | None = None
    _hooked = False

    def __init__(self) -> None:
        self.started: list[str] = []

    def __enter__(self) -> ProcessWatch:
        if not ProcessWatch._hooked:
            sys.addaudithook(ProcessWatch._hook)
            ProcessWatch._hooked = True
        ProcessWatch._on = self
        return self

    def __exit__(self, *exc_info: object) -> None:
        ProcessWatch._on = None

    @staticmethod
    def _hook(event: str, args: tuple) -> None:
        if ProcessWatch._on is not None and event in PROCESS_EVENTS:
            ProcessWatch._on.started.append(f"{event}{args[:2]!r}")


def mutate(data: bytes, rng: random.Random) -> bytes:
    """1–8 random edits: bit flips, special bytes, 16/32-bit header fields set large, truncation, repeats, inserts."""
    b = bytearray(data)
    for _ in range(rng.randint(1, 8)):
        if not b:
            break
        # Headers hold the dimensions, offsets and counts: bias edits towards the first 64 bytes.
        i = rng.randrange(min(len(b), 64)) if rng.random() < 0.6 else rng.randrange(len(b))
        kind = rng.randrange(7)
        if kind == 0:
            b[i] ^= 1 << rng.randrange(8)
        elif kind == 1:
            b[i] = rng.choice(SPECIAL_BYTES)
        elif kind == 2:
            b[i : i + 2] = rng.choice((b"\xff\xff", b"\x7f\xff", b"\x00\x00", b"\x80\x00"))
        elif kind == 3:
            b[i : i + 4] = rng.choice((b"\xff" * 4, b"\x7f\xff\xff\xff", b"\x00" * 4, b"\x00\x01\x00\x00"))
        elif kind == 4:
            del b[rng.randrange(len(b)) :]
        elif kind == 5:
            j = rng.randrange(len(b))
            b[j:j] = b[i : i + rng.randint(1, 64)] * rng.randint(1, 4)
        else:
            b[i:i] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 16)))
    return bytes(b)


def run(seconds: float, out: Path, seed: int, count: int | None = None) -> int:
    """Fuzzes for ``seconds`` or ``count`` inputs, whichever ends first; writes findings under ``out``.

    Returns:
        The number of findings (0 is a clean run).
    """
    out.mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    refused = refused_seed_files()
    seeds = {**seed_files(), **refused}
    names = sorted(seeds)
    outcomes: Counter[str] = Counter()
    path = out / "current"
    findings = _accepted_refused_seeds(refused, path, out)
    tried = 0
    started = time.monotonic()
    while time.monotonic() - started < seconds and (count is None or tried < count):
        name = rng.choice(names)
        data = mutate(seeds[name], rng)
        path.write_bytes(data)
        input_format = MODEL_INPUTS[tried % len(MODEL_INPUTS)]
        ram_infer.images.WORKING_PIXELS = WORKING_PIXELS[tried // len(MODEL_INPUTS) % len(WORKING_PIXELS)]
        tried += 1
        processes = ProcessWatch()
        begin = time.monotonic()
        try:
            with processes:
                load_image(path, input_format, max_pixels=MAX_PIXELS)
            outcomes["decoded"] += 1
        except ImageError:
            outcomes["ImageError"] += 1
        except Exception as error:  # a finding: any other exception escaping is what this fuzzer looks for
            findings += 1
            kind = type(error).__name__
            outcomes[f"finding {kind}"] += 1
            stem = f"finding_{findings:03d}_{kind}_{name}"
            (out / stem).write_bytes(data)
            (out / f"{stem}.txt").write_text(traceback.format_exc(), encoding="utf-8")
        finally:
            ram_infer.images.WORKING_PIXELS = WORKING_PIXELS[0]
        elapsed = time.monotonic() - begin
        if elapsed > SLOW_SECONDS:
            findings += 1
            outcomes["finding slow"] += 1
            (out / f"slow_{findings:03d}_{elapsed:.0f}s_{name}").write_bytes(data)
        if processes.started:
            findings += 1
            outcomes["finding process"] += 1
            stem = f"process_{findings:03d}_{name}"
            (out / stem).write_bytes(data)
            (out / f"{stem}.txt").write_text("\n".join(processes.started) + "\n", encoding="utf-8")
    path.unlink(missing_ok=True)
    elapsed = time.monotonic() - started
    print(f"{tried} inputs in {elapsed:.0f} s ({tried / elapsed:.0f}/s), seed {seed}: {dict(sorted(outcomes.items()))}")
    print(f"findings: {findings} (saved in {out})" if findings else "findings: none")
    return findings


def _accepted_refused_seeds(refused: dict[str, bytes], path: Path, out: Path) -> int:
    """Decodes each seed of the allow-list's edge, unmutated; any that is not refused is saved as a finding.

    Returns:
        How many were accepted (0: all refused).
    """
    accepted = 0
    for name, data in refused.items():
        path.write_bytes(data)
        try:
            load_image(path, MODEL_INPUTS[0], max_pixels=MAX_PIXELS)
        except ImageError:
            continue
        accepted += 1
        (out / f"accepted_{accepted:03d}_{name}").write_bytes(data)
    print(f"{len(refused)} seeds the runtime must refuse: {len(refused) - accepted} refused")
    return accepted


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=60.0, help="how long to run")
    parser.add_argument("--out", type=Path, default=Path("build/fuzz/images"), help="where findings are saved")
    parser.add_argument("--count", type=int, default=None, help="stop after this many inputs (a repeatable run)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (the inputs tried follow from it)")
    args = parser.parse_args(argv)
    return 1 if run(args.seconds, args.out, args.seed, args.count) else 0


if __name__ == "__main__":
    sys.exit(main())
