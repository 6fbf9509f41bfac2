"""Writes a small colour data set: one coloured shape (6 classes) on a crop of a real photograph, in ImageFolder layout.

    python examples/make_shapes.py OUT_DIR [--per-class N] [--seed S] [--split]

Why: MNIST is a centred grey digit on black, so a glimpse anywhere near the middle finds it. Here each 128×96 RGB
image is a random, randomly zoomed crop of one of the photographs shipped in the scikit-image wheel (``skimage.data``,
no download), with one shape (side 32–52 px, random place, a turn of up to ±15°, a saturated colour that stands out
from the photo under it, 1 px outline) and up to two small distractor marks. The model has to search a cluttered colour
image, which is what the Recurrent Attention Model is for, and the folders load as they are with torchvision's
ImageFolder (``ram-train`` on your own images).

Classes (folder names): circle, square, triangle, star, cross, heart. Without --split the files are
OUT_DIR/<class>/<class>_<index:05d>.png; with --split they go to OUT_DIR/{train,valid,test}/<class>/ (80/10/10, the
same files and names as without it). Each image depends only on (seed, class, index), not on N: the same seed gives
byte-identical files (for the same scikit-image, Pillow and numpy). Needs scikit-image (``pip install scikit-image``).
"""

from __future__ import annotations

import argparse
import colorsys
import math
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

WIDTH, HEIGHT = 128, 96
CLASSES = ("circle", "square", "triangle", "star", "cross", "heart")
SHAPE_SIZE = (32.0, 52.0)  # the unrotated shape's width in pixels
# Turned by at most this many degrees, as signs and icons are: any turn at all asked RAM's glimpse network (a
# perceptron, not a convolution) to learn each shape at every angle from 14 000 images, and 20 minutes of training
# left the example at 68 % error (docs/experiments.md)
MAX_TURN = 15.0
ZOOM = (0.75, 3.0)  # photo pixels per image pixel: below 1 enlarges the photo, above 1 shrinks a wider view
SUPERSAMPLE = 4  # shapes are drawn at 4× and box-averaged down, for anti-aliased edges
MARGIN = 2  # pixels kept free at the image border, for the outline and the soft edge
MIN_CONTRAST = 0.3  # least |luminance(shape) - mean luminance(photo under it)|, in [0, 1]
MIN_VALUE = 0.3  # darker than this a saturated colour looks black: the colour would no longer be a cue
MAX_DISTRACTORS = 2
SPLITS = (("train", 0.8), ("valid", 0.1), ("test", 0.1))
LUMA = np.array([0.299, 0.587, 0.114], np.float32)  # Rec. 601 weights on the sRGB values
# scikit-image's bundled photographs that load without the network (the others need pooch and a download). Grey ones
# (camera, coins, grass, gravel, brick, moon) become grey RGB: the colour of the shape is then the only colour.
PHOTOS = (
    "astronaut",
    "chelsea",
    "coffee",
    "rocket",
    "immunohistochemistry",
    "hubble_deep_field",
    "stereo_motorcycle",
    "camera",
    "coins",
    "grass",
    "gravel",
    "brick",
    "moon",
)


def load_photos() -> list[Image.Image]:
    """The PHOTOS as RGB Pillow images, loaded once (skimage imported here so that --help works without it)."""
    try:
        import skimage.data
    except ImportError:
        print("make_shapes.py: needs scikit-image: pip install scikit-image", file=sys.stderr)
        raise SystemExit(2) from None
    photos = []
    for name in PHOTOS:
        pixels = getattr(skimage.data, name)()
        if isinstance(pixels, tuple):  # stereo_motorcycle: (left, right, disparity); the left view is the photo
            pixels = pixels[0]
        photos.append(Image.fromarray(np.asarray(pixels, np.uint8)).convert("RGB"))
    return photos


