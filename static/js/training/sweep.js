// The sweep page's three charts on uPlot (vendored, global `uPlot`), drawn from fit.json and redrawn whenever the
// socket (system/socket.js) says one of the sweep's runs changed status (the table and the fitted numbers come as an
// htmx partial). Several runs finishing together cost one refit and one redraw, at most one a second, and none while
// the tab is hidden (system/redraw.js): the page catches up when shown.
import { openSocket } from "../system/socket.js";
import { redrawer } from "../system/redraw.js";
import { PALETTE, legendHooks } from "./chart.js";

const root = document.getElementById("sweep");
const css = (name, fallback) => getComputedStyle(document.documentElement).getPropertyValue(name).trim() || fallback;
const plots = {};

// uPlot wants one x array shared by all series: merge every series' x values, null where a series has none.
export function aligned(seriesPoints) {
  const xs = [...new Set(seriesPoints.flatMap(s => s.map(p => p[0])))].sort((a, b) => a - b);
  const index = new Map(xs.map((x, i) => [x, i]));
  const columns = seriesPoints.map(s => {
    const col = new Array(xs.length).fill(null);
    for (const [x, y] of s) col[index.get(x)] = y;
    return col;
  });
  return [xs, ...columns];
}

const logspace = (lo, hi, n) => Array.from({ length: n }, (_, i) => lo * (hi / lo) ** (i / (n - 1)));
const fmt = v => (v == null ? "—" : Math.abs(v) >= 1e3 ? v.toExponential(2) : v.toPrecision(4));

function dots(label, color) {
  return { label, stroke: color, fill: color, paths: () => null, points: { show: true, size: 8, fill: color },
           value: (u, v) => fmt(v) };
}
function line(label, color, dash) {
  return { label, stroke: color, width: 1.5, dash, spanGaps: true, points: { show: false }, value: (u, v) => fmt(v) };
}

function draw(id, series, data, { xLabel, yLabel, yLog = false }) {
  const el = document.getElementById(id);
  if (plots[id]) { plots[id].destroy(); delete plots[id]; }
  el.replaceChildren();
  if (!data[0].length) {
    const p = document.createElement("p");
    p.className = "muted";
    p.textContent = el.dataset.empty || "No finished runs yet.";
    el.append(p);
    return;
  }
  const ink = css("--muted", "#646b76"), grid = css("--line", "#e2e2dc");
  // log axes label their decades only, compactly (1e11, 1e4): a full number per tick overlaps its neighbours
  const decade = v => (v > 0 && Math.abs(Math.log10(v) - Math.round(Math.log10(v))) < 1e-6 ? `1e${Math.round(Math.log10(v))}` : "");
  const axis = (label, log) => ({ label, stroke: ink, grid: { stroke: grid, width: 1 }, ticks: { stroke: grid, width: 1 },
                                  ...(log ? { values: (u, vals) => vals.map(v => (v == null ? "" : decade(v))) } : {}) });
  plots[id] = new uPlot({
    width: Math.max(280, el.clientWidth), height: 280,
    scales: { x: { time: false, distr: 3 }, y: yLog ? { distr: 3 } : { auto: true } },
    axes: [axis(xLabel, true), axis(yLabel, yLog)],
    series: [{ label: xLabel, value: (u, v) => fmt(v) }, ...series],
    hooks: legendHooks(),
  }, data, el);
}

