// Small DOM helpers: elements without innerHTML, tables, forms with errors next to fields.

export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === undefined || value === null || value === false) continue;
    if (key.startsWith("on")) el.addEventListener(key.slice(2), value);
    else if (key === "class") el.className = value;
    else if (value === true) el.setAttribute(key, "");
    else el.setAttribute(key, String(value));
  }
  for (const child of children.flat()) {
    if (child === undefined || child === null || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return el;
}

export function clear(el, ...children) {
  el.replaceChildren(...children.flat().filter((c) => c !== null && c !== undefined));
  return el;
}

export function section(title, id, ...children) {
  return h("section", { class: "card", id }, h("h2", {}, title), ...children);
}

export function ago(iso) {
  if (!iso) return "never";
  const seconds = (Date.now() - new Date(iso).getTime()) / 1000;
  if (seconds < 90) return `${Math.max(0, Math.round(seconds))} s ago`;
  if (seconds < 5400) return `${Math.round(seconds / 60)} min ago`;
  if (seconds < 129600) return `${Math.round(seconds / 3600)} h ago`;
  return `${Math.round(seconds / 86400)} d ago`;
}

export function when(iso) {
  if (!iso) return "";
  return new Date(iso).toISOString().replace("T", " ").slice(0, 19) + " UTC";
}

export function bytes(n) {
  if (n === null || n === undefined) return "";
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) {
    n /= 1024;
    i += 1;
  }
  return `${n.toFixed(i ? 1 : 0)} ${units[i]}`;
}

export function badge(status) {
  const s = String(status || "").toLowerCase();
  return h("span", { class: `badge s-${s}` }, status);
}

/** A table of ROWS; COLUMNS are [heading, row => cell content]. */
export function table(columns, rows, { empty = "Nothing yet.", id } = {}) {
  if (!rows.length) return h("p", { class: "muted", id }, empty);
  return h(
    "div",
    { class: "scroll" },
    h(
      "table",
      { id },
      h("thead", {}, h("tr", {}, columns.map(([title]) => h("th", {}, title)))),
      h(
        "tbody",
        {},
        rows.map((row) =>
          h(
            "tr",
            { "data-id": row.id },
            columns.map(([title, cell]) => h("td", { "data-label": title }, cell(row))),
          ),
        ),
      ),
    ),
  );
}

export function progress(fraction) {
  const bar = h("progress", { max: "1", value: String(fraction || 0) });
  return h("span", { class: "progress" }, bar, ` ${Math.round((fraction || 0) * 100)} %`);
}

/** A labelled input (or select/textarea via `as`), with a slot for its error sentence. */
export function field(label, name, attrs = {}, as = "input") {
  const { options, ...rest } = attrs;
  const control = h(as, { name, id: `f-${name}-${Math.random().toString(36).slice(2, 7)}`, ...rest });
  if (options) for (const [value, text] of options) control.append(h("option", { value }, text));
  return h(
    "div",
    { class: "field" },
    h("label", { for: control.id }, label),
    control,
    h("p", { class: "field-error", "data-error-for": name, role: "alert", hidden: true }),
  );
}

export function clearErrors(form) {
  for (const p of form.querySelectorAll(".field-error")) {
    p.textContent = "";
    p.hidden = true;
  }
}

/** Put ERR's sentence next to the field it is about (else next to the form's first field). */
export function showError(form, err) {
  clearErrors(form);
  const slots = [...form.querySelectorAll(".field-error")];
  const detail = err.message || String(err);
  let slot = err.field && slots.find((p) => p.dataset.errorFor === err.field);
  // a domain error names the thing it is about ("alpha must lie ...", "Dataset 'x' ...")
  if (!slot) {
    const lower = detail.toLowerCase();
    slot = slots.find((p) => lower.includes(p.dataset.errorFor.toLowerCase()));
  }
  slot = slot || form.querySelector(".field-error[data-error-for='_form']") || slots[0];
  slot.textContent = detail;
  slot.hidden = false;
  const control = slot.parentElement.querySelector("input, select, textarea");
  if (control) control.setAttribute("aria-invalid", "true");
}

/** Run ACTION on submit, with the button disabled meanwhile and errors shown in place. */
export function onSubmit(form, action) {
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    clearErrors(form);
    for (const c of form.querySelectorAll("[aria-invalid]")) c.removeAttribute("aria-invalid");
    const button = form.querySelector("button[type=submit]");
    if (button) button.disabled = true;
    try {
      await action(new FormData(form));
    } catch (err) {
      showError(form, err);
    } finally {
      if (button) button.disabled = false;
    }
  });
  return form;
}

export function banner(message) {
  const el = document.getElementById("banner");
  el.textContent = message || "";
  el.hidden = !message;
}

/** Call FN now and every MS milliseconds while the page is visible; returns a stopper. */
export function every(ms, fn) {
  let timer = null;
  let stopped = false;
  const tick = async () => {
    if (stopped) return;
    try {
      if (!document.hidden) await fn();
    } catch (err) {
      banner(err.message);
    }
    if (!stopped) timer = setTimeout(tick, ms);
  };
  tick();
  return () => {
    stopped = true;
    clearTimeout(timer);
  };
}
