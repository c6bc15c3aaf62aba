// Reads the binary trace written by workers/gpt/trace.py: "LLTR", uint32 version, uint32 header length, JSON
// header, then 8-aligned little-endian arrays the header indexes. Attention is the lower triangle of every head,
// one byte per weight, sqrt-encoded: p = (byte / 255)^2.

const TYPES = { uint8: Uint8Array, int32: Int32Array, float32: Float32Array, float16: null };

function halfToFloat(h) {
  const s = h & 0x8000 ? -1 : 1, e = (h >> 10) & 0x1f, f = h & 0x3ff;
  if (e === 0) return s * 2 ** -14 * (f / 1024);
  if (e === 31) return f ? NaN : s * Infinity;
  return s * 2 ** (e - 15) * (1 + f / 1024);
}

export function parseTrace(buffer) {
  const bytes = new Uint8Array(buffer);
  const magic = String.fromCharCode(...bytes.subarray(0, 4));
  if (magic !== "LLTR") throw new Error("not an explorer trace");
  const view = new DataView(buffer);
  const version = view.getUint32(4, true), n = view.getUint32(8, true);
  if (version !== 1) throw new Error(`trace version ${version} is not supported: trace the text again`);
  const header = JSON.parse(new TextDecoder().decode(bytes.subarray(12, 12 + n)));
  const base = 12 + n;
  const arrays = {};
  for (const [name, spec] of Object.entries(header.arrays)) {
    const count = spec.shape.reduce((a, b) => a * b, 1);
    const offset = base + spec.offset;
    if (spec.dtype === "float16") {
      const raw = new Uint16Array(buffer.slice(offset, offset + 2 * count));
      arrays[name] = Float32Array.from(raw, halfToFloat);
    } else {
      const Type = TYPES[spec.dtype];
      arrays[name] = new Type(buffer.slice(offset, offset + Type.BYTES_PER_ELEMENT * count));
    }
  }
  return new Trace(header, arrays);
}

export class Trace {
  constructor(header, arrays) {
    this.header = header;
    this.a = arrays;
    this.T = header.n_tokens;
    this.L = header.n_layer;
    this.H = header.n_head;
    this.tokens = header.tokens;
    this.ids = header.token_ids;
    this.config = header.config;
    this.K = arrays.mlp_neurons.length / this.L;
    this.V = arrays.logits.length;
    this._full = null;
  }

  // (L*H) heads of T*T bytes, row-major, zero above the diagonal: the 3D scene's texture and the 2D views' source
  get full() {
    if (this._full) return this._full;
    const { T, L, H } = this, tri = (T * (T + 1)) / 2;
    const src = this.a.attn, out = new Uint8Array(L * H * T * T);
    for (let k = 0; k < L * H; k++) {
      let s = k * tri;
      const o = k * T * T;
      for (let i = 0; i < T; i++) {
        out.set(src.subarray(s, s + i + 1), o + i * T);
        s += i + 1;
      }
    }
    return (this._full = out);
  }

  // the encoded byte of weight (layer, head, query i, key j); 0 above the diagonal
  byte(l, h, i, j) {
    return j > i ? 0 : this.full[((l * this.H + h) * this.T + i) * this.T + j];
  }

  weight(l, h, i, j) {
    const b = this.byte(l, h, i, j) / 255;
    return b * b;
  }

  row(l, h, i) {
    const out = new Float32Array(this.T);
    for (let j = 0; j <= i; j++) out[j] = this.weight(l, h, i, j);
    return out;
  }

  // the top n keys of query i in (l, h): [{j, w}] by weight
  topKeys(l, h, i, n = 3) {
    const r = this.row(l, h, i);
    return Array.from(r, (w, j) => ({ j, w })).slice(0, i + 1).sort((a, b) => b.w - a.w).slice(0, n);
  }

  residual(l, t) { return this.a.residual_norm[l * this.T + t]; }  // l = 0 is the embedding
  attnWrite(l, t) { return this.a.attn_write_norm[l * this.T + t]; }
  mlpWrite(l, t) { return this.a.mlp_write_norm[l * this.T + t]; }
  headStat(l, h, name) {
    const c = this.header.head_stats_columns.indexOf(name);
    return this.a.head_stats[(l * this.H + h) * 4 + c];
  }
  neuron(l, k) { return this.a.mlp_neurons[l * this.K + k]; }
  neuronValue(l, k, t) { return this.a.mlp_values[(l * this.K + k) * this.T + t]; }
  tokenNeuron(l, t) { return { n: this.a.mlp_token_neuron[l * this.T + t], v: this.a.mlp_token_value[l * this.T + t] }; }

  vocab(id) {
    const s = this.header.vocab[String(id)];
    return s === undefined ? `#${id}` : s;
  }

  // the next-token distribution at temperature tau, from the full last-position logits
  probabilities(tau) {
    const z = this.a.logits, t = Math.max(tau, 1e-3);
    let m = -Infinity;
    for (let i = 0; i < z.length; i++) if (z[i] > m) m = z[i];
    const p = new Float32Array(z.length);
    let sum = 0;
    for (let i = 0; i < z.length; i++) { p[i] = Math.exp((z[i] - m) / t); sum += p[i]; }
    for (let i = 0; i < z.length; i++) p[i] /= sum;
    return p;
  }

  topLogits(n) {
    const z = this.a.logits;
    const idx = Array.from(Object.keys(this.header.vocab), Number).filter((i) => i < z.length);
    return idx.sort((a, b) => z[b] - z[a]).slice(0, n).map((i) => ({ id: i, logit: z[i] }));
  }

  nextGuesses(t) {
    const k = this.a.next_ids.length / this.T, out = [];
    for (let r = 0; r < k; r++) out.push({ id: this.a.next_ids[t * k + r], p: this.a.next_probs[t * k + r] });
    return out;
  }
}

// a readable form of a token: whitespace made visible
export function show(token) {
  return token.replace(/ /g, "·").replace(/\n/g, "↵").replace(/\t/g, "⇥") || "∅";
}

// the colour scale every view shares: dark blue → violet → orange → pale yellow, on the sqrt-encoded byte
const STOPS = [[13, 16, 40], [72, 30, 120], [170, 50, 110], [240, 110, 50], [252, 230, 150]];
export const PALETTE = (() => {
  const out = new Uint8Array(256 * 3);
  for (let b = 0; b < 256; b++) {
    const x = (b / 255) * (STOPS.length - 1), i = Math.min(Math.floor(x), STOPS.length - 2), f = x - i;
    for (let c = 0; c < 3; c++) out[b * 3 + c] = Math.round(STOPS[i][c] * (1 - f) + STOPS[i + 1][c] * f);
  }
  return out;
})();

export function paletteCss(b) {
  return `rgb(${PALETTE[b * 3]},${PALETTE[b * 3 + 1]},${PALETTE[b * 3 + 2]})`;
}
