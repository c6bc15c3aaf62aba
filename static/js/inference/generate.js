// The Generate page (templates/inference/generate.html): a small island around one websocket. This file wires the
// page's controls to its modules: state.js (shared state), socket.js (the socket and its messages), panel.js (an
// output panel), tokens.js (token spans), popover.js (alternatives and branching), form.js (the settings form).

import { generate, loadForm, saveForm, setCompare, setEditing, setMode, showError, stopAll, updateButtons, updateModel }
  from "./form.js";
import { Panel } from "./panel.js";
import "./popover.js";
import { connect } from "./socket.js";
import { $, FIELDS, PRESETS, state } from "./state.js";
import { recolor } from "./tokens.js";

for (const article of document.querySelectorAll(".out-panel")) state.panels[article.dataset.panel] = new Panel(article.dataset.panel, article);
for (const f of [...FIELDS, "model"]) $(f).addEventListener("input", () => { saveForm(); if (f === "model") updateModel(); });
for (const b of document.querySelectorAll("[data-preset]")) {
  b.addEventListener("click", () => { Object.assign(state.settings[state.editing], PRESETS[b.dataset.preset]); loadForm(); });
}
for (const b of document.querySelectorAll("[data-edit]")) b.addEventListener("click", () => setEditing(b.dataset.edit));
for (const tab of document.querySelectorAll(".mode-tabs [data-mode]")) tab.addEventListener("click", () => { if (!tab.disabled) setMode(tab.dataset.mode); });
for (const r of document.querySelectorAll("input[name=colorby]")) r.addEventListener("change", () => { state.colorBy = r.value; recolor(); });
$("copy-ab").addEventListener("click", () => { saveForm(); state.settings.b = { ...state.settings.a }; if (state.editing === "b") loadForm(); });
$("compare").addEventListener("change", (e) => setCompare(e.target.checked));
$("go").addEventListener("click", generate);
$("stop-button").addEventListener("click", stopAll);
$("clear").addEventListener("click", () => { for (const p of Object.values(state.panels)) p.reset(); showError(""); updateButtons(); });
for (const id of ["prompt", "message"]) {
  $(id).addEventListener("keydown", (e) => { if (e.key === "Enter" && (e.ctrlKey || e.metaKey)) { e.preventDefault(); if (!$("go").disabled) generate(); } });
}

// a worker that died mid-generation sends no final event: say so instead of spinning forever
const SILENT_MS = 60_000;
setInterval(() => {
  for (const panel of Object.values(state.panels)) {
    const v = panel.current;
    if (v && !v.finished && !v.silent && performance.now() - v.heardAt > SILENT_MS) {
      v.silent = true;
      panel.setStatus(gettext("no news"), "bad");
      panel.showNotes([gettext("No word from the worker for a minute: it may be busy with other requests, or it stopped. " +
        "Press Stop and try again; the System page shows whether an infer worker is running.")], "bad");
    }
  }
}, 5000);

loadForm();
setCompare(false);
connect();
