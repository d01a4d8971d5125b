// Jobs: filters, keyset paging, live status, cancel.
import { get, post } from "../api.js";
import { h, mount, errorBox, empty, when, statusBadge, poll } from "../dom.js";
import { guard } from "../me.js";

const STATUSES = ["queued", "running", "succeeded", "failed", "cancelled"];

export async function jobsPage() {
  const models = (await get("/v1/models").catch(() => ({ items: [] }))).items;
  const status = h("select", { id: "f-status" }, h("option", { value: "" }, "any status"), STATUSES.map((s) => h("option", { value: s }, s)));
  const model = h("select", { id: "f-model" }, h("option", { value: "" }, "any model"), models.map((m) => h("option", { value: m.name }, m.name)));
  const after = h("input", { type: "date", id: "f-after" });
  const before = h("input", { type: "date", id: "f-before" });
  const tbody = h("tbody");
  const more = h("button", { type: "button", id: "more", hidden: true }, "Older jobs");
  const message = h("div", { "aria-live": "polite" });
  let cursor = null;
  const query = () => {
    const q = new URLSearchParams({ limit: "25" });
    if (status.value) q.append("status", status.value);
    if (model.value) q.set("model", model.value);
    if (after.value) q.set("created_after", new Date(after.value).toISOString());
    if (before.value) q.set("created_before", new Date(`${before.value}T23:59:59`).toISOString());
    if (cursor) q.set("cursor", cursor);
    return q;
  };
  const row = (j) => h("tr", { dataset: { job: j.id } },
    h("td", {}, h("a", { href: `#/jobs/${j.id}` }, j.id.slice(0, 8))), h("td", { class: "st" }, statusBadge(j.status)),
    h("td", {}, j.model.ref), h("td", {}, `${j.images_succeeded + j.images_failed}/${j.image_count}`), h("td", {}, j.priority), h("td", {}, when(j.created_at)),
    h("td", {}, ["queued", "running"].includes(j.status) ? guard(h("button", { type: "button", class: "small", onclick: async () => {
      try { await post(`/v1/jobs/${j.id}/cancel`); load(true); } catch (err) { message.replaceChildren(errorBox(err)); }
    } }, "Cancel"), "jobs:write") : ""));
  async function load(reset) {
    if (reset) { cursor = null; tbody.replaceChildren(); }
    try {
      const page = await get(`/v1/jobs?${query()}`);
      tbody.append(...page.items.map(row));
      cursor = page.next_cursor; more.hidden = !cursor;
      message.replaceChildren(tbody.children.length ? "" : empty("No jobs match. Submit images on the Predict page, or widen the filters.", h("a", { href: "#/predict" }, "Go to Predict")));
      return page.items;
    } catch (err) { message.replaceChildren(errorBox(err)); return []; }
  }
  [status, model, after, before].forEach((el) => el.addEventListener("change", () => load(true)));
  more.addEventListener("click", () => load(false));
  mount(h("h1", {}, "Jobs"),
    h("div", { class: "filters" }, h("label", {}, "Status ", status), h("label", {}, "Model ", model), h("label", {}, "Created after ", after), h("label", {}, "before ", before)),
    h("table", { class: "table", id: "jobs-table" }, h("thead", {}, h("tr", {}, ["Job", "Status", "Model version", "Images", "Priority", "Created", ""].map((c) => h("th", { scope: "col" }, c)))), tbody),
    more, message);
  await load(true);
  // Live status: refresh rows that are still moving.
  poll(async () => {
    const moving = [...tbody.querySelectorAll("tr")].filter((tr) => /queued|running/.test(tr.querySelector(".st").textContent));
    for (const tr of moving) {
      const j = await get(`/v1/jobs/${tr.dataset.job}`);
      tr.replaceWith(row(j));
    }
    return false;
  }, 2000);
}
