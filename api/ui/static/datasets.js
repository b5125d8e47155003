// Datasets: the built-ins and uploads with their shape, classes and size; an upload with a progress bar.
import { $, apiKey, bytes, clear, el, api, errorBlock, signIn, when } from "./api.js";

function classes(target) {
  if (target.kind === "classification") {
    const names = target.class_names || [];
    const shown = names.slice(0, 12).map((c) => el("span", { class: "tag" }, c));
    return names.length > 12 ? [...shown, ` +${names.length - 12} more`] : shown;
  }
  return target.kind === "regression" ? `regression (${target.n_targets ?? 1} target${target.n_targets > 1 ? "s" : ""})` : target.kind || "";
}

async function load() {
  const datasets = await api("/v1/datasets");
  clear($("#datasets-table tbody"), datasets.data.map((d) => el("tr", { dataset: { dataset: d.id } },
    el("td", { class: "dataset-name" }, d.name), el("td", {}, el("code", {}, d.id)), el("td", {}, d.source), el("td", {}, d.format),
    el("td", { class: "num" }, d.n_samples), el("td", {}, `[${d.feature_shape.join(", ")}]`), el("td", { class: "classes" }, classes(d.target)),
    el("td", { class: "num" }, bytes(d.size)), el("td", {}, when(d.created_at)))));
}

// A multipart upload through XMLHttpRequest, whose upload.onprogress fetch() lacks; the file is streamed, never read here.
function send(form, onProgress) {
  return new Promise((resolve, reject) => {
    const xhr = new XMLHttpRequest();
    xhr.open("POST", "/v1/datasets");
    const key = apiKey();
    if (key) xhr.setRequestHeader("Authorization", `Bearer ${key}`);
    xhr.responseType = "json";
    xhr.upload.onprogress = (event) => event.lengthComputable && onProgress(event.loaded / event.total);
    xhr.onload = () => (xhr.status >= 200 && xhr.status < 300 ? resolve(xhr.response) : reject(xhrError(xhr)));
    xhr.onerror = () => reject({ status: 0, message: "Kiln cannot be reached", details: [] });
    xhr.send(form);
  });
}

function xhrError(xhr) {
  const error = xhr.response?.error && typeof xhr.response.error === "object" ? xhr.response.error : {};
  return { status: xhr.status, code: error.code, field: error.field, details: error.details || [], message: error.message || `${xhr.status} ${xhr.statusText}` };
}

async function upload() {
  const file = $("#upload-file").files[0];
  const errors = $("#upload-errors");
  clear(errors);
  if (!file) {
    errors.append(errorBlock({ field: "file", message: "choose a file to upload" }));
    return;
  }
  const form = new FormData();
  const fields = { name: "#upload-name", target: "#upload-target", text_column: "#upload-text-column", format: "#upload-format",
    task: "#upload-task", image_size: "#upload-image-size" };
  for (const [field, selector] of Object.entries(fields)) {
    const value = $(selector).value.trim();
    if (value) form.append(field, value);
  }
  form.append("file", file); // last: the options are read before the file's bytes arrive
  const progress = $("#upload-progress");
  progress.hidden = false;
  progress.value = 0;
  $("#upload-button").disabled = true;
  $("#upload-status").textContent = `uploading ${file.name}…`;
  try {
    const created = await send(form, (share) => { progress.value = share; });
    progress.value = 1;
    $("#upload-status").textContent = `uploaded: ${created.name} (${created.id})`;
    await load();
  } catch (err) {
    $("#upload-status").textContent = "";
    errors.append(errorBlock(err));
  } finally {
    $("#upload-button").disabled = false;
  }
}

signIn(async () => {
  $("#upload-button").addEventListener("click", upload);
  await load();
});
