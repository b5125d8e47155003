// A job: its state and each change, curves drawn live from the event stream, the epoch table, warnings, GAN samples.
import { $, api, clear, drawImage, el, follow, number, path, signIn, when } from "./api.js";
import { lineChart } from "./chart.js";

const FINAL = new Set(["succeeded", "failed", "cancelled"]);
const jobId = $("#job").dataset.job;
const charts = new Map(); // a metric's base name -> its chart, made when the first epoch that has it arrives
let columns = null; // the epoch table's metric columns, fixed by the first epoch
let drawn = []; // the epochs that have a sample grid

function facts(job) {
  const version = job.version ? el("a", { href: path`/ui/models/${job.model_name}/versions/${job.version}` }, `version ${job.version}`) : "—";
  const study = job.study_id ? el("a", { href: path`/ui/studies/${job.study_id}` }, `trial ${job.trial_number}`) : null;
  const rows = [["Job", job.id], ["Kind", job.kind], ["Epoch", `${job.epoch}/${job.epochs}`], ["Attempt", job.attempt],
    ["Queue", job.queue], ["Version", version], study ? ["Study", study] : null];
  clear($("#job-facts"), rows.filter(Boolean).map(([k, v]) => [el("dt", {}, k), el("dd", { dataset: { fact: k.toLowerCase() } }, v)]));
}

function showState(job) {
  $("#job-name").textContent = job.model_name;
  const badge = $("#job-state");
  badge.textContent = job.state;
  badge.className = `state ${job.state}`;
  $("#job").dataset.state = job.state;
  $("#cancel-button").disabled = FINAL.has(job.state) || job.cancel_requested;
  const error = $("#job-error");
  error.textContent = job.error || "";
  error.hidden = !job.error;
  facts(job);
}

function addState(state, at) {
  const list = $("#states");
  if (list.lastElementChild?.dataset.state === state) return;
  list.append(el("li", { dataset: { state } }, el("span", { class: `state ${state}` }, state), " ", el("time", {}, when(at))));
}

function chartFor(name, hasVal) {
  if (!charts.has(name)) {
    const series = [{ label: `train ${name}` }];
    if (hasVal) series.push({ label: `validation ${name}`, dash: [6, 4] });
    charts.set(name, lineChart($("#charts"), { title: name, series }));
  }
  return charts.get(name);
}

// The base names an epoch reports: loss first, then each metric (val_x beside x), learning rate last.
function metricNames(epoch) {
  const names = Object.keys(epoch.metrics).filter((k) => !k.startsWith("val_") && k !== "loss" && k !== "learning_rate");
  return ["loss", ...names, ...("learning_rate" in epoch.metrics ? ["learning_rate"] : [])];
}

function valueOf(epoch, name, val) {
  if (name === "loss") return val ? epoch.val_loss : epoch.loss;
  const value = epoch.metrics[val ? `val_${name}` : name];
  return value === undefined ? null : value;
}

function addEpoch(epoch) {
  for (const name of metricNames(epoch)) {
    const hasVal = name !== "learning_rate" && valueOf(epoch, name, true) !== null;
    const chart = chartFor(name, hasVal);
    chart.add(epoch.epoch, hasVal ? [valueOf(epoch, name, false), valueOf(epoch, name, true)] : [valueOf(epoch, name, false)]);
  }
  if (columns === null) {
    columns = Object.keys(epoch.metrics).filter((k) => k !== "loss" && k !== "val_loss");
    clear($("#epochs thead"), el("tr", {}, ["epoch", "loss", "val_loss", ...columns, "seconds"].map((c) => el("th", {}, c))));
  }
  $("#epochs tbody").append(el("tr", { dataset: { epoch: epoch.epoch } },
    el("td", { class: "num" }, epoch.epoch), el("td", { class: "num" }, number(epoch.loss)), el("td", { class: "num" }, number(epoch.val_loss)),
    columns.map((c) => el("td", { class: "num" }, number(epoch.metrics[c]))), el("td", { class: "num" }, number(epoch.duration_s, 3))));
  if (epoch.image) {
    drawn.push(epoch);
    const slider = $("#sample-epoch");
    slider.max = String(drawn.length);
    slider.value = String(drawn.length);
    $("#samples").hidden = false;
    showSamples(drawn.length - 1);
  }
}

let samplesShown = Promise.resolve();
function showSamples(index) {
  const epoch = drawn[index];
  $("#sample-epoch-label").textContent = `${epoch.epoch}`;
  samplesShown = samplesShown.then(() => drawImage($("#sample-grid"), epoch.image, { scale: 3 })).then(() => {
    $("#sample-grid").dataset.epoch = String(epoch.epoch);
  }).catch(() => {});
}

function addWarning(warning) {
  $("#warnings-box").hidden = false;
  $("#warnings").append(el("li", {}, el("strong", {}, `epoch ${warning.epoch}: `), warning.message));
}

signIn(async () => {
  let job = await api(path`/v1/jobs/${jobId}`);
  showState(job);
  addState("queued", job.created_at);
  if (job.started_at) addState("running", job.started_at);
  $("#cancel-button").addEventListener("click", async () => {
    $("#cancel-button").disabled = true;
    try {
      showState(await api(path`/v1/jobs/${jobId}/cancel`, { method: "POST" }));
    } catch (err) {
      $("#job-error").textContent = err.message;
      $("#job-error").hidden = false;
    }
  });
  $("#sample-epoch").addEventListener("input", (event) => showSamples(Number(event.target.value) - 1));
  // The stream replays the history first, then follows: one path for a finished job and a running one.
  await follow(path`/v1/jobs/${jobId}/events`, (name, data) => {
    if (name === "epoch") {
      addEpoch(data);
      job = { ...job, epoch: data.epoch };
      facts(job);
    } else if (name === "warning") {
      addWarning(data);
    } else if (name === "state") {
      addState(data.state, data.state === "running" ? job.started_at || new Date().toISOString() : new Date().toISOString());
      job = { ...job, state: data.state, error: data.error, version: data.version };
      showState(job);
    } else if (name === "end") {
      job = data;
      showState(job);
      const last = $("#states").lastElementChild;
      if (last && job.finished_at) last.querySelector("time").textContent = when(job.finished_at);
    }
  });
});
