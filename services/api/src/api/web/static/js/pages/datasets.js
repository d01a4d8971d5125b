// Datasets: upload a zip (progress), import status with problems, counts, samples, train form.
import { get, post, upload, blobUrl } from "../api.js";
import { h, fill, mount, errorBox, empty, when, statusBadge, poll } from "../dom.js";
import { can, guard, lacks } from "../me.js";

async function trainingJobs() {
  if (!can("train")) return h("p", { class: "hint" }, lacks("train"));
  const { items } = await get("/v1/training-jobs?limit=20");
  if (!items.length) return empty("No training jobs yet. Open a ready dataset and start one from its page.");
  return h("table", { class: "table", id: "training-jobs" }, h("thead", {}, h("tr", {}, ["Job", "Status", "Model", "Dataset", "Created"].map((c) => h("th", { scope: "col" }, c)))),
    h("tbody", {}, items.map((j) => h("tr", {}, h("td", {}, h("a", { href: `#/training/${j.id}` }, j.id.slice(0, 8))), h("td", {}, statusBadge(j.status)),
      h("td", {}, j.model_version || j.model_name), h("td", {}, j.dataset), h("td", {}, when(j.created_at))))));
}

export async function datasetsPage() {
  const { items } = await get("/v1/datasets");
  const file = h("input", { type: "file", id: "dataset-file", accept: ".zip,application/zip", required: true });
  const name = h("input", { id: "dataset-name", required: true, pattern: "[A-Za-z0-9][A-Za-z0-9._\\-]{0,99}", placeholder: "e.g. thyroid" });
  const bar = h("progress", { id: "dataset-progress", max: "1", value: "0", hidden: true });
  const msg = h("div", { "aria-live": "polite" });
  const submit = guard(h("button", { type: "submit", class: "primary" }, "Upload"), "train");
  const form = h("form", { class: "card", id: "dataset-upload", onsubmit: async (e) => {
    e.preventDefault();
    const body = new FormData(); body.append("name", name.value); body.append("file", file.files[0]);
    bar.hidden = false; msg.replaceChildren("Uploading…");
    try {
      const v = await upload("/v1/datasets", body, (f) => { bar.value = f; msg.replaceChildren(`Uploading… ${(f * 100).toFixed(0)}%`); });
      location.hash = `#/datasets/${v.dataset_id}`;
    } catch (err) { msg.replaceChildren(errorBox(err)); } finally { bar.hidden = true; }
  } }, h("h2", {}, "Upload a dataset zip"), h("p", { class: "hint" }, "Class folders (Task001_name/rawdata/<class>/…), train/validation/test folders, Pascal VOC, COCO JSON, RSNA CSV or Label Studio."),
  h("label", { for: "dataset-name" }, "Name"), name, h("label", { for: "dataset-file" }, "Zip file"), file, h("div", { class: "actions" }, submit, bar), can("train") ? null : h("p", { class: "hint" }, lacks("train")), msg);
  const list = items.length ? h("table", { class: "table" }, h("thead", {}, h("tr", {}, ["Dataset", "Task", "Versions", "Created"].map((c) => h("th", { scope: "col" }, c)))),
    h("tbody", {}, items.map((d) => h("tr", {}, h("td", {}, h("a", { href: `#/datasets/${d.id}` }, d.name)), h("td", {}, d.task), h("td", {}, d.versions.map((v) => `v${v.version} ${v.status}`).join(", ")), h("td", {}, when(d.created_at))))))
    : empty("No datasets yet. Upload a zip of labelled images above to train a model on them.");
  mount(h("h1", {}, "Datasets & training"), form, h("h2", {}, "Datasets"), list, h("h2", {}, "Training jobs"), await trainingJobs());
}

function countsTable(stats) {
  const counts = stats.counts || stats.boxes || {};
  const splits = Object.keys(counts);
  const classes = [...new Set(splits.flatMap((s) => Object.keys(counts[s])))];
  if (!splits.length) return null;
  return h("table", { class: "table", id: "counts" }, h("caption", {}, stats.boxes ? "Boxes per split and class" : "Images per split and class"),
    h("thead", {}, h("tr", {}, h("th", {}, "class"), splits.map((s) => h("th", { scope: "col" }, s)))),
    h("tbody", {}, classes.map((c) => h("tr", {}, h("th", { scope: "row" }, c), splits.map((s) => h("td", {}, String(counts[s][c] ?? 0)))))));
}

