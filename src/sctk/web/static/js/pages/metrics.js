// Metrics: live charts from /api/v1/metrics/{current,history}, request latency from the
// Prometheus counters at /metrics, anomaly alerts as markers, and a range picker.

import { api } from "../api.js";
import { lineChart } from "../chart.js";
import { bytes, clear, every, h, section } from "../ui.js";

const RANGES = [
  ["1", "1 hour"],
  ["24", "24 hours"],
  ["720", "30 days"],
];
const CHARTS = [
  { id: "cpu", title: "CPU %", metrics: ["cpu_percent"], yMin: 0, yMax: 100 },
  { id: "memory", title: "Memory %", metrics: ["memory_percent"], yMin: 0, yMax: 100 },
  { id: "disk", title: "Disk %", metrics: ["disk_percent"], yMin: 0, yMax: 100 },
  { id: "network", title: "Network bytes/s", metrics: ["net_recv_bytes_per_s", "net_sent_bytes_per_s"], yMin: 0 },
];

// mean request latency between two scrapes: the histogram's _sum and _count, all routes
function latencyTotals(text) {
  let sum = 0;
  let count = 0;
  for (const line of text.split("\n")) {
    if (line.startsWith("sctk_http_request_duration_seconds_sum")) sum += Number(line.split(" ").pop());
    else if (line.startsWith("sctk_http_request_duration_seconds_count")) count += Number(line.split(" ").pop());
  }
  return { sum, count };
}

export async function render(content) {
  const picker = h(
    "div",
    { class: "picker", role: "group", "aria-label": "Range" },
    RANGES.map(([hours, text]) => h("button", { type: "button", "data-hours": hours, class: hours === "1" ? "on" : "" }, text)),
  );
  const now = h("div", { class: "tiles", id: "current" });
  const boxes = Object.fromEntries(CHARTS.map((c) => [c.id, section(c.title, `chart-${c.id}`)]));
  const latencyBox = section("Request latency (ms, mean between polls)", "chart-latency");
  clear(content, picker, now, h("div", { class: "grid charts" }, Object.values(boxes), latencyBox));

  let hours = 1;
  let stop = null;
  const latency = [];
  let last = null;

  const draw = async () => {
    const current = await api("/api/v1/metrics/current");
    const names = Object.keys(current.metrics);
    const m = current.metrics;
    clear(
      now,
      ["cpu_percent", "memory_percent", "disk_percent"].filter((k) => k in m).map((k) =>
        h("div", { class: "tile" }, h("span", { class: "tile-title" }, k.replace("_percent", " %")), h("span", { class: "tile-value" }, m[k].toFixed(1))),
      ),
      "net_recv_bytes_per_s" in m
        ? h("div", { class: "tile" }, h("span", { class: "tile-title" }, "net in/out"), h("span", { class: "tile-value" }, `${bytes(m.net_recv_bytes_per_s)}/s · ${bytes(m.net_sent_bytes_per_s)}/s`))
        : null,
    );
    const alerts = await api("/api/v1/alerts?all=true&limit=500");
    for (const chart of CHARTS) {
      // a metric with labels (disk_percent{path=...}) is drawn once per label set
      const keys = names.filter((n) => chart.metrics.some((base) => n === base || n.startsWith(`${base}{`)));
      const series = [];
      for (const key of keys) {
        const hist = await api(`/api/v1/metrics/history?metric=${encodeURIComponent(key)}&hours=${hours}`);
        series.push({ label: key.replace(/_bytes_per_s|_percent/, ""), points: hist.points.map((p) => [Date.parse(p.time), p.avg]) });
      }
      // where an alert on the metric began: anomalies found by the detectors, and rules
      const markers = alerts
        .filter((a) => chart.metrics.includes(a.metric))
        .map((a) => ({ x: Date.parse(a.started_at), title: a.message, cls: a.rule === "anomaly" ? "anomaly" : "rule" }));
      clear(boxes[chart.id], h("h2", {}, chart.title), lineChart({ series, markers, yMin: chart.yMin, yMax: chart.yMax, title: chart.title }));
    }
    const totals = latencyTotals(await api("/metrics", { text: true }));
    if (!last && totals.count) {
      // the first point: the mean since the server started, until two polls give a difference
      latency.push([Date.now(), (1000 * totals.sum) / totals.count]);
    } else if (last && totals.count > last.count) {
      latency.push([Date.now(), (1000 * (totals.sum - last.sum)) / (totals.count - last.count)]);
      if (latency.length > 720) latency.shift();
    }
    last = totals;
    clear(latencyBox, h("h2", {}, "Request latency (ms, mean between polls)"), lineChart({ series: [{ label: "latency", points: latency, dots: true }], yMin: 0, title: "Request latency" }));
  };

  const start = () => {
    if (stop) stop();
    stop = every(hours <= 1 ? 5000 : 60000, draw);
  };
  picker.addEventListener("click", (event) => {
    const button = event.target.closest("button");
    if (!button) return;
    hours = Number(button.dataset.hours);
    for (const b of picker.querySelectorAll("button")) b.classList.toggle("on", b === button);
    start();
  });
  start();
}
