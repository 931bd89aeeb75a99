// Overview: health, firing alerts, open incidents, last backup, maintenance, audit score.

import { api } from "../api.js";
import { ago, badge, clear, every, h, section, table, when } from "../ui.js";

async function health() {
  let body;
  try {
    // signed in, the report has every check's message and values
    body = await api("/health/ready");
  } catch (err) {
    body = err.body; // 503: the same report, with the failing checks named
    if (!body || !body.checks) throw err;
  }
  return body;
}

function latestPerTask(runs) {
  const seen = new Map();
  for (const run of runs) if (!seen.has(run.task)) seen.set(run.task, run);
  return [...seen.values()].sort((a, b) => a.task.localeCompare(b.task));
}

export async function render(content, { can }) {
  const tiles = h("div", { class: "tiles", id: "tiles" });
  const parts = {
    health: section("Health", "health"),
    alerts: section("Firing alerts", "alerts"),
    incidents: section("Open incidents", "incidents"),
    backup: section("Last backup", "backup"),
    maintenance: section("Maintenance", "maintenance"),
  };
  clear(content, tiles, h("div", { class: "grid" }, Object.values(parts)));

  const refresh = async () => {
    const [report, alerts, incidents, runs, audit, backups] = await Promise.all([
      health(),
      api("/api/v1/alerts"),
      api("/api/v1/incidents?status=open"),
      api("/api/v1/maintenance/runs?limit=200"),
      api("/api/v1/maintenance/runs?task=compliance_audit&limit=1"),
      can("backups.manage") ? api("/api/v1/backups?runs=1") : null,
    ]);
    const score = audit.length ? audit[0].details.score : null;
    // the last backup is the newest regular one: a safety snapshot taken before a restore
    // holds whatever state was being repaired
    const snap = backups && backups.snapshots.find((s) => s.kind === "regular");
    const unconfigured = backups && !backups.configured;
    clear(
      tiles,
      tile("Health", report.status, "/ui/operations", "health-tile"),
      tile("Firing alerts", String(alerts.length), "/ui/operations#alerts", "alerts-tile"),
      tile("Open incidents", String(incidents.length), "/ui/operations#incidents", "incidents-tile"),
      tile("Audit score", score === null || score === undefined ? "—" : `${score} / 100`, "/ui/operations#maintenance", "audit-tile"),
      tile("Last backup", backups ? (unconfigured ? "not configured" : snap ? ago(snap.time) : "none") : "admins only", "/ui/operations#backups", "backup-tile"),
    );
    clear(
      parts.health,
      h("h2", {}, "Health ", badge(report.status)),
      table(
        [
          ["Check", (c) => c.name],
          ["Status", (c) => badge(c.status)],
          ["Message", (c) => c.message],
        ],
        report.checks,
      ),
    );
    clear(
      parts.alerts,
      h("h2", {}, "Firing alerts"),
      table(
        [
          ["Alert", (a) => a.message],
          ["Severity", (a) => badge(a.severity)],
          ["Since", (a) => ago(a.started_at)],
          ["Acknowledged", (a) => a.acknowledged_by || "no"],
        ],
        alerts,
        { empty: "No alert is firing.", id: "overview-alerts" },
      ),
      h("a", { href: "/ui/operations#alerts" }, "All alerts →"),
    );
    clear(
      parts.incidents,
      h("h2", {}, "Open incidents"),
      table(
        [
          ["#", (i) => h("a", { href: `/ui/operations#incident-${i.id}` }, String(i.id))],
          ["Title", (i) => i.title],
          ["Severity", (i) => badge(i.severity)],
          ["Opened", (i) => ago(i.opened_at)],
        ],
        incidents,
        { empty: "No open incident." },
      ),
    );
    clear(
      parts.backup,
      h("h2", {}, "Last backup"),
      unconfigured ? h("p", { class: "warn", id: "backup-unconfigured" }, backups.problem) : null,
      !backups
        ? h("p", { class: "muted" }, "Backups are shown to administrators.")
        : snap
          ? h(
              "dl",
              { class: "facts" },
              h("dt", {}, "Snapshot"),
              h("dd", {}, snap.short_id, " (", snap.label, ")"),
              h("dt", {}, "Taken"),
              h("dd", {}, when(snap.time), " — ", ago(snap.time)),
              h("dt", {}, "Verified"),
              h("dd", {}, badge(snap.status), " ", snap.verified_at ? ago(snap.verified_at) : ""),
            )
          : h("p", { class: "warn" }, "No backup has been taken yet."),
      h("a", { href: "/ui/operations#backups" }, "Backups →"),
    );
    clear(
      parts.maintenance,
      h("h2", {}, "Maintenance: last run of each task"),
      table(
        [
          ["Task", (r) => r.task],
          ["Status", (r) => badge(r.status)],
          ["When", (r) => ago(r.started_at)],
          ["Summary", (r) => r.summary],
        ],
        latestPerTask(runs),
        { empty: "No task has run yet." },
      ),
      h("a", { href: "/ui/operations#maintenance" }, "Maintenance history →"),
    );
  };
  every(10000, refresh);
}

function tile(title, value, href, id) {
  return h("a", { class: "tile", href, id }, h("span", { class: "tile-title" }, title), h("span", { class: "tile-value" }, value));
}
