"""The static page (web/) end to end in headless Chromium: it classifies like the Python runtime and draws the path.

The page runs the full-episode model with ONNX Runtime Web; these tests serve web/ with Python's http.server, as the
README says to, drive Debian's Chromium with Playwright, and compare what the page shows with ``ram_infer``.
They skip unless the browser, Playwright and the built page (``bash web/build.sh``) are all there.
"""

from __future__ import annotations

import base64
import functools
import http.server
import json
import os
import shutil
import threading
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import ram_infer
from ram_infer.images import load_image

WEB = Path(__file__).resolve().parents[1] / "web"
EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
PACKAGED_EPISODES = Path(ram_infer.__file__).parent / "models" / "episode"  # what build.sh copies by default
# Debian's /usr/bin/chromium is a shell wrapper; the binary it starts is launched directly.
CHROMIUM_CANDIDATES = ("/usr/lib/chromium/chromium", "chromium", "chromium-browser", "google-chrome")
PAGE_TIMEOUT_MS = 60_000  # compiling the 14 MB wasm runtime takes a few seconds on a loaded 2-core machine
LOCATION_TOLERANCE = 1e-4
INPUT_TOLERANCE = 1e-6

pytestmark = pytest.mark.slow


def _chromium() -> str | None:
    """The Chromium binary: $RAM_CHROMIUM, else the first candidate found."""
    if os.environ.get("RAM_CHROMIUM"):
        return os.environ["RAM_CHROMIUM"]
    for candidate in CHROMIUM_CANDIDATES:
        if "/" in candidate and os.access(candidate, os.X_OK):
            return candidate
        if "/" not in candidate and shutil.which(candidate):
            return shutil.which(candidate)
    return None


@pytest.fixture(scope="module")
def web_root() -> Path:
    """web/, skipping unless build.sh has filled vendor/ and models/."""
    if not (WEB / "vendor" / "ort.wasm.min.mjs").is_file() or not (WEB / "models" / "mnist.onnx").is_file():
        pytest.skip("the page is not built: run web/build.sh")
    return WEB


@pytest.fixture(scope="module")
def server(web_root: Path):
    """A static server of web/ on a free port of 127.0.0.1, in a thread: its base URL."""

    class QuietHandler(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args: object) -> None:
            pass  # one line per request on stderr would bury the test output

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(QuietHandler, directory=web_root))
    httpd.daemon_threads = True
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()
    thread.join()


@pytest.fixture(scope="module")
def browser(server: str):
    """Headless Chromium driven by Playwright (Debian's Chromium, not a Playwright download)."""
    executable = _chromium()
    if executable is None:
        tried = ", ".join(CHROMIUM_CANDIDATES)
        pytest.skip(f"no Chromium found (tried $RAM_CHROMIUM, {tried}): apt-get install chromium")
    sync_api = pytest.importorskip("playwright.sync_api", reason="Playwright is not installed: pip install playwright")
    with sync_api.sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=executable, headless=True)
        yield chromium
        chromium.close()


@pytest.fixture
def open_page(browser, server: str, web_root: Path):
    """Opens the page with a model (default mnist) and waits until it is ready.

    ``page.console_errors`` collects the console's errors, uncaught exceptions and any request that leaves the page's
    server; each test asserts it stays empty.
    """
    contexts = []

    def open_(model: str = "mnist"):
        built = web_root / "models" / f"{model}.onnx"
        if not built.is_file():
            pytest.skip(f"web/models/{model}.onnx is not built: run web/build.sh")
        shipped = PACKAGED_EPISODES / f"{model}.onnx"
        stale = f"{built} differs from {shipped} (a stale build): run web/build.sh"
        assert built.read_bytes() == shipped.read_bytes(), stale
        context = browser.new_context(viewport={"width": 1000, "height": 900})
        contexts.append(context)
        tab = context.new_page()
        tab.console_errors = []
        tab.on("console", lambda message: message.type == "error" and tab.console_errors.append(message.text))
        tab.on("pageerror", lambda error: tab.console_errors.append(str(error)))
        # The page must work offline: everything from its own server, nothing from a CDN.
        tab.on(
            "request",
            lambda request: request.url.startswith((server, "data:", "blob:"))
            or tab.console_errors.append(f"request outside the page's server: {request.url}"),
        )
        tab.goto(f"{server}/index.html?model={model}")
        tab.wait_for_selector('body[data-state="ready"]', timeout=PAGE_TIMEOUT_MS)
        return tab

    yield open_
    for context in contexts:
        context.close()


