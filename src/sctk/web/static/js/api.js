// Talking to the REST API: the bearer token kept in sessionStorage, problem+json errors.

const TOKEN = "sctk.token";
const ME = "sctk.me";

export function token() {
  return sessionStorage.getItem(TOKEN);
}

export function forget() {
  sessionStorage.removeItem(TOKEN);
  sessionStorage.removeItem(ME);
}

/** An answer of the API that is not a success: its problem+json detail sentence. */
export class ApiError extends Error {
  constructor(status, body) {
    super((body && body.detail) || `The server answered ${status}.`);
    this.status = status;
    this.body = body || {};
    const first = this.body.errors && this.body.errors[0];
    // "rows.0.x" -> "rows": the form field the sentence belongs next to
    this.field = first && first.field ? String(first.field).split(".")[0] : null;
  }
}

function toLogin() {
  const next = encodeURIComponent(location.pathname + location.search);
  location.assign(`/ui/login?next=${next}`);
}

/** JSON from PATH; throws ApiError on a 4xx/5xx (a 401 also sends the user to sign in). */
export async function api(path, { method = "GET", body, text = false, auth = true } = {}) {
  const headers = { Accept: "application/json" };
  const t = token();
  if (auth && t) headers.Authorization = `Bearer ${t}`;
  if (body !== undefined) headers["Content-Type"] = "application/json";
  let response;
  try {
    response = await fetch(path, {
      method,
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
    });
  } catch (exc) {
    throw new ApiError(0, { detail: "The server cannot be reached; check it is running." });
  }
  if (response.status === 401 && auth && path !== "/api/v1/auth/token") {
    forget();
    toLogin();
  }
  if (text && response.ok) return response.text();
  let data = null;
  if (response.status !== 204) {
    try {
      data = await response.json();
    } catch (exc) {
      data = null;
    }
  }
  if (!response.ok) throw new ApiError(response.status, data);
  return data;
}

export async function login(username, password) {
  const answer = await api("/api/v1/auth/token", {
    method: "POST",
    body: { username, password },
    auth: false,
  });
  sessionStorage.setItem(TOKEN, answer.access_token);
  sessionStorage.removeItem(ME);
  return answer;
}

/** The signed-in user with their permissions (GET /api/v1/me), cached for the session. */
export async function me() {
  const cached = sessionStorage.getItem(ME);
  if (cached) return JSON.parse(cached);
  const user = await api("/api/v1/me");
  sessionStorage.setItem(ME, JSON.stringify(user));
  return user;
}

export function requireLogin() {
  if (!token()) {
    toLogin();
    return false;
  }
  return true;
}
