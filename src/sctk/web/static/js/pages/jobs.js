// Jobs and models: the job list with live progress, one job followed to its end, models with
// their metrics, a prediction on a stored dataset drawn with its interval (rows sorted by the
// predicted mean, observed values as points where the dataset holds them) beside the
// calibration curve, and the coverage of the model's observations in production.

import { api, token } from "../api.js";
import { lineChart } from "../chart.js";
import { ago, badge, clear, every, field, h, onSubmit, progress, section, table } from "../ui.js";

const ACTIVE = new Set(["queued", "running"]);

export async function render(content, { can }) {
  const jobsBox = section("Jobs", "jobs");
  const followBox = section("Job", "job-detail");
  followBox.hidden = true;
  const modelsBox = section("Models", "models");
  const modelBox = section("Model", "model-detail");
  modelBox.classList.add("wide"); // a whole row: its charts stand side by side
  modelBox.hidden = true;
  const parts = [];
  if (can("jobs.run")) parts.push(await submitForm((id) => follow(id)));
  clear(content, h("div", { class: "grid" }, parts, jobsBox, followBox, modelsBox, modelBox));

  // -- the job list, refreshed faster while something is running
  let active = false;
  const listJobs = async () => {
    const jobs = await api("/api/v1/jobs?limit=30");
    active = jobs.some((j) => ACTIVE.has(j.status));
    clear(
      jobsBox,
      h("h2", {}, "Jobs"),
      table(
        [
          ["#", (j) => h("a", { href: `#job-${j.id}`, onclick: (e) => (e.preventDefault(), follow(j.id)) }, String(j.id))],
          ["Kind", (j) => j.kind],
          ["Status", (j) => badge(j.status)],
          ["Progress", (j) => progress(j.progress)],
          ["Message", (j) => j.message],
          ["Owner", (j) => j.owner],
          ["Created", (j) => ago(j.created_at)],
        ],
        jobs,
        { empty: "No job yet.", id: "jobs-table" },
      ),
    );
  };
  let last = 0;
  every(1000, async () => {
    // once a second while a job runs, every 10 s otherwise
    if (active || Date.now() - last > 10000) {
      last = Date.now();
      await listJobs();
    }
  });

  // -- one job followed to its end: its events over the WebSocket (polling if that fails)
  let stopFollow = null;
  async function follow(id) {
    if (stopFollow) stopFollow();
    followBox.hidden = false;
    delete followBox.dataset.final;
    location.hash = `job-${id}`;
    const job = await api(`/api/v1/jobs/${id}`);
    const events = [];
    const draw = () =>
      clear(
        followBox,
        h("h2", {}, `Job ${job.id}: ${job.kind} `, badge(job.status)),
        h("div", { id: "job-progress" }, progress(job.progress), " ", job.message),
        job.error ? h("p", { class: "error" }, job.error) : null,
        job.result ? h("pre", { class: "result" }, JSON.stringify(job.result, null, 2)) : null,
        h(
          "ol",
          { class: "events", start: String(Math.max(1, events.length - 11)) },
          events.slice(-12).map((e) => h("li", {}, `${e.kind}: ${e.data.message || e.data.line || e.data.status || ""}`)),
        ),
      );
    const finish = async () => {
      Object.assign(job, await api(`/api/v1/jobs/${id}`));
      draw();
      followBox.dataset.final = job.status;
      await listJobs();
    };
    draw();
    stopFollow = live(id, {
      event(e) {
        followBox.dataset.via = "websocket";
        events.push(e);
        if (e.kind === "progress") (job.progress = e.data.fraction), (job.message = e.data.message || "");
        if (e.kind === "status") job.status = e.data.status || job.status;
        draw();
      },
      final: finish,
      // no WebSocket (a proxy that drops it): poll the job and its events instead
      fallback: () =>
        every(500, async () => {
          followBox.dataset.via = "polling";
          const [now, all] = await Promise.all([api(`/api/v1/jobs/${id}`), api(`/api/v1/jobs/${id}/events`)]);
          Object.assign(job, now);
          events.splice(0, events.length, ...all);
          draw();
          if (!ACTIVE.has(job.status)) {
            stopFollow();
            await finish();
          }
        }),
    });
  }

  // -- models
  const models = await api("/api/v1/models");
  clear(
    modelsBox,
    h("h2", {}, "Models"),
    table(
      [
        ["#", (m) => String(m.id)],
        ["Name", (m) => h("a", { href: `#model-${m.id}`, onclick: (e) => (e.preventDefault(), showModel(m)) }, `${m.name} v${m.version}`)],
        ["Kind", (m) => m.kind],
        ["Owner", (m) => m.owner],
        ["Created", (m) => ago(m.created_at)],
      ],
      models,
      { empty: "No model registered yet.", id: "models-table" },
    ),
  );
  const datasets = await api("/api/v1/datasets");

  function showModel(model) {
    modelBox.hidden = false;
    location.hash = `model-${model.id}`;
    const metrics = Object.entries(model.metrics || {}).filter(([, v]) => typeof v !== "object");
    const plot = h("div", { id: "prediction-plot" });
    const kids = [
      h("h2", {}, `Model ${model.name} v${model.version}`),
      metrics.length
        ? h("dl", { class: "facts", id: "model-metrics" }, metrics.flatMap(([k, v]) => [h("dt", {}, k), h("dd", {}, typeof v === "number" ? Number(v.toPrecision(4)) : String(v))]))
        : h("p", { class: "muted", id: "model-metrics" }, "No metrics recorded for this model."),
      h("p", { class: "muted" }, `${model.kind} model · features: ${(model.lineage.features || []).join(", ") || "?"} · sha256 ${model.sha256.slice(0, 12)}`),
    ];
    const curve = calibrationCurve(model.metrics || {});
    const calibration = h("div", { id: "model-calibration" });
    if (curve) calibration.append(curve);
    // the prediction and the calibration curve side by side (one above the other when narrow)
    kids.push(h("div", { class: "pair" }, h("div", {}, h("h3", {}, "Prediction"), plot), h("div", {}, h("h3", {}, "Calibration"), calibration)));
    if (can("models.predict")) kids.push(predictForm(model, datasets, plot));
    else kids.push(h("p", { class: "muted" }, "Predictions need an analyst or admin account."));
    const coverage = h("div", { id: "model-coverage" });
    if (model.kind !== "field") kids.push(h("h3", {}, "Coverage in production"), coverage);
    clear(modelBox, kids);
    if (!curve) showEvaluation(model, calibration);
    if (model.kind !== "field") showCoverage(model, coverage);
  }
  const m = /^#model-(\d+)$/.exec(location.hash);
  const wanted = m && models.find((x) => x.id === Number(m[1]));
  if (wanted) showModel(wanted);
  const j = /^#job-(\d+)$/.exec(location.hash);
  if (j) follow(Number(j[1]));
}