@pytest.fixture
def page(open_page):
    """The page with the default model, ready."""
    return open_page()


@pytest.fixture(scope="module")
def engine():
    return ram_infer.load_model("mnist", threads=1)


def _result(page) -> dict:
    """Waits for the page's answer and returns its JSON (label, confidence, probabilities, locations, input)."""
    page.wait_for_selector('body[data-state="done"]', timeout=PAGE_TIMEOUT_MS)
    return json.loads(page.locator("#result").text_content())


def _python_answer(engine, path: Path) -> tuple[str, np.ndarray]:
    """The Python runtime's label and locations (ndarray[T, 2]) for an image file."""
    prediction = engine.predict_files([path])
    return engine.info.labels[int(prediction.labels[0])], prediction.locations[0]


def _screenshot(page, name: str, tmp_path: Path) -> None:
    folder = Path(os.environ.get("RAM_ARTIFACTS_DIR") or tmp_path)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"web-{name}.png"
    page.screenshot(path=str(path), full_page=True)
    print(f"screenshot: {path}")


def _path_pixels(page) -> dict:
    """Counts the path canvas's painted pixels, and those in the colour of the last glimpse's squares."""
    return page.evaluate(
        """async () => {
            const { COLOURS } = await import("./trace.js");
            const canvas = document.getElementById("path");
            const count = Number(canvas.dataset.glimpse);
            const hex = COLOURS[(count - 1) % COLOURS.length];
            const target = [1, 3, 5].map((i) => parseInt(hex.slice(i, i + 2), 16));
            const { data } = canvas.getContext("2d").getImageData(0, 0, canvas.width, canvas.height);
            let painted = 0, lastColour = 0;
            for (let i = 0; i < data.length; i += 4) {
                if (data[i + 3] === 0) continue;
                painted += 1;
                if (data[i + 3] === 255 && target.every((v, k) => Math.abs(data[i + k] - v) <= 2)) lastColour += 1;
            }
            return { painted, lastColour, glimpses: count };
        }"""
    )


def test_server_sends_javascript_and_wasm_types(server: str):
    """Browsers load ES modules only with a JavaScript type and stream wasm only as application/wasm."""
    expected = {
        "app.js": "javascript",
        "vendor/ort.wasm.min.mjs": "javascript",
        "vendor/ort-wasm-simd-threaded.mjs": "javascript",
        "vendor/ort-wasm-simd-threaded.wasm": "application/wasm",
    }
    for path, kind in expected.items():
        with urllib.request.urlopen(urllib.request.Request(f"{server}/{path}", method="HEAD")) as response:
            assert kind in response.headers["Content-Type"], path


@pytest.mark.parametrize(
    "model, name", [("mnist", "digit_7"), ("mnist", "digit_2"), ("translated60", "digit_7"), ("cluttered60", "digit_7")]
)
def test_chosen_file_is_classified_like_the_python_runtime(open_page, model: str, name: str):
    """The page's answer and glimpse centres equal the Python runtime's, for the default and the 60×60 models."""
    page = open_page(model)
    engine = ram_infer.load_model(model, threads=1)
    path = EXAMPLES / f"{name}.png"
    label, locations = _python_answer(engine, path)

    page.set_input_files("#file", str(path))
    result = _result(page)

    assert result["label"] == label == name[-1]
    assert result["confidence"] == pytest.approx(max(result["probabilities"]))
    assert len(result["locations"]) == engine.info.num_glimpses
    np.testing.assert_allclose(result["locations"], locations, atol=LOCATION_TOLERANCE)
    assert page.console_errors == []


@pytest.mark.parametrize("name", ["shape_star", "shape_heart"])
def test_an_own_images_colour_model_answers_like_the_python_runtime(open_page, name: str):
    """The shapes model (RGB, polarity "keep", a 128×96 photo fitted into 64×48): same answer and path as Python."""
    page = open_page("shapes")
    engine = ram_infer.load_model("shapes", threads=1)
    path = EXAMPLES / f"{name}.png"
    label, locations = _python_answer(engine, path)

    page.set_input_files("#file", str(path))
    result = _result(page)

    assert result["label"] == label and label in engine.info.labels
    np.testing.assert_allclose(result["locations"], locations, atol=LOCATION_TOLERANCE)
    assert page.console_errors == []


