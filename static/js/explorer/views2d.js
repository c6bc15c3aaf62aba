// The 2D views: the attention heatmap of one head, the BertViz-style head view, the model view (every head as a
// thumbnail), and the next-token probabilities. Plain canvas and DOM; no library. Token text is only ever set as
// text (textContent, fillText), never parsed as HTML.

import { PALETTE, paletteCss, show } from "./trace.js";

// the page's colours, read once (and again when the colour scheme changes): reading computed style per label is slow
let colours = null;
const css = (name) => {
  if (!colours) colours = {};
  if (!(name in colours)) colours[name] = getComputedStyle(document.documentElement).getPropertyValue(name).trim() || "#888";
  return colours[name];
};
window.matchMedia?.("(prefers-color-scheme: dark)").addEventListener?.("change", () => { colours = null; });
const clamp = (x, a, b) => Math.max(a, Math.min(b, x));
const short = (s, n = 14) => (s.length > n ? s.slice(0, n - 1) + "…" : s);
export const fmt = (x, d = 3) => (Math.abs(x) >= 100 ? x.toFixed(0) : Math.abs(x) >= 10 ? x.toFixed(1) : x.toFixed(d));
export const pct = (p) => (p >= 0.1 ? (100 * p).toFixed(0) : p >= 0.001 ? (100 * p).toFixed(1) : (100 * p).toFixed(2)) + "%";

function sizeCanvas(canvas, w, h) {
  const dpr = window.devicePixelRatio || 1;
  canvas.width = Math.round(w * dpr);
  canvas.height = Math.round(h * dpr);
  canvas.style.width = `${w}px`;
  canvas.style.height = `${h}px`;
  const ctx = canvas.getContext("2d");
  ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
  return ctx;
}

// one head's T x T weights as an image: T x T pixels, the causal mask hatched in the panel colour
function headImage(trace, l, h) {
  const { T } = trace, img = new ImageData(T, T), base = (l * trace.H + h) * T * T, full = trace.full;
  for (let i = 0; i < T; i++) {
    for (let j = 0; j < T; j++) {
      const o = (i * T + j) * 4;
      if (j > i) {
        const g = (i + j) % 4 < 2 ? 128 : 110;
        img.data[o] = img.data[o + 1] = img.data[o + 2] = g; img.data[o + 3] = 40;
      } else {
        const b = full[base + i * T + j];
        img.data[o] = PALETTE[b * 3]; img.data[o + 1] = PALETTE[b * 3 + 1]; img.data[o + 2] = PALETTE[b * 3 + 2];
        img.data[o + 3] = 255;
      }
    }
  }
  return img;
}

function showTip(tip, wrap, x, y, parts) {
  tip.replaceChildren(...parts.map((p) => (typeof p === "string" ? document.createTextNode(p) : p)));
  tip.hidden = false;
  const w = wrap.clientWidth;
  tip.style.left = `${clamp(x + 14, 0, Math.max(0, w - 240))}px`;
  tip.style.top = `${y + 14}px`;
}

function strong(text) {
  const b = document.createElement("strong");
  b.textContent = text;
  return b;
}

// ---------------------------------------------------------------------------------------------------------------
export class Heatmap {
  constructor(canvas, { onHover, onSelectToken }) {
    this.canvas = canvas;
    this.wrap = canvas.parentElement;
    this.tip = document.createElement("div");
    this.tip.className = "tip";
    this.tip.hidden = true;
    this.wrap.append(this.tip);
    this.onHover = onHover;
    this.onSelectToken = onSelectToken;
    canvas.addEventListener("mousemove", (e) => this.move(e));
    canvas.addEventListener("mouseleave", () => { this.tip.hidden = true; this.onHover(-1); });
    canvas.addEventListener("click", (e) => {
      const cell = this.cellAt(e);
      if (cell) this.onSelectToken(cell.i);
    });
  }

