// Live training: the recipe, curves that grow per epoch, then test metrics, confusion, promote.
import { get, post, put } from "../api.js";
import { h, fill, mount, errorBox, statusBadge, poll, num, when } from "../dom.js";
import { lineChart } from "../charts.js";
import { guard } from "../me.js";
import { metricsBlock } from "./models.js";

const FINAL = ["succeeded", "failed", "cancelled"];

function recipeTable(recipe) {
  if (!recipe?.entries?.length) return null;
  const show = (v) => (typeof v === "number" && !Number.isInteger(v) ? num(v, 4) : typeof v === "object" ? JSON.stringify(v) : String(v));
  return h("details", { class: "card", id: "recipe", open: true }, h("summary", {}, "Recipe: how each setting was chosen"),
    h("table", { class: "table" }, h("thead", {}, h("tr", {}, ["Setting", "Value", "Chosen by", "Why"].map((c) => h("th", { scope: "col" }, c)))),
      h("tbody", {}, recipe.entries.map((e) => h("tr", {}, h("td", {}, h("code", {}, e.field)), h("td", {}, show(e.value)), h("td", {}, e.source), h("td", { class: "hint" }, e.reason))))));
}

function curves(target, epochs) {
  const x = epochs.map((e) => e.epoch);
  const loss = h("div", { class: "chart", id: "loss-chart" });
  const val = h("div", { class: "chart", id: "val-chart" });
  target.replaceChildren(loss, val);
  lineChart(loss, { title: "Loss per epoch", x, xLabel: "epoch", yLabel: "loss", points: true, integerX: true, series: [
    { label: "train", values: epochs.map((e) => e.train_loss) },
    { label: "validation", values: epochs.map((e) => e.val_loss) }] });
  const keys = Object.keys(epochs[0].val_metrics).filter((k) => typeof epochs[0].val_metrics[k] === "number");
  lineChart(val, { title: "Validation metrics per epoch", x, xLabel: "epoch", yLabel: "value", points: true, integerX: true,
    series: keys.map((k) => ({ label: k, values: epochs.map((e) => e.val_metrics[k] ?? null) })) });
}

async function finished(job, result) {
  const [name, version] = (job.model_version || ":").split(":");
  const mv = name ? await get(`/v1/models/${encodeURIComponent(name)}/versions/${version}`).catch(() => null) : null;
  const msg = h("div", { "aria-live": "polite", id: "promote-msg" });
  const promote = guard(h("button", { type: "button", class: "primary", id: "promote", onclick: async () => {
    if (!confirm(`Move the production alias of ${name} to version ${version}? Jobs that ask for ${name}@production will run it from now on.`)) return;
    try {
      await put(`/v1/models/${encodeURIComponent(name)}/aliases/production`, { json: { version: Number(version) } });
      msg.replaceChildren(`production → v${version}`);
    } catch (err) { msg.replaceChildren(errorBox(err)); }
  } }, "Promote to production"), "models:admin");
  const promotion = job.test_metrics?.promotion;
  fill(result, 
    h("h2", {}, "Test split"),
    metricsBlock(mv?.card || { labels: [] }, job.test_metrics?.test),
    h("p", {}, "Registered as ", h("a", { href: `#/models/${encodeURIComponent(name)}` }, job.model_version),
      promotion ? ` · promotion: ${promotion.promoted ? "promoted" : "not promoted"} (${promotion.reason})` : ""),
    h("div", { class: "actions" }, promote, h("a", { href: `#/compare?a=${encodeURIComponent(job.model_version)}` }, "Compare with another version")), msg);
}

export async function trainingPage(id) {
  const head = h("div", { id: "training-head" }); const recipe = h("div");
  const charts = h("div", { class: "grid2", id: "curves" }, h("p", { class: "empty" }, "Curves appear here after the first epoch."));
  const result = h("div");
  mount(h("h1", {}, "Training"), head, charts, recipe, result);
  let epochsShown = 0; let recipeShown = false;
  poll(async () => {
    const job = await get(`/v1/training-jobs/${id}`);
    const done = FINAL.includes(job.status);
    const p = job.progress || {};
    const cancel = guard(h("button", { type: "button", id: "cancel-training", onclick: async () => {
      try { await post(`/v1/training-jobs/${id}/cancel`); } catch (err) { head.append(errorBox(err)); }
    } }, "Cancel training"), "train");
    fill(head, 
      h("p", {}, statusBadge(job.status), ` ${job.model_name} · ${job.architecture} from ${job.start_from} on ${job.dataset}`,
        p.epoch !== undefined ? ` · epoch ${p.epoch} of ${job.params?.epochs ?? "?"}` : "", p.phase ? ` · ${p.phase}` : ""),
      h("p", { class: "hint" }, `created ${when(job.created_at)}`, job.finished_at ? ` · finished ${when(job.finished_at)}` : ""),
      done ? null : h("div", { class: "actions" }, h("progress", { max: String(job.params?.epochs || 1), value: String(p.epochs_done ?? p.epoch ?? 0), "aria-label": "epochs done" }), cancel),
      job.error ? h("div", { class: "error", role: "alert" }, h("strong", {}, job.error.type), " ", job.error.detail) : null);
    if (!recipeShown && job.recipe) { recipeShown = true; recipe.replaceChildren(recipeTable(job.recipe) || ""); }
    if (job.epochs.length && job.epochs.length !== epochsShown) { epochsShown = job.epochs.length; curves(charts, job.epochs); }
    if (done && job.status === "succeeded") await finished(job, result);
    return done;
  }, 1000);
}