def test_dropped_file_is_classified(page, engine):
    """Dropping a file on the page works like choosing it."""
    png = (EXAMPLES / "digit_2.png").read_bytes()
    page.evaluate(
        """(bytes) => {
            const transfer = new DataTransfer();
            transfer.items.add(new File([new Uint8Array(bytes)], "digit_2.png", { type: "image/png" }));
            const target = document.getElementById("draw");
            for (const type of ["dragover", "drop"]) {
                target.dispatchEvent(new DragEvent(type, { dataTransfer: transfer, bubbles: true, cancelable: true }));
            }
        }""",
        list(png),
    )
    result = _result(page)

    assert result["label"] == _python_answer(engine, EXAMPLES / "digit_2.png")[0] == "2"
    assert page.console_errors == []


def test_glimpse_path_is_drawn_glimpse_by_glimpse(page, engine, tmp_path: Path):
    T = engine.info.num_glimpses
    page.set_input_files("#file", str(EXAMPLES / "digit_7.png"))
    _result(page)
    early = _path_pixels(page)  # the answer and the first frame come together; a frame follows every 600 ms
    page.wait_for_selector(f'#path[data-glimpse="{T}"]', timeout=PAGE_TIMEOUT_MS)
    last = _path_pixels(page)
    _screenshot(page, "digit_7", tmp_path)

    assert 1 <= early["glimpses"] < T
    assert early["lastColour"] > 0
    assert last["lastColour"] > 100  # the current glimpse's squares, a few pixels thick
    assert last["painted"] > early["painted"]  # the line and the numbered dots grew
    assert page.locator("#glimpse-counter").text_content() == f"glimpse {T} of {T}"
    assert page.console_errors == []


@pytest.mark.parametrize("kind", ["dark-on-light-112x100", "photo-jpeg"])
def test_placement_matches_the_python_runtime(page, engine, kind: str, tmp_path: Path):
    """An image that is not 28×28 goes through the "mnist" placement: the page's port must give Python's input."""
    if kind == "photo-jpeg":
        path = EXAMPLES / "paper_3.jpg"
    else:
        digit = Image.open(EXAMPLES / "digit_7.png").convert("L").resize((112, 100), Image.Resampling.BICUBIC)
        path = tmp_path / f"{kind}.png"
        Image.fromarray(255 - np.asarray(digit)).save(path)  # dark ink on light paper: inverted, then placed
    expected = load_image(path, engine.info.input)  # (1, 28, 28)

    page.set_input_files("#file", str(path))
    result = _result(page)

    np.testing.assert_allclose(np.reshape(result["input"], expected.shape), expected, atol=INPUT_TOLERANCE)
    assert page.console_errors == []


def test_drawn_vertical_stroke_reads_as_one(page, engine, tmp_path: Path):
    box = page.locator("#draw").bounding_box()
    x = box["x"] + box["width"] / 2
    page.mouse.move(x, box["y"] + 0.2 * box["height"])
    page.mouse.down()
    for fraction in np.linspace(0.2, 0.8, 25):
        page.mouse.move(x + 3 * fraction, box["y"] + fraction * box["height"])  # a slight slant, like a hand's
    page.mouse.up()
    result = _result(page)
    _screenshot(page, "drawn-1", tmp_path)

    # The same pixels through the Python runtime: the drawing canvas, exported losslessly as PNG.
    data_url = page.evaluate('document.getElementById("draw").toDataURL("image/png")')
    drawing = tmp_path / "drawing.png"
    drawing.write_bytes(base64.b64decode(data_url.split(",", 1)[1]))
    label, locations = _python_answer(engine, drawing)

    assert result["label"] == label == "1"
    np.testing.assert_allclose(result["locations"], locations, atol=LOCATION_TOLERANCE)
    np.testing.assert_allclose(
        np.reshape(result["input"], (1, 28, 28)), load_image(drawing, engine.info.input), atol=INPUT_TOLERANCE
    )
    assert page.console_errors == []


def test_a_file_that_is_not_an_image_is_reported(page, tmp_path: Path):
    text = tmp_path / "notes.png"
    text.write_text("not a picture")

    page.set_input_files("#file", str(text))
    page.wait_for_selector('body[data-state="error"]', timeout=PAGE_TIMEOUT_MS)

    status = page.locator("#status").text_content()
    assert status == "notes.png: not an image file (or a format this browser cannot read)"
    assert page.console_errors == []
