// Operations: backups, maintenance, alerts, incidents and users; each control only for the
// roles that may use it (the API refuses the others anyway).

import { api } from "../api.js";
import { ago, badge, bytes, clear, every, field, h, onSubmit, section, table, when } from "../ui.js";

export async function render(content, { can }) {
  const boxes = {
    backups: can("backups.manage") ? section("Backups", "backups") : null,
    maintenance: section("Maintenance", "maintenance"),
    alerts: section("Alerts", "alerts"),
    incidents: section("Incidents", "incidents"),
    users: can("users.manage") ? section("Users", "users") : null,
  };
  boxes.alerts.classList.add("wide"); // its table has the most columns
  clear(content, h("div", { class: "grid" }, Object.values(boxes)));
  const refreshers = [];
  if (boxes.backups) refreshers.push(backups(boxes.backups));
  refreshers.push(maintenance(boxes.maintenance, can), alerts(boxes.alerts, can), incidents(boxes.incidents, can));
  if (boxes.users) refreshers.push(usersBox(boxes.users));
  await Promise.all(refreshers.map((r) => r()));
  every(5000, () => Promise.all(refreshers.map((r) => r())));
  const target = location.hash && document.getElementById(location.hash.slice(1));
  if (target) target.scrollIntoView();
}

async function waitJob(id, status) {
  for (;;) {
    const job = await api(`/api/v1/jobs/${id}`);
    status(job);
    if (!["queued", "running"].includes(job.status)) return job;
    await new Promise((r) => setTimeout(r, 500));
  }
}

// the backups table's filter: regular backups apart from the safety snapshots that restore,
// upgrade and rollback take of the state they replace (which may be the damage itself)
const SNAPSHOT_VIEWS = [
  ["regular", "Backups"],
  ["safety", "Safety snapshots"],
  ["all", "All"],
];

function snapshotsEmpty(view, data) {
  if (!data.snapshots.length) return "No snapshot yet.";
  if (view === "safety") return "No safety snapshot: restore, upgrade and rollback take one before they replace the data.";
  return "No regular backup yet, only safety snapshots.";
}

function backups(box) {
  const status = h("p", { class: "muted", id: "backup-status", "aria-live": "polite" });
  const listing = h("div");
  const form = h(
    "form",
    { class: "inline-form", id: "backup-form", novalidate: true },
    field("Label", "label", { options: ["manual", "daily", "weekly", "monthly", "pre-update"].map((l) => [l, l]) }, "select"),
    h("button", { type: "submit" }, "Take a backup"),
  );
  let view = "regular";
  let data = null;
  const picker = h(
    "div",
    { class: "picker", id: "snapshot-filter", role: "group", "aria-label": "Show" },
    SNAPSHOT_VIEWS.map(([kind, text]) => h("button", { type: "button", "data-kind": kind, "aria-pressed": String(kind === view) }, text)),
  );
  picker.addEventListener("click", (event) => {
    const button = event.target.closest("button");
    if (!button) return;
    view = button.dataset.kind;
    if (data) draw();
  });
  const refresh = async () => {
    data = await api("/api/v1/backups?runs=5");
    draw();
  };
  const draw = () => {
    const count = (kind) => data.snapshots.filter((s) => kind === "all" || s.kind === kind).length;
    for (const b of picker.querySelectorAll("button")) {
      const on = b.dataset.kind === view;
      b.classList.toggle("on", on);
      b.setAttribute("aria-pressed", String(on));
      const text = SNAPSHOT_VIEWS.find(([kind]) => kind === b.dataset.kind)[1];
      b.textContent = `${text} (${count(b.dataset.kind)})`;
    }
    const shown = data.snapshots.filter((s) => view === "all" || s.kind === view);
    clear(
      listing,
      data.configured ? null : h("p", { class: "warn", id: "backup-unconfigured" }, data.problem),
      picker,
      table(
        [
          ["Snapshot", (s) => s.short_id],
          ["Taken", (s) => `${when(s.time)} (${ago(s.time)})`],
          ["Label", (s) => s.label],
          ["Kind", (s) => s.kind],
          ["Files", (s) => String(s.files)],
          ["Size", (s) => bytes(s.size)],
          ["Verified", (s) => (s.verified_at ? h("span", { title: s.problems.join(" ") }, badge(s.status), " ", ago(s.verified_at)) : badge(s.status))],
          ["", (s) => h("button", { type: "button", class: "small", onclick: () => verify(s) }, "Verify")],
        ],
        shown,
        { empty: snapshotsEmpty(view, data), id: "snapshots-table" },
      ),
    );
    listing.dataset.view = view;
  };
  const verify = async (snap) => {
    try {
      const job = await api(`/api/v1/backups/${snap.id}/verify`, { method: "POST", body: { read_data: false } });
      const done = await waitJob(job.job, (j) => (status.textContent = `Verifying ${snap.short_id}: ${j.status} ${j.message}`));
      status.textContent = `Verification of ${snap.short_id}: ${done.status}${done.error ? ` — ${done.error}` : ""}`;
      await refresh();
    } catch (err) {
      status.textContent = err.message;
    }
  };
  onSubmit(form, async (data) => {
    const job = await api("/api/v1/backups", { method: "POST", body: { label: data.get("label") } });
    const done = await waitJob(job.job, (j) => (status.textContent = `Backup job ${j.id}: ${j.status} ${j.message}`));
    // succeeded: the job's last message names the snapshot and its final size
    const said = done.error || done.message;
    status.textContent = `Backup job ${done.id}: ${done.status}${said ? ` — ${said}` : ""}`;
    await refresh();
  });
  clear(box, h("h2", {}, "Backups"), form, status, listing);
  return refresh;
}

