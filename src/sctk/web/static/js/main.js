// Every page: check the session, show who is signed in and the navigation, run the page.

import { forget, me, requireLogin } from "./api.js";
import { banner, clear, h } from "./ui.js";

async function start() {
  const page = document.body.dataset.page;
  const content = document.getElementById("content");
  const module = await import(`./pages/${page}.js`);
  if (page === "login") {
    await module.render(content);
    return;
  }
  if (!requireLogin()) return;
  let user;
  try {
    user = await me();
  } catch (err) {
    banner(err.message);
    return;
  }
  document.getElementById("who-name").textContent = user.username;
  document.getElementById("who-role").textContent = user.role;
  document.getElementById("who").hidden = false;
  const nav = document.getElementById("nav");
  nav.hidden = false;
  for (const a of nav.querySelectorAll("a")) {
    if (a.dataset.nav === page) a.setAttribute("aria-current", "page");
  }
  document.getElementById("logout").addEventListener("click", () => {
    forget();
    location.assign("/ui/login");
  });
  const can = (permission) => user.permissions.includes(permission);
  clear(content);
  try {
    await module.render(content, { user, can });
  } catch (err) {
    banner(err.message);
  }
  document.body.dataset.ready = "true";
}

start().catch((err) => {
  document.getElementById("content").replaceChildren(h("p", { class: "error" }, String(err.message || err)));
});
