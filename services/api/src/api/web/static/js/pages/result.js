// Result view: the image with boxes / Grad-CAM, probabilities, operating point, downloads.
import { get, post, blobUrl, download, hasPath } from "../api.js";
import { h, fill, svg, mount, errorBox, bars, num, pct, when, statusBadge, poll } from "../dom.js";
import { can, guard } from "../me.js";

const FINAL = ["succeeded", "failed", "cancelled"];
const COLOURS = ["#e69f00", "#56b4e9", "#009e73", "#f0e442", "#0072b2", "#d55e00", "#cc79a7"];

function operatingPointWords(op) {
  if (!op) return null;
  const parts = [`Decision threshold ${num(op.threshold)}`];
  if (op.sensitivity !== undefined && op.sensitivity !== null) {
    parts.push(`on the validation split this threshold found ${pct(op.sensitivity)} of positive cases (sensitivity) and correctly cleared ${pct(op.specificity)} of negative cases (specificity)`);
  }
  return h("p", { class: "op", id: "operating-point" }, parts.join(": "), op.source ? ` — ${op.source}.` : ".");
}

function toCsv(job) {
  const rows = [["filename", "status", "label", "score", "threshold", "detections", "error"]];
  for (const img of job.images) {
    const o = img.output || {};
    rows.push([img.filename, img.status, o.label ?? "", o.score ?? "", o.operating_point?.threshold ?? "", o.detections ? o.detections.length : "", img.error?.detail ?? ""]);
  }
  return rows.map((r) => r.map((v) => `"${String(v).replaceAll('"', '""')}"`).join(",")).join("\n");
}

function saveText(text, type, name) {
  const url = URL.createObjectURL(new Blob([text], { type }));
  const a = h("a", { href: url, download: name }); document.body.append(a); a.click(); a.remove();
  setTimeout(() => URL.revokeObjectURL(url), 5000);
}

function detectionLayer(stage, out) {
  const { width, height } = out.image || {};
  const layer = svg("svg", { class: "boxes", viewBox: `0 0 ${width} ${height}`, preserveAspectRatio: "none", "aria-label": "Detected boxes" });
  const labels = [...new Set(out.detections.map((d) => d.label))];
  const slider = h("input", { type: "range", id: "score-slider", min: "0", max: "1", step: "0.01", value: String(out.params?.score_threshold ?? 0) });
  const showLabels = h("input", { type: "checkbox", id: "show-labels", checked: true });
  const showScores = h("input", { type: "checkbox", id: "show-scores", checked: true });
  const count = h("output", { id: "box-count" });
  const draw = () => {
    const min = Number(slider.value);
    const kept = out.detections.filter((d) => d.score >= min);
    layer.replaceChildren();
    const stroke = Math.max(1, Math.max(width, height) / 300);
    for (const d of kept) {
      const [x1, y1, x2, y2] = d.box;
      const colour = COLOURS[labels.indexOf(d.label) % COLOURS.length];
      const g = svg("g", { class: "det", "data-label": d.label, "data-score": d.score });
      g.append(svg("rect", { x: x1, y: y1, width: x2 - x1, height: y2 - y1, fill: "none", stroke: colour, "stroke-width": stroke }));
      const text = [showLabels.checked ? d.label : "", showScores.checked ? d.score.toFixed(2) : ""].filter(Boolean).join(" ");
      if (text) {
        const t = svg("text", { x: x1 + stroke, y: Math.max(y1 - stroke, stroke * 8), fill: colour, "font-size": stroke * 9 });
        t.textContent = text; g.append(t);
      }
      layer.append(g);
    }
    count.textContent = `${kept.length} of ${out.detections.length} boxes at score ≥ ${min.toFixed(2)}`;
    stage.dataset.boxes = String(kept.length);
  };
  [slider, showLabels, showScores].forEach((el) => el.addEventListener("input", draw));
  stage.append(layer);
  draw();
  const counts = Object.entries(out.counts || {}).map(([k, v]) => `${k}: ${v}`).join(", ");
  return h("div", { class: "controls" },
    h("label", { for: "score-slider" }, "Minimum score (filters here, in the browser)"), slider, count,
    h("label", { class: "check" }, showLabels, " labels"), h("label", { class: "check" }, showScores, " scores"),
    h("p", {}, `Counts at the job's threshold: ${counts || "none"}`));
}