function maintenance(box, can) {
  const listing = h("div");
  const parts = [h("h2", {}, "Maintenance")];
  if (can("maintenance.run")) {
    const select = field("Task", "task", {}, "select");
    const result = h("p", { id: "maintenance-result", "aria-live": "polite" });
    const form = h("form", { class: "inline-form", id: "maintenance-form", novalidate: true }, select, h("button", { type: "submit" }, "Run now"));
    api("/api/v1/maintenance/tasks").then((tasks) => {
      const control = select.querySelector("select");
      for (const t of tasks) control.append(h("option", { value: t.name, title: t.description }, `${t.group} · ${t.name}`));
    });
    onSubmit(form, async (data) => {
      result.textContent = `Running ${data.get("task")}…`;
      const run = await api(`/api/v1/maintenance/run/${encodeURIComponent(data.get("task"))}`, { method: "POST" });
      clear(result, badge(run.status), ` ${run.task}: ${run.summary}`);
      await refresh();
    });
    parts.push(form, result);
  }
  parts.push(listing);
  clear(box, parts);
  const refresh = async () => {
    const runs = await api("/api/v1/maintenance/runs?limit=25");
    clear(
      listing,
      table(
        [
          ["Task", (r) => r.task],
          ["Status", (r) => badge(r.status)],
          ["Started", (r) => ago(r.started_at)],
          ["Trigger", (r) => r.trigger],
          ["Summary", (r) => r.summary],
        ],
        runs,
        { empty: "No maintenance run recorded yet.", id: "maintenance-table" },
      ),
    );
  };
  return refresh;
}

function alerts(box, can) {
  const listing = h("div");
  const note = h("p", { class: "muted", id: "alert-status", "aria-live": "polite" });
  clear(box, h("h2", {}, "Alerts"), note, listing);
  const act = async (fn) => {
    try {
      await fn();
      await refresh();
    } catch (err) {
      note.textContent = err.message;
    }
  };
  const controls = (a) => {
    if (!can("alerts.manage") || a.status !== "firing") return "";
    const form = h(
      "form",
      { class: "row-form", novalidate: true },
      h("input", { name: "duration", value: "1h", size: "4", "aria-label": "Silence for" }),
      h("button", { type: "submit", class: "small" }, "Silence"),
      h("p", { class: "field-error", "data-error-for": "duration", role: "alert", hidden: true }),
    );
    onSubmit(form, async (data) => {
      await api("/api/v1/alerts/silences", { method: "POST", body: { target: String(a.id), duration: String(data.get("duration")) } });
      await refresh();
    });
    return h(
      "div",
      { class: "actions" },
      a.acknowledged_by ? "" : h("button", { type: "button", class: "small ack", onclick: () => act(() => api(`/api/v1/alerts/${a.id}/ack`, { method: "POST" })) }, "Acknowledge"),
      form,
    );
  };
  const refresh = async () => {
    const rows = await api("/api/v1/alerts?all=true&limit=50");
    clear(
      listing,
      table(
        [
          // the controls under the message, not in a last column: a table wider than its
          // card scrolls sideways and would hide them first
          ["Alert", (a) => [a.message, controls(a)]],
          ["Severity", (a) => badge(a.severity)],
          ["Status", (a) => badge(a.status)],
          ["Since", (a) => ago(a.started_at)],
          ["Acknowledged", (a) => a.acknowledged_by || "no"],
          ["Silenced until", (a) => (a.silenced_until ? when(a.silenced_until) : "")],
        ],
        rows,
        { empty: "No alert.", id: "alerts-table" },
      ),
    );
  };
  return refresh;
}

