// Two model versions side by side: test metrics, operating points, provenance.
import { get } from "../api.js";
import { h, mount, errorBox, empty } from "../dom.js";
import { metricsBlock } from "./models.js";

export async function comparePage() {
  const { items } = await get("/v1/models");
  if (!items.length) return mount(h("h1", {}, "Compare"), empty("No models to compare yet."));
  const refs = items.flatMap((m) => m.versions.map((v) => `${m.name}:${v}`));
  const pick = (id, i) => h("select", { id }, refs.map((r, j) => h("option", { value: r, selected: j === i }, r)));
  const a = pick("cmp-a", 0); const b = pick("cmp-b", Math.min(1, refs.length - 1));
  const out = h("div", { class: "grid2", id: "compare" });
  const show = async () => {
    try {
      const cols = await Promise.all([a.value, b.value].map(async (ref) => {
        const [n, v] = ref.split(":");
        const mv = await get(`/v1/models/${encodeURIComponent(n)}/versions/${v}`);
        return h("section", { class: "card" }, h("h2", {}, mv.ref), h("p", {}, `${mv.architecture} · ${mv.labels.join(", ")}`), metricsBlock(mv.card || {}, null), h("p", { class: "hint" }, mv.card?.data?.source || ""));
      }));
      out.replaceChildren(...cols);
    } catch (err) { out.replaceChildren(errorBox(err)); }
  };
  [a, b].forEach((s) => s.addEventListener("change", show));
  mount(h("h1", {}, "Compare model versions"), h("div", { class: "filters" }, h("label", {}, "A ", a), h("label", {}, "B ", b)), out);
  await show();
}
