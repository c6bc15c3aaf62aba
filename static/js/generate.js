// The Generate page: a small island around one websocket (ws/inference/, apps/inference/consumers.py).
//
// The page sends {"action": "generate" | "branch" | "stop", ...}; the server answers "created", then the worker's
// "tokens" batches (each placed by its `offset`, so a repeated batch changes nothing) and a final "state". If a batch
// was dropped on the way (channels-redis drops messages to slow clients), the final state's n_tokens says so and the
// stored generation is fetched instead. All text from the model goes into the DOM through textContent.

const boot = JSON.parse(document.getElementById("gen-boot").textContent);
const $ = (id) => document.getElementById(id);
const FIELDS = ["temperature", "top_p", "min_p", "repetition_penalty", "top_k", "max_new_tokens", "seed", "stop"];
const PRESETS = {
  greedy: { temperature: 0, top_k: 0, top_p: 1, min_p: 0, repetition_penalty: 1 },
  precise: { temperature: 0.3, top_k: 40, top_p: 0.9, min_p: 0.05, repetition_penalty: 1.1 },
  balanced: { temperature: 0.8, top_k: 40, top_p: 0.95, min_p: 0.05, repetition_penalty: 1.1 },
  creative: { temperature: 1.2, top_k: 0, top_p: 0.98, min_p: 0.05, repetition_penalty: 1.05 },
};
const STOP_REASONS = { eos: "end of text", stop: "stop string", length: "max new tokens", user: "stopped",
  disconnected: "connection lost", timeout: "time limit", error: "error" };

const models = Object.fromEntries(boot.models.map((m) => [m.slug, m]));
const defaults = { ...boot.defaults, stop: "", seed: "", model: boot.model };

const state = {
  mode: "completion",
  compare: false,
  editing: "a",
  colorBy: "p",
  settings: { a: { ...defaults }, b: { ...defaults } },
  panels: {},
  byUid: new Map(), // generation uid -> {panel, version}
};

// ------------------------------------------------------------------------------------------------------------------
// the socket

let ws = null;
let retry = 0;
const status = $("ws-status");

function connect() {
  const scheme = location.protocol === "https:" ? "wss://" : "ws://";
  ws = new WebSocket(scheme + location.host + boot.urls.ws);
  ws.onopen = () => { retry = 0; status.textContent = "live"; status.className = "badge ok"; };
  ws.onclose = () => {
    status.textContent = "disconnected — reconnecting…";
    status.className = "badge bad";
    for (const panel of Object.values(state.panels)) panel.connectionLost();
    setTimeout(connect, Math.min(5000, 300 * 2 ** retry++));
  };
  ws.onmessage = (e) => handle(JSON.parse(e.data));
}

function send(message) {
  if (!ws || ws.readyState !== WebSocket.OPEN) {
    showError("Not connected to the server yet: try again in a moment.");
    return false;
  }
  ws.send(JSON.stringify(message));
  return true;
}

function handle(m) {
  if (m.type === "error") {
    const panel = m.panel && state.panels[m.panel];
    if (panel && panel.pending) panel.failed(m.message);
    else showError(m.message);
    updateButtons();
    return;
  }
  if (m.type === "created") {
    const panel = state.panels[m.panel];
    if (!panel) return;
    const version = panel.started(m);
    state.byUid.set(m.generation, { panel, version });
    updateButtons();
    return;
  }
  const entry = state.byUid.get(m.generation);
  if (!entry) return;
  if (m.type === "tokens") entry.panel.tokens(entry.version, m);
  else if (m.type === "state") entry.panel.state(entry.version, m);
  updateButtons();
}

// ------------------------------------------------------------------------------------------------------------------
// an output panel (A, and B when comparing)

class Panel {
  constructor(key, el) {
    this.key = key;
    this.el = el;
    this.body = el.querySelector(".out-body");
    this.statusEl = el.querySelector(".out-status");
    this.title = el.querySelector(".out-title");
    this.stats = el.querySelector(".gen-stats");
    this.notes = el.querySelector(".out-notes");
    this.versionsEl = el.querySelector(".versions");
    this.reset();
  }

  reset() {
    this.history = []; // chat: finished turns [{role, content, version?}]
    this.versions = []; // the alternatives of the current output (the first generation and its branches)
    this.current = null;
    this.pending = null; // a request sent, no "created" yet
    this.prompt = "";
    this.body.replaceChildren(el("p", "muted out-empty", "Output appears here, token by token."));
    this.stats.replaceChildren();
    this.notes.hidden = true;
    this.versionsEl.hidden = true;
    this.setStatus("idle");
  }

