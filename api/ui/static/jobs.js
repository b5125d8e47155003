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

async function loadJobs() {
  const state = $("#state-filter").value;
  const [jobs, studies] = await Promise.all([
    api(`/v1/jobs?limit=100${state ? `&state=${encodeURIComponent(state)}` : ""}`),
    api("/v1/studies?limit=20").catch(() => ({ data: [] })),
  ]);
  clear($("#jobs-table tbody"), jobs.data.map(jobRow));
  $("#jobs-empty").hidden = jobs.data.length > 0;
  clear($("#studies-table tbody"), studies.data.map(studyRow));
  const busy = jobs.data.some((j) => ACTIVE.has(j.state)) || studies.data.some((s) => s.state === "running");
  clearTimeout(refresh);
  refresh = setTimeout(() => loadJobs().catch(() => {}), busy ? 1500 : 5000);
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

// The line of the pasted JSON where a field the server names sits, so an error can point at it.
function lineOf(text, field) {
  const last = String(field || "").split(".").filter((p) => !/^\d+$/.test(p)).pop();
  if (!last) return null;
  const at = text.indexOf(`"${last}"`);
  return at < 0 ? null : text.slice(0, at).split("\n").length;
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
  status.textContent = "submitting…";
  try {
    const created = await api(study ? "/v1/studies" : "/v1/jobs", {
      method: "POST", json: body, headers: study ? {} : { "Idempotency-Key": crypto.randomUUID() },
    });
    location.assign(study ? path`/ui/studies/${created.id}` : path`/ui/jobs/${created.id}`);
  } catch (err) {
    status.textContent = "";
    showSpecErrors(err, text);
  }
}

signIn(async () => {
  $("#state-filter").addEventListener("change", () => loadJobs().catch((err) => $("#jobs").append(errorBlock(err))));
  $("#example").addEventListener("change", () => loadExample().catch((err) => clear($("#spec-errors"), errorBlock(err))));
  $("#spec-file").addEventListener("change", readSpecFile);
  $("#submit-button").addEventListener("click", submit);
  await loadJobs();
});