  draw(trace, state) {
    this.trace = trace;
    this.state = state;
    const { T } = trace;
    const avail = Math.max(240, this.wrap.clientWidth - 8);
    const labels = T <= 64;
    const side = labels ? 84 : 28;
    this.c = clamp(Math.floor((avail - side) / T), 2, 24);
    this.x0 = side;
    this.y0 = labels ? 64 : 18;
    const size = this.c * T, w = this.x0 + size + 4, h = this.y0 + size + 4;
    const key = [state.layer, state.head, w, h].join();
    if (this.baseTrace !== trace || this.baseKey !== key) {
      this.base = this.drawBase(trace, state, w, h, labels, size);
      this.baseTrace = trace;
      this.baseKey = key;
    }
    const ctx = sizeCanvas(this.canvas, w, h);
    ctx.drawImage(this.base, 0, 0, w, h);
    // the followed token's row, and the hovered token's row and column
    ctx.lineWidth = 1.5;
    ctx.strokeStyle = css("--accent");
    ctx.strokeRect(this.x0, this.y0 + state.tok * this.c, size, this.c);
    if (state.hover >= 0) {
      ctx.strokeStyle = "rgba(255,255,255,.8)";
      ctx.strokeRect(this.x0, this.y0 + state.hover * this.c, size, this.c);
      ctx.strokeRect(this.x0 + state.hover * this.c, this.y0, this.c, size);
    }
  }

  // the cells and the labels, drawn once per head and size
  drawBase(trace, state, w, h, labels, size) {
    const { T } = trace;
    const base = document.createElement("canvas");
    const ctx = sizeCanvas(base, w, h);
    const off = document.createElement("canvas");
    off.width = off.height = T;
    off.getContext("2d").putImageData(headImage(trace, state.layer, state.head), 0, 0);
    ctx.imageSmoothingEnabled = false;
    ctx.fillStyle = css("--panel");
    ctx.fillRect(this.x0, this.y0, size, size);
    ctx.drawImage(off, this.x0, this.y0, size, size);
    ctx.fillStyle = css("--muted");
    ctx.font = `${clamp(this.c - 2, 9, 12)}px ui-monospace, monospace`;
    if (labels) {
      ctx.textAlign = "right";
      ctx.textBaseline = "middle";
      for (let i = 0; i < T; i++) ctx.fillText(short(show(trace.tokens[i]), 10), this.x0 - 4, this.y0 + (i + 0.5) * this.c);
      ctx.textAlign = "left";
      for (let j = 0; j < T; j++) {
        ctx.save();
        ctx.translate(this.x0 + (j + 0.5) * this.c, this.y0 - 4);
        ctx.rotate(-Math.PI / 3);
        ctx.fillText(short(show(trace.tokens[j]), 8), 0, 0);
        ctx.restore();
      }
    } else {
      ctx.textAlign = "right";
      ctx.textBaseline = "middle";
      const every = Math.ceil(T / 8);
      for (let i = 0; i < T; i += every) ctx.fillText(String(i), this.x0 - 4, this.y0 + (i + 0.5) * this.c);
      ctx.textAlign = "center";
      ctx.textBaseline = "bottom";
      for (let j = 0; j < T; j += every) ctx.fillText(String(j), this.x0 + (j + 0.5) * this.c, this.y0 - 3);
    }
    return base;
  }

  cellAt(e) {
    if (!this.trace) return null;
    const r = this.canvas.getBoundingClientRect();
    const i = Math.floor((e.clientY - r.top - this.y0) / this.c), j = Math.floor((e.clientX - r.left - this.x0) / this.c);
    if (i < 0 || j < 0 || i >= this.trace.T || j >= this.trace.T) return null;
    return { i, j, x: e.clientX - r.left, y: e.clientY - r.top };
  }

  move(e) {
    const cell = this.cellAt(e);
    if (!cell) { this.tip.hidden = true; return; }
    const { trace, state } = this, { i, j } = cell;
    const q = show(trace.tokens[i]), k = show(trace.tokens[j]);
    const parts = j > i
      ? [strong(q), ` (${i}) ` + gettext("cannot see") + " ", strong(k), ` (${j}): ` + gettext("it comes later (causal mask)")]
      : [strong(q), ` (${i}) → `, strong(k), ` (${j}): `, strong(fmt(trace.weight(state.layer, state.head, i, j), 4))];
    showTip(this.tip, this.wrap, cell.x, cell.y, parts);
  }
}

// ---------------------------------------------------------------------------------------------------------------
const headColor = (h, H, a) => `hsla(${Math.round((360 * h) / H)}, 75%, 50%, ${a})`;