  get running() {
    return Boolean(this.pending) || Boolean(this.current && !this.current.finished);
  }

  setStatus(text, kind = "") {
    this.statusEl.textContent = text;
    this.statusEl.className = "badge out-status" + (kind ? " " + kind : "");
  }

  request(message, { branchOf = null } = {}) {
    this.pending = { sentAt: performance.now(), branchOf };
    if (!send({ ...message, panel: this.key })) { this.pending = null; return; }
    this.setStatus("queued", "warn");
  }

  started(m) {
    const branchOf = this.pending ? this.pending.branchOf : null;
    const version = { uid: m.generation, heardAt: performance.now(), records: [], finished: false, final: null, gap: false, model: m.model,
      params: m.params, sentAt: this.pending ? this.pending.sentAt : performance.now(), firstAt: null,
      parent: m.parent, branchIndex: m.branch_index, label: "" };
    this.pending = null;
    if (!branchOf) this.versions = [];
    version.label = branchOf ? `#${m.branch_index} → ${pieceOf(branchOf)}` : "original";
    this.versions.push(version);
    this.show(version);
    this.title.textContent = describe(m.model, m.params);
    return version;
  }

  tokens(version, m) {
    version.heardAt = performance.now();
    if (m.offset > version.records.length) version.gap = true; // a batch went missing: the stored copy fills it in
    if (version.gap) return;
    const fresh = m.tokens.slice(version.records.length - m.offset);
    if (!fresh.length) return;
    if (version.firstAt === null) version.firstAt = performance.now();
    version.records.push(...fresh);
    if (version === this.current) this.appendTokens(version, fresh);
    this.setStatus("generating", "run");
  }

  async state(version, m) {
    version.heardAt = performance.now();
    if (m.status === "loading") { this.setStatus(`loading ${m.model}…`, "warn"); return; }
    if (m.status === "running") {
      version.running = m;
      this.setStatus("generating", "run");
      if (m.notes && m.notes.length) this.showNotes(m.notes);
      return;
    }
    version.final = m;
    version.finished = true;
    if (version.gap || version.records.length < m.n_tokens) {
      const stored = await fetch(boot.urls.generation.replace("00000000-0000-0000-0000-000000000000", version.uid))
        .then((r) => r.json());
      version.records = stored.tokens;
      version.gap = false;
    }
    if (this.current === version) this.show(version);
    if (m.status === "failed") this.setStatus("failed", "bad");
    else this.setStatus(m.status === "stopped" ? "stopped" : "done", m.status === "stopped" ? "warn" : "ok");
  }

  failed(message) {
    this.pending = null;
    this.setStatus("refused", "bad");
    this.showNotes([message], "bad");
  }

  connectionLost() {
    this.pending = null;
    for (const v of this.versions) {
      if (!v.finished) {
        v.finished = true;
        v.final = { status: "stopped", stop_reason: "disconnected", stats: {}, notes: [], text: textOf(v.records) };
        if (v === this.current) { this.show(v); this.setStatus("connection lost", "bad"); }
      }
    }
  }

  // -- rendering ----------------------------------------------------------------------------------------------------

  show(version) {
    this.current = version;
    this.body.replaceChildren();
    if (state.mode === "chat") {
      for (const turn of this.history) this.body.append(bubble(turn.role, turn.version ? null : turn.content, turn.version));
      this.tokensEl = el("div", "bubble-text gen-tokens");
      const reply = el("div", "bubble assistant");
      reply.append(el("span", "who", "assistant"), this.tokensEl);
      this.body.append(reply);
    } else {
      this.tokensEl = el("div", "gen-tokens");
      this.tokensEl.append(el("span", "prompt-text", this.prompt));
      this.body.append(this.tokensEl);
    }
    this.tokensEl.dataset.uid = version.uid;
    this.appendTokens(version, version.records);
    this.renderVersions();
    this.renderStats(version);
  }

  appendTokens(version, records) {
    const frag = document.createDocumentFragment();
    for (const r of records) frag.append(tokenSpan(r, version));
    this.tokensEl.append(frag);
    if (version.final) markCut(this.tokensEl, version);
    this.body.scrollTop = this.body.scrollHeight;
  }

  renderVersions() {
    this.versionsEl.replaceChildren();
    if (this.versions.length < 2) { this.versionsEl.hidden = true; return; }
    this.versionsEl.hidden = false;
    this.versionsEl.append(el("span", "muted small", "Branches:"));
    this.versions.forEach((v, i) => {
      const b = el("button", "chip-button", `${i + 1} · ${v.label}`);
      b.type = "button";
      b.setAttribute("aria-pressed", String(v === this.current));
      b.addEventListener("click", () => { if (!this.running) this.show(v); });
      this.versionsEl.append(b);
    });
  }

