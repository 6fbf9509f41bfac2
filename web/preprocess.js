// Image pixels → the model's input tensor: a port of ram_infer/images.py (steps 3–7), so the page feeds the model
// what `ram-infer FILE` would. Where images.py computes values in float32 (luma, contrast stretch, levels), so does
// this port (Math.fround after each operation): the input ends as 8-bit levels, and a value a float32 ulp off a half
// level would round to the other one. tests/test_web_preprocess.py compares the two in Node.
//
// An image here is {height, width, channels, data}: data a Float32Array of intensities in [0, 1], row-major
// [H, W, c] like the numpy arrays of images.py. The browser decodes the file (8 bits per channel, EXIF orientation
// applied, no colour-profile conversion), which is where the page can differ from Pillow: a 16-bit PNG arrives
// rounded to 8 bits, and semi-transparent pixels lose precision in the canvas.

const INK_THRESHOLD = 0.25; // images.py INK_THRESHOLD: normalised intensity above which a pixel is ink
const BACKGROUND_PERCENTILE = 99; // images.py BACKGROUND_PERCENTILE: of the border, mapped to 0
const MNIST_BOX = 20 / 28; // MNIST fits each digit in 20×20 inside 28×28
const LANCZOS_SUPPORT = 3;

/**
 * RGBA pixels from a canvas → the model input.
 * @param {ImageData} imageData 8-bit RGBA, as from getImageData.
 * @param {{height: number, width: number, channels: number, value_scale: number, background: string,
 *          placement: string, polarity?: string}} input the sidecar's "input" (ModelInfo.input); polarity
 *          defaults to "auto", as for sidecars written before it existed.
 * @returns {Float32Array} [C, H, W], ready for an ort.Tensor of dims [1, C, H, W].
 */
export function prepareImageData(imageData, input) {
  if (input.channels !== 1 && input.channels !== 3) {
    throw new Error(`the model takes ${input.channels} channels; images convert to 1 or 3`);
  }
  let image = flattenAlpha(imageData);
  if (input.channels === 1) image = luma(image);
  else if (image.channels === 1) image = repeatChannels(image, 3);
  // Step 5: "keep" models (trained on photographs) take the image as it is.
  const polarity = input.polarity ?? "auto";
  if (polarity === "auto" && (mean(border(image).data) > 0.5) === (input.background === "dark")) {
    image = invert(image);
  }
  if (image.height !== input.height || image.width !== input.width) {
    const place = PLACE.get(input.placement);
    if (!place) throw new Error(`unknown placement ${JSON.stringify(input.placement)}`);
    image = place(image, input.height, input.width);
  }
  return toChw(image, input.value_scale);
}

function makeImage(height, width, channels, data = new Float32Array(height * width * channels)) {
  return { height, width, channels, data };
}

// Step 3. A canvas always has alpha; an opaque pixel (alpha 1) comes out unchanged, as for Pillow's RGB modes.
// The background is white when the visible pixels are dark on average, else black, so it contrasts with the ink.
// Grey pixels (R = G = B everywhere) give one channel, as Pillow decodes a grey file to mode "L".
function flattenAlpha(imageData) {
  const { width, height, data: rgba } = imageData;
  const count = width * height;
  let grey = true;
  for (let i = 0; i < count && grey; i++) grey = rgba[4 * i] === rgba[4 * i + 1] && rgba[4 * i] === rgba[4 * i + 2];
  const channels = grey ? 1 : 3;
  const colour = makeImage(height, width, channels);
  const alpha = new Float32Array(count);
  let visibleSum = 0;
  let visibleCount = 0;
  for (let i = 0; i < count; i++) {
    alpha[i] = rgba[4 * i + 3] / 255;
    for (let c = 0; c < channels; c++) colour.data[i * channels + c] = rgba[4 * i + c] / 255;
    if (alpha[i] > 0.5) {
      for (let c = 0; c < channels; c++) visibleSum += colour.data[i * channels + c];
      visibleCount += channels;
    }
  }
  const background = visibleCount > 0 && visibleSum / visibleCount < 0.5 ? 1 : 0;
  for (let i = 0; i < count; i++) {
    for (let c = 0; c < channels; c++) {
      const j = i * channels + c;
      colour.data[j] = colour.data[j] * alpha[i] + background * (1 - alpha[i]);
    }
  }
  return colour;
}

