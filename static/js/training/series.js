// Pure functions on a run's metrics: merging rows by step, smoothing, spike-keeping downsampling, x-axis modes.
// Rows arrive as arrays in the server's field order (apps/training/realtime.py METRIC_FIELDS / EVAL_FIELDS).

export const STEP = { step: 0, loss: 1, lr: 2, grad_norm: 3, ms: 4, tokens_per_s: 5, mfu: 6, elapsed: 7 };
export const EVAL = { step: 0, train_loss: 1, val_loss: 2, elapsed: 3 };

// Merge `incoming` rows into `rows` (both sorted by step): a new step is appended or inserted, a known step is
// replaced. Events can overlap the history a page loaded, or arrive twice; the result never holds a step twice.
export function mergeRows(rows, incoming) {
  for (const row of incoming) {
    const step = row[0];
    const n = rows.length;
    if (n === 0 || rows[n - 1][0] < step) { rows.push(row); continue; }
    let lo = 0, hi = n - 1;
    while (lo < hi) {                      // first index whose step >= step
      const mid = (lo + hi) >> 1;
      if (rows[mid][0] < step) lo = mid + 1; else hi = mid;
    }
    if (rows[lo][0] === step) rows[lo] = row; else rows.splice(lo, 0, row);
  }
  return rows;
}

// Drop rows after `step` (the run resumed from a checkpoint there and trains those steps again).
export function truncateAfter(rows, step) {
  let n = rows.length;
  while (n > 0 && rows[n - 1][0] > step) n--;
  rows.length = n;
  return rows;
}

// TensorBoard's smoothing: an exponential moving average, debiased so the first points are not pulled to zero.
// weight 0 = raw, 0.99 = very smooth. Missing values (NaN losses) stay missing and do not move the average.
export function ema(values, weight) {
  const out = new Array(values.length);
  let last = 0, count = 0;
  for (let i = 0; i < values.length; i++) {
    const v = values[i];
    if (v == null || !Number.isFinite(v)) { out[i] = null; continue; }
    last = last * weight + (1 - weight) * v;
    count++;
    out[i] = weight === 0 ? v : last / (1 - Math.pow(weight, count));
  }
  return out;
}

// Indices to draw when there are more points than pixels: per bucket of consecutive points, the lowest and the
// highest value (in order), so every spike survives — unlike random sampling or averaging, which hide them.
export function minMaxIndices(values, buckets) {
  const n = values.length;
  if (n <= 2 * buckets) return null;      // nothing to drop
  const keep = [];
  const size = n / buckets;
  for (let b = 0; b < buckets; b++) {
    const start = Math.floor(b * size), end = Math.min(n, Math.floor((b + 1) * size));
    let lo = -1, hi = -1;
    for (let i = start; i < end; i++) {
      const v = values[i];
      if (v == null) { keep.push(i); continue; }   // a missing (NaN) loss is news: keep it
      if (lo < 0 || v < values[lo]) lo = i;
      if (hi < 0 || v > values[hi]) hi = i;
    }
    if (lo >= 0) keep.push(lo);
    if (hi >= 0 && hi !== lo) keep.push(hi);
  }
  return keep.sort((a, b) => a - b);
}

// x value of a row in each axis mode; `chart` is the run's chart config (tokens_per_step, flops_per_step).
export function xOf(mode, step, elapsed, chart) {
  switch (mode) {
    case "tokens": return step * chart.tokens_per_step;
    case "flops": return step * chart.flops_per_step;
    case "time": return elapsed;
    default: return step;
  }
}

const PREFIXES = [[1e15, "P"], [1e12, "T"], [1e9, "G"], [1e6, "M"], [1e3, "k"]];

export function si(v, digits = 3) {
  if (v == null || !Number.isFinite(v)) return "—";
  for (const [scale, p] of PREFIXES) if (Math.abs(v) >= scale) return `${+(v / scale).toPrecision(digits)}${p}`;
  return `${+v.toPrecision(digits)}`;
}

// Django's JS catalogue when the page loaded it; identity otherwise (a test may import this module on its own)
const gettext = (s) => (typeof globalThis.gettext === "function" ? globalThis.gettext(s) : s);
const fill = (fmt, params) => fmt.replace(/%\((\w+)\)s/g, (_, k) => String(params[k]));

export function duration(s) {
  if (s == null || !Number.isFinite(s)) return "—";
  s = Math.round(s);
  const pad = (x) => String(x).padStart(2, "0");
  if (s < 60) return fill(gettext("%(s)s s"), { s });
  if (s < 3600) return fill(gettext("%(min)s min %(s)s s"), { min: Math.floor(s / 60), s: pad(s % 60) });
  if (s < 86400) return fill(gettext("%(h)s h %(min)s min"), { h: Math.floor(s / 3600), min: pad(Math.floor(s % 3600 / 60)) });
  return fill(gettext("%(d)s d %(h)s h"), { d: Math.floor(s / 86400), h: Math.floor(s % 86400 / 3600) });
}

export function formatX(mode, v) {
  if (mode === "time") return duration(v);
  if (mode === "flops") return si(v) + "FLOP";
  if (mode === "tokens") return si(v);
  return String(Math.round(v));
}
