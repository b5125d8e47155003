// Models: every registered model with its latest version and aliases.
import { $, api, clear, el, path, signIn, when } from "./api.js";

function aliasTags(model) {
  return Object.entries(model.aliases || {}).map(([alias, version]) => el("a", { class: "tag", href: path`/ui/models/${model.name}/versions/${version}` }, `${alias} → ${version}`));
}

signIn(async () => {
  const models = await api("/v1/models");
  const withAliases = await Promise.all(models.data.map((m) => api(path`/v1/models/${m.name}`).catch(() => m)));
  clear($("#models-table tbody"), withAliases.map((m) => el("tr", { dataset: { model: m.name } },
    el("td", {}, el("a", { href: path`/ui/models/${m.name}` }, m.name)),
    el("td", { class: "num" }, m.latest_version ? el("a", { href: path`/ui/models/${m.name}/versions/${m.latest_version}` }, m.latest_version) : ""),
    el("td", { class: "num" }, m.version_count),
    el("td", {}, aliasTags(m)),
    el("td", {}, when(m.created_at)))));
  $("#models-empty").hidden = models.data.length > 0;
});