// Empty fields are left to the platform: it derives them from this dataset version and the
// training page then shows each chosen value with its reason (the job's `recipe`).
const TRAIN_FIELDS = [
  ["architecture", "Architecture", "text", "derived from the task"],
  ["start_from", "Start from", "text", "imagenet when installed, else random"],
  ["epochs", "Epochs", "number", "derived from the dataset size"],
  ["image_size", "Image size (px)", "number", "derived from the image sizes"],
  ["batch_size", "Batch size", "number", "derived from the dataset size"],
  ["target_sensitivity", "Target sensitivity", "number", "0.95"],
];

function trainForm(dataset, version) {
  const inputs = Object.fromEntries(TRAIN_FIELDS.map(([id, , type, placeholder]) => [id, h("input", {
    id, type, placeholder, "aria-describedby": "train-help",
    ...(type === "number" ? { min: id === "target_sensitivity" ? "0.01" : "1", max: id === "target_sensitivity" ? "1" : "1024", step: id === "target_sensitivity" ? "0.01" : "1" } : {}),
  })]));
  const modelName = h("input", { id: "model_name", placeholder: `${dataset.name}-<architecture>`, pattern: "[a-z0-9][a-z0-9\\-]{1,98}[a-z0-9]" });
  const promote = h("input", { type: "checkbox", id: "promote-if-better" });
  const msg = h("div", { "aria-live": "polite" });
  const submit = guard(h("button", { type: "submit", class: "primary", id: "train" }, "Start training"), "train");
  return h("form", { class: "card", id: "train-form", onsubmit: async (e) => {
    e.preventDefault();
    const params = {};
    for (const id of ["epochs", "image_size", "batch_size", "target_sensitivity"]) if (inputs[id].value !== "") params[id] = Number(inputs[id].value);
    const body = { task: dataset.task, dataset: `${dataset.name}:${version.version}`, params, promote: promote.checked };
    for (const id of ["architecture", "start_from"]) if (inputs[id].value.trim()) body[id] = inputs[id].value.trim();
    if (modelName.value.trim()) body.model_name = modelName.value.trim();
    submit.disabled = true;
    try {
      const job = await post("/v1/training-jobs", { json: body });
      location.hash = `#/training/${job.id}`;
    } catch (err) { msg.replaceChildren(errorBox(err)); submit.disabled = false; }
  } }, h("h2", {}, `Train on ${dataset.name} v${version.version}`),
  h("p", { class: "hint", id: "train-help" }, "Leave a field empty and the platform chooses it, derived from the dataset (the training page lists each value and why). Other settings keep their defaults: AdamW, cosine schedule, balanced class weights, early stopping."),
  h("div", { class: "grid4" }, TRAIN_FIELDS.map(([id, label]) => h("label", {}, label, inputs[id])), h("label", {}, "Register as model", modelName)),
  h("label", { class: "check" }, promote, " Move the production alias to the result if it beats the current one"),
  h("div", { class: "actions" }, submit, can("train") ? null : h("span", { class: "hint" }, lacks("train"))), msg);
}

export async function datasetPage(id) {
  const head = h("div"); const body = h("div");
  mount(h("h1", {}, "Dataset"), head, body);
  let shown = false;
  poll(async () => {
    const d = await get(`/v1/datasets/${id}`);
    const v = d.latest;
    const done = !v || ["ready", "failed"].includes(v.status);
    fill(head, h("h2", {}, `${d.name} v${v?.version ?? "–"} `, v ? statusBadge(v.status) : null),
      v && !done ? h("p", {}, `Import: ${v.progress.phase || "queued"} `, h("progress", { max: String(v.progress.total || 1), value: String(v.progress.done) })) : null,
      v?.error_detail ? h("div", { class: "error", role: "alert" }, h("strong", {}, v.error_type), " ", v.error_detail) : null,
      v?.errors?.length ? h("table", { class: "table", id: "problems" }, h("caption", {}, "Problems by file"), h("tbody", {}, v.errors.map((p) => h("tr", {}, h("td", {}, p.file), h("td", {}, p.problem))))) : null);
    if (done && v?.status === "ready" && !shown) {
      shown = true;
      const grid = h("div", { class: "samples", id: "samples" });
      fill(body, countsTable(v.stats), h("h2", {}, "Sample images"), grid, trainForm(d, v));
      const items = (await get(`/v1/datasets/${id}/versions/${v.version}/items?limit=12`)).items;
      for (const it of items) {
        const img = h("img", { alt: `${it.path} (${it.label || "boxes"})` });
        grid.append(h("figure", {}, img, h("figcaption", {}, `${it.label ?? `${(it.boxes || []).length} boxes`} · ${it.split}`)));
        blobUrl(`/v1/datasets/${id}/versions/${v.version}/items/${it.id}/preview.png`).then((u) => { img.src = u; }).catch(() => {});
      }
    }
    return done;
  }, 1000);
}
