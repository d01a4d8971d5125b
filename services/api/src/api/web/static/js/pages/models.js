// Models: the registry list and a card page (metrics with CIs, ROC, confusion, provenance).
import { get, put } from "../api.js";
import { h, fill, mount, errorBox, empty, num, pct, ci, confusion, when } from "../dom.js";
import { rocChart } from "../charts.js";
import { guard } from "../me.js";

export async function modelsPage() {
  const { items } = await get("/v1/models");
  if (!items.length) return mount(h("h1", {}, "Models"), empty("No models yet. Train one from a dataset (Datasets & training) or upload a package with POST /v1/models."));
  mount(h("h1", {}, "Models"), h("table", { class: "table", id: "models-table" },
    h("thead", {}, h("tr", {}, ["Model", "Task", "Labels", "Versions", "Aliases", "Status"].map((c) => h("th", { scope: "col" }, c)))),
    h("tbody", {}, items.map((m) => h("tr", {},
      h("td", {}, h("a", { href: `#/models/${encodeURIComponent(m.name)}` }, m.name)), h("td", {}, m.task), h("td", {}, m.latest.labels.join(", ")),
      h("td", {}, m.versions.join(", ")), h("td", {}, Object.entries(m.aliases).map(([a, v]) => `${a}→v${v}`).join(", ") || "–"),
      h("td", {}, m.deleted_at ? "deleted" : m.deprecated_at ? "deprecated" : "active"))))));
}

export function metricsBlock(card, testMetrics) {
  const test = testMetrics || card.metrics?.test || {};
  const cis = test.ci95 || {};
  const at = test.at_operating_point || {};
  const rows = [];
  const add = (name, v, interval) => { if (v !== undefined && v !== null) rows.push(h("tr", {}, h("th", { scope: "row" }, name), h("td", {}, ci(v, interval)))); };
  add("AUROC", test.auroc, cis.auroc);
  add("macro AUROC", test.macro_auroc, cis.macro_auroc);
  add("accuracy", at.accuracy ?? test.accuracy, cis.accuracy_at_operating_point ?? cis.accuracy);
  add("sensitivity", at.sensitivity, cis.sensitivity_at_operating_point);
  add("specificity", at.specificity, cis.specificity_at_operating_point);
  add("precision", at.precision, cis.precision_at_operating_point);
  add("F1", at.f1, cis.f1_at_operating_point);
  add("mAP@0.5", test.map_50, cis.map_50);
  add("mAP@[.40:.75]", test.map_40_75, cis.map_40_75);
  for (const [k, v] of Object.entries(test.ap_50_per_class || {})) add(`AP@0.5 ${k}`, v);
  return h("div", {},
    h("table", { class: "table metrics", id: "test-metrics" }, h("caption", {}, `Test split${test.n ? `, n = ${test.n}` : ""}${at.threshold !== undefined ? ` — at threshold ${num(at.threshold)}` : ""}`), h("tbody", {}, rows)),
    cis.method ? h("p", { class: "hint" }, `Intervals: ${cis.method}.`) : h("p", { class: "hint" }, "The card reports no confidence intervals."),
    confusion(at.confusion_matrix || test.confusion_matrix, card.labels || []));
}

export async function modelPage(name) {
  const model = await get(`/v1/models/${encodeURIComponent(name)}`);
  const versionPick = h("select", { id: "version" }, model.versions.map((v) => h("option", { value: String(v), selected: v === model.latest.version }, `v${v}${Object.entries(model.aliases).filter(([, n]) => n === v).map(([a]) => ` (${a})`).join("")}`)));
  const body = h("div");
  const render = async () => {
    const v = await get(`/v1/models/${encodeURIComponent(name)}/versions/${versionPick.value}`);
    const card = v.card || {};
    const roc = h("div", { class: "chart", id: "roc" });
    const aliasName = h("input", { id: "alias-name", value: "production", size: "12" });
    const aliasMsg = h("div", { "aria-live": "polite" });
    const moveAlias = guard(h("button", { type: "button", id: "move-alias", onclick: async () => {
      if (!confirm(`Point alias "${aliasName.value}" of ${name} at version ${v.version}? Jobs that ask for ${name}@${aliasName.value} will run this version from now on.`)) return;
      try { await put(`/v1/models/${encodeURIComponent(name)}/aliases/${encodeURIComponent(aliasName.value)}`, { json: { version: v.version } }); aliasMsg.replaceChildren(`Alias ${aliasName.value} now points at v${v.version}.`); modelPage(name); } catch (err) { aliasMsg.replaceChildren(errorBox(err)); }
    } }, "Move alias here"), "models:admin");
    fill(body, 
      h("p", {}, h("code", {}, v.ref), ` · ${v.task} · ${v.architecture} · ${v.kind}`, ` · registered ${when(v.created_at)}`, ` · weights sha256 ${v.weights_sha256.slice(0, 12)}…`),
      v.deprecated_at ? h("p", { class: "warn" }, `Deprecated ${when(v.deprecated_at)}: ${v.deprecation_reason}`) : null,
      card.description && card.description !== model.description ? h("p", {}, card.description) : null,
      h("div", { class: "grid2" },
        h("section", {}, h("h2", {}, "Test metrics"), metricsBlock(card, null)),
        h("section", {}, h("h2", {}, "Validation ROC"), card.validation_roc ? roc : h("p", { class: "hint" }, "No validation ROC on this card (detection or multi-class)."),
          card.operating_point ? h("p", {}, `Operating point: threshold ${num(card.operating_point.threshold)}, sensitivity ${pct(card.operating_point.sensitivity)}, specificity ${pct(card.operating_point.specificity)} on validation (${card.operating_point.source || ""}).`) : null)),
      h("div", { class: "grid2" },
        h("section", {}, h("h2", {}, "Intended use"), h("p", {}, card.intended_use || "–"), card.limitations ? h("p", { class: "hint" }, "Limitations: ", card.limitations) : null),
        h("section", {}, h("h2", {}, "Data provenance and licence"), h("dl", {},
          h("dt", {}, "Source"), h("dd", {}, card.data?.source || "–"), h("dt", {}, "Licence"), h("dd", {}, card.data?.licence || "–"),
          h("dt", {}, "Split"), h("dd", {}, card.data?.split || "–"), card.data?.citation ? [h("dt", {}, "Citation"), h("dd", {}, card.data.citation)] : null))),
      h("section", {}, h("h2", {}, "Versions and aliases"),
        h("p", {}, Object.entries(model.aliases).map(([a, n]) => `${a} → v${n}`).join(" · ") || "No aliases: a plain name runs the newest version."),
        h("div", { class: "actions" }, h("label", { for: "alias-name" }, "Alias"), aliasName, moveAlias), aliasMsg));
    if (card.validation_roc) rocChart(roc, card.validation_roc, card.operating_point);
  };
  versionPick.addEventListener("change", () => render().catch((err) => fill(body, errorBox(err))));
  mount(h("h1", {}, model.name), h("p", {}, model.description || ""), h("label", { for: "version" }, "Version "), versionPick, body);
  await render();
}
