// The alternatives pop-over: hover, tap or focus a token to see the alternatives the sampler had (after temperature
// and filters, and the model's raw softmax); click one to branch the generation from it.

import { $, I, state } from "./state.js";
import { el, pct } from "./tokens.js";

const pop = $("tok-pop");
let popFor = null;
let hideTimer = null;

function showPop(span) {
  const container = span.closest(".gen-tokens");
  const entry = container && state.byUid.get(container.dataset.uid);
  if (!entry) return;
  const { panel, version } = entry;
  const r = version.records[Number(span.dataset.i)];
  if (!r) return;
  clearTimeout(hideTimer);
  popFor = span;
  for (const s of document.querySelectorAll(".gt.active")) s.classList.remove("active");
  span.classList.add("active");
  const canBranch = version === panel.current && version.finished && !panel.running &&
    (state.mode !== "chat" || !panel.history.some((t) => t.version === version));
  const head = el("div", "pop-head");
  head.append(el("code", "", r.eos ? (r.t || gettext("end of text")) : (r.t || r.b || "")),
    el("span", "muted", " " + I(gettext("id %(id)s · position %(i)s"), r)));
  const probs = el("p", "pop-probs");
  probs.append(el("span", "", I(gettext("sampled with %(p)s"), { p: pct(r.p) })), el("span", "muted", " · " + I(gettext("raw %(p)s"), { p: pct(r.rp) })));
  if (r.forced) probs.append(el("span", "badge warn", gettext("picked by you")));
  const cols = el("div", "pop-cols");
  cols.append(altTable(gettext("After temperature & filters"), r.alt || [], r, canBranch, panel, version),
    altTable(gettext("Raw (the model's softmax)"), r.ralt || [], r, canBranch, panel, version));
  const foot = el("p", "pop-foot muted small", canBranch ? gettext("Click an alternative to continue from it instead.")
    : panel.running ? gettext("Branching is possible once the generation has finished.") : gettext("Branch from the latest output only."));
  pop.replaceChildren(head, probs, cols, foot);
  pop.hidden = false;
  const rect = span.getBoundingClientRect();
  const width = Math.min(560, window.innerWidth - 16);
  pop.style.width = width + "px";
  const left = Math.max(8, Math.min(rect.left + window.scrollX, window.scrollX + window.innerWidth - width - 8));
  pop.style.left = left + "px";
  pop.style.top = (rect.bottom + window.scrollY + 6) + "px";
}

function altTable(title, alts, r, canBranch, panel, version) {
  const box = el("div", "alt-box");
  box.append(el("h3", "", title));
  if (!alts.length) { box.append(el("p", "muted small", "—")); return box; }
  const list = el("ol", "alts");
  for (const [id, piece, p] of alts) {
    const li = el("li", id === r.id ? "chosen" : "");
    const b = el("button", "alt");
    b.type = "button";
    b.disabled = !canBranch || id === r.id;
    b.title = id === r.id ? gettext("the token that was generated") : canBranch ? gettext("continue from this token") : "";
    const bar = el("span", "alt-bar");
    bar.style.setProperty("--w", `${Math.max(1, 100 * p).toFixed(1)}%`);
    b.append(el("code", "alt-piece", piece), bar, el("span", "alt-p", pct(p)));
    b.addEventListener("click", () => {
      hidePop(true);
      panel.request({ action: "branch", generation: version.uid, index: r.i, token: id },
        { branchOf: { t: piece } });
    });
    li.append(b);
    list.append(li);
  }
  box.append(list);
  return box;
}

export function hidePop(now = false) {
  clearTimeout(hideTimer);
  const hide = () => {
    pop.hidden = true;
    if (popFor) popFor.classList.remove("active");
    popFor = null;
  };
  if (now) hide(); else hideTimer = setTimeout(hide, 250);
}

document.addEventListener("mouseover", (e) => {
  const span = e.target.closest && e.target.closest(".gen-tokens .gt");
  if (span && span !== popFor) showPop(span);
  else if (span || (e.target.closest && e.target.closest("#tok-pop"))) clearTimeout(hideTimer);
});
document.addEventListener("mouseout", (e) => {
  const from = e.target.closest && (e.target.closest(".gen-tokens .gt") || e.target.closest("#tok-pop"));
  const to = e.relatedTarget && e.relatedTarget.closest && (e.relatedTarget.closest(".gen-tokens .gt") || e.relatedTarget.closest("#tok-pop"));
  if (from && !to) hidePop();
});
document.addEventListener("click", (e) => { // taps (touch screens) and keyboard users
  const span = e.target.closest && e.target.closest(".gen-tokens .gt");
  if (span) { if (span === popFor && !pop.hidden) hidePop(true); else showPop(span); return; }
  if (!e.target.closest || !e.target.closest("#tok-pop")) hidePop(true);
});
document.addEventListener("focusin", (e) => { if (e.target.matches && e.target.matches(".gen-tokens .gt")) showPop(e.target); });
document.addEventListener("keydown", (e) => { if (e.key === "Escape") hidePop(true); });
