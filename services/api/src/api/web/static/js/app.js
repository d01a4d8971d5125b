// Entry point: sign-in, who am I, hash routes (the key never appears in a URL).
import { get, session } from "./api.js";
import { h, mount, errorBox } from "./dom.js";
import { me, setMe } from "./me.js";
import { predictPage } from "./pages/predict.js";
import { resultPage } from "./pages/result.js";
import { jobsPage } from "./pages/jobs.js";
import { modelsPage, modelPage } from "./pages/models.js";
import { datasetsPage, datasetPage } from "./pages/datasets.js";
import { trainingPage } from "./pages/training.js";
import { comparePage } from "./pages/compare.js";

const routes = [
  [/^#\/predict$/, predictPage, "predict"],
  [/^#\/jobs\/([0-9a-f-]+)$/, resultPage, "jobs"],
  [/^#\/jobs$/, jobsPage, "jobs"],
  [/^#\/models\/([^/]+)$/, modelPage, "models"],
  [/^#\/models$/, modelsPage, "models"],
  [/^#\/datasets\/([0-9a-f-]+)$/, datasetPage, "datasets"],
  [/^#\/datasets$/, datasetsPage, "datasets"],
  [/^#\/training\/([0-9a-f-]+)$/, trainingPage, "datasets"],
  [/^#\/compare(?:\?(.*))?$/, comparePage, "compare"],
];

function banner(text) {
  const el = document.getElementById("banner");
  el.textContent = text || "";
  el.hidden = !text;
}

function signInPage(message) {
  document.getElementById("nav").hidden = true;
  document.getElementById("whoami").replaceChildren();
  const input = h("input", { id: "api-key", type: "password", autocomplete: "off", spellcheck: "false", required: true, placeholder: "mk_…", "aria-describedby": "key-help" });
  const status = h("div", { id: "signin-status", "aria-live": "polite" });
  const form = h("form", { id: "signin", class: "card narrow", onsubmit: async (e) => {
    e.preventDefault();
    session.set(input.value.trim());
    status.replaceChildren("Checking the key…");
    try {
      await loadMe();
      if (!location.hash || location.hash === "#/signin") location.hash = "#/predict"; else route();
    } catch (err) {
      session.clear();
      status.replaceChildren(errorBox(err));
    }
  } },
  h("h1", {}, "Sign in"),
  h("label", { for: "api-key" }, "API key"), input,
  h("p", { id: "key-help", class: "hint" }, "Paste a key from `medimg keys create`. It is kept in this browser tab only (sessionStorage) and sent as a Bearer header; closing the tab signs you out."),
  h("button", { type: "submit", class: "primary" }, "Sign in"), status);
  if (message) status.replaceChildren(h("div", { class: "error", role: "alert" }, message));
  mount(form);
  document.getElementById("main").dataset.page = "signin";
  input.focus();
}

async function loadMe() {
  const who = await get("/v1/me");
  setMe(who);
  document.getElementById("nav").hidden = false;
  const out = h("button", { type: "button", class: "link", id: "signout", onclick: () => { ++seq; session.clear(); setMe(null); signInPage(); } }, "Sign out");
  // replaceChildren() would print a null as the text "null": only real nodes go in.
  document.getElementById("whoami").replaceChildren(...[
    h("span", { class: "tenant", title: `key ${who.key_name} (mk_${who.key_prefix}_…)` }, `${who.tenant}`),
    h("span", { class: "scopes", id: "scopes", title: "scopes of this key" }, who.scopes.join(", ")),
    who.expires_at ? h("span", { class: "expiry" }, `expires ${new Date(who.expires_at).toLocaleDateString()}`) : null,
    out].filter(Boolean));
  return who;
}

let seq = 0;
async function route() {
  const mine = ++seq;
  banner("");
  if (!session.key) return signInPage();
  if (!me()) {
    try { await loadMe(); } catch (err) { session.clear(); return signInPage(err.message); }
    if (mine !== seq) return; // a newer navigation (or a sign-out) took over meanwhile
  }
  const hash = location.hash || "#/predict";
  const main = document.getElementById("main");
  main.dataset.page = `${hash}#${mine}`;
  delete main.dataset.ready; // set again by a page once its content is complete
  for (const [re, page, nav] of routes) {
    const m = hash.match(re);
    if (!m) continue;
    document.querySelectorAll("[data-nav]").forEach((a) => a.toggleAttribute("aria-current", a.dataset.nav === nav));
    try { await page(...m.slice(1).map((x) => (x === undefined ? undefined : decodeURIComponent(x)))); } catch (err) {
      // A 401 has already put the sign-in form up (medimg:unauthorized); keep it there.
      if (err.status !== 401 && mine === seq) mount(h("h1", {}, "Something went wrong"), errorBox(err));
    }
    main.focus({ preventScroll: true });
    return;
  }
  location.hash = "#/predict";
}

// A key revoked mid-session: back to sign-in with the server's own words.
window.addEventListener("medimg:unauthorized", (e) => { ++seq; session.clear(); setMe(null); signInPage(`Signed out: ${e.detail.message}`); });
window.addEventListener("hashchange", route);
// The skip link moves focus without touching the hash (the hash is the app's route).
document.querySelector(".skip").addEventListener("click", (e) => { e.preventDefault(); document.getElementById("main").focus(); });
route();
