// A throughput chart drawn as SVG: entities finished per second over the job's run. Hand-written (no chart
// library): one series, axes with a few ticks, and a text summary for people who cannot see it.
const SVG = "http://www.w3.org/2000/svg";
const WIDTH = 640;
const HEIGHT = 220;
const PAD = { left: 56, right: 16, top: 16, bottom: 36 };

function el(tag, attrs, text) {
  const node = document.createElementNS(SVG, tag);
  for (const [name, value] of Object.entries(attrs)) node.setAttribute(name, String(value));
  if (text !== undefined) node.textContent = text;
  return node;
}

function ticks(max, n) {
  if (max <= 0) return [0];
  const step = Math.pow(10, Math.floor(Math.log10(max / n)));
  const nice = [1, 2, 5, 10].map((m) => m * step).find((s) => max / s <= n) || step * 10;
  const out = [];
  for (let v = 0; v <= max + nice / 2; v += nice) out.push(v);
  return out;
}

/** An <svg> of `points` ([{t, entities}]) with an accessible name that states its shape. */
export function throughputChart(points) {
  const times = points.map((p) => Date.parse(p.t));
  const start = Math.min(...times);
  const seconds = times.map((t) => (t - start) / 1000);
  const span = Math.max(1, ...seconds);
  const peak = Math.max(1, ...points.map((p) => p.entities));
  const yTicks = ticks(peak, 4);
  const yMax = yTicks[yTicks.length - 1] || peak;
  const x = (s) => PAD.left + (s / span) * (WIDTH - PAD.left - PAD.right);
  const y = (v) => HEIGHT - PAD.bottom - (v / yMax) * (HEIGHT - PAD.top - PAD.bottom);
  const total = points.reduce((sum, p) => sum + p.entities, 0);
  const summary = `Throughput over ${Math.round(span) + 1} s: peak ${peak.toLocaleString("en")} entities per second, `
    + `${total.toLocaleString("en")} entities in all.`;
  const svg = el("svg", { viewBox: `0 0 ${WIDTH} ${HEIGHT}`, role: "img", "aria-label": summary, class: "chart" });
  svg.append(el("title", {}, summary));
  for (const v of yTicks) {
    svg.append(el("line", { x1: PAD.left, x2: WIDTH - PAD.right, y1: y(v), y2: y(v), class: "grid" }));
    svg.append(el("text", { x: PAD.left - 8, y: y(v) + 4, "text-anchor": "end", class: "tick" }, v.toLocaleString("en")));
  }
  for (const s of ticks(span, 5)) {
    svg.append(el("text", { x: x(s), y: HEIGHT - PAD.bottom + 18, "text-anchor": "middle", class: "tick" }, `${s} s`));
  }
  svg.append(el("text", { x: PAD.left, y: HEIGHT - 4, class: "axis-label" }, "seconds since the first outcome"));
  const order = seconds.map((s, i) => [s, points[i].entities]).sort((a, b) => a[0] - b[0]);
  const line = order.map(([s, v], i) => `${i ? "L" : "M"}${x(s).toFixed(1)},${y(v).toFixed(1)}`).join(" ");
  if (order.length === 1) {
    svg.append(el("circle", { cx: x(order[0][0]), cy: y(order[0][1]), r: 4, class: "series-dot" }));
  } else {
    const area = `${line} L${x(order[order.length - 1][0]).toFixed(1)},${y(0)} L${x(order[0][0]).toFixed(1)},${y(0)} Z`;
    svg.append(el("path", { d: area, class: "series-area" }));
    svg.append(el("path", { d: line, class: "series-line" }));
  }
  return svg;
}
