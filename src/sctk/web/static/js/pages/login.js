// Sign in: POST /api/v1/auth/token, keep the JWT in sessionStorage, go where we were going.

import { login } from "../api.js";
import { clear, field, h, onSubmit } from "../ui.js";

export async function render(content) {
  const form = h(
    "form",
    { class: "card narrow", id: "login-form", novalidate: true },
    field("Username", "username", { autocomplete: "username", autofocus: true }),
    field("Password", "password", { type: "password", autocomplete: "current-password" }),
    h("p", { class: "field-error", "data-error-for": "_form", role: "alert", hidden: true }),
    h("button", { type: "submit" }, "Sign in"),
  );
  onSubmit(form, async (data) => {
    await login(String(data.get("username")), String(data.get("password")));
    const next = new URLSearchParams(location.search).get("next");
    // only a path of this site: never an open redirect
    location.assign(next && next.startsWith("/") && !next.startsWith("//") ? next : "/");
  });
  clear(content, form);
  document.body.dataset.ready = "true";
}
