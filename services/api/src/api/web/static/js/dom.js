// Tiny DOM helpers: elements are built with textContent, never innerHTML with data.
export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
    else if (k === "class") el.className = v;
    else if (k === "dataset") Object.assign(el.dataset, v);
    else if (v === true) el.setAttribute(k, "");
    else el.setAttribute(k, v);
  }
  for (const c of children.flat()) if (c !== null && c !== undefined && c !== false) el.append(c instanceof Node ? c : String(c));
  return el;
}

export const svg = (tag, attrs = {}) => {
  const el = document.createElementNS("http://www.w3.org/2000/svg", tag);
  for (const [k, v] of Object.entries(attrs)) el.setAttribute(k, v);
  return el;
};

// Like el.replaceChildren(), but null/undefined/false are skipped (the DOM would print "null").
export function fill(el, ...children) {
  el.replaceChildren(...children.flat().filter((c) => c !== null && c !== undefined && c !== false));
  return el;
}

export function mount(...children) {
  return fill(document.getElementById("main"), ...children);
}

export function errorBox(err) {
  const p = err?.problem;
  return h("div", { class: "error", role: "alert" },
    h("strong", {}, p?.title || "Error"), " ", err?.message || String(err),
    p?.errors ? h("ul", {}, p.errors.map((e) => h("li", {}, typeof e === "string" ? e : `${(e.loc || []).join(".")}: ${e.msg || e.problem || JSON.stringify(e)}`))) : null);
}

export function empty(text, action) {
  return h("div", { class: "empty" }, h("p", {}, text), action || null);
}

export const pct = (x) => (x === null || x === undefined ? "–" : `${(x * 100).toFixed(1)}%`);
export const num = (x, d = 3) => (x === null || x === undefined ? "–" : Number(x).toFixed(d));
export const when = (iso) => (iso ? new Date(iso).toLocaleString() : "–");
export const statusBadge = (s) => h("span", { class: `badge st-${s}` }, s);

export function bars(probabilities) {
  return h("div", { class: "bars" }, Object.entries(probabilities).sort((a, b) => b[1] - a[1]).map(([label, p]) => {
    const fill = h("span", { class: "fill" });
    fill.style.width = `${(p * 100).toFixed(1)}%`;
    return h("div", { class: "bar", dataset: { label } }, h("span", { class: "bar-label" }, label), h("span", { class: "track" }, fill), h("span", { class: "bar-val" }, pct(p)));
  }));
}

export function ci(value, interval) {
  if (value === null || value === undefined) return "–";
  return interval ? `${num(value)} (95% CI ${num(interval[0])}–${num(interval[1])})` : num(value);
}

export function confusion(matrix, labels) {
  if (!matrix) return null;
  const max = Math.max(...matrix.flat(), 1);
  return h("table", { class: "confusion", "aria-label": "Confusion matrix (rows: true label, columns: predicted)" },
    h("thead", {}, h("tr", {}, h("th", {}, "true \\ predicted"), labels.map((l) => h("th", { scope: "col" }, l)))),
    h("tbody", {}, matrix.map((row, i) => h("tr", {}, h("th", { scope: "row" }, labels[i] ?? i), row.map((v) => {
      const td = h("td", {}, String(v));
      td.style.backgroundColor = `rgba(11, 93, 122, ${(0.08 + 0.7 * v / max).toFixed(2)})`;
      if (v / max > 0.55) td.classList.add("dark");
      return td;
    })))));
}

// Poll fn() every ms until it returns true or the page changes.
export function poll(fn, ms = 1000) {
  const token = document.getElementById("main").dataset.page;
  const tick = async () => {
    if (document.getElementById("main").dataset.page !== token) return;
    let done = false;
    try { done = await fn(); } catch (e) { done = false; console.warn(e.message); }
    if (!done) setTimeout(tick, ms);
  };
  tick();
}