async function submitForm(onQueued) {
  const kinds = await api("/api/v1/jobs/kinds");
  const form = h(
    "form",
    { class: "card", id: "job-form", novalidate: true },
    h("h2", {}, "Run a job"),
    field("Kind", "kind", { options: kinds.map((k) => [k.name, `${k.name} — ${k.description}`]) }, "select"),
    field("Parameters (JSON)", "params", { rows: 2, placeholder: '{"seconds": 2, "steps": 4}' }, "textarea"),
    h("button", { type: "submit" }, "Queue"),
  );
  onSubmit(form, async (data) => {
    let params = {};
    const text = String(data.get("params") || "").trim();
    if (text) {
      try {
        params = JSON.parse(text);
      } catch (exc) {
        throw Object.assign(new Error("The parameters are not valid JSON; write an object such as {\"seconds\": 2}."), { field: "params" });
      }
    }
    const job = await api("/api/v1/jobs", { method: "POST", body: { kind: data.get("kind"), params } });
    onQueued(job.id);
  });
  return form;
}

// the columns a model reads from a dataset: its features, or a field model's input column
function neededColumns(model) {
  const lineage = model.lineage || {};
  if (model.kind === "field") return [lineage.input || "x"];
  return lineage.features || [];
}

// the stored datasets MODEL can predict on, the one it was trained on first
function compatibleDatasets(model, datasets) {
  const needed = neededColumns(model);
  const fits = datasets.filter((d) => needed.every((c) => c in (d.columns || {})));
  const trainedOn = (model.lineage || {}).dataset?.name;
  return [...fits.filter((d) => d.name === trainedOn), ...fits.filter((d) => d.name !== trainedOn)];
}