  renderStats(version) {
    this.stats.replaceChildren();
    const f = version.final;
    if (!f) { this.notes.hidden = true; return; }
    const s = f.stats || {};
    const generated = s.generated ?? version.records.length;
    const parts = [`${generated} token${generated === 1 ? "" : "s"}`];
    if (s.ttft_ms !== undefined) parts.push(`TTFT ${(s.ttft_ms / 1000).toFixed(2)} s`);
    if (s.tokens_per_s !== undefined) parts.push(`${s.tokens_per_s.toFixed(1)} tokens/s`);
    parts.push(`stop: ${STOP_REASONS[f.stop_reason] || f.stop_reason || f.status}`);
    for (const p of parts) this.stats.append(el("span", "stat", p));
    const detail = [];
    if (f.prompt_tokens) detail.push(`prompt ${f.prompt_tokens} tokens`);
    if (s.load_ms) detail.push(`model load ${(s.load_ms / 1000).toFixed(1)} s`);
    if (s.queue_ms !== undefined) detail.push(`queue ${Math.round(s.queue_ms)} ms`);
    if (f.seed !== undefined && f.seed !== null) detail.push(`seed ${f.seed}`);
    if (detail.length) this.stats.append(el("span", "stat muted", detail.join(" · ")));
    const notes = [...(f.notes || [])];
    if (f.error) notes.unshift(f.error);
    if (notes.length) this.showNotes(notes, f.error ? "bad" : "warn"); else this.notes.hidden = true;
  }

  showNotes(notes, kind = "warn") {
    this.notes.replaceChildren(...notes.map((n) => el("p", "", n)));
    this.notes.className = "out-notes " + kind;
    this.notes.hidden = false;
  }

  // chat: the finished reply joins the conversation before the next message
  commitTurn() {
    const v = this.current;
    if (!v || !v.final) return;
    this.history.push({ role: "assistant", content: v.final.text ?? textOf(v.records), version: v });
    this.versions = [];
  }
}

// ------------------------------------------------------------------------------------------------------------------
// tokens, their colours, the alternatives pop-over and branching

function el(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined) node.textContent = text;
  return node;
}

