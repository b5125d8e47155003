// A model: its versions with their test metrics, and its aliases (moved from a version's page, with admin).
import { $, api, clear, el, number, path, showError, signIn, when } from "./api.js";

const name = $("#model").dataset.model;

// A version's headline test metrics: test_* scalars first, then any other scalars, at most four.
export function headline(metrics) {
  const scalars = Object.entries(metrics || {}).filter(([, v]) => typeof v === "number");
  const tests = scalars.filter(([k]) => k.startsWith("test_"));
  return (tests.length ? tests : scalars).slice(0, 4).map(([k, v]) => el("span", { class: "tag", dataset: { metric: k } }, `${k} ${number(v)}`));
}

// Where an alias sends requests: one version, or each version of a split with its share; and the mirror that gets copies.
function targets(version, rollout) {
  const link = (v) => el("a", { href: path`/ui/models/${name}/versions/${v}` }, `version ${v}`);
  const parts = rollout && rollout.versions.length > 1
    ? rollout.versions.flatMap((w, i) => [i ? ", " : "", link(w.version), ` (${number(w.share * 100)}%)`])
    : [link(version)];
  return rollout?.mirror ? [...parts, "; mirrored to ", link(rollout.mirror)] : parts;
}

signIn(async () => {
  try {
    const [model, versions] = await Promise.all([api(path`/v1/models/${name}`), api(path`/v1/models/${name}/versions?limit=100`)]);
    const aliases = Object.entries(model.aliases || {});
    clear($("#aliases"), aliases.length ? aliases.map(([alias, version]) => el("li", { dataset: { alias } },
      el("code", {}, alias), " → ", ...targets(version, model.rollouts?.[alias])))
      : el("li", { class: "hint" }, "none: an alias is set from a version's page"));
    clear($("#versions-table tbody"), versions.data.map((v) => el("tr", { dataset: { version: v.version } },
      el("td", { class: "num" }, el("a", { href: path`/ui/models/${name}/versions/${v.version}` }, v.version)),
      el("td", {}, v.task || ""),
      el("td", {}, headline(v.metrics)),
      el("td", {}, v.aliases.map((a) => el("span", { class: "tag" }, a))),
      el("td", {}, v.dataset?.name || ""),
      el("td", {}, v.job_id ? el("a", { href: path`/ui/jobs/${v.job_id}` }, v.job_id.slice(0, 8)) : "upload"),
      el("td", {}, when(v.created_at)))));
  } catch (err) {
    showError($("#model-error"), err);
  }
});
