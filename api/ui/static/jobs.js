// Jobs: the table (filtered by state, refreshed while anything runs), studies, and submitting a job or a study.
import { $, api, clear, duration, el, errorBlock, path, request, signIn, when } from "./api.js";

const ACTIVE = new Set(["queued", "running"]);
let refresh = null;

function jobRow(job) {
  const link = el("a", { href: path`/ui/jobs/${job.id}` }, job.model_name);
  const trial = job.study_id ? el("a", { class: "tag", href: path`/ui/studies/${job.study_id}` }, `trial ${job.trial_number}`) : null;
  return el("tr", { dataset: { job: job.id, state: job.state } },
    el("td", {}, link, " ", trial),
    el("td", {}, job.kind),
    el("td", {}, el("span", { class: `state ${job.state}` }, job.state)),
    el("td", { class: "num" }, `${job.epoch}/${job.epochs}`),
    el("td", {}, when(job.created_at)),
    el("td", { class: "num" }, duration(job.started_at, job.finished_at)));
}

function studyRow(study) {
  return el("tr", { dataset: { study: study.id, state: study.state } },
    el("td", {}, el("a", { href: path`/ui/studies/${study.id}` }, study.study_name)),
    el("td", {}, study.model_name),
    el("td", {}, el("span", { class: `state ${study.state}` }, study.state)),
    el("td", { class: "num" }, `${study.trials_started}/${study.max_trials}`),
    el("td", { class: "num" }, study.best_trial ?? ""),
    el("td", {}, when(study.created_at)));
}

let asked = 0; // the latest load: an older answer that comes back after it is dropped

async function loadJobs() {
  const seq = ++asked;
  clearTimeout(refresh);
  let busy = false;
  try {
    const state = $("#state-filter").value;
    const [jobs, studies] = await Promise.all([
      api(`/v1/jobs?limit=100${state ? `&state=${encodeURIComponent(state)}` : ""}`),
      api("/v1/studies?limit=20").catch(() => ({ data: [] })),
    ]);
    if (seq !== asked) return;
    clear($("#jobs-table tbody"), jobs.data.map(jobRow));
    $("#jobs-empty").hidden = jobs.data.length > 0;
    clear($("#studies-table tbody"), studies.data.map(studyRow));
    clear($("#jobs-error"));
    busy = jobs.data.some((j) => ACTIVE.has(j.state)) || studies.data.some((s) => s.state === "running");
  } catch (err) {
    if (seq === asked) clear($("#jobs-error"), errorBlock(err)); // shown once, and the table keeps refreshing
  } finally {
    if (seq === asked) refresh = setTimeout(loadJobs, busy ? 1500 : 5000);
  }
}

async function loadExample() {
  const name = $("#example").value;
  if (!name) return;
  const response = await request(path`/ui/examples/${name}`);
  $("#spec").value = await response.text();
  clear($("#spec-errors"));
}

function readSpecFile() {
  const file = $("#spec-file").files[0];
  if (!file) return;
  file.text().then((text) => {
    $("#spec").value = text;
    $("#example").value = "";
    clear($("#spec-errors"));
  });
}

// Where the index-th element of the array that opens at or after `from` starts (strings skipped), or -1.
function elementAt(text, from, index) {
  let at = text.indexOf("[", from);
  if (at < 0) return -1;
  let depth = 0;
  let count = 0;
  for (; at < text.length; at += 1) {
    const c = text[at];
    if (c === '"') {
      for (at += 1; at < text.length && text[at] !== '"'; at += text[at] === "\\" ? 2 : 1);
    } else if (c === "[" || c === "{") {
      depth += 1;
      if (depth === 2 && count === index) return at;
    } else if (c === "]" || c === "}") {
      depth -= 1;
      if (depth === 0) return -1;
    } else if (c === "," && depth === 1) {
      count += 1;
    } else if (depth === 1 && count === index && !/\s/.test(c)) {
      return at; // a scalar element
    }
  }
  return -1;
}

// The line of the pasted JSON where a field the server names sits (model.layers[3].units, or .3.), so an error can
// point at it; null when the path is not found.
function lineOf(text, field) {
  const parts = String(field || "").replace(/\[(\d+)\]/g, ".$1").split(".").filter(Boolean);
  let at = 0;
  for (const part of parts) {
    const next = /^\d+$/.test(part) ? elementAt(text, at, Number(part)) : text.indexOf(`"${part}"`, at);
    if (next < 0) break;
    at = next;
  }
  return parts.length && at > 0 ? text.slice(0, at).split("\n").length : null;
}

function showSpecErrors(err, text) {
  const box = $("#spec-errors");
  const items = err.details && err.details.length ? err.details : [{ field: err.field, message: err.message }];
  clear(box, el("h3", {}, err.status === 422 ? "The spec needs changes" : "Not submitted"),
    el("ul", {}, items.map((d) => {
      const line = lineOf(text, d.field);
      return el("li", { class: "field-error", dataset: { field: d.field || "" } },
        d.field ? el("code", {}, d.field) : null, line ? el("span", { class: "hint" }, ` (line ${line})`) : null,
        el("div", {}, d.message || ""));
    })));
}

let sent = { text: null, key: null }; // one Idempotency-Key per spec text: a second click on the same spec trains once

async function submit() {
  const text = $("#spec").value;
  const status = $("#submit-status");
  clear($("#spec-errors"));
  let body;
  try {
    body = JSON.parse(text);
  } catch (err) {
    showSpecErrors({ status: 400, field: "body", message: `not valid JSON: ${err.message}` }, text);
    return;
  }
  const study = body && typeof body === "object" && "search_space" in body;
  if (sent.text !== text) sent = { text, key: crypto.randomUUID() };
  status.textContent = "submitting…";
  $("#submit-button").disabled = true;
  try {
    const created = await api(study ? "/v1/studies" : "/v1/jobs", {
      method: "POST", json: body, headers: study ? {} : { "Idempotency-Key": sent.key },
    });
    location.assign(study ? path`/ui/studies/${created.id}` : path`/ui/jobs/${created.id}`);
  } catch (err) {
    status.textContent = "";
    $("#submit-button").disabled = false;
    showSpecErrors(err, text);
  }
}

signIn(async () => {
  $("#state-filter").addEventListener("change", loadJobs);
  $("#example").addEventListener("change", () => loadExample().catch((err) => clear($("#spec-errors"), errorBlock(err))));
  $("#spec-file").addEventListener("change", readSpecFile);
  $("#submit-button").addEventListener("click", submit);
  await loadJobs();
});