// Step 4: ITU-R 601 luma, as images.py's _luma (grey images were already given one channel). numpy's float32
// matmul (OpenBLAS) accumulates R, G, B in that order with fused multiply-adds and float32 coefficients; a product
// of two float32 values and its sum with a float32 value are exact in double, so one fround is the fused result.
// (Other BLAS kernels may order it otherwise: the two then differ by a float32 ulp at some pixels.)
const LUMA = [Math.fround(0.299), Math.fround(0.587), Math.fround(0.114)];

function luma(image) {
  if (image.channels === 1) return image;
  const out = makeImage(image.height, image.width, 1);
  for (let i = 0; i < out.data.length; i++) {
    const [r, g, b] = image.data.subarray(3 * i, 3 * i + 3);
    out.data[i] = b * LUMA[2] + Math.fround(g * LUMA[1] + Math.fround(r * LUMA[0]));
  }
  return out;
}

function repeatChannels(image, channels) {
  const out = makeImage(image.height, image.width, channels);
  for (let i = 0; i < out.data.length; i++) out.data[i] = image.data[Math.floor(i / channels)];
  return out;
}

function invert(image) {
  return makeImage(image.height, image.width, image.channels, image.data.map((v) => 1 - v));
}

// The outermost rows and columns, as an image of one row (all pixels when the image is 2 pixels thin or less).
function border(image) {
  const { height: h, width: w, channels: c } = image;
  if (h <= 2 || w <= 2) return makeImage(1, h * w, c, image.data);
  const pixels = [];
  const take = (y, x) => pixels.push(...image.data.subarray((y * w + x) * c, (y * w + x + 1) * c));
  for (let x = 0; x < w; x++) take(0, x);
  for (let x = 0; x < w; x++) take(h - 1, x);
  for (let y = 1; y < h - 1; y++) take(y, 0);
  for (let y = 1; y < h - 1; y++) take(y, w - 1);
  return makeImage(1, pixels.length / c, c, Float32Array.from(pixels));
}

// Step 6, "mnist": stretch the contrast, crop to the ink, fit in 20×20 of 28×28, centre the centre of mass.
function placeMnist(image, height, width) {
  const canvas = makeImage(height, width, image.channels);
  const level = percentile(channelMean(border(image)).data, BACKGROUND_PERCENTILE);
  const top = channelMean(image).data.reduce((a, b) => Math.max(a, b), 0);
  if (top - level < 1 / 255) return canvas; // a blank image: no ink to place
  // numpy subtracts and divides in float32 (the Python scalars are rounded to float32 first).
  const range = Math.fround(top - level);
  const stretched = makeImage(image.height, image.width, image.channels,
    image.data.map((v) => Math.min(Math.max(Math.fround(Math.fround(v - level) / range), 0), 1)));
  const ink = crop(stretched, inkBox(channelMean(stretched)));
  const box = Math.max(1, roundHalfEven(Math.min(height, width) * MNIST_BOX));
  const scale = box / Math.max(ink.height, ink.width);
  const fitted = resizeLanczos(ink, Math.max(1, roundHalfEven(ink.height * scale)),
    Math.max(1, roundHalfEven(ink.width * scale)));
  const [cy, cx] = centreOfMass(channelMean(fitted));
  paste(canvas, fitted, roundHalfEven(height / 2 - cy), roundHalfEven(width / 2 - cx));
  return canvas;
}

// Step 6, "canvas": shrink to fit if larger, then centre on a zero canvas.
function placeCanvas(image, height, width) {
  let placed = image;
  if (image.height > height || image.width > width) {
    const scale = Math.min(height / image.height, width / image.width);
    placed = resizeLanczos(image, Math.max(1, roundHalfEven(image.height * scale)),
      Math.max(1, roundHalfEven(image.width * scale)));
  }
  return centred(placed, height, width);
}

// Step 6, "fit": scale up or down to the largest size that fits, keeping the aspect ratio; centre on a zero canvas.
// The sizes are capped at the input's: rounding could otherwise give a pixel more than fits.
function placeFit(image, height, width) {
  const scale = Math.min(height / image.height, width / image.width);
  const fitted = resizeLanczos(image, Math.min(height, Math.max(1, roundHalfEven(image.height * scale))),
    Math.min(width, Math.max(1, roundHalfEven(image.width * scale))));
  return centred(fitted, height, width);
}