export class HeadView {
  constructor(canvas, legend, { onHover }) {
    this.canvas = canvas;
    this.legend = legend;
    this.onHover = onHover;
    this.local = -1; // a token hovered here: only its lines
    this.side = "left";
    this.hidden = new Set();
    canvas.addEventListener("mousemove", (e) => {
      if (!this.trace) return;
      const r = canvas.getBoundingClientRect(), x = e.clientX - r.left, y = e.clientY - r.top;
      const i = Math.floor((y - this.pad) / this.rowH);
      const inLeft = x < this.W * 0.35, inRight = x > this.W * 0.65;
      const t = (inLeft || inRight) && i >= 0 && i < this.trace.T ? i : -1;
      if (t !== this.local || (inLeft ? "left" : "right") !== this.side) {
        this.local = t;
        this.side = inLeft ? "left" : "right";
        this.onHover(t);
      }
    });
    canvas.addEventListener("mouseleave", () => { this.local = -1; this.onHover(-1); });
  }

  draw(trace, state) {
    this.trace = trace;
    const { T, H } = trace, all = state.allHeads;
    this.rowH = T > 96 ? 13 : 17;
    this.pad = 8;
    this.W = Math.max(280, this.canvas.parentElement.clientWidth - 8);
    const height = T * this.rowH + 2 * this.pad;
    const heads = all ? [...Array(H).keys()].filter((h) => !this.hidden.has(h)) : [state.head];
    const focus = state.hover;
    const ctx = sizeCanvas(this.canvas, this.W, height);
    if (focus < 0) {
      // every line of the head (or the layer): thousands of curves, so drawn once and kept
      const key = [state.layer, heads.join("."), state.tok, this.W].join();
      if (this.baseTrace !== trace || this.baseKey !== key) {
        this.base = document.createElement("canvas");
        this.paint(sizeCanvas(this.base, this.W, height), trace, state, heads, -1);
        this.baseTrace = trace;
        this.baseKey = key;
      }
      ctx.drawImage(this.base, 0, 0, this.W, height);
    } else {
      this.paint(ctx, trace, state, heads, focus);
    }
    this.drawLegend(trace, state);
  }

  paint(ctx, trace, state, heads, focus) {
    const { T, H } = trace, all = state.allHeads;
    const colW = Math.min(130, this.W * 0.3);
    const y = (i) => this.pad + (i + 0.5) * this.rowH;
    const x1 = colW + 6, x2 = this.W - colW - 6;
    ctx.lineWidth = 1.4;
    for (const h of heads) {
      for (let i = 0; i < T; i++) {
        if (focus >= 0 && this.side === "left" && i !== focus) continue;
        for (let j = 0; j <= i; j++) {
          if (focus >= 0 && this.side === "right" && j !== focus) continue;
          const w = trace.weight(state.layer, h, i, j);
          if (w < 0.01) continue;
          ctx.strokeStyle = all ? headColor(h, H, Math.min(1, w)) : `rgba(58, 91, 217, ${Math.min(1, w)})`;
          ctx.beginPath();
          ctx.moveTo(x1, y(i));
          ctx.bezierCurveTo((x1 + x2) / 2, y(i), (x1 + x2) / 2, y(j), x2, y(j));
          ctx.stroke();
        }
      }
    }
    ctx.textBaseline = "middle";
    const [accent, ink, muted] = [css("--accent"), css("--ink"), css("--muted")];
    for (let i = 0; i < T; i++) {
      const label = short(show(trace.tokens[i]), 16);
      const on = i === focus, sel = i === state.tok;
      ctx.fillStyle = on ? accent : sel ? ink : muted;
      ctx.font = `${on || sel ? "bold " : ""}${this.rowH - 5}px ui-monospace, monospace`;
      ctx.textAlign = "right";
      ctx.fillText(label, colW, y(i));
      ctx.textAlign = "left";
      ctx.fillText(label, this.W - colW, y(i));
    }
  }

  drawLegend(trace, state) {
    if (!state.allHeads) { this.legend.replaceChildren(); return; }
    const chips = [];
    for (let h = 0; h < trace.H; h++) {
      const b = document.createElement("button");
      b.type = "button";
      b.className = "head-chip" + (this.hidden.has(h) ? " off" : "");
      b.style.setProperty("--c", headColor(h, trace.H, 1));
      b.textContent = `head ${h}`;
      b.addEventListener("click", () => {
        this.hidden.has(h) ? this.hidden.delete(h) : this.hidden.add(h);
        this.draw(trace, state);
      });
      chips.push(b);
    }
    this.legend.replaceChildren(...chips);
  }
}

