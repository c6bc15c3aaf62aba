// Tokens as the Generate page shows them: one span per record, coloured by its probability, struck through after a
// stop string; and the small DOM helpers the other modules share.

import { state } from "./state.js";

export const ROLES = { user: gettext("user"), assistant: gettext("assistant"), system: gettext("system") };

export function el(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined) node.textContent = text;
  return node;
}

export function bubble(role, text, version) {
  const b = el("div", "bubble " + role);
  b.append(el("span", "who", ROLES[role] || role));
  const body = el("div", "bubble-text" + (version ? " gen-tokens" : ""));
  if (version) {
    body.dataset.uid = version.uid;
    for (const r of version.records) body.append(tokenSpan(r, version));
    markCut(body, version);
  } else {
    body.textContent = text;
  }
  b.append(body);
  return b;
}

export function probOf(r) {
  const p = state.colorBy === "rp" ? r.rp : r.p;
  return p === null || p === undefined ? 1 : p;
}

export function tokenSpan(r, version) {
  const span = el("span", "gt");
  span.dataset.i = r.i;
  span.tabIndex = 0;
  if (r.eos) { span.classList.add("eos"); span.textContent = r.t || "⏹"; }
  else if (r.b !== undefined && !r.t) { span.classList.add("partial"); span.textContent = r.b; }
  else if (r.t.includes("\n")) { span.classList.add("nl"); span.textContent = r.t.replace(/\n/g, "↵\n"); }
  else span.textContent = r.t;
  if (r.forced) span.classList.add("forced");
  span.style.setProperty("--p", probOf(r).toFixed(3));
  span.setAttribute("aria-label", `${span.textContent} (${pct(probOf(r))})`);
  return span;
}

export function recolor() {
  for (const span of document.querySelectorAll(".gen-tokens .gt")) {
    const r = recordOf(span);
    if (r) span.style.setProperty("--p", probOf(r).toFixed(3));
  }
}

// tokens after a stop string (the worker cut the text there) are shown struck through
export function markCut(container, version) {
  const f = version.final;
  if (!f || f.stop_reason !== "stop" || typeof f.text !== "string") return;
  let at = 0;
  for (const span of container.querySelectorAll(".gt")) {
    const r = version.records[Number(span.dataset.i)];
    if (!r) continue;
    if (at + (r.t || "").length > f.text.length) span.classList.add("cut");
    at += (r.t || "").length;
  }
}

export function textOf(records) {
  return records.filter((r) => !r.eos).map((r) => r.t).join("");
}

export function pct(p) {
  if (p === null || p === undefined) return "—";
  return p >= 0.1 ? `${(100 * p).toFixed(1)}%` : p >= 0.001 ? `${(100 * p).toFixed(2)}%` : `${(100 * p).toExponential(1)}%`;
}

export function pieceOf(r) {
  return JSON.stringify(r && (r.t || r.b || "") || "");
}

export function recordOf(span) {
  const container = span.closest(".gen-tokens");
  const entry = container && state.byUid.get(container.dataset.uid);
  return entry ? entry.version.records[Number(span.dataset.i)] : null;
}
