"""Writes the sample images in examples/ from the MNIST test split: a few 28×28 digits and a photo-like variant.

    python examples/make_examples.py [path/to/mnist.pkl.gz]

The digits are the first test images of their class (bright ink on black, as the models take them). ``paper_3.jpg``
is the first test "3" made to look like a photo of a digit written on paper: enlarged to 120×96, off centre, dark
ink on light, unevenly lit paper with sensor noise, saved as JPEG (the runtime inverts and re-centres it).
"""

from __future__ import annotations

import gzip
import pickle
import sys
from pathlib import Path

import numpy as np
from PIL import Image

HERE = Path(__file__).resolve().parent
DEFAULT_DATA = HERE.parent / "data" / "mnist" / "mnist.pkl.gz"
DIGITS = (7, 2, 1, 0, 4)
SEED = 0


def main(argv: list[str]) -> int:
    data = Path(argv[0]) if argv else DEFAULT_DATA
    with gzip.open(data, "rb") as file:
        _, _, (images, labels) = pickle.load(file, encoding="latin1")
    pixels = np.rint(images.reshape(-1, 28, 28) * 256).astype(np.uint8)  # the file stores byte p as p / 256
    for digit in DIGITS:
        index = int(np.flatnonzero(labels == digit)[0])
        Image.fromarray(pixels[index]).save(HERE / f"digit_{digit}.png", optimize=True)
    three = Image.fromarray(pixels[int(np.flatnonzero(labels == 3)[0])]).resize((84, 84), Image.Resampling.BICUBIC)
    rng = np.random.default_rng(SEED)
    ink = np.zeros((96, 120), np.float32)
    ink[4:88, 30:114] = np.asarray(three, np.float32) / 255  # off centre, towards the top right
    paper = 0.80 + 0.12 * np.linspace(0, 1, 120)[None, :] + rng.normal(0, 0.02, (96, 120))  # lit from the right
    photo = np.clip(paper * (1 - 0.8 * ink), 0, 1)
    Image.fromarray((photo * 255).round().astype(np.uint8)).save(HERE / "paper_3.jpg", quality=85)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