function predictForm(model, datasets, plot) {
  // a default the model can read: the first dataset listed may lack its columns, and the
  // user would meet the API's refusal before choosing anything
  const fits = compatibleDatasets(model, datasets);
  const list = h("datalist", { id: "dataset-names" }, fits.map((d) => h("option", { value: d.name })));
  const needed = neededColumns(model);
  const form = h(
    "form",
    { class: "inline-form", id: "predict-form", novalidate: true },
    h("h3", {}, "Predict on a stored dataset"),
    field("Dataset", "dataset", { list: "dataset-names", value: fits.length ? fits[0].name : "", autocomplete: "off" }),
    field("alpha (miscoverage)", "alpha", { type: "number", step: "any", value: "0.1" }),
    list,
    h("button", { type: "submit" }, "Predict"),
    fits.length
      ? null
      : h("p", { class: "muted", id: "predict-hint" }, `No stored dataset has the column(s) ${needed.join(", ") || "?"} this model reads; import one first.`),
  );
  onSubmit(form, async (data) => {
    const alphaText = String(data.get("alpha") || "").trim();
    const body = { dataset: String(data.get("dataset") || "").trim() };
    // an empty alpha is sent as it is: the API's sentence says what it needs
    body.alpha = alphaText === "" ? "" : Number(alphaText);
    const out = await api(`/api/v1/models/${model.id}/predict`, { method: "POST", body });
    drawPrediction(plot, out);
  });
  return form;
}

// rows sorted by their predicted mean: the mean a rising line, the interval a filled band
// around it, and each row's observed value a point where it is known (in row order the
// means zig-zag and the band cannot be seen)
function sortedChart({ mean, lower, upper, observed, title }) {
  const order = mean.map((_, i) => i).sort((a, b) => mean[a] - mean[b]);
  const series = [{ label: "predicted mean", points: order.map((i, r) => [r, mean[i]]) }];
  if (observed && observed.some((v) => v !== null && v !== undefined)) {
    const pts = order.map((i, r) => [r, observed[i]]).filter(([, v]) => v !== null && v !== undefined);
    series.push({ label: "observed", points: pts, pointsOnly: true, cls: "obs", r: 2.2 });
  }
  const band = order.map((i, r) => [r, lower[i], upper[i]]);
  return lineChart({ series, band, time: false, title });
}

function coverageOf(observed, lower, upper) {
  const known = observed ? observed.map((v, i) => [v, i]).filter(([v]) => v !== null && v !== undefined) : [];
  if (!known.length) return null;
  return known.filter(([v, i]) => lower[i] <= v && v <= upper[i]).length / known.length;
}

function drawPrediction(plot, out) {
  const flat = (xs) => xs.map((v) => (Array.isArray(v) ? v.flat(Infinity)[0] : v));
  const mean = flat(out.mean);
  const lower = flat(out.lower);
  const upper = flat(out.upper);
  const width = upper.map((u, i) => u - lower[i]);
  const avg = width.reduce((a, b) => a + b, 0) / (width.length || 1);
  const observed = out.kind === "field" ? null : out.observed;
  const cov = coverageOf(observed, lower, upper);
  const adaptive = out.alpha_used !== undefined && out.alpha_used !== null && out.alpha_used !== out.alpha ? ` (adaptive: built at alpha ${Number(out.alpha_used).toPrecision(3)})` : "";
  const chart =
    out.kind === "field"
      ? lineChart({ series: [{ label: "mean", points: mean.map((v, i) => [i, v]), dots: true }], band: mean.map((_, i) => [i, lower[i], upper[i]]), time: false, title: "Prediction with interval" })
      : sortedChart({ mean, lower, upper, observed, title: "Prediction with interval, rows sorted by predicted mean" });
  clear(
    plot,
    h("p", { id: "prediction-summary" }, `${out.rows} rows, ${Math.round((1 - out.alpha) * 100)} % intervals${adaptive}, mean width ${avg.toPrecision(3)}${cov === null ? "" : `, observed values covered: ${cov.toFixed(3)}`}${out.cached ? " (cached)" : ""}`),
    chart,
    out.kind === "field" ? null : h("p", { class: "muted" }, "x: rows by rank of the predicted mean."),
  );
  plot.dataset.rows = String(out.rows);
}

