// Predict: drop images, pick a model (card summary), set options, submit, follow the job.
import { get, upload } from "../api.js";
import { h, mount, errorBox, empty, num, pct } from "../dom.js";
import { can, lacks } from "../me.js";

export function cardSummary(version) {
  const card = version.card || {};
  const test = card.metrics?.test || {};
  const facts = [];
  if (test.auroc !== undefined) facts.push(`test AUROC ${num(test.auroc)}`);
  if (test.at_operating_point) facts.push(`sensitivity ${pct(test.at_operating_point.sensitivity)}, specificity ${pct(test.at_operating_point.specificity)} at the operating point`);
  if (test.map_50 !== undefined) facts.push(`test mAP@0.5 ${num(test.map_50)}`);
  if (test.accuracy !== undefined && test.auroc === undefined) facts.push(`test accuracy ${num(test.accuracy)}`);
  return h("div", { class: "card-summary", id: "card-summary" },
    h("p", {}, h("strong", {}, version.ref), ` · ${version.task} · ${version.architecture}`, version.kind === "ensemble" ? " · ensemble" : ""),
    h("p", {}, "Labels: ", version.labels.join(", ")),
    card.intended_use ? h("p", { class: "hint" }, "Intended use: ", card.intended_use) : null,
    facts.length ? h("p", {}, "Test metrics: ", facts.join("; ")) : h("p", { class: "hint" }, "No test metrics on the card."),
    version.deprecated_at ? h("p", { class: "warn" }, `Deprecated: ${version.deprecation_reason || ""}`) : null);
}

export async function predictPage() {
  if (!can("jobs:write")) return mount(h("h1", {}, "Predict"), empty(`${lacks("jobs:write")} Ask an admin for a key with it to submit images; you can still read jobs and models.`));
  const models = (await get("/v1/models")).items.filter((m) => !m.deleted_at);
  if (!models.length) return mount(h("h1", {}, "Predict"), empty("No models are registered yet. Upload one under Models or train one from a dataset."));
  let files = [];
  const list = h("ul", { class: "files", id: "file-list" });
  const picker = h("input", { type: "file", id: "files", multiple: true, accept: ".png,.jpg,.jpeg,.dcm,image/png,image/jpeg,application/dicom" });
  const showFiles = () => list.replaceChildren(...files.map((f) => h("li", {}, `${f.name} (${(f.size / 1024).toFixed(0)} KiB)`)));
  picker.addEventListener("change", () => { files = [...picker.files]; showFiles(); });
  const drop = h("label", { class: "drop", for: "files", id: "drop", tabindex: "0" }, h("strong", {}, "Drop PNG, JPEG or DICOM files here"), h("span", {}, " or press Enter to choose"), picker);
  drop.addEventListener("keydown", (e) => { if (e.key === "Enter" || e.key === " ") { e.preventDefault(); picker.click(); } });
  drop.addEventListener("dragover", (e) => { e.preventDefault(); drop.classList.add("over"); });
  drop.addEventListener("dragleave", () => drop.classList.remove("over"));
  drop.addEventListener("drop", (e) => { e.preventDefault(); drop.classList.remove("over"); files = [...e.dataTransfer.files]; showFiles(); });

  const select = h("select", { id: "model" }, models.map((m) => h("option", { value: m.name }, `${m.name} (${m.task}, v${m.latest.version})`)));
  const summary = h("div");
  const options = h("div", { id: "options" });
  const renderModel = () => {
    const m = models.find((x) => x.name === select.value);
    summary.replaceChildren(cardSummary(m.latest));
    const op = m.latest.card?.operating_point;
    const fields = [];
    if (m.task === "classification") {
      fields.push(
        h("label", { for: "threshold" }, "Decision threshold ", h("span", { class: "hint" }, op ? `(default: the card's operating point ${num(op.threshold)})` : "(default 0.5)")),
        h("input", { id: "threshold", type: "number", min: "0", max: "1", step: "0.01", placeholder: op ? num(op.threshold) : "0.5" }),
        h("label", { for: "target_sensitivity" }, "or target sensitivity ", h("span", { class: "hint" }, "(picks the threshold on the validation ROC)")),
        h("input", { id: "target_sensitivity", type: "number", min: "0.01", max: "1", step: "0.01", placeholder: "e.g. 0.95" }),
        m.latest.kind !== "ensemble" ? h("label", { class: "check" }, h("input", { id: "gradcam", type: "checkbox" }), " Grad-CAM heatmap") : null);
    }
    if (m.task === "detection") {
      fields.push(
        h("label", { for: "score_threshold" }, "Score threshold ", h("span", { class: "hint" }, "(default 0.3)")),
        h("input", { id: "score_threshold", type: "number", min: "0", max: "1", step: "0.05", placeholder: "0.3" }),
        h("label", { for: "nms_iou" }, "NMS IoU ", h("span", { class: "hint" }, "(default 0.5)")),
        h("input", { id: "nms_iou", type: "number", min: "0.05", max: "0.9", step: "0.05", placeholder: "0.5" }),
        h("label", { for: "max_detections" }, "Max boxes ", h("span", { class: "hint" }, "(default 100)")),
        h("input", { id: "max_detections", type: "number", min: "1", max: "500", step: "1", placeholder: "100" }));
    }
    options.replaceChildren(...fields);
  };
  select.addEventListener("change", renderModel);
  renderModel();
  const priority = h("select", { id: "priority" }, h("option", { value: "routine" }, "routine"), h("option", { value: "stat" }, "stat (jumps the queue)"));
  const progress = h("progress", { id: "upload-progress", max: "1", value: "0", hidden: true });
  const status = h("div", { id: "predict-status", "aria-live": "polite" });
  const submit = h("button", { type: "submit", class: "primary", id: "submit" }, "Run");
  const form = h("form", { class: "grid2", onsubmit: async (e) => {
    e.preventDefault();
    if (!files.length) { status.replaceChildren(h("div", { class: "error", role: "alert" }, "Choose or drop at least one image first.")); return; }
    const body = new FormData();
    files.forEach((f) => body.append("files", f, f.name));
    body.append("model", select.value);
    body.append("priority", priority.value);
    for (const id of ["target_sensitivity", "score_threshold", "nms_iou", "max_detections"]) {
      const el = document.getElementById(id);
      if (el && el.value !== "") body.append(id, el.value);
    }
    const threshold = document.getElementById("threshold");
    if (threshold && threshold.value !== "") body.append("params", JSON.stringify({ threshold: Number(threshold.value) }));
    if (document.getElementById("gradcam")?.checked) body.append("explain", "gradcam");
    submit.disabled = true; progress.hidden = false;
    status.replaceChildren("Uploading…");
    try {
      const job = await upload("/v1/jobs", body, (f) => { progress.value = f; });
      location.hash = `#/jobs/${job.id}`;
    } catch (err) { status.replaceChildren(errorBox(err)); } finally { submit.disabled = false; progress.hidden = true; }
  } },
  h("section", {}, h("h2", {}, "1. Images"), drop, list),
  h("section", {}, h("h2", {}, "2. Model"), h("label", { for: "model" }, "Model"), select, summary,
    h("h2", {}, "3. Options"), options, h("label", { for: "priority" }, "Priority"), priority,
    h("div", { class: "actions" }, submit, progress), status));
  mount(h("h1", {}, "Predict"), form);
}
