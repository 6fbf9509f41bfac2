// The page: loads a full-episode RAM model with ONNX Runtime Web, takes a drawn digit or an image file, and shows the
// answer, its confidence and the glimpse path.
//
// The model is models/NAME.onnx with its sidecar models/NAME.json (NAME from ?model=, default mnist), both copied
// there by build.sh. Its input `image` is [1, C, H, W]; its outputs are `logits` [1, classes] and `locations`
// [1, T, 2], the glimpse centres (x, y) in [-1, 1].

import * as ort from "./vendor/ort.wasm.min.mjs";
import { prepareImageData } from "./preprocess.js";
import { animatePath, clearPath, drawInput } from "./trace.js";

const DEFAULT_MODEL = "mnist";
const MAX_PIXELS = 64_000_000; // images.py DEFAULT_MAX_PIXELS
const STROKE_WIDTH = 22; // on the 280 px drawing canvas: about MNIST's pen once the digit is fitted to 20×20

// A plain static server sends no cross-origin-isolation headers, so there is no SharedArrayBuffer and so no wasm
// threads; one thread is also plenty for six small glimpses. The runtime's .mjs and .wasm come from vendor/, never a
// CDN, so the page works offline.
ort.env.wasm.numThreads = 1;
ort.env.wasm.wasmPaths = new URL("vendor/", import.meta.url).href;

const page = {
  drawCanvas: document.getElementById("draw"),
  fileInput: document.getElementById("file"),
  clearButton: document.getElementById("clear"),
  replayButton: document.getElementById("replay"),
  inputView: document.getElementById("input-view"),
  pathCanvas: document.getElementById("path"),
  counter: document.getElementById("glimpse-counter"),
  label: document.getElementById("label"),
  confidence: document.getElementById("confidence"),
  probabilities: document.getElementById("probabilities"),
  status: document.getElementById("status"),
  result: document.getElementById("result"),
};

let model = null; // {name, session, info}
let lastResult = null;
let stopAnimation = () => {};

main();

async function main() {
  const name = new URLSearchParams(location.search).get("model") ?? DEFAULT_MODEL;
  try {
    model = await loadModel(name);
  } catch (error) {
    showError(`models/${name}: ${error.message}`);
    return;
  }
  buildProbabilityRows(model.info.labels);
  page.inputView.parentElement.style.aspectRatio = `${model.info.input.width} / ${model.info.input.height}`;
  setUpDrawing(page.drawCanvas);
  setUpFiles();
  page.replayButton.addEventListener("click", () => lastResult && showPath(lastResult));
  setState("ready", `Model "${name}" ready: ${model.info.num_glimpses} glimpses of ` +
    `${model.info.input.height}×${model.info.input.width}. Draw a digit or drop an image.`);
}

// ---- the model ----

async function loadModel(name) {
  if (!/^[A-Za-z0-9_-][A-Za-z0-9_.-]*$/.test(name)) {
    throw new Error(`a model name has letters, digits, "_", "-" and ".", got ${JSON.stringify(name)}`);
  }
  const response = await fetch(`models/${name}.json`);
  if (!response.ok) throw new Error(`${name}.json: HTTP ${response.status} (did build.sh copy the model?)`);
  const info = checkSidecar(await response.json(), `${name}.json`);
  const session = await ort.InferenceSession.create(`models/${name}.onnx`, { executionProviders: ["wasm"] });
  for (const [kind, names, wanted] of [["input", session.inputNames, ["image"]],
    ["output", session.outputNames, ["logits", "locations"]]]) {
    const missing = wanted.filter((port) => !names.includes(port));
    if (missing.length) throw new Error(`${name}.onnx: no ${kind} ${missing.join(", ")}; it has ${names.join(", ")}`);
  }
  return { name, session, info };
}

// The sidecar written next to each episode model: what the page needs to prepare the input and draw the glimpses.
function checkSidecar(info, source) {
  const fail = (key, expected, got) => {
    throw new Error(`${source}: "${key}" must be ${expected}, got ${JSON.stringify(got)}`);
  };
  const positiveInteger = (key, value) => {
    if (!Number.isInteger(value) || value <= 0) fail(key, "a positive integer", value);
  };
  for (const key of ["height", "width", "channels"]) positiveInteger(`input.${key}`, info.input?.[key]);
  if (!(info.input.value_scale > 0)) fail("input.value_scale", "a positive number", info.input.value_scale);
  const oneOf = (key, value, choices) => {
    if (!choices.includes(value)) fail(key, choices.map((c) => `"${c}"`).join(" or "), value);
  };
  oneOf("input.background", info.input.background, ["dark", "light"]);
  oneOf("input.placement", info.input.placement, ["mnist", "canvas", "fit", "crop"]);
  // Sidecars written before "polarity" existed have none: their models invert as "auto" does.
  if (!("polarity" in info.input)) info.input.polarity = "auto";
  oneOf("input.polarity", info.input.polarity, ["auto", "keep"]);
  if (!Array.isArray(info.labels) || !info.labels.length) fail("labels", "a list of class names", info.labels);
  positiveInteger("num_glimpses", info.num_glimpses);
  for (const key of ["glimpse_size", "num_scales", "scale_factor"]) {
    positiveInteger(`sensor.${key}`, info.sensor?.[key]);
  }
  return info;
}

