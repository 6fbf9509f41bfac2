// The model input, enlarged, and the glimpse path over it, drawn the way ram_infer/draw.py draws its traces.

export const FRAME_MILLISECONDS = 600; // draw.py FRAME_MILLISECONDS: one glimpse per frame
const MIN_SIDE = 336; // the enlarged input's shorter side, at least (an integer zoom keeps pixels square)
// draw.py COLOURS: one per glimpse, cycling; distinct on both dark and light backgrounds.
export const COLOURS = ["#ff4040", "#ffaa00", "#e6e600", "#40dc40", "#00c8ff", "#5a78ff", "#dc5aff"];
const LINE_COLOUR = "#ffffff";
const LINE_OUTLINE = "rgba(0, 0, 0, 0.6)"; // keeps the white line visible where it crosses white ink

/** The integer factor that enlarges a height × width input to at least MIN_SIDE on its shorter side. */
export function zoomFor(height, width) {
  return Math.max(1, Math.ceil(MIN_SIDE / Math.min(height, width)));
}

/**
 * The sensor contract's centre pixel along an axis (ram_infer.sensor.centre_pixel): l in [-1, 1] (clamped) →
 * floor((l + 1) / 2 · size), with l = 1 on the last pixel. JS numbers are float64, as the contract asks.
 */
export function centrePixel(l, size) {
  const clamped = Math.min(Math.max(l, -1), 1);
  return Math.min(Math.floor((clamped + 1) * 0.5 * size), size - 1);
}

/**
 * Paints the model input, enlarged without smoothing, and sizes the path canvas to match.
 * @param {HTMLCanvasElement} view the canvas to paint.
 * @param {Float32Array} x the model input [C, H, W] (C = 1 or 3).
 * @param {{height: number, width: number, channels: number, value_scale: number}} input the sidecar's "input".
 */
export function drawInput(view, x, input) {
  const { height: h, width: w, channels: c } = input;
  const pixels = new ImageData(w, h);
  for (let i = 0; i < h * w; i++) {
    for (let k = 0; k < 3; k++) {
      // Uint8ClampedArray rounds and clips, as draw.py's clip(…).round().
      pixels.data[4 * i + k] = x[(c === 1 ? 0 : k) * h * w + i] * input.value_scale;
    }
    pixels.data[4 * i + 3] = 255;
  }
  const small = new OffscreenCanvas(w, h);
  small.getContext("2d").putImageData(pixels, 0, 0);
  const zoom = zoomFor(h, w);
  view.width = w * zoom;
  view.height = h * zoom;
  const pen = view.getContext("2d");
  pen.imageSmoothingEnabled = false;
  pen.drawImage(small, 0, 0, view.width, view.height);
}

/**
 * Draws glimpses 1 … count on the path canvas: the line through their centres, a numbered dot on each, and the
 * sensor's k squares (g·sⁱ pixels, starting side // 2 before the centre pixel) of the last one.
 * @param {HTMLCanvasElement} canvas the transparent canvas over the input view.
 * @param {number[][]} locations [T][2], (x, y) in [-1, 1].
 * @param {{glimpse_size: number, num_scales: number, scale_factor: number}} sensor the sidecar's "sensor".
 * @param {{height: number, width: number}} input the sidecar's "input".
 * @param {number} count how many glimpses to show.
 */
export function drawPath(canvas, locations, sensor, input, count) {
  const zoom = zoomFor(input.height, input.width);
  canvas.width = input.width * zoom;
  canvas.height = input.height * zoom;
  const pen = canvas.getContext("2d");
  const centres = locations.slice(0, count)
    .map(([x, y]) => [centrePixel(x, input.width), centrePixel(y, input.height)]);
  const points = centres.map(([cx, cy]) => [(cx + 0.5) * zoom, (cy + 0.5) * zoom]);

  const lineWidth = Math.max(2, zoom / 4);
  strokePolyline(pen, points, LINE_OUTLINE, lineWidth + 2);
  strokePolyline(pen, points, LINE_COLOUR, lineWidth);

  const last = count - 1;
  const [cx, cy] = centres[last];
  pen.strokeStyle = COLOURS[last % COLOURS.length];
  pen.lineWidth = Math.max(2, Math.round(zoom / 5));
  for (let scale = 0; scale < sensor.num_scales; scale++) {
    const side = sensor.glimpse_size * sensor.scale_factor ** scale;
    const left = cx - Math.floor(side / 2);
    const top = cy - Math.floor(side / 2);
    // Inset by half the line width so the outline lies on the patch's own pixels, as draw.py's boxes do.
    const inset = pen.lineWidth / 2;
    pen.strokeRect(left * zoom + inset, top * zoom + inset, side * zoom - 2 * inset, side * zoom - 2 * inset);
  }

  const radius = Math.max(6, zoom * 0.6);
  pen.font = `bold ${Math.round(radius * 1.3)}px system-ui, sans-serif`;
  pen.textAlign = "center";
  pen.textBaseline = "middle";
  points.forEach(([px, py], t) => {
    pen.fillStyle = COLOURS[t % COLOURS.length];
    pen.beginPath();
    pen.arc(px, py, radius, 0, 2 * Math.PI);
    pen.fill();
    pen.fillStyle = "#000000";
    pen.fillText(String(t + 1), px, py + 1);
  });
  canvas.dataset.glimpse = String(count);
}

/**
 * Draws the path glimpse by glimpse, one every FRAME_MILLISECONDS (all at once if the reader prefers less motion).
 * @param {(count: number) => void} onFrame called after each frame with the glimpses shown.
 * @returns {() => void} a function that stops the animation.
 */
export function animatePath(canvas, locations, sensor, input, onFrame) {
  const reduceMotion = window.matchMedia("(prefers-reduced-motion: reduce)").matches;
  let count = reduceMotion ? locations.length : 1;
  let timer = null;
  const frame = () => {
    drawPath(canvas, locations, sensor, input, count);
    onFrame(count);
    if (count < locations.length) {
      count += 1;
      timer = setTimeout(frame, FRAME_MILLISECONDS);
    }
  };
  frame();
  return () => clearTimeout(timer);
}

/** Empties the path canvas. */
export function clearPath(canvas) {
  canvas.getContext("2d").clearRect(0, 0, canvas.width, canvas.height);
  canvas.dataset.glimpse = "0";
}

function strokePolyline(pen, points, colour, width) {
  if (points.length < 2) return;
  pen.strokeStyle = colour;
  pen.lineWidth = width;
  pen.lineJoin = "round";
  pen.lineCap = "round";
  pen.beginPath();
  points.forEach(([x, y], i) => (i === 0 ? pen.moveTo(x, y) : pen.lineTo(x, y)));
  pen.stroke();
}
