// Live training: curves grow per epoch, then test metrics, confusion matrix, promote.
import { get, put } from "../api.js";
import { h, mount, errorBox, statusBadge, poll } from "../dom.js";
import { lineChart } from "../charts.js";
import { guard } from "../me.js";
import { metricsBlock } from "./models.js";

export async function trainingPage(id) {
  const head = h("div"); const curves = h("div", { class: "grid2" }); const result = h("div");
  mount(h("h1", {}, "Training"), head, curves, result);
  let epochsShown = -1;
  poll(async () => {
    const job = await get(`/v1/training-jobs/${id}`);
    const done = ["succeeded", "failed", "cancelled"].includes(job.status);
    const p = job.progress || {};
    head.replaceChildren(h("p", {}, statusBadge(job.status), ` ${job.model_name} · ${job.architecture} on ${job.dataset}`, p.epoch !== undefined ? ` · epoch ${p.epoch}/${p.epochs ?? "?"}` : ""),
      done ? null : h("progress", { max: "1", value: String(p.fraction ?? 0) }),
      job.error ? h("div", { class: "error", role: "alert" }, h("strong", {}, job.error.type), " ", job.error.detail) : null);
    if (job.epochs.length !== epochsShown && job.epochs.length) {
      epochsShown = job.epochs.length;
      const x = job.epochs.map((e) => e.epoch);
      const loss = h("div", { class: "chart", id: "loss-chart" }); const val = h("div", { class: "chart", id: "val-chart" });
      curves.replaceChildren(loss, val);
      lineChart(loss, { title: "Loss", x, xLabel: "epoch", yLabel: "loss", points: true, series: [{ label: "train", values: job.epochs.map((e) => e.train_loss) }, { label: "validation", values: job.epochs.map((e) => e.val_loss) }] });
      const keys = Object.keys(job.epochs[0].val_metrics).filter((k) => typeof job.epochs[0].val_metrics[k] === "number");
      lineChart(val, { title: "Validation metrics", x, xLabel: "epoch", yLabel: "value", points: true, series: keys.map((k) => ({ label: k, values: job.epochs.map((e) => e.val_metrics[k]) })) });
    }
    if (done && job.status === "succeeded") {
      const [name, version] = (job.model_version || ":").split(":");
      const msg = h("div", { "aria-live": "polite" });
      const promote = guard(h("button", { type: "button", class: "primary", id: "promote", onclick: async () => {
        if (!confirm(`Move production of ${name} to version ${version}?`)) return;
        try { await put(`/v1/models/${name}/aliases/production`, { json: { version: Number(version) } }); msg.replaceChildren(`production → v${version}`); } catch (err) { msg.replaceChildren(errorBox(err)); }
      } }, "Promote to production"), "models:admin");
      result.replaceChildren(h("h2", {}, "Test split"), metricsBlock({ labels: job.test_metrics?.labels || [] }, job.test_metrics),
        h("p", {}, "Registered as ", h("a", { href: `#/models/${name}` }, job.model_version), job.promoted ? " (promoted)" : ""), h("div", { class: "actions" }, promote), msg);
    }
    return done;
  }, 1500);
}