async function classify(imageData) {
  const { session, info } = model;
  const { channels, height, width } = info.input;
  const x = prepareImageData(imageData, info.input); // [C, H, W]
  const outputs = await session.run({ image: new ort.Tensor("float32", x, [1, channels, height, width]) });
  const logits = Array.from(outputs.logits.data); // [classes]
  const [, steps, two] = outputs.locations.dims;
  if (logits.length !== info.labels.length || two !== 2) {
    throw new Error(`the model gives ${logits.length} logits and locations of shape ` +
      `[${outputs.locations.dims}]; its sidecar says ${info.labels.length} labels and [1, T, 2]`);
  }
  const locations = []; // [T][2]
  for (let t = 0; t < steps; t++) locations.push(Array.from(outputs.locations.data.subarray(2 * t, 2 * t + 2)));
  const probabilities = softmax(logits);
  const index = probabilities.indexOf(Math.max(...probabilities));
  return { model: model.name, index, label: info.labels[index], confidence: probabilities[index], probabilities,
    logits, locations, input: x };
}

function softmax(logits) {
  const top = Math.max(...logits);
  const exps = logits.map((v) => Math.exp(v - top));
  const total = exps.reduce((a, b) => a + b, 0);
  return exps.map((v) => v / total);
}

// One classification at a time (a wasm session runs one call at a time); while one runs, only the latest request
// waits, so quick strokes do not pile up.
let busy = false;
let queued = null;

async function requestClassification(imageData) {
  queued = imageData;
  if (busy) return;
  busy = true;
  while (queued) {
    const next = queued;
    queued = null;
    setState("running", "Looking…");
    try {
      showResult(await classify(next));
    } catch (error) {
      showError(error.message);
    }
  }
  busy = false;
}

// ---- showing the result ----

function buildProbabilityRows(labels) {
  page.probabilities.replaceChildren(...labels.map((label) => {
    const row = document.createElement("li");
    row.innerHTML = '<span class="name"></span><span class="bar"><span></span></span><span class="value"></span>';
    row.querySelector(".name").textContent = label;
    return row;
  }));
}

function showResult(result) {
  lastResult = result;
  const { info } = model;
  page.label.textContent = result.label;
  page.confidence.textContent = ` ${(100 * result.confidence).toFixed(1)} % sure`;
  [...page.probabilities.children].forEach((row, i) => {
    const percent = 100 * result.probabilities[i];
    row.querySelector(".bar span").style.width = `${percent}%`;
    row.querySelector(".value").textContent = `${percent.toFixed(1)} %`;
    row.classList.toggle("best", i === result.index);
  });
  drawInput(page.inputView, result.input, info.input);
  page.result.textContent = JSON.stringify({ ...result, input: Array.from(result.input) });
  page.replayButton.disabled = false;
  setState("done", `${result.label}, after ${result.locations.length} glimpses.`);
  showPath(result);
}

function showPath(result) {
  stopAnimation();
  const { info } = model;
  stopAnimation = animatePath(page.pathCanvas, result.locations, info.sensor, info.input, (count) => {
    page.counter.textContent = `glimpse ${count} of ${result.locations.length}`;
  });
}

function resetResult() {
  stopAnimation();
  lastResult = null;
  clearPath(page.pathCanvas);
  page.inputView.getContext("2d").clearRect(0, 0, page.inputView.width, page.inputView.height);
  page.label.textContent = "–";
  page.confidence.textContent = "";
  page.counter.textContent = "";
  page.result.textContent = "";
  page.replayButton.disabled = true;
  buildProbabilityRows(model.info.labels);
  setState("ready", "Draw a digit or drop an image.");
}

function setState(state, message) {
  document.body.dataset.state = state;
  page.status.textContent = message;
}

function showError(message) {
  document.body.dataset.state = "error";
  page.status.textContent = message;
}

