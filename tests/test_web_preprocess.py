"""web/preprocess.js, run in Node, against ram_infer/images.py: the page must give the model the tensor the Python
runtime gives it for the same pixels.

Both sides get the same 8-bit pixels: Node as the RGBA ImageData a canvas hands the page, Python as intensities
p / 255 ``[H, W, c]``, as decoding a file gives them. All cases run in one Node process (its start costs more than the
work). The port computes in float32 where numpy does, so the tensors are equal to the bit, except where the last bit
of a value can differ before it is rounded to its 8-bit level, and a value on a half level then rounds to the
neighbouring level: after a resize (the port's Lanczos weights come from Math.sin, Pillow's from the C library's sin)
and after RGB → grey (numpy's float32 matmul orders its fused multiply-adds as its BLAS kernel for the shape does; on
random colour pixels about 1 value in 100 000 differs). There the test allows one level at 1 % of the values.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from ram_infer.images import prepare_intensities
from ram_infer.metadata import InputFormat

PREPROCESS_JS = Path(__file__).resolve().parents[1] / "web" / "preprocess.js"
INPUT_HEIGHT, INPUT_WIDTH = 24, 40  # non-square, so that a swapped height and width shows
# "smaller" fits at 12.5 × 40 (Python's round gives 12, half up 13) and covers at 24 × 77; "larger" fits at 24 × 21 and
# covers at 45 × 40: odd margins, where rounding the top-left corner up instead of down would show.
SIZES = {"smaller": (5, 16), "larger": (60, 53), "same": (INPUT_HEIGHT, INPUT_WIDTH)}
PLACEMENTS = ("mnist", "canvas", "fit", "crop")
MIN_EQUAL_FRACTION = 0.99  # of the values, where their last bit can differ (a resize, RGB → grey)
NODE_TIMEOUT_S = 60

# Imports the port, runs prepareImageData on each case of the JSON file, writes the inputs as JSON lists. A float32
# printed as a JavaScript number (a double) reads back exactly.
NODE_SCRIPT = """
const [moduleUrl, casesPath] = process.argv.slice(1);
const { prepareImageData } = await import(moduleUrl);
const { readFileSync } = await import("node:fs");
const cases = JSON.parse(readFileSync(casesPath, "utf8"));
const inputs = cases.map(({ width, height, rgba, input }) =>
  Array.from(prepareImageData({ width, height, data: Uint8ClampedArray.from(rgba) }, input)));
process.stdout.write(JSON.stringify(inputs));
"""


@dataclass(frozen=True)
class Case:
    kind: str  # "grey" (bright ink on dark) or "rgb" (dark ink on paper: "auto" inverts it for a dark model)
    size: str  # a key of SIZES
    channels: int
    placement: str
    polarity: str
    value_scale: float = 255.0
    sidecar_polarity: bool = True  # False: the sidecar has no "polarity", as those written before it existed

    @property
    def id(self) -> str:
        return f"{self.kind}-{self.size}-c{self.channels}-{self.placement}-{self.polarity}-{self.value_scale:g}"

    def input_format(self) -> InputFormat:
        return InputFormat(
            INPUT_HEIGHT, INPUT_WIDTH, self.channels, self.value_scale, "dark", self.placement, self.polarity
        )

    def resizes(self) -> bool:
        """Whether the placement resizes the image ("canvas" only pads an image that fits)."""
        height, width = SIZES[self.size]
        if (height, width) == (INPUT_HEIGHT, INPUT_WIDTH):
            return False
        return self.placement != "canvas" or height > INPUT_HEIGHT or width > INPUT_WIDTH

    def bit_exact(self) -> bool:
        """Whether the port must give exactly Python's tensor: no resize and no RGB → grey (see the module's doc)."""
        return not self.resizes() and not (self.kind == "rgb" and self.channels == 1)


PLACEMENT_CASES = [
    Case(kind, size, channels, placement, polarity)
    for kind in ("grey", "rgb")
    for size in SIZES
    for channels in (1, 3)
    for placement in PLACEMENTS
    for polarity in ("auto", "keep")
]
# The division by the value scale, on images of the input's size (no resize): float32-exact scales and others.
SCALE_CASES = [
    Case(kind, "same", channels, "canvas", "auto", value_scale, sidecar_polarity=False)
    for kind in ("grey", "rgb")
    for channels in (1, 3)
    for value_scale in (1.0, 0.3, 1 / 3, 127.5, 12345.678)
]


def _pixels(kind: str, height: int, width: int) -> np.ndarray:
    """A soft stroke with an off-centre mass on a sloped, noisy background, uint8 ``[H, W, 1 or 3]``.

    The slope and the noise give the resize and the "mnist" background percentile something to do; the seed
    depends on the image only, so the test is the same on every run.
    """
    rng = np.random.default_rng([height, width, kind == "rgb"])
    y, x = np.mgrid[0:height, 0:width] / np.array([height, width])[:, None, None]
    ink = np.exp(-(((y - 0.45) / 0.15) ** 2 + ((x - 0.4) / 0.3) ** 2)) + 0.6 * np.exp(-(((x - 0.75) / 0.05) ** 2))
    grey = 25 + 40 * x + 200 * ink + rng.normal(0, 6, (height, width))
    if kind == "grey":
        return np.clip(np.rint(grey), 0, 255).astype(np.uint8)[:, :, None]
    paper = 255 - grey[:, :, None] * np.array([0.9, 1.0, 0.7]) + rng.normal(0, 6, (height, width, 3))
    return np.clip(np.rint(paper), 0, 255).astype(np.uint8)


def _rgba(pixels: np.ndarray) -> np.ndarray:
    """What a canvas's getImageData gives for the image: grey repeated into R, G and B, opaque."""
    colour = np.repeat(pixels, 3, axis=2) if pixels.shape[2] == 1 else pixels
    return np.concatenate([colour, np.full(colour.shape[:2] + (1,), 255, np.uint8)], axis=2)


