// An output panel of the Generate page (A, and B when comparing): its versions (a generation and its branches),
// the tokens as they stream in, the final stats and notes. All text from the model goes in through textContent.

import { describe } from "./form.js";
import { send } from "./socket.js";
import { boot, I, noteText, state, STOP_REASONS } from "./state.js";
import { bubble, el, markCut, pieceOf, ROLES, textOf, tokenSpan } from "./tokens.js";

export class Panel {
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
    this.body.replaceChildren(el("p", "muted out-empty", gettext("Output appears here, token by token.")));
    this.stats.replaceChildren();
    this.notes.hidden = true;
    this.versionsEl.hidden = true;
    this.setStatus(gettext("idle"));
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
    this.setStatus(gettext("queued"), "warn");
  }

  started(m) {
    const branchOf = this.pending ? this.pending.branchOf : null;
    const version = { uid: m.generation, heardAt: performance.now(), records: [], finished: false, final: null, gap: false, model: m.model,
      params: m.params, sentAt: this.pending ? this.pending.sentAt : performance.now(), firstAt: null,
      parent: m.parent, branchIndex: m.branch_index, label: "" };
    this.pending = null;
    if (!branchOf) this.versions = [];
    version.label = branchOf ? `#${m.branch_index} → ${pieceOf(branchOf)}` : gettext("original");
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
    this.setStatus(gettext("generating"), "run");
  }

  async state(version, m) {
    version.heardAt = performance.now();
    if (m.status === "loading") { this.setStatus(I(gettext("loading %(model)s…"), m), "warn"); return; }
    if (m.status === "running") {
      version.running = m;
      this.setStatus(gettext("generating"), "run");
      if (m.notes && m.notes.length) this.showNotes(m.notes.map(noteText));
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
    if (m.status === "failed") this.setStatus(gettext("failed"), "bad");
    else this.setStatus(m.status === "stopped" ? gettext("stopped") : gettext("done"), m.status === "stopped" ? "warn" : "ok");
  }

  failed(message) {
    this.pending = null;
    this.setStatus(gettext("refused"), "bad");
    this.showNotes([message], "bad");
  }

  connectionLost() {
    this.pending = null;
    for (const v of this.versions) {
      if (!v.finished) {
        v.finished = true;
        v.final = { status: "stopped", stop_reason: "disconnected", stats: {}, notes: [], text: textOf(v.records) };
        if (v === this.current) { this.show(v); this.setStatus(gettext("connection lost"), "bad"); }
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
      reply.append(el("span", "who", ROLES.assistant), this.tokensEl);
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
    this.versionsEl.append(el("span", "muted small", gettext("Branches:")));
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
    const parts = [I(ngettext("%(n)s token", "%(n)s tokens", generated), { n: generated })];
    if (s.ttft_ms !== undefined) parts.push(I(gettext("TTFT %(s)s s"), { s: (s.ttft_ms / 1000).toFixed(2) }));
    if (s.tokens_per_s !== undefined) parts.push(I(gettext("%(rate)s tokens/s"), { rate: s.tokens_per_s.toFixed(1) }));
    parts.push(I(gettext("stop: %(why)s"), { why: STOP_REASONS[f.stop_reason] || f.stop_reason || f.status }));
    for (const p of parts) this.stats.append(el("span", "stat", p));
    const detail = [];
    if (f.prompt_tokens) detail.push(I(gettext("prompt %(n)s tokens"), { n: f.prompt_tokens }));
    if (s.load_ms) detail.push(I(gettext("model load %(s)s s"), { s: (s.load_ms / 1000).toFixed(1) }));
    if (s.queue_ms !== undefined) detail.push(I(gettext("queue %(ms)s ms"), { ms: Math.round(s.queue_ms) }));
    if (f.seed !== undefined && f.seed !== null) detail.push(I(gettext("seed %(seed)s"), f));
    if (detail.length) this.stats.append(el("span", "stat muted", detail.join(" · ")));
    const notes = (f.notes || []).map(noteText);
    if (f.error) notes.unshift(f.error);
    // context_notes are ordinary facts (a reply outgrew the context window): a quiet note, never a warning box
    const quiet = (f.context_notes || []).map(noteText);
    if (notes.length) this.showNotes([...notes, ...quiet], f.error ? "bad" : "warn");
    else if (quiet.length) this.showNotes(quiet, "info");
    else this.notes.hidden = true;
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
