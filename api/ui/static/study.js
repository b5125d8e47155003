// A study: its state, each trial's objective value against its number with the best so far, importances, the trials.
import { $, api, bar, clear, el, follow, number, path, signIn, when } from "./api.js";
import { lineChart } from "./chart.js";

const studyId = $("#study").dataset.study;
const trials = new Map(); // number -> the trial as the API last told it
let study = null;
let chart = null;

function facts() {
  const best = study.best_version ? el("a", { href: path`/ui/models/${study.model_name}/versions/${study.best_version}` }, `version ${study.best_version}`) : "—";
  const objective = study.objective?.metric ? `${study.objective.direction} ${study.objective.metric}` : "";
  const rows = [["Study", study.id], ["Model", el("a", { href: path`/ui/models/${study.model_name}` }, study.model_name)],
    ["Objective", objective], ["Trials", `${trials.size}/${study.max_trials}`], ["Best trial", study.best_trial ?? "—"],
    ["Best version", best], ["Created", when(study.created_at)]];
  clear($("#study-facts"), rows.map(([k, v]) => [el("dt", {}, k), el("dd", { dataset: { fact: k.toLowerCase() } }, v)]));
}

function showState(state, error) {
  $("#study-name").textContent = study.study_name;
  const badge = $("#study-state");
  badge.textContent = state;
  badge.className = `state ${state}`;
  $("#study").dataset.state = state;
  $("#cancel-button").disabled = state !== "running";
  $("#study-error").textContent = error || "";
  $("#study-error").hidden = !error;
}

function params(trial) {
  return Object.entries(trial.params || {}).map(([k, v]) => el("span", { class: "tag" }, `${k}=${typeof v === "number" ? number(v) : v}`));
}

function draw() {
  const maximize = study.objective?.direction === "maximize";
  const done = [...trials.values()].filter((t) => t.value !== null && t.value !== undefined).sort((a, b) => a.number - b.number);
  let best = null;
  chart.replace(done.map((t) => {
    if (t.state === "complete") best = best === null ? t.value : maximize ? Math.max(best, t.value) : Math.min(best, t.value);
    return [t.number, t.value, best];
  }));
  clear($("#trials tbody"), [...trials.values()].sort((a, b) => a.number - b.number).map((t) => el("tr", { dataset: { trial: t.number, state: t.state } },
    el("td", { class: "num" }, t.job_id ? el("a", { href: path`/ui/jobs/${t.job_id}` }, t.number) : t.number),
    el("td", {}, el("span", { class: `state ${t.state}` }, t.state), t.error ? el("div", { class: "error" }, t.error) : null),
    el("td", { class: "num" }, number(t.value)),
    el("td", { class: "num" }, t.epochs),
    el("td", {}, params(t)),
    el("td", {}, t.version ? el("a", { href: path`/ui/models/${study.model_name}/versions/${t.version}` }, t.version) : ""))));
  facts();
}

function showImportances(importances) {
  const entries = Object.entries(importances || {}).sort((a, b) => b[1] - a[1]);
  clear($("#importances"), entries.length ? entries.map(([name, share]) => el("li", { dataset: { param: name } },
    el("span", { class: "label", title: name }, name), bar(share), el("span", { class: "value" }, `${(share * 100).toFixed(1)}%`)))
    : el("li", { class: "hint" }, "computed once enough trials are complete"));
}

signIn(async () => {
  study = await api(path`/v1/studies/${studyId}`);
  for (const t of study.trials) trials.set(t.number, t);
  chart = lineChart($("#trial-chart"), { title: study.objective?.metric || "objective", xLabel: "trial",
    series: [{ label: "trial value", width: 0, pointSize: 9 }, { label: "best so far" }] });
  showState(study.state, study.error);
  showImportances(study.importances);
  draw();
  $("#cancel-button").addEventListener("click", async () => {
    $("#cancel-button").disabled = true;
    try {
      study = { ...study, ...(await api(path`/v1/studies/${studyId}/cancel`, { method: "POST" })) };
      showState(study.state, study.error);
    } catch (err) {
      showState(study.state, err.message);
    }
  });
  await follow(path`/v1/studies/${studyId}/events`, (name, data) => {
    if (name === "trial") {
      trials.set(data.number, data);
      draw();
    } else if (name === "state") {
      study = { ...study, state: data.state, error: data.error, best_trial: data.best_trial };
      showState(data.state, data.error);
    } else if (name === "end") {
      study = data;
      for (const t of data.trials) trials.set(t.number, t);
      showState(data.state, data.error);
      showImportances(data.importances);
      draw();
    }
  });
});