def _sidecar_input(case: Case) -> dict[str, Any]:
    fmt = case.input_format()
    fields = {
        key: getattr(fmt, key) for key in ("height", "width", "channels", "value_scale", "background", "placement")
    }
    if case.sidecar_polarity:
        fields["polarity"] = fmt.polarity
    return fields


def _run_node(cases: list[Case], work: Path) -> list[np.ndarray]:
    """The port's input for each case, ``[C, H, W]`` float32."""
    node = shutil.which("node")
    if node is None:
        pytest.skip("Node.js is not installed")
    payload = []
    for case in cases:
        pixels = _pixels(case.kind, *SIZES[case.size])
        payload.append(
            {
                "width": pixels.shape[1],
                "height": pixels.shape[0],
                "rgba": _rgba(pixels).ravel().tolist(),
                "input": _sidecar_input(case),
            }
        )
    cases_path = work / "cases.json"
    cases_path.write_text(json.dumps(payload))
    result = subprocess.run(
        [node, "--input-type=module", "-e", NODE_SCRIPT, PREPROCESS_JS.as_uri(), str(cases_path)],
        capture_output=True,
        text=True,
        timeout=NODE_TIMEOUT_S,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    shape = (INPUT_HEIGHT, INPUT_WIDTH)
    return [
        np.asarray(values, np.float32).reshape((case.channels, *shape))
        for case, values in zip(cases, json.loads(result.stdout))
    ]


@pytest.fixture(scope="module")
def js_inputs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, np.ndarray]:
    cases = PLACEMENT_CASES + SCALE_CASES
    return {case.id: values for case, values in zip(cases, _run_node(cases, tmp_path_factory.mktemp("web")))}


def _python_input(case: Case) -> np.ndarray:
    pixels = _pixels(case.kind, *SIZES[case.size])
    return prepare_intensities(pixels.astype(np.float32) / 255, case.input_format(), source=case.id)


def _assert_agrees(case: Case, js: np.ndarray) -> None:
    expected = _python_input(case)
    assert js.shape == expected.shape
    if case.bit_exact():
        np.testing.assert_array_equal(js, expected)
        return
    # Levels p / value_scale that differ by one level at most, at a few values.
    level_steps = np.abs(js.astype(np.float64) - expected) * case.value_scale
    assert level_steps.max() <= 1 + 1e-5, f"differ by {level_steps.max():.3f} levels"
    assert np.mean(js == expected) >= MIN_EQUAL_FRACTION


@pytest.mark.parametrize("case", PLACEMENT_CASES, ids=lambda case: case.id)
def test_placement_matches_python(case: Case, js_inputs: dict[str, np.ndarray]):
    _assert_agrees(case, js_inputs[case.id])


@pytest.mark.parametrize("case", SCALE_CASES, ids=lambda case: case.id)
def test_value_scale_division_is_float32_and_polarity_defaults_to_auto(case: Case, js_inputs: dict[str, np.ndarray]):
    _assert_agrees(case, js_inputs[case.id])


def test_polarity_keep_leaves_paper_light(js_inputs: dict[str, np.ndarray]):
    """The cases above agree with Python; this checks they test something: "keep" must not invert a light image."""
    auto, keep = (js_inputs[Case("rgb", "same", 1, "canvas", polarity).id] for polarity in ("auto", "keep"))
    assert keep.mean() > 0.5 > auto.mean()