function bubble(role, text, version) {
  const b = el("div", "bubble " + role);
  b.append(el("span", "who", role));
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

function probOf(r) {
  const p = state.colorBy === "rp" ? r.rp : r.p;
  return p === null || p === undefined ? 1 : p;
}

function tokenSpan(r, version) {
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

function recolor() {
  for (const span of document.querySelectorAll(".gen-tokens .gt")) {
    const r = recordOf(span);
    if (r) span.style.setProperty("--p", probOf(r).toFixed(3));
  }
}

// tokens after a stop string (the worker cut the text there) are shown struck through
function markCut(container, version) {
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

function textOf(records) {
  return records.filter((r) => !r.eos).map((r) => r.t).join("");
}

function pct(p) {
  if (p === null || p === undefined) return "—";
  return p >= 0.1 ? `${(100 * p).toFixed(1)}%` : p >= 0.001 ? `${(100 * p).toFixed(2)}%` : `${(100 * p).toExponential(1)}%`;
}

function pieceOf(r) {
  return JSON.stringify(r && (r.t || r.b || "") || "");
}

function recordOf(span) {
  const container = span.closest(".gen-tokens");
  const entry = container && state.byUid.get(container.dataset.uid);
  return entry ? entry.version.records[Number(span.dataset.i)] : null;
}

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
  head.append(el("code", "", r.eos ? (r.t || "end of text") : (r.t || r.b || "")),
    el("span", "muted", ` id ${r.id} · position ${r.i}`));
  const probs = el("p", "pop-probs");
  probs.append(el("span", "", `sampled with ${pct(r.p)}`), el("span", "muted", ` · raw ${pct(r.rp)}`));
  if (r.forced) probs.append(el("span", "badge warn", "picked by you"));
  const cols = el("div", "pop-cols");
  cols.append(altTable("After temperature & filters", r.alt || [], r, canBranch, panel, version),
    altTable("Raw (the model's softmax)", r.ralt || [], r, canBranch, panel, version));
  const foot = el("p", "pop-foot muted small", canBranch ? "Click an alternative to continue from it instead."
    : panel.running ? "Branching is possible once the generation has finished." : "Branch from the latest output only.");
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
    b.title = id === r.id ? "the token that was generated" : canBranch ? "continue from this token" : "";
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

function hidePop(now = false) {
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

// ------------------------------------------------------------------------------------------------------------------
// the settings form: one set of settings per panel; the form edits the one chosen in "Settings of A / B"

function describe(model, params) {
  const bits = [model.name];
  if (params.temperature === 0) bits.push("greedy");
  else {
    bits.push(`T ${params.temperature}`);
    if (params.top_k) bits.push(`top-k ${params.top_k}`);
    if (params.top_p < 1) bits.push(`top-p ${params.top_p}`);
    if (params.min_p) bits.push(`min-p ${params.min_p}`);
  }
  if (params.repetition_penalty !== 1) bits.push(`rep ${params.repetition_penalty}`);
  if (params.seed !== null && params.seed !== undefined) bits.push(`seed ${params.seed}`);
  return bits.join(" · ");
}

function loadForm() {
  const s = state.settings[state.editing];
  $("model").value = s.model;
  for (const f of FIELDS) $(f).value = s[f] ?? "";
  syncOutputs();
  updateModel();
}

function saveForm() {
  const s = state.settings[state.editing];
  s.model = $("model").value;
  for (const f of FIELDS) s[f] = $(f).value;
  syncOutputs();
}

function syncOutputs() {
  for (const out of document.querySelectorAll("#settings output")) {
    const input = $(out.htmlFor.value || out.getAttribute("for"));
    out.textContent = input.value;
  }
}

function updateModel() {
  const m = models[$("model").value];
  $("model-summary").textContent = m ? m.summary : "";
  const chatOK = activePanels().every((k) => (models[state.settings[k].model] || {}).is_chat);
  $("tab-chat").disabled = !chatOK;
  $("chat-note").textContent = chatOK ? "" : "chat needs a model with a chat template (SmolLM2 has one)";
  if (!chatOK && state.mode === "chat") setMode("completion");
}

function params(key) {
  const s = state.settings[key];
  const num = (v) => (v === "" || v === null || v === undefined ? null : Number(v));
  return {
    temperature: num(s.temperature), top_k: num(s.top_k), top_p: num(s.top_p), min_p: num(s.min_p),
    repetition_penalty: num(s.repetition_penalty), max_new_tokens: num(s.max_new_tokens), seed: num(s.seed),
    stop: String(s.stop || "").split("\n").filter((x) => x.length),
  };
}

function activePanels() {
  return state.compare ? ["a", "b"] : ["a"];
}

function setMode(mode) {
  state.mode = mode;
  for (const tab of document.querySelectorAll(".mode-tabs [data-mode]")) tab.setAttribute("aria-selected", String(tab.dataset.mode === mode));
  $("completion-input").hidden = mode !== "completion";
  $("chat-input").hidden = mode !== "chat";
  $("go").textContent = mode === "chat" ? "Send" : "Generate";
  for (const p of Object.values(state.panels)) p.reset();
}

function setCompare(on) {
  state.compare = on;
  $("edit-tabs").hidden = !on;
  state.panels.b.el.hidden = !on;
  $("panels").classList.toggle("two", on);
  if (!on && state.editing === "b") setEditing("a");
  updateModel();
}

function setEditing(key) {
  saveForm();
  state.editing = key;
  for (const b of document.querySelectorAll("[data-edit]")) b.setAttribute("aria-pressed", String(b.dataset.edit === key));
  loadForm();
}

function showError(message) {
  const box = $("form-error");
  box.textContent = message;
  box.hidden = !message;
}

function updateButtons() {
  const running = Object.values(state.panels).some((p) => p.running);
  $("stop-button").disabled = !running;
  $("go").disabled = running;
}

function generate() {
  saveForm();
  showError("");
  hidePop(true);
  const keys = activePanels();
  if (state.mode === "completion") {
    const prompt = $("prompt").value;
    if (!prompt) { showError("Type a prompt for the model to continue."); return; }
    for (const k of keys) {
      const panel = state.panels[k];
      panel.prompt = prompt;
      panel.history = [];
      panel.request({ action: "generate", mode: "completion", model: state.settings[k].model, prompt, params: params(k) });
    }
  } else {
    const text = $("message").value.trim();
    if (!text) { showError("Type a message."); return; }
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

function stopAll() {
  for (const panel of Object.values(state.panels)) {
    if (panel.current && !panel.current.finished) send({ action: "stop", generation: panel.current.uid });
  }
}

// ------------------------------------------------------------------------------------------------------------------
// wiring

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
      panel.setStatus("no news", "bad");
      panel.showNotes(["No word from the worker for a minute: it may be busy with other requests, or it stopped. " +
        "Press Stop and try again; the System page shows whether an infer worker is running."], "bad");
    }
  }
}, 5000);

loadForm();
setCompare(false);
connect();