export function render(d) {
  const fit = d.fit;
  const budgets = [...new Set(d.points.map(p => p.budget))].sort((a, b) => a - b);
  const colorOf = b => PALETTE[budgets.indexOf(b) % PALETTE.length];

  // 1. iso-FLOP curves: loss against N per budget, the parabola in log10 N, its minimum
  const iso = [], isoSeries = [];
  for (const b of budgets) {
    const pts = d.points.filter(p => p.budget === b);
    iso.push(pts.map(p => [p.params, p.loss]));
    isoSeries.push(dots(`C = ${b.toExponential(1)}`, colorOf(b)));
    const f = fit.isoflops.find(f => f.budget === b);
    if (f) {
      const ns = pts.map(p => p.params);
      const [p0, p1, p2] = f.coef;
      iso.push(logspace(Math.min(...ns), Math.max(...ns), 40).map(n => {
        const x = Math.log10(n);
        return [n, p0 * x * x + p1 * x + p2];
      }));
      isoSeries.push(line(`fit ${b.toExponential(1)}`, colorOf(b), [4, 4]));
      iso.push([[f.n_opt, f.loss_opt]]);
      isoSeries.push({ ...dots(`N_opt ${b.toExponential(1)}`, "#000"), points: { show: true, size: 12, fill: colorOf(b) } });
    }
  }
  draw("chart-isoflop", isoSeries, aligned(iso), { xLabel: "parameters N", yLabel: "final val loss" });

  // 2. N_opt and D_opt against C, log-log, with k·C^a
  const opt = [fit.isoflops.map(f => [f.budget, f.n_opt]), fit.isoflops.map(f => [f.budget, f.d_opt])];
  const optSeries = [dots("N_opt", PALETTE[0]), dots("D_opt", PALETTE[1])];
  if (fit.n_opt && fit.d_opt) {
    const cs = logspace(fit.isoflops[0].budget, d.next_budget || fit.isoflops.at(-1).budget, 30);
    const law = (l, c) => l.k * c ** l.exponent;
    opt.push(cs.map(c => [c, law(fit.n_opt, c)]), cs.map(c => [c, law(fit.d_opt, c)]));
    optSeries.push(line(`N ∝ C^${fit.n_opt.exponent.toFixed(3)} ± ${fit.n_opt.exponent_err.toFixed(3)}`, PALETTE[0]),
                   line(`D ∝ C^${fit.d_opt.exponent.toFixed(3)} ± ${fit.d_opt.exponent_err.toFixed(3)}`, PALETTE[1]));
  }
  draw("chart-optimal", optSeries, aligned(opt), { xLabel: "compute C (FLOPs)", yLabel: "N_opt, D_opt", yLog: true });

  // 3. best loss against C with L(C) = a·C^-b + c, the prediction (with its interval) and the outcome
  const lc = [fit.isoflops.map(f => [f.budget, f.loss_opt])];
  const lcSeries = [dots("best loss (parabola bottom)", PALETTE[2])];
  if (fit.loss) {
    const L = fit.loss, hi = Math.max(d.next_budget || 0, d.prediction ? d.prediction.budget : 0,
                                      fit.isoflops.at(-1).budget);
    lc.push(logspace(fit.isoflops[0].budget, hi, 40).map(c => [c, L.a * c ** -L.b + L.c]));
    lcSeries.push(line(`L = ${L.a.toPrecision(3)}·C^-${L.b.toFixed(3)} + ${L.c.toFixed(3)}`, PALETTE[2]));
  }
  const p = d.prediction || d.forecast;
  if (p) {
    lc.push([[p.budget, p.loss]], [[p.budget, p.low]], [[p.budget, p.high]]);
    lcSeries.push(dots("predicted", PALETTE[3]), dots("95 % low", "#999"), dots("95 % high", "#999"));
  }
  if (d.prediction && d.outcome) {
    lc.push([[d.prediction.budget, d.outcome.loss]]);
    lcSeries.push({ ...dots("measured", PALETTE[4]), points: { show: true, size: 12, fill: PALETTE[4] } });
  }
  draw("chart-loss", lcSeries, aligned(lc), { xLabel: "compute C (FLOPs)", yLabel: "loss" });
}

async function refresh() {
  const response = await fetch(root.dataset.fit, { headers: { Accept: "application/json" } });
  if (response.ok) render(await response.json());
}

const refreshSoon = redrawer(() => {
  refresh();
  if (window.htmx) htmx.ajax("GET", root.dataset.results, { target: "#sweep-results", swap: "innerHTML" });
}, { everyMs: 1000 });

if (root) {
  refresh();
  openSocket(root.dataset.ws, {
    baseMs: 1000,
    maxMs: 30000,
    onOpen: refreshSoon,  // catch up on what finished while away
    onMessage: m => { if (m.type === "sweep") refreshSoon(); },
    onClose: e => !(e.code >= 4400 && e.code < 4500),
  });
}