function incidents(box, can) {
  const listing = h("div");
  const detail = h("div", { id: "incident-detail" });
  clear(box, h("h2", {}, "Incidents"), listing, detail);
  let shown = null;
  const m = /^#incident-(\d+)$/.exec(location.hash);
  if (m) shown = Number(m[1]);
  const show = async (id) => {
    shown = id;
    const inc = await api(`/api/v1/incidents/${id}`);
    const parts = [
      h("h3", {}, `#${inc.id} ${inc.title} `, badge(inc.status)),
      h("ol", { class: "timeline" }, inc.timeline.map((e) => h("li", {}, h("time", {}, when(e.at)), ` ${e.kind} · ${e.actor}: ${e.text}`))),
    ];
    if (can("alerts.manage") && inc.status === "open") {
      const noteForm = h("form", { class: "inline-form", id: "note-form", novalidate: true }, field("Note", "text", {}), h("button", { type: "submit" }, "Add note"));
      onSubmit(noteForm, async (data) => {
        await api(`/api/v1/incidents/${id}/notes`, { method: "POST", body: { text: String(data.get("text") || "") } });
        await show(id);
      });
      const closeForm = h("form", { class: "inline-form", id: "close-form", novalidate: true }, field("Resolution", "resolution", {}), h("button", { type: "submit" }, "Close incident"));
      onSubmit(closeForm, async (data) => {
        await api(`/api/v1/incidents/${id}/close`, { method: "POST", body: { resolution: String(data.get("resolution") || "") } });
        await refresh();
        await show(id);
      });
      parts.push(noteForm, closeForm);
    }
    clear(detail, parts);
  };
  const refresh = async () => {
    const rows = await api("/api/v1/incidents?limit=50");
    clear(
      listing,
      table(
        [
          ["#", (i) => h("a", { href: `#incident-${i.id}`, onclick: (e) => (e.preventDefault(), show(i.id)) }, String(i.id))],
          ["Title", (i) => i.title],
          ["Severity", (i) => badge(i.severity)],
          ["Status", (i) => badge(i.status)],
          ["Opened", (i) => ago(i.opened_at)],
        ],
        rows,
        { empty: "No incident.", id: "incidents-table" },
      ),
    );
    if (shown && !detail.childElementCount) await show(shown);
  };
  return refresh;
}

function usersBox(box) {
  const listing = h("div");
  const form = h(
    "form",
    { class: "inline-form", id: "user-form", novalidate: true },
    field("Username", "username", { autocomplete: "off" }),
    field("Password", "password", { type: "password", autocomplete: "new-password" }),
    field("Role", "role", { options: [["viewer", "viewer"], ["analyst", "analyst"], ["admin", "admin"]] }, "select"),
    h("button", { type: "submit" }, "Create user"),
  );
  onSubmit(form, async (data) => {
    await api("/api/v1/users", { method: "POST", body: Object.fromEntries(data.entries()) });
    form.reset();
    await refresh();
  });
  clear(box, h("h2", {}, "Users"), form, listing);
  const refresh = async () => {
    const rows = await api("/api/v1/users");
    clear(
      listing,
      table(
        [
          ["User", (u) => u.username],
          ["Role", (u) => u.role],
          ["State", (u) => (u.disabled ? badge("disabled") : badge("active"))],
          ["Last login", (u) => ago(u.last_login_at)],
        ],
        rows,
        { id: "users-table" },
      ),
    );
  };
  return refresh;
}