// ---------------------------------------------------------------------------------------------------------------
export class ModelView {
  constructor(canvas, { onSelect }) {
    this.canvas = canvas;
    this.onSelect = onSelect;
    canvas.addEventListener("click", (e) => {
      const hit = this.hit(e);
      if (hit) this.onSelect(hit.l, hit.h);
    });
    canvas.addEventListener("mousemove", (e) => {
      const hit = this.hit(e);
      if (!hit) { canvas.title = ""; return; }
      const t = this.trace, st = (n) => t.headStat(hit.l, hit.h, n).toFixed(2);
      canvas.title = interpolate(gettext("layer %(l)s · head %(h)s\nprevious token %(previous)s · first token %(first)s · " +
        "itself %(self)s\nentropy %(entropy)s nats (uniform over all tokens: %(uniform)s)"), { l: hit.l, h: hit.h,
        previous: st("previous"), first: st("first"), self: st("self"), entropy: st("entropy"),
        uniform: Math.log(t.T).toFixed(2) }, true);
      canvas.style.cursor = "pointer";
    });
  }

  score(l, h, by) {
    const t = this.trace;
    if (by === "entropy") return 1 - t.headStat(l, h, "entropy") / Math.log(Math.max(2, t.T));
    return t.headStat(l, h, by);
  }

  draw(trace, state) {
    this.trace = trace;
    const { T, L, H } = trace;
    const avail = Math.max(300, this.canvas.parentElement.clientWidth - 8);
    this.s = clamp(Math.floor((avail - 40) / H) - 6, 24, 120);
    this.gap = 6;
    this.x0 = 40;
    this.y0 = 18;
    const cell = this.s + this.gap;
    const ctx = sizeCanvas(this.canvas, this.x0 + H * cell, this.y0 + L * cell);
    const dpr = window.devicePixelRatio || 1, px = Math.max(8, Math.round(this.s * dpr));
    ctx.font = "11px ui-monospace, monospace";
    ctx.fillStyle = css("--muted");
    ctx.textAlign = "center";
    ctx.textBaseline = "bottom";
    for (let h = 0; h < H; h++) ctx.fillText(`H${h}`, this.x0 + h * cell + this.s / 2, this.y0 - 3);
    ctx.textAlign = "right";
    ctx.textBaseline = "middle";
    for (let l = 0; l < L; l++) ctx.fillText(`L${l}`, this.x0 - 6, this.y0 + l * cell + this.s / 2);
    if (this.thumbsTrace !== trace || this.thumbsKey !== px) {
      this.thumbs = this.drawThumbs(trace, px);
      this.thumbsTrace = trace;
      this.thumbsKey = px;
    }
    let best = 0; // marks are relative to the strongest head, whose score they show
    if (state.markBy) for (let l = 0; l < L; l++) for (let h = 0; h < H; h++) best = Math.max(best, this.score(l, h, state.markBy));
    for (let l = 0; l < L; l++) {
      for (let h = 0; h < H; h++) {
        const x = this.x0 + h * cell, y = this.y0 + l * cell;
        ctx.fillStyle = css("--line");
        ctx.fillRect(x, y, this.s, this.s);
        ctx.drawImage(this.thumbs, h * px, l * px, px, px, x, y, this.s, this.s);
        if (state.markBy) {
          const sc = clamp(this.score(l, h, state.markBy), 0, 1), rel = best > 0 ? sc / best : 0;
          ctx.strokeStyle = `rgba(31, 200, 110, ${rel * rel})`;
          ctx.lineWidth = 4;
          ctx.strokeRect(x - 2, y - 2, this.s + 4, this.s + 4);
          if (rel >= 0.6) {
            ctx.fillStyle = "rgba(0,0,0,.7)";
            ctx.fillRect(x + this.s - 32, y + 2, 30, 15);
            ctx.fillStyle = "#fff";
            ctx.textAlign = "right";
            ctx.textBaseline = "middle";
            ctx.fillText(sc.toFixed(2), x + this.s - 4, y + 10);
          }
        }
      }
    }
    ctx.strokeStyle = css("--accent");
    ctx.lineWidth = 2.5;
    ctx.strokeRect(this.x0 + state.head * cell - 2, this.y0 + state.layer * cell - 2, this.s + 4, this.s + 4);
  }

