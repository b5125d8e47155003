// A version's playground: draw or upload an image, type text, fill a row, or generate; the answer as bars.
// Everything goes through the public predict, detect and generate routes with the signed-in key.
import { api, bar, clear, el, errorBlock, fetchImage, number, paint, path } from "./api.js";

const PAD = 280; // the drawing canvas' side, in CSS pixels

// (height, width, channels, flat) of an image input shape, as the CLI reads it; null when the shape is not an image.
export function imageShape(shape) {
  if (shape.length === 3 && (shape[2] === 1 || shape[2] === 3)) return { height: shape[0], width: shape[1], channels: shape[2], flat: false };
  if (shape.length === 2) return { height: shape[0], width: shape[1], channels: 1, flat: false };
  if (shape.length === 1) {
    for (const channels of [1, 3]) {
      const side = Math.floor(Math.sqrt(shape[0] / channels));
      if (side * side * channels === shape[0]) return { height: side, width: side, channels, flat: true };
    }
  }
  return null;
}

// The canvas' pixels averaged over each of height × width cells, each channel 0..1 (grey is PIL's "L" luma).
export function downsample(canvas, { height, width, channels }) {
  const { data } = canvas.getContext("2d").getImageData(0, 0, canvas.width, canvas.height);
  const out = [];
  for (let row = 0; row < height; row += 1) {
    const y0 = Math.floor((row * canvas.height) / height);
    const y1 = Math.max(y0 + 1, Math.floor(((row + 1) * canvas.height) / height));
    const line = [];
    for (let col = 0; col < width; col += 1) {
      const x0 = Math.floor((col * canvas.width) / width);
      const x1 = Math.max(x0 + 1, Math.floor(((col + 1) * canvas.width) / width));
      const sum = [0, 0, 0];
      for (let y = y0; y < y1; y += 1) {
        for (let x = x0; x < x1; x += 1) {
          const at = (y * canvas.width + x) * 4;
          sum[0] += data[at];
          sum[1] += data[at + 1];
          sum[2] += data[at + 2];
        }
      }
      const n = (y1 - y0) * (x1 - x0) * 255;
      const rgb = sum.map((s) => s / n);
      line.push(channels === 1 ? [0.299 * rgb[0] + 0.587 * rgb[1] + 0.114 * rgb[2]] : rgb);
    }
    out.push(line);
  }
  return out; // [height][width][channels]
}

// The model's input from cells of 0..1: scaled to the range its training images had, in its layout.
export function toInput(cells, shape, [low, high]) {
  const scaled = cells.map((line) => line.map((px) => px.map((v) => low + v * (high - low))));
  if (shape.flat) return scaled.flat(2);
  return shape.rank === 2 ? scaled.map((line) => line.map((px) => px[0])) : scaled; // (H, W) or (H, W, C)
}

function showPixels(canvas, cells, scale) {
  const height = cells.length;
  const width = cells[0].length;
  canvas.width = width * scale;
  canvas.height = height * scale;
  const context = canvas.getContext("2d");
  for (let row = 0; row < height; row += 1) {
    for (let col = 0; col < width; col += 1) {
      const px = cells[row][col].map((v) => Math.round(Math.max(0, Math.min(1, v)) * 255));
      const [r, g, b] = px.length === 1 ? [px[0], px[0], px[0]] : px;
      context.fillStyle = `rgb(${r}, ${g}, ${b})`;
      context.fillRect(col * scale, row * scale, scale, scale);
    }
  }
}

// Each class' probability from one row of outputs: a single sigmoid is P(the second of two classes).
export function probabilities(row, labels) {
  const values = Array.isArray(row) ? row.flat(Infinity) : [row];
  if (labels && labels.length === 2 && values.length === 1) return [{ label: labels[0], p: 1 - values[0] }, { label: labels[1], p: values[0] }];
  return values.map((p, i) => ({ label: labels?.[i] ?? String(i), p }));
}

class Playground {
  constructor(root, version) {
    this.root = root;
    this.version = version;
    this.base = path`/v1/models/${version.model}/versions/${version.version}`;
    this.asked = 0; // requests sent: only the latest one's answer is shown, whatever order they come back in
    this.answers = 0;
  }

  ask() {
    this.asked += 1;
    return this.asked;
  }

  // Counts an answer (the page's data-predictions, which the browser tests wait on); true when it is the latest's.
  counted(seq) {
    this.answers += 1;
    this.root.dataset.predictions = String(this.answers);
    return seq === undefined || seq === this.asked;
  }

  fail(err) {
    clear(this.result, errorBlock(err));
  }