def unit_circle(points: int = 48) -> np.ndarray:
    angles = np.linspace(0, 2 * np.pi, points, endpoint=False)
    return 0.5 * np.stack([np.cos(angles), np.sin(angles)], 1)


def unit_square() -> np.ndarray:
    return np.array([[-0.5, -0.5], [0.5, -0.5], [0.5, 0.5], [-0.5, 0.5]])


def unit_triangle() -> np.ndarray:
    """Equilateral, 1 wide, centred on its centroid (so that rotation keeps it in place)."""
    angles = np.radians([-90, 30, 150])
    return (1 / math.sqrt(3)) * np.stack([np.cos(angles), np.sin(angles)], 1)


def unit_star(inner: float = 0.45) -> np.ndarray:
    """Five points; the inner radius is fatter than a drawn star's 0.38 so that the arms survive at 14 px."""
    angles = np.radians(-90 + 36 * np.arange(10))
    radii = np.where(np.arange(10) % 2 == 0, 1.0, inner) / (2 * math.sin(math.radians(72)))  # 1 wide
    return radii[:, None] * np.stack([np.cos(angles), np.sin(angles)], 1)


def unit_cross(arm: float = 0.36) -> np.ndarray:
    """A plus sign with thick arms (arm width / total width = ``arm``): thin arms would blur into a dot at 14 px."""
    a, b = arm / 2, 0.5
    quarter = np.array([(-a, -b), (a, -b), (a, -a)])  # the top arm and the corner after it, turned four times
    return np.concatenate([rotate(quarter, turn * np.pi / 2) for turn in range(4)])


def unit_heart(points: int = 64) -> np.ndarray:
    """The classic parametric heart, scaled to 1 wide, lobes up (image y grows downwards)."""
    t = np.linspace(0, 2 * np.pi, points, endpoint=False)
    x = 16 * np.sin(t) ** 3
    y = -(13 * np.cos(t) - 5 * np.cos(2 * t) - 2 * np.cos(3 * t) - np.cos(4 * t))
    outline = np.stack([x, y], 1) / 32
    return outline - (outline.max(0) + outline.min(0)) / 2


SHAPES: dict[str, Callable[[], np.ndarray]] = {
    "circle": unit_circle,
    "square": unit_square,
    "triangle": unit_triangle,
    "star": unit_star,
    "cross": unit_cross,
    "heart": unit_heart,
}


def rotate(points: np.ndarray, angle: float) -> np.ndarray:
    c, s = math.cos(angle), math.sin(angle)
    return points @ np.array([[c, s], [-s, c]])


def photo_crop(rng: np.random.Generator, photos: list[Image.Image]) -> np.ndarray:
    """A WIDTH×HEIGHT crop of a random photo at a random place and zoom (log-uniform), maybe mirrored; float [0, 1]."""
    photo = photos[int(rng.integers(len(photos)))]
    most = min(ZOOM[1], photo.width / WIDTH, photo.height / HEIGHT)
    zoom = math.exp(rng.uniform(math.log(ZOOM[0]), math.log(most)))
    width, height = WIDTH * zoom, HEIGHT * zoom
    left, top = rng.uniform(0, photo.width - width), rng.uniform(0, photo.height - height)
    crop = photo.resize((WIDTH, HEIGHT), Image.Resampling.BILINEAR, box=(left, top, left + width, top + height))
    if rng.random() < 0.5:
        crop = crop.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    return np.asarray(crop, np.float32) / 255


def place(rng: np.random.Generator, outline: np.ndarray) -> np.ndarray:
    """``outline`` (centred on 0) moved to a random place fully inside the image, MARGIN pixels from the border."""
    low, high = outline.min(0), outline.max(0)
    x = rng.uniform(MARGIN - low[0], WIDTH - MARGIN - high[0])
    y = rng.uniform(MARGIN - low[1], HEIGHT - MARGIN - high[1])
    return outline + (x, y)