// Step 6, "crop": scale to the smallest size that covers the input, keeping the aspect ratio; cut out the centre.
// The sizes are at least the input's: rounding could otherwise leave a pixel uncovered.
function placeCrop(image, height, width) {
  const scale = Math.max(height / image.height, width / image.width);
  const covering = resizeLanczos(image, Math.max(height, roundHalfEven(image.height * scale)),
    Math.max(width, roundHalfEven(image.width * scale)));
  const top = Math.floor((covering.height - height) / 2);
  const left = Math.floor((covering.width - width) / 2);
  return crop(covering, { top, left, bottom: top + height, right: left + width });
}

// A Map, not an object: a sidecar's "toString" must not find a function.
const PLACE = new Map([["mnist", placeMnist], ["canvas", placeCanvas], ["fit", placeFit], ["crop", placeCrop]]);

// The image pasted at the centre of a zero canvas of the input's size (top-left rounded down, as images.py).
function centred(image, height, width) {
  const canvas = makeImage(height, width, image.channels);
  paste(canvas, image, Math.floor((height - image.height) / 2), Math.floor((width - image.width) / 2));
  return canvas;
}

// numpy's mean over the channels: a float32 sum in channel order, divided in float32.
function channelMean(image) {
  const { channels: c } = image;
  if (c === 1) return image;
  const out = makeImage(image.height, image.width, 1);
  for (let i = 0; i < out.data.length; i++) {
    let sum = 0;
    for (let k = 0; k < c; k++) sum = Math.fround(sum + image.data[i * c + k]);
    out.data[i] = sum / c;
  }
  return out;
}

// The bounding box {top, left, bottom, right} (exclusive ends) of the pixels above INK_THRESHOLD. The image has
// some: its brightest pixel is 1 after the stretch.
function inkBox(grey) {
  const box = { top: grey.height, left: grey.width, bottom: 0, right: 0 };
  for (let y = 0; y < grey.height; y++) {
    for (let x = 0; x < grey.width; x++) {
      if (grey.data[y * grey.width + x] > INK_THRESHOLD) {
        box.top = Math.min(box.top, y);
        box.bottom = Math.max(box.bottom, y + 1);
        box.left = Math.min(box.left, x);
        box.right = Math.max(box.right, x + 1);
      }
    }
  }
  return box;
}

function crop(image, { top, left, bottom, right }) {
  const { width: w, channels: c } = image;
  const out = makeImage(bottom - top, right - left, c);
  for (let y = top; y < bottom; y++) {
    out.data.set(image.data.subarray((y * w + left) * c, (y * w + right) * c), (y - top) * out.width * c);
  }
  return out;
}

function centreOfMass(grey) {
  let total = 0;
  let sumY = 0;
  let sumX = 0;
  for (let y = 0; y < grey.height; y++) {
    for (let x = 0; x < grey.width; x++) {
      const m = grey.data[y * grey.width + x];
      total += m;
      sumY += m * y;
      sumX += m * x;
    }
  }
  if (total <= 0) return [(grey.height - 1) / 2, (grey.width - 1) / 2];
  return [sumY / total, sumX / total];
}

// Writes patch into canvas with its top-left corner at (top, left), clipping what falls outside.
function paste(canvas, patch, top, left) {
  const c = canvas.channels;
  const x0 = Math.max(left, 0);
  const x1 = Math.min(left + patch.width, canvas.width);
  for (let y = Math.max(top, 0); y < Math.min(top + patch.height, canvas.height); y++) {
    if (x0 >= x1) break;
    const from = ((y - top) * patch.width + (x0 - left)) * c;
    canvas.data.set(patch.data.subarray(from, from + (x1 - x0) * c), (y * canvas.width + x0) * c);
  }
}

// Step 7: [H, W, C] intensities → [C, H, W] inputs p / value_scale, p the 8-bit level round(255 · intensity) (the
// bytes training caches). Both steps are float32 operations in numpy: v · 255 is exact in double, so one fround gives
// numpy's product; p and value_scale are float32 numbers, for which a double division rounded to float32 is the
// float32 division (double rounding is harmless when 53 ≥ 2 · 24 + 2).
function toChw(image, valueScale) {
  const { height: h, width: w, channels: c } = image;
  const scale = Math.fround(valueScale);
  const out = new Float32Array(c * h * w);
  for (let i = 0; i < h * w; i++) {
    for (let k = 0; k < c; k++) {
      const level = roundHalfEven(Math.fround(Math.min(Math.max(image.data[i * c + k], 0), 1) * 255));
      out[k * h * w + i] = Math.fround(level / scale);
    }
  }
  return out;
}

