// The training page's loss chart, drawn as inline SVG: train loss of every logged step and
// validation loss of every evaluation against the step. Redraws at most once per frame.

const NS = "http://www.w3.org/2000/svg";
// The drawing is as many units wide as the chart is pixels (within these bounds), so its 11 px
// labels stay 11 px on a phone instead of shrinking with the picture.
const MAX_WIDTH = 640;
const MIN_WIDTH = 280;
const MARGIN = { left: 52, right: 14, top: 14, bottom: 30 };

function svg(tag, attrs = {}, text = null) {
  const node = document.createElementNS(NS, tag);
  for (const [name, value] of Object.entries(attrs)) node.setAttribute(name, String(value));
  if (text !== null) node.textContent = text;
  return node;
}

/** About `count` round tick values covering [lo, hi]. */
function ticks(lo, hi, count) {
  const span = hi - lo || 1;
  const raw = span / count;
  const power = 10 ** Math.floor(Math.log10(raw));
  const step = [1, 2, 2.5, 5, 10].map((m) => m * power).find((s) => s >= raw) || raw;
  const out = [];
  for (let v = Math.ceil(lo / step) * step; v <= hi + step * 1e-9; v += step) {
    out.push(Number(v.toPrecision(12)));
  }
  return out;
}

function label(value) {
  return Math.abs(value) >= 1000 ? `${value / 1000}k` : String(Number(value.toPrecision(4)));
}

export class LossChart {
  constructor(svgNode, caption) {
    this.node = svgNode;
    this.caption = caption;
    this.size(MAX_WIDTH);
    this.reset();
    // Shown, hidden or turned: draw again for the new width.
    new ResizeObserver(() => {
      if (this.fit() !== this.width) this.schedule();
    }).observe(svgNode);
  }

  /** The width to draw at: the chart's width on screen (the largest while it is hidden). */
  fit() {
    const shown = Math.round(this.node.clientWidth);
    return shown > 0 ? Math.min(MAX_WIDTH, Math.max(MIN_WIDTH, shown)) : MAX_WIDTH;
  }

  size(width) {
    this.width = width;
    this.height = Math.round(Math.min(300, Math.max(200, width * 0.6)));
    this.node.setAttribute("viewBox", `0 0 ${this.width} ${this.height}`);
  }

  reset() {
    this.train = new Map();  // step -> loss (a step logged twice, e.g. after a resume: once)
    this.val = new Map();
    this.schedule();
  }

  addTrain(step, loss) {
    if (Number.isFinite(loss)) this.train.set(step, loss);
    this.schedule();
  }

  addVal(step, loss) {
    if (Number.isFinite(loss)) this.val.set(step, loss);
    this.schedule();
  }

  schedule() {
    if (this.pending) return;
    this.pending = true;
    requestAnimationFrame(() => {
      this.pending = false;
      this.draw();
    });
  }

  draw() {
    this.size(this.fit());
    const { width, height } = this;
    const train = [...this.train].sort((a, b) => a[0] - b[0]);
    const val = [...this.val].sort((a, b) => a[0] - b[0]);
    const all = [...train, ...val];
    this.node.replaceChildren();
    this.node.dataset.trainPoints = String(train.length);
    this.node.dataset.valPoints = String(val.length);
    this.describe(train, val);
    if (!all.length) {
      this.node.append(svg("text", { x: width / 2, y: height / 2, "text-anchor": "middle" },
                           "Waiting for the first logged step…"));
      return;
    }
    // The steps so far fill the width (a long job's first steps are not a sliver at the left).
    const xMax = Math.max(...all.map((p) => p[0]), 1);
    let yLo = Math.min(...all.map((p) => p[1]));
    let yHi = Math.max(...all.map((p) => p[1]));
    const pad = (yHi - yLo) * 0.08 || 0.1;
    yLo = Math.max(0, yLo - pad);
    yHi += pad;
    const x = (step) => MARGIN.left + (step / xMax) * (width - MARGIN.left - MARGIN.right);
    const y = (loss) => height - MARGIN.bottom -
      ((loss - yLo) / (yHi - yLo)) * (height - MARGIN.top - MARGIN.bottom);
    this.axes(x, y, xMax, yLo, yHi);
    const line = (points) => points.map(([s, l]) => `${x(s).toFixed(1)},${y(l).toFixed(1)}`)
      .join(" ");
    if (train.length) this.node.append(svg("polyline", { class: "train", points: line(train) }));
    if (val.length) {
      this.node.append(svg("polyline", { class: "val", points: line(val) }));
      for (const [s, l] of val) {
        this.node.append(svg("circle", { class: "val-dot", cx: x(s), cy: y(l), r: 3 }));
      }
    }
    this.legend();
  }

  axes(x, y, xMax, yLo, yHi) {
    const { width, height } = this;
    const left = MARGIN.left;
    const bottom = height - MARGIN.bottom;
    for (const v of ticks(yLo, yHi, 5)) {
      this.node.append(svg("line", { class: "grid", x1: left, x2: width - MARGIN.right,
                                     y1: y(v), y2: y(v) }));
      this.node.append(svg("text", { x: left - 6, y: y(v) + 4, "text-anchor": "end" },
                           label(v)));
    }
    for (const v of ticks(0, xMax, width < 400 ? 4 : 6)) {
      this.node.append(svg("text", { x: x(v), y: bottom + 18, "text-anchor": "middle" },
                           label(v)));
    }
    this.node.append(svg("line", { class: "axis", x1: left, x2: left, y1: MARGIN.top,
                                   y2: bottom }));
    this.node.append(svg("line", { class: "axis", x1: left, x2: width - MARGIN.right,
                                   y1: bottom, y2: bottom }));
    this.node.append(svg("text", { x: width - MARGIN.right, y: bottom - 6,
                                   "text-anchor": "end" }, "step"));
  }

  legend() {
    const x = this.width - MARGIN.right - 150;
    this.node.append(svg("rect", { class: "legend-train", x, y: MARGIN.top + 4, width: 14,
                                   height: 4 }));
    this.node.append(svg("text", { x: x + 20, y: MARGIN.top + 10 }, "train loss"));
    this.node.append(svg("rect", { class: "legend-val", x: x + 85, y: MARGIN.top + 4,
                                   width: 14, height: 4 }));
    this.node.append(svg("text", { x: x + 105, y: MARGIN.top + 10 }, "val loss"));
  }

  /** The figures in words: the caption under the chart, and what screen readers say. */
  describe(train, val) {
    const parts = [];
    if (train.length) {
      const [step, loss] = train.at(-1);
      parts.push(`train loss ${loss.toFixed(3)} at step ${step}`);
    }
    if (val.length) {
      const [step, loss] = val.at(-1);
      parts.push(`val loss ${loss.toFixed(3)} at step ${step}`);
    }
    this.caption.textContent = parts.length
      ? `Latest: ${parts.join(", ")} (${train.length} logged steps, ${val.length} evaluations).`
      : "No losses yet.";
  }
}