  mount() {
    const v = this.version;
    const inputs = v.signature?.inputs || [];
    this.result = el("div", { id: "result", class: "result", "aria-live": "polite" });
    if (v.task === "generator") return this.generator();
    if (inputs.length !== 1) return clear(this.root, el("p", { class: "hint" }, `This model takes ${inputs.length} inputs: call its predict route with an object naming each.`));
    const shape = inputs[0].shape.slice(1);
    if (v.preprocessing?.kind === "text") return this.text();
    const image = v.dataset?.input_range ? imageShape(shape) : null;
    if (image) return this.image({ ...image, rank: shape.length }, v.dataset.input_range);
    if (shape.length === 1 && shape[0] <= 256) return this.row(shape[0]);
    return clear(this.root, el("p", { class: "hint" }, `No playground for inputs of shape [${shape.join(", ")}]: call predict with an array of that shape.`));
  }

  async predict(x) {
    if (this.version.task === "autoencoder") return this.detect(x);
    const seq = this.ask();
    try {
      const answer = await api(`${this.base}/predict`, { method: "POST", json: { inputs: [x] } });
      if (this.counted(seq)) this.showAnswer(answer);
      return answer;
    } catch (err) {
      if (this.counted(seq)) this.fail(err);
      return null;
    }
  }

  showAnswer(answer) {
    const row = answer.outputs[0];
    const labels = this.version.labels;
    if (!labels) {
      clear(this.result, el("h3", {}, "Output"), el("p", { id: "regression-output", class: "predicted" },
        (Array.isArray(row) ? row.flat(Infinity) : [row]).map((value) => number(value)).join(", ")));
      return;
    }
    const found = probabilities(row, labels);
    const top = found.reduce((best, item) => (item.p > best.p ? item : best), found[0]);
    const predicted = answer.labels?.[0] ?? top.label;
    clear(this.result,
      el("p", {}, "Predicted ", el("span", { id: "predicted-label", class: "predicted" }, predicted)),
      el("ul", { id: "probabilities", class: "bars" }, found.map((item) => el("li", { class: item.label === predicted ? "top" : null, dataset: { label: item.label, p: item.p.toFixed(6) } },
        el("span", { class: "label", title: item.label }, item.label), bar(item.p), el("span", { class: "value" }, `${(item.p * 100).toFixed(1)}%`)))));
  }

  async detect(x) {
    const seq = this.ask();
    let reconstruction, detected;
    try {
      [reconstruction, detected] = await Promise.all([
        api(`${this.base}/predict`, { method: "POST", json: { inputs: [x] } }),
        api(`${this.base}/detect`, { method: "POST", json: { inputs: [x] } }),
      ]);
    } catch (err) {
      if (this.counted(seq)) this.fail(err);
      return null;
    }
    if (!this.counted(seq)) return null;
    const score = detected.scores[0];
    const anomalous = detected.anomalies[0];
    clear(this.result,
      el("p", { id: "anomaly", dataset: { score: String(score), anomalous: String(anomalous) } },
        el("strong", {}, anomalous ? "Anomalous" : "Normal"), ` — reconstruction error ${number(score)} against a threshold of ${number(detected.threshold)}`));
    this.showReconstruction?.(reconstruction.outputs[0]);
    if (!this.showReconstruction) this.result.append(el("p", { id: "reconstruction" }, `Reconstruction: ${[reconstruction.outputs[0]].flat(Infinity).map((n) => number(n)).join(", ")}`));
    return detected;
  }