def box_of(polygon: np.ndarray, pad: int = MARGIN) -> tuple[int, int, int, int]:
    """The polygon's pixel box (left, top, right, bottom), grown by ``pad`` and clipped to the image."""
    left, top = np.floor(polygon.min(0)).astype(int) - pad
    right, bottom = np.ceil(polygon.max(0)).astype(int) + pad
    return max(int(left), 0), max(int(top), 0), min(int(right), WIDTH), min(int(bottom), HEIGHT)


def overlaps(a: tuple[int, int, int, int], b: tuple[int, int, int, int]) -> bool:
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]


def contrasting_colour(rng: np.random.Generator, background: float) -> np.ndarray:
    """A saturated colour whose luminance differs from ``background`` (the photo's under it) by MIN_CONTRAST or more.

    At full saturation the luminance is value × luminance(hue), so for a random hue the values that work are one or
    two intervals (darker or lighter than the photo); hues that allow neither (pale blue on grey) are drawn again.
    """
    for _ in range(32):
        hue = rng.random()
        pure = np.array(colorsys.hsv_to_rgb(hue, 1.0, 1.0), np.float32)
        brightness = float(pure @ LUMA)
        darker = (MIN_VALUE, (background - MIN_CONTRAST) / brightness)
        lighter = ((background + MIN_CONTRAST) / brightness, 1.0)
        choices = [span for span in (darker, lighter) if span[0] <= span[1]]
        if choices:
            low, high = choices[int(rng.integers(len(choices)))]
            return pure * rng.uniform(low, high)
    return np.ones(3, np.float32) if background < 0.5 else np.zeros(3, np.float32)  # white or black: never needed


def random_colour(rng: np.random.Generator) -> np.ndarray:
    return np.array(colorsys.hsv_to_rgb(rng.random(), rng.uniform(0.5, 1.0), rng.uniform(MIN_VALUE, 1.0)), np.float32)


def paint(image: np.ndarray, polygon: np.ndarray, fill: np.ndarray, outline: np.ndarray | None = None) -> None:
    """Draws ``polygon`` (pixel coordinates) into ``image`` in place, anti-aliased, with an optional 1 px outline.

    Only the polygon's box is drawn, at SUPERSAMPLE× and box-averaged down; the outline is that coverage grown by one
    pixel (a 3×3 maximum), painted first so the fill covers its inner part.
    """
    left, top, right, bottom = box_of(polygon)
    mask = Image.new("L", ((right - left) * SUPERSAMPLE, (bottom - top) * SUPERSAMPLE))
    ImageDraw.Draw(mask).polygon(((polygon - (left, top)) * SUPERSAMPLE).ravel().tolist(), fill=255)
    coverage = mask.reduce(SUPERSAMPLE)
    region = image[top:bottom, left:right]
    if outline is not None:
        ring = np.asarray(coverage.filter(ImageFilter.MaxFilter(3)), np.float32)[..., None] / 255
        region[:] = region * (1 - ring) + outline * ring
    alpha = np.asarray(coverage, np.float32)[..., None] / 255
    region[:] = region * (1 - alpha) + fill * alpha


def distractor(rng: np.random.Generator) -> np.ndarray:
    """A small mark that is no class shape: a thin ellipse (3–4.5 × 7–11 px) or a short line (2 px × 7–12 px)."""
    if rng.random() < 0.5:
        outline = unit_circle(24) * (rng.uniform(3, 4.5), rng.uniform(7, 11))
    else:
        outline = unit_square() * (rng.uniform(1.5, 2.5), rng.uniform(7, 12))
    return rotate(outline, rng.uniform(0, 2 * np.pi))


