// The page's one door to Kiln: the public API with the signed-in key, its errors, its event streams, and DOM helpers.
// Every string from the server reaches the page as text (textContent), never as HTML.

const KEY = "kiln.apiKey";

export class ApiError extends Error {
  constructor(status, code, message, field, details) {
    super(message);
    this.status = status;
    this.code = code;
    this.field = field;
    this.details = details || [];
  }
}

export function apiKey() {
  return sessionStorage.getItem(KEY);
}

function authHeaders(extra) {
  const headers = new Headers(extra || {});
  const key = apiKey();
  if (key) headers.set("Authorization", `Bearer ${key}`);
  return headers;
}

async function errorOf(response) {
  let body = null;
  try {
    body = await response.json();
  } catch {
    // not JSON: a proxy's page, say
  }
  const error = body && body.error && typeof body.error === "object" ? body.error : {};
  const message = error.message || (typeof body?.error === "string" ? body.error : `${response.status} ${response.statusText}`);
  return new ApiError(response.status, error.code || "http_error", message, error.field || null, error.details);
}

// fetch() against the API with the key; the Response, or an ApiError for any non-2xx answer.
export async function request(path, { method = "GET", json, body, headers, accept, signal } = {}) {
  const sent = authHeaders(headers);
  if (json !== undefined) {
    sent.set("Content-Type", "application/json");
    body = JSON.stringify(json);
  }
  if (accept) sent.set("Accept", accept);
  let response;
  try {
    response = await fetch(path, { method, body, headers: sent, signal, credentials: "omit", cache: "no-store" });
  } catch (err) {
    if (err.name === "AbortError") throw err;
    throw new ApiError(0, "unreachable", `Kiln cannot be reached (${err.message})`, null, []);
  }
  if (!response.ok) throw await errorOf(response);
  return response;
}

// The parsed JSON answer of an API call (null for a 204).
export async function api(path, options) {
  const response = await request(path, options);
  return response.status === 204 ? null : response.json();
}

export const path = (strings, ...values) => strings.reduce((out, s, i) => out + s + (i < values.length ? encodeURIComponent(values[i]) : ""), "");

// Server-Sent Events read with fetch (EventSource cannot send an Authorization header). Calls onEvent(name, data)
// for each event; after a dropped connection it reconnects with Last-Event-ID, so nothing is missed or repeated.
// Resolves when the stream ends with `end`, or when `signal` aborts.
export async function follow(url, onEvent, { signal, retryMs = 1000 } = {}) {
  let lastId = null;
  for (;;) {
    try {
      const headers = { Accept: "text/event-stream" };
      if (lastId !== null) headers["Last-Event-ID"] = lastId;
      const response = await request(url, { headers, signal });
      const ended = await readEvents(response, (id, name, data) => {
        if (id !== null) lastId = id;
        onEvent(name, data);
      });
      if (ended) return;
    } catch (err) {
      if (signal?.aborted || err.name === "AbortError") return;
      if (err instanceof ApiError && err.status >= 400 && err.status < 500) throw err;
    }
    await new Promise((resolve) => setTimeout(resolve, retryMs));
  }
}

// JSON, or JSON with NaN or Infinity (Python's json.dumps writes them for a non-finite metric) read as null.
function parseData(text) {
  try {
    return JSON.parse(text);
  } catch {
    return JSON.parse(text.replace(/-?\bInfinity\b|\bNaN\b/g, "null"));
  }
}

async function readEvents(response, onEvent) {
  const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  try {
    for (;;) {
      const { value, done } = await reader.read();
      if (done) return false;
      buffer += value.replace(/\r\n/g, "\n");
      let cut;
      while ((cut = buffer.indexOf("\n\n")) >= 0) {
        const block = buffer.slice(0, cut);
        buffer = buffer.slice(cut + 2);
        let id = null;
        let name = "message";
        const data = [];
        for (const line of block.split("\n")) {
          const colon = line.indexOf(":");
          const field = colon < 0 ? line : line.slice(0, colon);
          const text = colon < 0 ? "" : line.slice(colon + 1).replace(/^ /, "");
          if (field === "id") id = text;
          else if (field === "event") name = text;
          else if (field === "data") data.push(text);
        }
        if (!data.length) continue;
        let parsed;
        try {
          parsed = parseData(data.join("\n"));
        } catch (err) {
          reportError(err); // one unreadable event is skipped, not retried forever
          continue;
        }
        try {
          onEvent(id, name, parsed);
        } catch (err) {
          reportError(err); // the page's bug: surfaced, and the stream goes on
        }
        if (name === "end") return true;
      }
    }
  } finally {
    reader.cancel().catch(() => {}); // never leave a connection open behind a retry
  }
}