  image(shape, range) {
    const pad = el("canvas", { id: "draw", width: PAD, height: PAD, title: "Draw with the mouse, a pen or a finger" });
    const preview = el("canvas", { id: "input-preview", class: "pixels", title: "What the model sees" });
    const context = pad.getContext("2d");
    const blank = () => {
      context.fillStyle = "#000";
      context.fillRect(0, 0, PAD, PAD);
    };
    blank();
    // A stroke about a cell and a quarter wide at the model's resolution (two cells at 28 × 28), as digits are written.
    context.lineWidth = (PAD / shape.height) * (shape.height <= 16 ? 1.25 : 2.2);
    context.lineCap = "round";
    context.lineJoin = "round";
    context.strokeStyle = "#fff";
    const scale = Math.max(2, Math.floor(140 / Math.max(shape.height, shape.width)));
    const run = () => {
      const cells = downsample(pad, shape);
      showPixels(preview, cells, scale);
      return this.predict(toInput(cells, shape, range));
    };
    let last = null;
    const at = (event) => {
      const box = pad.getBoundingClientRect();
      return [((event.clientX - box.left) * PAD) / box.width, ((event.clientY - box.top) * PAD) / box.height];
    };
    pad.addEventListener("pointerdown", (event) => {
      pad.setPointerCapture(event.pointerId);
      last = at(event);
      context.beginPath();
      context.moveTo(...last);
      context.lineTo(...last);
      context.stroke();
    });
    pad.addEventListener("pointermove", (event) => {
      if (!last) return;
      const next = at(event);
      context.beginPath();
      context.moveTo(...last);
      context.lineTo(...next);
      context.stroke();
      last = next;
    });
    const end = () => {
      if (!last) return;
      last = null;
      run();
    };
    pad.addEventListener("pointerup", end);
    pad.addEventListener("pointercancel", end);
    const upload = el("input", { id: "image-file", type: "file", accept: "image/*" });
    upload.addEventListener("change", async () => {
      const file = upload.files[0];
      if (!file) return;
      try {
        const bitmap = await createImageBitmap(file);
        blank();
        const fit = Math.min(PAD / bitmap.width, PAD / bitmap.height);
        context.drawImage(bitmap, (PAD - bitmap.width * fit) / 2, (PAD - bitmap.height * fit) / 2, bitmap.width * fit, bitmap.height * fit);
        await run();
      } catch (err) {
        this.fail({ field: "image", message: `that file could not be read as an image (${err.message})` });
      }
    });
    const clearButton = el("button", { id: "clear", type: "button", class: "quiet", onclick: () => { blank(); clear(this.result); } }, "Clear");
    const predictButton = el("button", { id: "predict", type: "button", onclick: run }, "Predict");
    const left = el("div", { class: "pad" }, pad, el("div", { class: "row" }, clearButton, predictButton, el("label", {}, "or an image", upload)),
      el("p", { class: "hint" }, `Drawn white on black, read at ${shape.height} × ${shape.width}${shape.channels === 3 ? " RGB" : ""}, scaled to [${range.join(", ")}].`));
    const right = el("div", {}, el("h3", {}, "What the model sees"), preview, this.result);
    if (this.version.task === "autoencoder") {
      const reconstruction = el("canvas", { id: "reconstruction", class: "pixels", title: "The autoencoder's reconstruction" });
      right.insertBefore(el("div", {}, el("h3", {}, "Reconstruction"), reconstruction), this.result);
      this.showReconstruction = (output) => {
        const flat = [output].flat(Infinity).map((value) => (value - range[0]) / (range[1] - range[0]));
        const cells = [];
        for (let row = 0; row < shape.height; row += 1) {
          const line = [];
          for (let col = 0; col < shape.width; col += 1) {
            const at0 = (row * shape.width + col) * shape.channels;
            line.push(flat.slice(at0, at0 + shape.channels));
          }
          cells.push(line);
        }
        showPixels(reconstruction, cells, scale);
      };
    }
    clear(this.root, el("div", { class: "playground" }, left, right));
  }

  text() {
    const box = el("textarea", { id: "text-input", rows: 4, placeholder: "Type something to classify" });
    const go = el("button", { id: "predict", type: "button", onclick: () => this.predict(box.value) }, "Predict");
    clear(this.root, el("div", {}, box, go, this.result));
  }

  row(features) {
    const fields = Array.from({ length: features }, (_, i) => el("label", {}, `x${i}`, el("input", { type: "number", step: "any", value: "0", dataset: { feature: i } })));
    const go = el("button", { id: "predict", type: "button", onclick: () => {
      const x = [...this.root.querySelectorAll("input[data-feature]")].map((input) => Number(input.value));
      const bad = x.findIndex((value) => !Number.isFinite(value));
      if (bad >= 0) return this.fail({ field: `x${bad}`, message: "expected a number" });
      return this.predict(x);
    } }, "Predict");
    clear(this.root, el("div", {}, el("div", { id: "row-form", class: "row" }, fields), go, this.result));
  }

  generator() {
    const generation = this.version.generation || {};
    const seed = el("input", { id: "seed", type: "number", min: "0", step: "1", value: "0" });
    const n = el("input", { id: "n", type: "number", min: "1", max: "64", step: "1", value: "16" });
    const classes = generation.labels || null;
    const label = classes ? el("select", { id: "class" }, el("option", { value: "" }, "each in turn"), classes.map((c, i) => el("option", { value: String(i) }, c))) : null;
    const grid = el("canvas", { id: "generated", class: "pixels" });
    const go = el("button", { id: "generate", type: "button", onclick: async () => {
      const body = { n: Number(n.value) };
      if (seed.value !== "") body.seed = Number(seed.value);
      if (label && label.value !== "") body.labels = Array(body.n).fill(Number(label.value));
      const seq = this.ask();
      try {
        const { bitmap, response } = await fetchImage(`${this.base}/generate`, { method: "POST", json: body });
        if (!this.counted(seq)) return; // a newer grid was asked for
        paint(grid, bitmap, 3);
        grid.dataset.seed = response.headers.get("X-Kiln-Seed") || "";
        clear(this.result, el("p", { class: "hint" }, `${body.n} samples drawn with seed ${grid.dataset.seed}: the same seed draws the same grid.`));
      } catch (err) {
        if (this.counted(seq)) this.fail(err);
      }
    } }, "Generate");
    clear(this.root, el("div", {}, el("div", { class: "row" }, el("label", {}, "Seed", seed), el("label", {}, "Samples", n),
      label ? el("label", {}, "Class", label) : null, go), grid, this.result));
  }
}

export function mount(root, version) {
  new Playground(root, version).mount();
}
