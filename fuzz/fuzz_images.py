"""Random-mutation fuzzer of image decoding: mutated PNG, JPEG, GIF, BMP, TIFF and WebP files → ``load_image``.

Every input must either decode into the model's input format or raise ``ImageError`` (the one exception type the
runtime documents for images) within a time bound (images above ``MAX_PIXELS`` are refused from their header, as
``--max-pixels`` does); anything else, or a slow decode, is a finding. Findings are saved with the exception so they
can be replayed. Pure Python, no sanitizer: the compiled sensor has its own libFuzzer target (fuzz/fuzz_sensor.cpp);
this one covers Pillow plus ram_infer/images.py, where a crash would be a Python exception escaping, or a hang.

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

from ram_infer.images import ImageError, load_image
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
    for name in ("frames.gif", "pages.tiff"):
        buffer = io.BytesIO()
        frames[0].save(buffer, format=_format(name), save_all=True, append_images=frames[1:])
        files[name] = buffer.getvalue()
    return files


def _format(name: str) -> str:
    suffix = name.rsplit(".", 1)[1]
    return {"jpg": "JPEG", "tiff": "TIFF", "png": "PNG", "gif": "GIF", "bmp": "BMP", "webp": "WEBP"}[suffix]


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
    seeds = seed_files()
    names = sorted(seeds)
    outcomes: Counter[str] = Counter()
    findings = 0
    path = out / "current"
    started = time.monotonic()
    while time.monotonic() - started < seconds and (count is None or outcomes.total() < count):
        name = rng.choice(names)
        data = mutate(seeds[name], rng)
        path.write_bytes(data)
        input_format = MODEL_INPUTS[outcomes.total() % len(MODEL_INPUTS)]
        begin = time.monotonic()
        try:
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
        elapsed = time.monotonic() - begin
        if elapsed > SLOW_SECONDS:
            findings += 1
            outcomes["finding slow"] += 1
            (out / f"slow_{findings:03d}_{elapsed:.0f}s_{name}").write_bytes(data)
    path.unlink(missing_ok=True)
    total = outcomes.total()
    elapsed = time.monotonic() - started
    print(f"{total} inputs in {elapsed:.0f} s ({total / elapsed:.0f}/s), seed {seed}: {dict(sorted(outcomes.items()))}")
    print(f"findings: {findings} (saved in {out})" if findings else "findings: none")
    return findings


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
