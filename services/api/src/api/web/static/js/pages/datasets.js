// Datasets: upload a zip (progress), import status with problems, counts, samples, train form.
import { get, post, upload, blobUrl } from "../api.js";
import { h, mount, errorBox, empty, when, statusBadge, poll } from "../dom.js";
import { can, guard, lacks } from "../me.js";

export async function datasetsPage() {
  const { items } = await get("/v1/datasets");
  const file = h("input", { type: "file", id: "dataset-file", accept: ".zip,application/zip", required: true });
  const name = h("input", { id: "dataset-name", required: true, pattern: "[A-Za-z0-9][A-Za-z0-9._-]{0,99}", placeholder: "e.g. thyroid" });
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
  mount(h("h1", {}, "Datasets & training"), form, list);
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

function trainForm(dataset, version) {
  const arch = h("input", { id: "architecture", value: "resnet18" });
  const epochs = h("input", { id: "epochs", type: "number", min: "1", max: "500", value: "10" });
  const size = h("input", { id: "image_size", type: "number", min: "16", max: "1024", value: "224" });
  const batch = h("input", { id: "batch_size", type: "number", min: "1", value: "32" });
  const start = h("input", { id: "start_from", value: "random" });
  const msg = h("div", { "aria-live": "polite" });
  const submit = guard(h("button", { type: "submit", class: "primary", id: "train" }, "Start training"), "train");
  return h("form", { class: "card", id: "train-form", onsubmit: async (e) => {
    e.preventDefault();
    try {
      const job = await post("/v1/training-jobs", { json: { task: dataset.task, dataset: `${dataset.name}:${version.version}`, architecture: arch.value, start_from: start.value, params: { epochs: Number(epochs.value), image_size: Number(size.value), batch_size: Number(batch.value) } } });
      location.hash = `#/training/${job.id}`;
    } catch (err) { msg.replaceChildren(errorBox(err)); }
  } }, h("h2", {}, "Train on this version"), h("p", { class: "hint" }, "Defaults shown; other parameters keep the platform defaults (AdamW, cosine schedule, early stopping patience 5, target sensitivity 0.95)."),
  h("div", { class: "grid4" }, h("label", {}, "Architecture", arch), h("label", {}, "Start from", start), h("label", {}, "Epochs", epochs), h("label", {}, "Image size (px)", size), h("label", {}, "Batch size", batch)),
  h("div", { class: "actions" }, submit), msg);
}

export async function datasetPage(id) {
  const head = h("div"); const body = h("div");
  mount(h("h1", {}, "Dataset"), head, body);
  let shown = false;
  poll(async () => {
    const d = await get(`/v1/datasets/${id}`);
    const v = d.latest;
    const done = !v || ["ready", "failed"].includes(v.status);
    head.replaceChildren(h("h2", {}, `${d.name} v${v?.version ?? "–"} `, v ? statusBadge(v.status) : null),
      v && !done ? h("p", {}, `Import: ${v.progress.phase || "queued"} `, h("progress", { max: String(v.progress.total || 1), value: String(v.progress.done) })) : null,
      v?.error_detail ? h("div", { class: "error", role: "alert" }, h("strong", {}, v.error_type), " ", v.error_detail) : null,
      v?.errors?.length ? h("table", { class: "table", id: "problems" }, h("caption", {}, "Problems by file"), h("tbody", {}, v.errors.map((p) => h("tr", {}, h("td", {}, p.file), h("td", {}, p.problem))))) : null);
    if (done && v?.status === "ready" && !shown) {
      shown = true;
      const grid = h("div", { class: "samples", id: "samples" });
      body.replaceChildren(countsTable(v.stats), h("h2", {}, "Sample images"), grid, trainForm(d, v));
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