function mean(values) {
  let sum = 0;
  for (const v of values) sum += v;
  return sum / values.length;
}

// numpy.percentile's default: "linear" interpolation between the two nearest ranks, written the way numpy's _lerp
// writes it (from the nearer rank), and in float32 as numpy computes it for float32 values (the weight t included),
// so the background level comes out the same.
function percentile(values, q) {
  const sorted = Float64Array.from(values).sort();
  const index = (sorted.length - 1) * (q / 100);
  const below = Math.floor(index);
  const t = Math.fround(index - below);
  const a = sorted[below];
  const b = sorted[Math.min(below + 1, sorted.length - 1)];
  const d = Math.fround(b - a);
  return t >= 0.5 ? Math.fround(b - Math.fround(d * Math.fround(1 - t))) : Math.fround(a + Math.fround(d * t));
}

// Python's round() and numpy's rint: halves go to the even neighbour, where Math.round would go up (and shift a digit
// by a pixel, or an 8-bit level by one).
function roundHalfEven(value) {
  const floor = Math.floor(value);
  const fraction = value - floor;
  if (fraction !== 0.5) return Math.round(value);
  return floor % 2 === 0 ? floor : floor + 1;
}

// Pillow's Image.resize(..., LANCZOS) on float images (libImaging/Resample.c), transcribed rather than approximated
// with drawImage: the canvas would quantise to 8 bits and filter differently, so a drawn digit would reach the model
// a little different from the same picture given to the Python runtime. Separable: rows, then columns; each output
// pixel is a normalised Lanczos-3 window, widened by the scale when shrinking (antialiasing). As in Pillow, a pass
// whose size does not change is skipped, sums are in double and each pass is stored in float32.
function resizeLanczos(image, height, width) {
  const wide = width === image.width ? image : resampleAxis(image, width, "x");
  const out = height === image.height ? wide : resampleAxis(wide, height, "y");
  // images.py clips after resizing: Lanczos overshoots next to sharp edges.
  return makeImage(height, width, image.channels, out.data.map((v) => Math.min(Math.max(v, 0), 1)));
}

// One pass of resizeLanczos: resamples along x (the width) or y (the height) to `size` pixels.
function resampleAxis(image, size, axis) {
  const { height: h, width: w, channels: c } = image;
  const out = axis === "x" ? makeImage(h, size, c) : makeImage(size, w, c);
  const coefficients = resampleCoefficients(axis === "x" ? w : h, size);
  // Along x, neighbours in the window are c values apart in memory; along y, a whole row apart.
  const stride = axis === "x" ? c : w * c;
  for (let y = 0; y < out.height; y++) {
    for (let x = 0; x < out.width; x++) {
      const { first, weights } = coefficients[axis === "x" ? x : y];
      const start = axis === "x" ? (y * w + first) * c : (first * w + x) * c;
      for (let k = 0; k < c; k++) {
        let sum = 0;
        for (let i = 0; i < weights.length; i++) sum += weights[i] * image.data[start + i * stride + k];
        out.data[(y * out.width + x) * c + k] = sum;
      }
    }
  }
  return out;
}

// Resample.c's precompute_coeffs: for each output pixel, the first input pixel of its window and the weights.
function resampleCoefficients(inSize, outSize) {
  const scale = inSize / outSize;
  const filterScale = Math.max(scale, 1);
  const support = LANCZOS_SUPPORT * filterScale;
  const coefficients = [];
  for (let out = 0; out < outSize; out++) {
    const centre = (out + 0.5) * scale;
    const first = Math.max(Math.trunc(centre - support + 0.5), 0);
    const end = Math.min(Math.trunc(centre + support + 0.5), inSize);
    const weights = new Float64Array(end - first);
    let total = 0;
    for (let i = 0; i < weights.length; i++) {
      weights[i] = lanczos((first + i - centre + 0.5) * (1 / filterScale));
      total += weights[i];
    }
    if (total !== 0) for (let i = 0; i < weights.length; i++) weights[i] /= total;
    coefficients.push({ first, weights });
  }
  return coefficients;
}

function lanczos(x) {
  if (x < -LANCZOS_SUPPORT || x >= LANCZOS_SUPPORT) return 0;
  return sinc(x) * sinc(x / LANCZOS_SUPPORT);
}

function sinc(x) {
  if (x === 0) return 1;
  return Math.sin(Math.PI * x) / (Math.PI * x);
}
