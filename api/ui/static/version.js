// A version: test metrics, signature, labels, lineage, aliases (moved here with admin), the ONNX download, a playground.
import { $, api, bytes, can, clear, el, number, path, request, showError, signIn, when } from "./api.js";
import { mount } from "./playground.js";

const root = $("#version");
const name = root.dataset.model;
const number_ = Number(root.dataset.version);
const base = path`/v1/models/${name}/versions/${number_}`;
let who = null;

function metrics(found) {
  const rows = Object.entries(found || {}).map(([key, value]) => el("tr", { dataset: { metric: key } }, el("th", {}, key),
    el("td", { class: typeof value === "number" ? "num" : null }, typeof value === "number" ? number(value) : el("code", {}, JSON.stringify(value)))));
  clear($("#metrics tbody"), rows.length ? rows : el("tr", {}, el("td", { class: "hint" }, "none recorded")));
}

function signature(found) {
  const rows = [];
  for (const side of ["inputs", "outputs"]) {
    for (const tensor of found?.[side] || []) {
      rows.push(el("tr", {}, el("td", {}, side === "inputs" ? "input" : "output"), el("td", {}, el("code", {}, tensor.name)),
        el("td", {}, tensor.dtype || tensor.datatype || tensor.type || ""), el("td", {}, `[${(tensor.shape || []).map((d) => d ?? "N").join(", ")}]`)));
    }
  }
  clear($("#signature tbody"), rows);
}

function lineage(chain) {
  clear($("#lineage tbody"), chain.map((link) => el("tr", { dataset: { version: link.version } },
    el("td", {}, link.missing ? `${link.model} v${link.version} (gone)` : el("a", { href: path`/ui/models/${link.model}/versions/${link.version}` }, `${link.model} v${link.version}`)),
    el("td", {}, link.task || ""),
    el("td", {}, link.job_id ? el("a", { href: path`/ui/jobs/${link.job_id}` }, link.job_id.slice(0, 8)) : ""),
    el("td", {}, link.dataset?.name || ""),
    el("td", {}, link.dataset?.sha256 ? el("code", { title: link.dataset.sha256 }, link.dataset.sha256.slice(0, 16)) : ""),
    el("td", {}, link.parent ? `${link.parent.model} v${link.parent.version}${link.parent.frozen?.length ? `, frozen: ${link.parent.frozen.join(", ")}` : ""}` : ""))));
}

function facts(v) {
  const rows = [["Created", when(v.created_at)], ["Job", v.job_id ? el("a", { href: path`/ui/jobs/${v.job_id}` }, v.job_id) : "uploaded ONNX"],
    ["ONNX", `${bytes(v.artifact.size)}, sha256 ${v.artifact.sha256}`], ["Weights", v.weights ? `${bytes(v.weights.size)}, sha256 ${v.weights.sha256}` : "—"],
    ["Dataset", v.dataset?.name ? `${v.dataset.name} (${v.dataset.train_rows ?? "?"} training rows, ${v.dataset.test_rows ?? "?"} test rows)` : "—"],
    ["Dataset sha256", v.dataset?.sha256 || "—"],
    ["Hyperparameters", Object.entries(v.hyperparameters || {}).filter(([, x]) => typeof x !== "object").map(([k, x]) => el("span", { class: "tag" }, `${k}=${x}`))]];
  clear($("#version-facts"), rows.map(([k, x]) => [el("dt", {}, k), el("dd", {}, x)]));
}

function aliases(v) {
  const admin = can(who, "admin");
  clear($("#version-aliases"), v.aliases.length ? v.aliases.map((alias) => el("li", { dataset: { alias } }, el("code", {}, alias), " ",
    admin ? el("button", { type: "button", class: "quiet", dataset: { remove: alias }, onclick: () => moveAlias(alias, null) }, "Remove") : null))
    : el("li", { class: "hint" }, "no alias points here"));
}

async function moveAlias(alias, version) {
  const error = $("#alias-error");
  error.hidden = true;
  try {
    if (version === null) await request(path`/v1/models/${name}/aliases/${alias}`, { method: "DELETE" });
    else await api(path`/v1/models/${name}/aliases/${alias}`, { method: "PUT", json: { version } });
    aliases(await api(base));
  } catch (err) {
    showError(error, err);
  }
}

// The ONNX file through fetch (the route needs the key), handed to the browser as a download.
async function download() {
  try {
    const response = await request(`${base}/artifact`);
    const link = el("a", { href: URL.createObjectURL(await response.blob()), download: `${name}-${number_}.onnx` });
    document.body.append(link);
    link.click();
    link.remove();
    setTimeout(() => URL.revokeObjectURL(link.href), 10000);
  } catch (err) {
    showError($("#version-error"), err);
  }
}

signIn(async (found) => {
  who = found;
  $("#model-link").href = path`/ui/models/${name}`;
  let v;
  try {
    v = await api(base);
  } catch (err) {
    showError($("#version-error"), err);
    return;
  }
  $("#version-task").textContent = v.task || "uploaded";
  metrics(v.metrics);
  signature(v.signature);
  clear($("#labels"), v.labels ? v.labels.map((label) => el("span", { class: "tag label-name" }, label)) : el("span", { class: "hint" }, "none (not a classifier)"));
  facts(v);
  aliases(v);
  $("#download-button").addEventListener("click", download);
  $("#alias-set").addEventListener("click", () => {
    const alias = $("#alias-name").value.trim();
    if (alias) moveAlias(alias, number_);
  });
  if (can(who, "predict")) mount($("#playground"), v);
  else clear($("#playground"), el("p", { class: "hint" }, "This key lacks the predict scope the playground needs."));
  api(`${base}/lineage`).then((chain) => lineage(chain.lineage)).catch(() => {});
});