// the model's observations in production: the rolling coverage against its target, and the
// newest observations drawn as a prediction chart with their true values
async function showCoverage(model, box) {
  const data = await api(`/api/v1/models/${model.id}/observations`);
  const obs = data.observations;
  if (!obs.length) {
    clear(box, [h("p", { class: "muted" }, "No observations yet: sctk uq observe MODEL --data DATASET (or POST .../observations) records true values and draws the coverage here.")]);
    return;
  }
  const w = data.window;
  const target = w.target ?? 0.9;
  const rolling = lineChart({
    series: [
      { label: "rolling coverage", points: obs.map((o, i) => [i + 1, o.rolling_coverage]) },
      { label: "target", points: [[1, target], [obs.length, target]], cls: "target" },
    ],
    time: false,
    yMin: Math.min(0.5, ...obs.map((o) => o.rolling_coverage)),
    yMax: 1,
    title: "Rolling coverage of the observations",
  });
  const state = w.low ? "BELOW TARGET" : w.tested ? "consistent with the target" : "too few to test yet";
  const adaptive = data.adaptive && data.adaptive.enabled ? ` Adaptive mode: alpha_t ${Number(data.adaptive.alpha_t).toPrecision(3)}.` : "";
  clear(box, [
    h("p", { id: "coverage-summary", class: w.low ? "bad" : "muted" }, `${w.coverage === null ? "–" : w.coverage.toFixed(3)} of the last ${w.n} observations covered (target ${target.toFixed(3)}; one-sided binomial p = ${w.p_value.toPrecision(2)}): ${state}.${adaptive} ${data.total} observations in all.`),
    h("div", { class: "pair" }, h("div", { id: "coverage-plot" }, rolling), h("div", { id: "observed-plot" }, sortedChart({ mean: obs.map((o) => o.mean), lower: obs.map((o) => o.lower), upper: obs.map((o) => o.upper), observed: obs.map((o) => o.y), title: "Observed values against their intervals" }))),
  ]);
  box.dataset.n = String(w.n);
}

// the calibration curve of the model's newest evaluation on labelled data, when there is one
async function showEvaluation(model, box) {
  const { evaluation } = await api(`/api/v1/models/${model.id}/evaluation`);
  const chart = evaluation && calibrationCurve(evaluation);
  if (!chart) {
    clear(box, [h("p", { class: "muted" }, "Not evaluated on labelled data yet: sctk uq evaluate MODEL --data DATASET draws this curve.")]);
    return;
  }
  const when = (evaluation.created_at || "").slice(0, 16).replace("T", " ");
  clear(box, [
    chart,
    h("p", { class: "muted" }, `On ${evaluation.data?.name || evaluation.data?.dataset || "labelled data"} (${when} UTC): coverage ${Number(evaluation.coverage).toFixed(3)} at alpha ${evaluation.alpha}, miscalibration area ${Number(evaluation.calibration.miscalibration_area).toFixed(3)}.`),
  ]);
}

// a calibration curve from [{nominal, empirical}], {nominal, empirical} or {levels, observed}
function calibrationCurve(metrics) {
  const c = metrics.calibration_curve || metrics.calibration;
  let pts = null;
  if (Array.isArray(c)) pts = c.map((p) => (Array.isArray(p) ? p : [p.nominal ?? p.expected, p.empirical ?? p.observed]));
  else if (c && Array.isArray(c.nominal) && Array.isArray(c.empirical)) pts = c.nominal.map((n, i) => [n, c.empirical[i]]);
  else if (c && Array.isArray(c.levels) && Array.isArray(c.observed)) pts = c.levels.map((n, i) => [n, c.observed[i]]);
  if (!pts || !pts.length) return null;
  return lineChart({
    series: [
      { label: "ideal", points: [[0, 0], [1, 1]], cls: "ideal" },
      { label: "observed", points: pts, dots: true },
    ],
    time: false,
    yMin: 0,
    yMax: 1,
    title: "Calibration",
  });
}

/** Follow job ID over /ws/jobs/{id}; the bearer token travels as a subprotocol. */
function live(id, { event, final, fallback }) {
  const scheme = location.protocol === "https:" ? "wss" : "ws";
  let ended = false;
  let stopPolling = null;
  const ws = new WebSocket(`${scheme}://${location.host}/ws/jobs/${id}`, ["sctk", `bearer.${token()}`]);
  ws.addEventListener("message", (m) => {
    const msg = JSON.parse(m.data);
    if (msg.final) {
      ended = true;
      final();
    } else event(msg);
  });
  ws.addEventListener("close", () => {
    if (!ended && !stopped) stopPolling = fallback();
  });
  let stopped = false;
  return () => {
    stopped = true;
    if (stopPolling) stopPolling();
    if (ws.readyState <= 1) ws.close(1000);
  };
}