  // every head as a px x px thumbnail, side by side in one canvas; each pixel shows the strongest weight it covers
  // (the maximum, not the mean, keeps one-token-wide diagonals visible when a thumbnail is smaller than T)
  drawThumbs(trace, px) {
    const { T, L, H } = trace, full = trace.full;
    const canvas = document.createElement("canvas");
    canvas.width = H * px;
    canvas.height = L * px;
    const ctx = canvas.getContext("2d");
    const img = ctx.createImageData(px, px);
    for (let l = 0; l < L; l++) {
      for (let h = 0; h < H; h++) {
        const base = (l * H + h) * T * T;
        for (let y = 0; y < px; y++) {
          const i0 = Math.floor((y * T) / px), i1 = Math.max(i0 + 1, Math.floor(((y + 1) * T) / px));
          for (let x = 0; x < px; x++) {
            const j0 = Math.floor((x * T) / px), j1 = Math.max(j0 + 1, Math.floor(((x + 1) * T) / px));
            let m = 0, masked = true;
            for (let i = i0; i < i1; i++) for (let j = j0; j < j1 && j <= i; j++) { masked = false; const b = full[base + i * T + j]; if (b > m) m = b; }
            const o = (y * px + x) * 4;
            if (masked) { img.data[o + 3] = 0; continue; }
            img.data[o] = PALETTE[m * 3]; img.data[o + 1] = PALETTE[m * 3 + 1]; img.data[o + 2] = PALETTE[m * 3 + 2]; img.data[o + 3] = 255;
          }
        }
        ctx.putImageData(img, h * px, l * px);
      }
    }
    return canvas;
  }

  hit(e) {
    if (!this.trace) return null;
    const r = this.canvas.getBoundingClientRect(), cell = this.s + this.gap;
    const h = Math.floor((e.clientX - r.left - this.x0) / cell), l = Math.floor((e.clientY - r.top - this.y0) / cell);
    if (l < 0 || h < 0 || l >= this.trace.L || h >= this.trace.H) return null;
    return { l, h };
  }
}

// ---------------------------------------------------------------------------------------------------------------
export class Probabilities {
  constructor({ list, summary, sampleButton, sampleOut }) {
    this.list = list;
    this.summary = summary;
    this.sampleOut = sampleOut;
    sampleButton.addEventListener("click", () => this.sample());
  }

  draw(trace, tau) {
    this.trace = trace;
    this.p = trace.probabilities(tau);
    const top = trace.topLogits(10);
    const max = this.p[top[0].id];
    this.list.replaceChildren(...top.map(({ id }) => {
      const li = document.createElement("li");
      const name = document.createElement("span");
      name.className = "tok";
      name.textContent = show(trace.vocab(id));
      const bar = document.createElement("span");
      bar.className = "bar";
      bar.style.setProperty("--w", `${(100 * this.p[id]) / max}%`);
      const val = document.createElement("span");
      val.className = "val";
      val.textContent = pct(this.p[id]);
      li.append(name, bar, val);
      return li;
    }));
    let ent = 0;
    for (const q of this.p) if (q > 0) ent -= q * Math.log(q);
    const sorted = Array.from(this.p).sort((a, b) => b - a);
    let acc = 0, n90 = 0;
    while (acc < 0.9 && n90 < sorted.length) acc += sorted[n90++];
    this.summary.textContent = interpolate(gettext("At temperature %(tau)s: entropy %(entropy)s nats; %(n)s of %(V)s " +
      "tokens hold 90% of the probability (what top-p 0.9 would sample from). Lower temperature sharpens the " +
      "distribution, higher flattens it."), { tau: tau.toFixed(2), entropy: ent.toFixed(2), n: n90.toLocaleString(),
      V: trace.V.toLocaleString() }, true);
  }

  sample() {
    if (!this.p) return;
    let r = Math.random(), id = 0;
    for (; id < this.p.length - 1; id++) { r -= this.p[id]; if (r <= 0) break; }
    this.sampleOut.replaceChildren(strong(show(this.trace.vocab(id))), document.createTextNode(` (p = ${pct(this.p[id])})`));
  }
}