// An element: el("td", {class: "num", title: x}, "text", child, ...). Strings become text nodes, never markup.
export function el(tag, props = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(props || {})) {
    if (value === null || value === undefined || value === false) continue;
    if (name === "class") node.className = value;
    else if (name === "dataset") Object.assign(node.dataset, value);
    else if (name.startsWith("on")) node.addEventListener(name.slice(2), value);
    else node.setAttribute(name, value === true ? "" : String(value));
  }
  for (const child of children.flat(Infinity)) {
    if (child === null || child === undefined || child === false) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

export function clear(node, ...children) {
  node.replaceChildren(...children.flat(Infinity).filter((c) => c !== null && c !== undefined && c !== false));
  return node;
}

export const $ = (selector, root = document) => root.querySelector(selector);

// An error as a block of text: the message, the field it names, and each detail beside its field.
export function errorBlock(err) {
  const items = (err.details || []).map((d) => el("li", { dataset: { field: d.field || "" } }, d.field ? el("code", {}, d.field) : null, d.field ? " " : null, d.message || ""));
  return el("div", { class: "error", role: "alert", dataset: { field: err.field || "" } },
    err.field ? el("code", {}, err.field) : null, err.field ? " " : null, err.message || String(err),
    items.length ? el("ul", {}, items) : null);
}

export function showError(container, err) {
  clear(container, errorBlock(err));
  container.hidden = false;
}

export const can = (who, scope) => Boolean(who) && (who.scopes.includes(scope) || who.scopes.includes("admin"));

export function when(iso) {
  if (!iso) return "";
  const date = new Date(iso);
  return date.toLocaleString(undefined, { dateStyle: "short", timeStyle: "medium" });
}

export function duration(start, end) {
  if (!start) return "";
  const seconds = Math.max(0, ((end ? new Date(end) : new Date()) - new Date(start)) / 1000);
  if (seconds < 60) return `${seconds.toFixed(1)} s`;
  const whole = Math.round(seconds);
  if (whole < 3600) return `${Math.floor(whole / 60)} min ${whole % 60} s`;
  const minutes = Math.round(whole / 60);
  return `${Math.floor(minutes / 60)} h ${minutes % 60} min`;
}

export function number(value, digits = 4) {
  if (value === null || value === undefined || value === "") return "";
  if (typeof value !== "number") return String(value);
  if (Number.isInteger(value)) return String(value);
  return Math.abs(value) >= 1000 || Math.abs(value) < 0.001 ? value.toExponential(2) : value.toPrecision(digits);
}

// A horizontal bar filled to `share` (0..1), its width set through the CSSOM: the CSP allows no style attribute.
export function bar(share) {
  const fill = el("span", { class: "fill" });
  fill.style.width = `${Math.max(0, Math.min(1, Number(share) || 0)) * 100}%`;
  return el("span", { class: "track" }, fill);
}

export function bytes(size) {
  if (size === null || size === undefined) return "";
  const units = ["B", "kB", "MB", "GB"];
  let i = 0;
  let n = size;
  while (n >= 1024 && i < units.length - 1) {
    n /= 1024;
    i += 1;
  }
  return `${i ? n.toFixed(1) : n} ${units[i]}`;
}

// An image the API answers (it needs the key, so no <img src>), decoded; CSP needs no blob: or data: URLs.
export async function fetchImage(url, { method = "GET", json } = {}) {
  const response = await request(url, { method, json, accept: "image/png" });
  return { bitmap: await createImageBitmap(await response.blob()), response };
}

export function paint(canvas, bitmap, scale = 1) {
  canvas.width = bitmap.width * scale;
  canvas.height = bitmap.height * scale;
  const context = canvas.getContext("2d");
  context.imageSmoothingEnabled = false;
  context.drawImage(bitmap, 0, 0, canvas.width, canvas.height);
}

export async function drawImage(canvas, url, { method = "GET", json, scale = 1 } = {}) {
  const { bitmap, response } = await fetchImage(url, { method, json });
  paint(canvas, bitmap, scale);
  return response;
}

function showSignedIn(who) {
  $("#signin-form").hidden = true;
  $("#signed-in").hidden = false;
  $("#key-name").textContent = who.auth_disabled ? "authentication is off" : who.name;
  $("#key-scopes").textContent = who.scopes.join(" · ");
  $("#signin-hint").hidden = true;
  for (const node of document.querySelectorAll(".needs-key")) node.hidden = false;
  for (const node of document.querySelectorAll(".needs-scope")) node.hidden = !can(who, node.dataset.scope);
}

function showSignedOut(message) {
  $("#signin-form").hidden = false;
  $("#signed-in").hidden = true;
  $("#signin-hint").hidden = false;
  for (const node of document.querySelectorAll(".needs-key, .needs-scope")) node.hidden = true;
  const error = $("#signin-error");
  error.textContent = message || "";
  error.hidden = !message;
}

// An error the page's own work met (not the sign-in's): shown above the page, which stays signed in.
export function pageError(err) {
  const box = $("#page-error");
  box.append(errorBlock(err));
  box.hidden = false;
}

// Signs the page in (with the stored key, or the one typed), then calls start(who) once; who has name and scopes.
// Only whoami's own 401 or 403 signs the page out; what start() meets is shown on the page.
export function signIn(start) {
  let started = false;
  const begin = async () => {
    const had = apiKey() !== null;
    let who;
    try {
      who = await api("/v1/whoami");
    } catch (err) {
      if (err instanceof ApiError && (err.status === 401 || err.status === 403)) {
        sessionStorage.removeItem(KEY);
        showSignedOut(had ? err.message : "");
      } else {
        showSignedOut(err.message); // Kiln cannot be reached: the key is kept for the next try
      }
      return;
    }
    showSignedIn(who);
    $("#signin-error").hidden = true;
    if (started) return;
    started = true;
    try {
      await start(who);
    } catch (err) {
      pageError(err);
    }
  };
  const submit = () => {
    const field = $("#signin-key");
    const key = field.value.trim();
    field.value = "";
    if (!key) return;
    field.dataset.tried = "1";
    sessionStorage.setItem(KEY, key);
    begin();
  };
  $("#signin-button").addEventListener("click", submit);
  $("#signin-key").addEventListener("keydown", (event) => {
    if (event.key === "Enter") submit();
  });
  $("#signout-button").addEventListener("click", () => {
    sessionStorage.removeItem(KEY);
    location.reload();
  });
  begin();
}
