// Line charts in SVG, drawn by hand: series, an interval band and markers.

const NS = "http://www.w3.org/2000/svg";
const W = 640;
const H = 240;
const PAD = { left: 52, right: 12, top: 12, bottom: 28 };

function s(tag, attrs = {}, text) {
  const el = document.createElementNS(NS, tag);
  for (const [k, v] of Object.entries(attrs)) el.setAttribute(k, String(v));
  if (text !== undefined) el.textContent = text;
  return el;
}

function niceTicks(lo, hi, count = 4) {
  if (!(hi > lo)) return [lo];
  const raw = (hi - lo) / count;
  const mag = 10 ** Math.floor(Math.log10(raw));
  const step = [1, 2, 5, 10].map((m) => m * mag).find((x) => x >= raw) || raw;
  const ticks = [];
  for (let v = Math.ceil(lo / step) * step; v <= hi + step * 1e-9; v += step) ticks.push(v);
  return ticks;
}

function label(v) {
  const a = Math.abs(v);
  if (a >= 1e9) return `${(v / 1e9).toFixed(1)}G`;
  if (a >= 1e6) return `${(v / 1e6).toFixed(1)}M`;
  if (a >= 1e4) return `${(v / 1e3).toFixed(0)}k`;
  if (a >= 100 || v === 0) return v.toFixed(0);
  return v.toPrecision(3).replace(/\.?0+$/, "");
}

function timeLabel(ms, span) {
  const iso = new Date(ms).toISOString();
  if (span > 2 * 86400e3) return iso.slice(5, 10);
  return span > 900e3 ? iso.slice(11, 16) : iso.slice(11, 19);
}

/**
 * An <svg> chart. SERIES: [{label, cls, points: [[x, y], ...]}]; BAND: [[x, lo, hi], ...];
 * MARKERS: [{x, title}]; TIME: x values are epoch milliseconds. A series with pointsOnly is
 * drawn as points without a line (observed values beside a predicted mean).
 */
export function lineChart({ series = [], band = null, markers = [], time = true, yMin, yMax, title }) {
  const svg = s("svg", { viewBox: `0 0 ${W} ${H}`, class: "chart", role: "img" });
  if (title) svg.append(s("title", {}, title));
  const xs = [];
  const ys = [];
  for (const line of series) for (const [x, y] of line.points) if (Number.isFinite(y)) xs.push(x), ys.push(y);
  if (band) for (const [x, lo, hi] of band) xs.push(x), ys.push(lo, hi);
  if (!xs.length) {
    svg.append(s("text", { x: W / 2, y: H / 2, "text-anchor": "middle", class: "empty" }, "no data yet"));
    return svg;
  }
  let x0 = Math.min(...xs);
  let x1 = Math.max(...xs);
  if (x1 === x0) x1 = x0 + 1;
  let y0 = yMin ?? Math.min(...ys);
  let y1 = yMax ?? Math.max(...ys);
  if (y1 === y0) (y0 -= 1), (y1 += 1);
  const pad = (y1 - y0) * 0.05;
  if (yMin === undefined) y0 -= pad;
  if (yMax === undefined) y1 += pad;
  const px = (x) => PAD.left + ((x - x0) / (x1 - x0)) * (W - PAD.left - PAD.right);
  const py = (y) => H - PAD.bottom - ((y - y0) / (y1 - y0)) * (H - PAD.top - PAD.bottom);

  const axes = s("g", { class: "axes" });
  for (const t of niceTicks(y0, y1)) {
    axes.append(s("line", { x1: PAD.left, x2: W - PAD.right, y1: py(t), y2: py(t), class: "grid" }));
    axes.append(s("text", { x: PAD.left - 6, y: py(t) + 4, "text-anchor": "end" }, label(t)));
  }
  for (const t of niceTicks(x0, x1, 5)) {
    const text = time ? timeLabel(t, x1 - x0) : label(t);
    axes.append(s("text", { x: px(t), y: H - 8, "text-anchor": "middle" }, text));
  }
  svg.append(axes);

  if (band && band.length) {
    const top = band.map(([x, , hi]) => `${px(x)},${py(hi)}`);
    const bottom = band.map(([x, lo]) => `${px(x)},${py(lo)}`).reverse();
    svg.append(s("polygon", { points: [...top, ...bottom].join(" "), class: "band" }));
  }
  series.forEach((line, i) => {
    const pts = line.points.filter(([, y]) => Number.isFinite(y));
    if (!pts.length) return;
    if (!line.pointsOnly) {
      const d = pts.map(([x, y], j) => `${j ? "L" : "M"}${px(x).toFixed(1)},${py(y).toFixed(1)}`);
      svg.append(s("path", { d: d.join(""), class: `line ${line.cls || `c${i}`}` }));
    }
    if (line.dots || line.pointsOnly) {
      for (const [x, y] of pts) svg.append(s("circle", { cx: px(x), cy: py(y), r: line.r || 2.5, class: `dot ${line.cls || ""}` }));
    }
  });
  for (const m of markers) {
    if (m.x < x0 || m.x > x1) continue;
    const g = s("g", { class: `marker ${m.cls || ""}` });
    g.append(s("line", { x1: px(m.x), x2: px(m.x), y1: PAD.top, y2: H - PAD.bottom }));
    g.append(s("title", {}, m.title || "anomaly"));
    svg.append(g);
  }
  if (series.length > 1 || band) {
    const legend = s("g", { class: "legend" });
    let lx = PAD.left + 6;
    series.forEach((line, i) => {
      legend.append(s("rect", { x: lx, y: PAD.top, width: 10, height: 3, class: `key ${line.cls || `c${i}`}` }));
      legend.append(s("text", { x: lx + 14, y: PAD.top + 5 }, line.label));
      lx += 24 + 7 * String(line.label).length;
    });
    if (band) {
      legend.append(s("rect", { x: lx, y: PAD.top - 2, width: 10, height: 8, class: "band" }));
      legend.append(s("text", { x: lx + 14, y: PAD.top + 5 }, "interval"));
    }
    svg.append(legend);
  }
  return svg;
}
