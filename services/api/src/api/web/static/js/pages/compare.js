// Two model versions side by side: test metrics with intervals, operating points, ROC, data.
import { get } from "../api.js";
import { h, mount, errorBox, empty, num, pct } from "../dom.js";
import { rocChart } from "../charts.js";
import { metricsBlock } from "./models.js";

// The headline numbers both cards may carry, for the difference row.
const HEADLINE = [["AUROC", (t) => t.auroc], ["macro AUROC", (t) => t.macro_auroc], ["mAP@0.5", (t) => t.map_50],
  ["sensitivity", (t) => t.at_operating_point?.sensitivity], ["specificity", (t) => t.at_operating_point?.specificity]];

function column(mv) {
  const card = mv.card || {};
  const op = card.operating_point;
  const roc = h("div", { class: "chart small-chart" });
  const section = h("section", { class: "card", dataset: { ref: mv.ref } }, h("h2", {}, mv.ref),
    h("p", {}, `${mv.architecture} · ${mv.labels.join(", ")}`),
    mv.deprecated_at ? h("p", { class: "warn" }, `Deprecated: ${mv.deprecation_reason || ""}`) : null,
    metricsBlock(card, null),
    op ? h("p", {}, `Operating point: threshold ${num(op.threshold)}, validation sensitivity ${pct(op.sensitivity)}, specificity ${pct(op.specificity)}.`) : null,
    card.validation_roc ? roc : null,
    h("p", { class: "hint" }, `Data: ${card.data?.source || "–"}`));
  return { section, draw: () => card.validation_roc && rocChart(roc, card.validation_roc, op, 360) };
}

function differences(a, b) {
  const ta = a.card?.metrics?.test || {}; const tb = b.card?.metrics?.test || {};
  const rows = HEADLINE.map(([name, pick]) => [name, pick(ta), pick(tb)]).filter(([, x, y]) => typeof x === "number" && typeof y === "number");
  if (!rows.length) return h("p", { class: "hint" }, "The two cards share no headline test metric to compare.");
  return h("table", { class: "table", id: "differences" }, h("caption", {}, `Test metrics, ${b.ref} minus ${a.ref}`),
    h("thead", {}, h("tr", {}, ["metric", a.ref, b.ref, "difference"].map((c) => h("th", { scope: "col" }, c)))),
    h("tbody", {}, rows.map(([name, x, y]) => h("tr", {}, h("th", { scope: "row" }, name), h("td", {}, num(x)), h("td", {}, num(y)), h("td", {}, `${y - x >= 0 ? "+" : ""}${num(y - x)}`)))));
}

export async function comparePage() {
  const { items } = await get("/v1/models");
  const refs = items.filter((m) => !m.deleted_at).flatMap((m) => m.versions.map((v) => `${m.name}:${v}`));
  if (refs.length < 2) return mount(h("h1", {}, "Compare model versions"), empty("Comparing needs two model versions. Train a model on a dataset (Datasets & training) to get a second one.", h("a", { href: "#/datasets" }, "Go to Datasets & training")));
  const wanted = new URLSearchParams(location.hash.split("?")[1] || "");
  const first = refs.includes(wanted.get("a")) ? refs.indexOf(wanted.get("a")) : 0;
  const second = refs.includes(wanted.get("b")) ? refs.indexOf(wanted.get("b")) : (first === 0 ? 1 : 0);
  const pick = (id, i) => h("select", { id }, refs.map((r, j) => h("option", { value: r, selected: j === i }, r)));
  const a = pick("cmp-a", first); const b = pick("cmp-b", second);
  const diff = h("div");
  const out = h("div", { class: "grid2", id: "compare" });
  const show = async () => {
    try {
      const versions = await Promise.all([a.value, b.value].map((ref) => {
        const [n, v] = ref.split(":");
        return get(`/v1/models/${encodeURIComponent(n)}/versions/${v}`);
      }));
      const cols = versions.map(column);
      out.replaceChildren(...cols.map((c) => c.section));
      cols.forEach((c) => c.draw());
      diff.replaceChildren(differences(...versions));
    } catch (err) { out.replaceChildren(errorBox(err)); }
  };
  [a, b].forEach((s) => s.addEventListener("change", show));
  mount(h("h1", {}, "Compare model versions"),
    h("div", { class: "filters" }, h("label", { for: "cmp-a" }, "A ", a), h("label", { for: "cmp-b" }, "B ", b)), diff, out);
  await show();
}
