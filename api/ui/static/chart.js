// Line charts on uPlot (vendored: uplot-1.6.32.min.js, loaded by the page before this module).
import { el } from "./api.js";

const COLOURS = ["#1f6feb", "#d9480f", "#2f9e44", "#9c36b5", "#e8590c", "#1098ad", "#5c940d", "#c2255c"];

// A chart of named series over x; `add(x, values)` appends a point to every series (null for a gap) and redraws,
// `replace(rows)` redraws it from scratch.
// The container's data-points says how many x values it holds (the browser tests read it).
export function lineChart(container, { title, xLabel = "epoch", series, width = 520, height = 260, points = true }) {
  const holder = el("figure", { class: "chart", dataset: { points: "0", title } }, el("figcaption", {}, title));
  container.append(holder);
  const xs = [];
  const ys = series.map(() => []);
  const plot = new window.uPlot({
    width, height,
    scales: { x: { time: false } },
    axes: [{ label: xLabel, incrs: [1, 2, 5, 10, 20, 50, 100, 200, 500, 1000] }, {}], // epochs and trials are whole numbers
    series: [{ label: xLabel }, ...series.map((s, i) => ({
      label: s.label, stroke: s.colour || COLOURS[i % COLOURS.length], width: s.width ?? 2, dash: s.dash,
      points: { show: points, size: s.pointSize || 5 },
    }))],
  }, [xs, ...ys], holder);
  return {
    holder,
    add(x, values) {
      xs.push(x);
      values.forEach((v, i) => ys[i].push(v === undefined ? null : v));
      plot.setData([xs, ...ys]);
      holder.dataset.points = String(xs.length);
    },
    // Every point at once: rows of [x, value, value, ...], sorted by x.
    replace(rows) {
      xs.length = 0;
      ys.forEach((y) => { y.length = 0; });
      for (const [x, ...values] of rows) {
        xs.push(x);
        values.forEach((v, i) => ys[i].push(v === undefined ? null : v));
      }
      plot.setData([xs, ...ys]);
      holder.dataset.points = String(xs.length);
    },
    get length() {
      return xs.length;
    },
  };
}