async function imageView(job, img, artifacts) {
  const out = img.output || {};
  const stage = h("div", { class: "stage", id: `stage-${img.index}` });
  const base = h("img", { alt: `${img.filename} (as the model saw it)`, class: "base" });
  stage.append(base);
  try { base.src = await blobUrl(`/v1/jobs/${job.id}/images/${img.index}/preview.png`); } catch (err) { stage.replaceChildren(errorBox(err)); }
  const side = [];
  if (out.detections) side.push(detectionLayer(stage, out));
  const cam = artifacts.find((a) => a.name === `gradcam-${img.index}.png`);
  if (cam) {
    const overlay = h("img", { alt: "Grad-CAM heatmap", class: "overlay", id: `gradcam-${img.index}`, hidden: true });
    overlay.src = await blobUrl(cam.url);
    stage.append(overlay);
    const toggle = h("input", { type: "checkbox", id: "gradcam-toggle" });
    const opacity = h("input", { type: "range", id: "gradcam-opacity", min: "0", max: "1", step: "0.05", value: "0.8" });
    const apply = () => { overlay.hidden = !toggle.checked; overlay.style.opacity = opacity.value; };
    toggle.addEventListener("change", apply); opacity.addEventListener("input", apply); apply();
    side.push(h("div", { class: "controls" }, h("label", { class: "check" }, toggle, " Grad-CAM heatmap (where the model looked)"),
      h("label", { for: "gradcam-opacity" }, "Heatmap opacity"), opacity));
  }
  if (out.probabilities) side.push(h("h3", {}, "Class probabilities"), bars(out.probabilities));
  if (out.label) side.push(h("p", { class: "label-line" }, "Label: ", h("strong", { id: `label-${img.index}`, class: "result-label" }, out.label), out.score !== undefined ? ` (score ${num(out.score)})` : ""));
  if (out.operating_point) side.push(operatingPointWords(out.operating_point));
  if (out.ensemble) {
    side.push(h("h3", {}, `Ensemble members (${out.ensemble.vote} vote)`), h("div", { class: "members" }, out.ensemble.members.map((m) =>
      h("div", { class: "member card" }, h("strong", {}, m.ref), ` weight ${m.weight ?? 1}`, h("p", {}, "Label: ", m.label), m.probabilities ? bars(m.probabilities) : null))));
  }
  if (img.error) side.push(h("div", { class: "error", role: "alert" }, h("strong", {}, img.error.type), " ", img.error.detail));
  const facts = out.image ? `${out.image.format}, ${out.image.width}×${out.image.height} px${out.image.pixel_spacing ? `, spacing ${out.image.pixel_spacing.join("×")} mm` : ""}` : img.format;
  return h("article", { class: "image-result card" },
    h("h2", {}, `${img.index + 1}. ${img.filename}`, " ", statusBadge(img.status)),
    h("p", { class: "hint" }, facts, img.latency_ms ? ` · ${img.latency_ms.toFixed(0)} ms` : ""),
    h("div", { class: "result-grid" }, stage, h("div", { class: "side" }, side)));
}

// The DICOM SR and FHIR downloads: offered only where this server has the endpoint and the
// job has the object (the SR exists for DICOM input only and is listed in `dicom_results`).
// Nothing is fetched until asked for, since every read of a report is audited.
async function reportButtons(job, onError) {
  const buttons = [];
  const button = (id, label, path, name) => h("button", { type: "button", id, onclick: () => download(path, name).catch(onError) }, label);
  const sr = (job.dicom_results || []).find((o) => o.kind === "sr" && o.url);
  if (sr) buttons.push(button("download-sr", "Download DICOM SR", sr.url, `job-${job.id}-sr.dcm`));
  if (await hasPath("/v1/jobs/{job_id}/fhir")) buttons.push(button("download-fhir", "Download FHIR bundle", `/v1/jobs/${job.id}/fhir`, `job-${job.id}-fhir.json`));
  return buttons;
}

export async function resultPage(id) {
  const head = h("div");
  const body = h("div", { id: "images" });
  mount(h("h1", {}, "Job"), head, body);
  let rendered = false;
  poll(async () => {
    const job = await get(`/v1/jobs/${id}`);
    const cancel = guard(h("button", { type: "button", id: "cancel", onclick: async () => {
      try { await post(`/v1/jobs/${id}/cancel`); } catch (err) { head.append(errorBox(err)); }
    } }, "Cancel job"), "jobs:write");
    const done = FINAL.includes(job.status);
    const progress = h("progress", { max: String(job.image_count), value: String(job.images_succeeded + job.images_failed) });
    const downloads = h("div", { class: "downloads" },
      h("button", { type: "button", onclick: () => saveText(JSON.stringify(job, null, 2), "application/json", `job-${id}.json`) }, "Download JSON"),
      h("button", { type: "button", onclick: () => saveText(toCsv(job), "text/csv", `job-${id}.csv`) }, "Download CSV"));
    if (done && job.status === "succeeded") downloads.append(...(await reportButtons(job, (e) => head.append(errorBox(e)))));
    fill(head, 
      h("p", {}, h("span", { id: "job-status" }, statusBadge(job.status)), ` ${job.images_succeeded + job.images_failed} of ${job.image_count} images done `, done ? null : progress),
      h("p", {}, "Model: ", h("code", { id: "model-ref" }, job.model.ref), ` (${job.model.architecture}) · priority ${job.priority} · created ${when(job.created_at)}`, job.finished_at ? ` · finished ${when(job.finished_at)}` : ""),
      job.model.deprecated ? h("p", { class: "warn", id: "deprecation" }, `This model version is ${job.model.deprecated}`) : null,
      job.error ? h("div", { class: "error", role: "alert" }, h("strong", {}, job.error.type), " ", job.error.detail) : null,
      h("div", { class: "actions" }, done ? null : cancel, downloads));
    if (done && !rendered) {
      rendered = true;
      const artifacts = can("jobs:read") ? (await get(`/v1/jobs/${id}/artifacts`)).items : [];
      fill(body, ...(await Promise.all(job.images.map((img) => imageView(job, img, artifacts)))));
      document.getElementById("main").dataset.ready = "true";
    }
    return done;
  }, 700);
}
