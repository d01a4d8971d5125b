// The public /v1 API, with the key held in sessionStorage only (gone when the tab closes).
const KEY = "medimg.apiKey";

export class ApiError extends Error {
  constructor(status, problem) {
    super(problem.detail || problem.title || `HTTP ${status}`);
    this.status = status;
    this.problem = problem;
  }
}

export const session = {
  get key() { return sessionStorage.getItem(KEY); },
  set(key) { sessionStorage.setItem(KEY, key); },
  clear() { sessionStorage.removeItem(KEY); },
};

function headers(extra = {}) {
  const h = { ...extra };
  if (session.key) h.Authorization = `Bearer ${session.key}`;
  return h;
}

async function problemOf(resp) {
  const text = await resp.text();
  try { return JSON.parse(text); } catch { return { title: resp.statusText, detail: text || `HTTP ${resp.status}` }; }
}

export async function request(method, path, { json, form, signal } = {}) {
  const init = { method, headers: headers({ Accept: "application/json" }), signal };
  if (json !== undefined) { init.body = JSON.stringify(json); init.headers["Content-Type"] = "application/json"; }
  if (form !== undefined) init.body = form;
  const resp = await fetch(path, init);
  if (!resp.ok) {
    const err = new ApiError(resp.status, await problemOf(resp));
    if (resp.status === 401) window.dispatchEvent(new CustomEvent("medimg:unauthorized", { detail: err }));
    throw err;
  }
  if (resp.status === 204) return null;
  return resp.json();
}

export const get = (path, opts) => request("GET", path, opts);
export const post = (path, opts) => request("POST", path, opts);
export const put = (path, opts) => request("PUT", path, opts);

// Images and downloads need the Authorization header, so they are fetched as blobs.
export async function blobUrl(path) {
  const resp = await fetch(path, { headers: headers() });
  if (!resp.ok) throw new ApiError(resp.status, await problemOf(resp));
  return URL.createObjectURL(await resp.blob());
}

export async function download(path, filename) {
  const url = await blobUrl(path);
  const a = document.createElement("a");
  a.href = url; a.download = filename; document.body.append(a); a.click(); a.remove();
  setTimeout(() => URL.revokeObjectURL(url), 5000);
}

// XHR for uploads: fetch() has no upload progress events.
export function upload(path, form, onProgress) {
  return new Promise((resolve, reject) => {
    const xhr = new XMLHttpRequest();
    xhr.open("POST", path);
    if (session.key) xhr.setRequestHeader("Authorization", `Bearer ${session.key}`);
    xhr.setRequestHeader("Accept", "application/json");
    xhr.upload.addEventListener("progress", (e) => { if (e.lengthComputable) onProgress(e.loaded / e.total); });
    xhr.addEventListener("load", () => {
      let body; try { body = JSON.parse(xhr.responseText); } catch { body = { detail: xhr.responseText }; }
      if (xhr.status >= 200 && xhr.status < 300) resolve(body); else reject(new ApiError(xhr.status, body));
    });
    xhr.addEventListener("error", () => reject(new ApiError(0, { detail: "network error: the upload did not reach the server" })));
    xhr.send(form);
  });
}

let openapi;
// Which optional endpoints this server has (e.g. the DICOM SR and FHIR downloads).
export async function hasPath(path) {
  openapi ??= fetch("/openapi.json").then((r) => r.json()).catch(() => ({ paths: {} }));
  return path in ((await openapi).paths || {});
}