def make_image(seed: int, label: int, index: int, photos: list[Image.Image]) -> np.ndarray:
    """Image ``index`` of class ``label``: uint8 [HEIGHT, WIDTH, 3]. Its own generator makes it independent of N."""
    rng = np.random.default_rng([seed, label, index])
    image = photo_crop(rng, photos)
    turn = np.radians(rng.uniform(-MAX_TURN, MAX_TURN))
    shape = place(rng, rotate(SHAPES[CLASSES[label]]() * rng.uniform(*SHAPE_SIZE), turn))
    shape_box = box_of(shape)
    left, top, right, bottom = shape_box
    background = float((image[top:bottom, left:right] @ LUMA).mean())
    fill = contrasting_colour(rng, background)
    edge = np.zeros(3, np.float32) if float(fill @ LUMA) >= 0.5 else np.ones(3, np.float32)  # contrasts with fill
    for _ in range(int(rng.integers(MAX_DISTRACTORS + 1))):
        for _try in range(10):  # a few tries to keep the distractor off the shape; else there is one fewer
            mark = place(rng, distractor(rng))
            if not overlaps(box_of(mark), shape_box):
                paint(image, mark, random_colour(rng))
                break
    paint(image, shape, fill, edge)
    return np.rint(image * 255).astype(np.uint8)


def split_sizes(per_class: int) -> list[int]:
    """How many of each class go to train, valid, test: 80/10/10, each at least one image."""
    valid = test = max(1, round(per_class * SPLITS[1][1]))
    return [per_class - valid - test, valid, test]


def destinations(out_dir: Path, per_class: int, split: bool) -> list[Path]:
    """The folder (under ``out_dir``, before the class name) of each index, in order."""
    if not split:
        return [out_dir] * per_class
    return [out_dir / name for (name, _), size in zip(SPLITS, split_sizes(per_class)) for _ in range(size)]


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="make_shapes.py", description="Writes coloured shapes on photo crops, in ImageFolder layout."
    )
    parser.add_argument("out_dir", type=Path, metavar="OUT_DIR", help="where to write (must be new or empty)")
    parser.add_argument("--per-class", type=int, default=3000, metavar="N", help="images per class (default 3000)")
    parser.add_argument("--seed", type=int, default=0, metavar="S", help="random seed, 0 or more (default 0)")
    parser.add_argument("--split", action="store_true", help="write train/, valid/, test/ (80/10/10)")
    return parser.parse_args(argv)


def refusal(args: argparse.Namespace) -> str | None:
    """Why the arguments cannot be used, in one line, or None."""
    if args.per_class < 1:
        return f"--per-class must be 1 or more, not {args.per_class}"
    if args.split and args.per_class < 3:
        return f"--split needs --per-class 3 or more (one image in each part), not {args.per_class}"
    if args.seed < 0:
        return f"--seed must be 0 or more, not {args.seed}"
    if args.out_dir.exists() and not args.out_dir.is_dir():
        return f"{args.out_dir} exists and is not a folder"
    if args.out_dir.is_dir() and any(args.out_dir.iterdir()):
        return f"{args.out_dir} is not empty: give a new or empty folder"
    return None


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    reason = refusal(args)
    if reason:
        print(f"make_shapes.py: {reason}", file=sys.stderr)
        return 2
    photos = load_photos()
    start = time.perf_counter()
    folders = destinations(args.out_dir, args.per_class, args.split)
    for label, name in enumerate(CLASSES):
        for folder in sorted(set(folders)):
            (folder / name).mkdir(parents=True, exist_ok=True)
        for index, folder in enumerate(folders):
            pixels = make_image(args.seed, label, index, photos)
            # zlib level 1: photo noise barely compresses anyway, and it is twice as fast as the default (6)
            Image.fromarray(pixels).save(folder / name / f"{name}_{index:05d}.png", compress_level=1)
    total = len(CLASSES) * args.per_class
    parts = ""
    if args.split:
        parts = " (" + ", ".join(f"{n} {size}" for (n, _), size in zip(SPLITS, split_sizes(args.per_class))) + " each)"
    seconds = time.perf_counter() - start
    counts = f"{len(CLASSES)} classes × {args.per_class}{parts}"
    print(f"wrote {total} images ({counts}) to {args.out_dir} in {seconds:.1f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
