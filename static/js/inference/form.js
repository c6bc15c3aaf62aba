// The Generate page's settings form: one set of settings per panel; the form edits the one chosen in
// "Settings of A / B". Also the buttons (Generate, Stop) and the form's error line.

import { hidePop } from "./popover.js";
import { send } from "./socket.js";
import { $, FIELDS, I, models, state } from "./state.js";

export function describe(model, params) {
  const bits = [model.name];
  if (params.temperature === 0) bits.push(gettext("greedy"));
  else {
    bits.push(`T ${params.temperature}`);
    if (params.top_k) bits.push(`top-k ${params.top_k}`);
    if (params.top_p < 1) bits.push(`top-p ${params.top_p}`);
    if (params.min_p) bits.push(`min-p ${params.min_p}`);
  }
  if (params.repetition_penalty !== 1) bits.push(`rep ${params.repetition_penalty}`);
  if (params.seed !== null && params.seed !== undefined) bits.push(I(gettext("seed %(seed)s"), params));
  return bits.join(" · ");
}

export function loadForm() {
  const s = state.settings[state.editing];
  $("model").value = s.model;
  for (const f of FIELDS) $(f).value = s[f] ?? "";
  syncOutputs();
  updateModel();
}

export function saveForm() {
  const s = state.settings[state.editing];
  s.model = $("model").value;
  for (const f of FIELDS) s[f] = $(f).value;
  syncOutputs();
}

export function syncOutputs() {
  for (const out of document.querySelectorAll("#settings output")) {
    const input = $(out.htmlFor.value || out.getAttribute("for"));
    out.textContent = input.value;
  }
}

export function updateModel() {
  const m = models[$("model").value];
  $("model-summary").textContent = m ? m.summary : "";
  const chatOK = activePanels().every((k) => (models[state.settings[k].model] || {}).is_chat);
  $("tab-chat").disabled = !chatOK;
  $("chat-note").textContent = chatOK ? "" : gettext("chat needs a model with a chat template (SmolLM2 has one)");
  if (!chatOK && state.mode === "chat") setMode("completion");
}

export function params(key) {
  const s = state.settings[key];
  const num = (v) => (v === "" || v === null || v === undefined ? null : Number(v));
  return {
    temperature: num(s.temperature), top_k: num(s.top_k), top_p: num(s.top_p), min_p: num(s.min_p),
    repetition_penalty: num(s.repetition_penalty), max_new_tokens: num(s.max_new_tokens), seed: num(s.seed),
    stop: String(s.stop || "").split("\n").filter((x) => x.length),
  };
}

export function activePanels() {
  return state.compare ? ["a", "b"] : ["a"];
}

export function setMode(mode) {
  state.mode = mode;
  for (const tab of document.querySelectorAll(".mode-tabs [data-mode]")) tab.setAttribute("aria-selected", String(tab.dataset.mode === mode));
  $("completion-input").hidden = mode !== "completion";
  $("chat-input").hidden = mode !== "chat";
  $("go").textContent = mode === "chat" ? gettext("Send") : gettext("Generate");
  for (const p of Object.values(state.panels)) p.reset();
}

export function setCompare(on) {
  state.compare = on;
  $("edit-tabs").hidden = !on;
  state.panels.b.el.hidden = !on;
  $("panels").classList.toggle("two", on);
  if (!on && state.editing === "b") setEditing("a");
  updateModel();
}

export function setEditing(key) {
  saveForm();
  state.editing = key;
  for (const b of document.querySelectorAll("[data-edit]")) b.setAttribute("aria-pressed", String(b.dataset.edit === key));
  loadForm();
}

export function showError(message) {
  const box = $("form-error");
  box.textContent = message;
  box.hidden = !message;
}

export function updateButtons() {
  const running = Object.values(state.panels).some((p) => p.running);
  $("stop-button").disabled = !running;
  $("go").disabled = running;
}

export function generate() {
  saveForm();
  showError("");
  hidePop(true);
  const keys = activePanels();
  if (state.mode === "completion") {
    const prompt = $("prompt").value;
    if (!prompt) { showError(gettext("Type a prompt for the model to continue.")); return; }
    for (const k of keys) {
      const panel = state.panels[k];
      panel.prompt = prompt;
      panel.history = [];
      panel.request({ action: "generate", mode: "completion", model: state.settings[k].model, prompt, params: params(k) });
    }
  } else {
    const text = $("message").value.trim();
    if (!text) { showError(gettext("Type a message.")); return; }
    const system = $("system").value.trim();
    for (const k of keys) {
      const panel = state.panels[k];
      if (panel.current && panel.current.final) panel.commitTurn();
      panel.history.push({ role: "user", content: text });
      const messages = [...(system ? [{ role: "system", content: system }] : []),
        ...panel.history.map((t) => ({ role: t.role, content: t.content }))];
      panel.request({ action: "generate", mode: "chat", model: state.settings[k].model, messages, params: params(k) });
    }
    $("message").value = "";
  }
  updateButtons();
}

export function stopAll() {
  for (const panel of Object.values(state.panels)) {
    if (panel.current && !panel.current.finished) send({ action: "stop", generation: panel.current.uid });
  }
}