// ---- input: drawing ----

let showingFile = false; // the drawing canvas shows a chosen file's preview, cleared when drawing starts

function setUpDrawing(canvas) {
  const pen = canvas.getContext("2d", { willReadFrequently: true });
  clearDrawing(pen);
  let drawing = false;
  // The canvas may be shown smaller than its 280 px (narrow screens): map CSS pixels to canvas pixels.
  const point = (event) => {
    const box = canvas.getBoundingClientRect();
    return [(event.clientX - box.left) * (canvas.width / box.width),
      (event.clientY - box.top) * (canvas.height / box.height)];
  };
  canvas.addEventListener("pointerdown", (event) => {
    if (showingFile) {
      clearDrawing(pen);
      showingFile = false;
    }
    drawing = true;
    canvas.setPointerCapture(event.pointerId);
    const [x, y] = point(event);
    pen.beginPath();
    pen.arc(x, y, STROKE_WIDTH / 2, 0, 2 * Math.PI); // a tap leaves a dot
    pen.fill();
    pen.beginPath();
    pen.moveTo(x, y);
  });
  canvas.addEventListener("pointermove", (event) => {
    if (!drawing) return;
    const [x, y] = point(event);
    pen.lineTo(x, y);
    pen.stroke();
    pen.beginPath();
    pen.moveTo(x, y);
  });
  const endStroke = () => {
    if (!drawing) return;
    drawing = false;
    requestClassification(pen.getImageData(0, 0, canvas.width, canvas.height));
  };
  canvas.addEventListener("pointerup", endStroke);
  canvas.addEventListener("pointercancel", endStroke);
  page.clearButton.addEventListener("click", () => {
    clearDrawing(pen);
    showingFile = false;
    page.fileInput.value = "";
    resetResult();
  });
}

// White ink on black: the polarity the MNIST model was trained on, so the drawing needs no inversion.
function clearDrawing(pen) {
  pen.fillStyle = "#000000";
  pen.fillRect(0, 0, pen.canvas.width, pen.canvas.height);
  pen.fillStyle = pen.strokeStyle = "#ffffff";
  pen.lineWidth = STROKE_WIDTH;
  pen.lineCap = pen.lineJoin = "round";
}

// ---- input: files ----

function setUpFiles() {
  page.fileInput.addEventListener("change", () => page.fileInput.files[0] && useFile(page.fileInput.files[0]));
  // Dropping anywhere on the page: without preventDefault the browser would navigate away to the dropped file.
  document.addEventListener("dragover", (event) => {
    event.preventDefault();
    page.drawCanvas.classList.add("dropping");
  });
  document.addEventListener("dragleave", () => page.drawCanvas.classList.remove("dropping"));
  document.addEventListener("drop", (event) => {
    event.preventDefault();
    page.drawCanvas.classList.remove("dropping");
    const file = event.dataTransfer.files[0];
    if (file) useFile(file);
  });
}

async function useFile(file) {
  let bitmap;
  try {
    // The file's own pixels, as Pillow reads them: EXIF orientation applied, no colour-profile conversion and no
    // premultiplied alpha.
    bitmap = await createImageBitmap(file, { imageOrientation: "from-image", premultiplyAlpha: "none",
      colorSpaceConversion: "none" });
  } catch {
    showError(`${file.name}: not an image file (or a format this browser cannot read)`);
    return;
  }
  if (bitmap.width * bitmap.height > MAX_PIXELS) {
    showError(`${file.name}: ${bitmap.width}×${bitmap.height} pixels is more than the limit of ${MAX_PIXELS}`);
    return;
  }
  const full = new OffscreenCanvas(bitmap.width, bitmap.height).getContext("2d", { willReadFrequently: true });
  full.drawImage(bitmap, 0, 0);
  showPreview(bitmap);
  requestClassification(full.getImageData(0, 0, bitmap.width, bitmap.height));
}

// The chosen image, fitted into the drawing square, so the person sees what they gave.
function showPreview(bitmap) {
  const pen = page.drawCanvas.getContext("2d");
  const { width, height } = page.drawCanvas;
  clearDrawing(pen);
  const scale = Math.min(width / bitmap.width, height / bitmap.height);
  const [w, h] = [bitmap.width * scale, bitmap.height * scale];
  pen.imageSmoothingEnabled = scale < 1; // small images (a 28×28 digit) stay crisp when enlarged
  pen.drawImage(bitmap, (width - w) / 2, (height - h) / 2, w, h);
  pen.imageSmoothingEnabled = true;
  showingFile = true;
}
