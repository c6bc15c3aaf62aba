// The 3D view: the model as a tower, tokens at the bottom and the next-token logits at the top. Each layer is a
// row: the residual stream at the left (one cell per token, its colour and depth the norm of that token's vector),
// the attention heads as panels showing their patterns, and the MLP's strongest neurons as bars at the right.
//
// A deep model is folded: the first two blocks, the selected one and the last are drawn, the rest stand as one slab
// with their count (click it, or the toolbar's button, to unfold them all). The selected block is also drawn opened
// up into its operations, each with the shape of the tensor it makes, at its right.
//
// Built to stay interactive for SmolLM2 (30 layers x 9 heads) at hundreds of tokens: every head of every layer is
// one instance of ONE instanced mesh drawing from ONE array texture (a layer per model layer, the heads side by
// side), the residual cells are one instanced mesh, the bars another. It renders on demand, not every frame.

import * as THREE from "three";
import { OrbitControls } from "three/addons/controls/OrbitControls.js";
import { PALETTE, show } from "./trace.js";

const P = 1.0; // a head panel's side
const GAP = 0.16; // between panels
const PITCH = 1.45; // between layers
const WALL_GAP = 0.7; // between the residual wall, the heads and the MLP bars
const FOLD = 1.1; // the height a folded run of blocks takes
const FOLD_ABOVE = 4; // deeper models than this are folded
const FOCUS_DIR = [0.22, 0.1, 1]; // the walk-through looks at each part from here: nearly face on, a little turned

const I = (format, params) => interpolate(format, params, true);  // a translated label with %(name)s filled in

const VERTEX = /* glsl */ `
  attribute float aHead;
  varying vec2 vUv;
  flat varying int vHead;
  void main() {
    vUv = uv;
    vHead = int(aHead + 0.5);
    gl_Position = projectionMatrix * modelViewMatrix * instanceMatrix * vec4(position, 1.0);
  }`;

const FRAGMENT = /* glsl */ `
  precision highp float;
  precision highp sampler2DArray;
  uniform sampler2DArray uAttn;  // layer l: T rows, heads side by side (H * T columns), sqrt-encoded bytes
  uniform sampler2D uPalette;
  uniform int uT;
  uniform int uH;
  uniform int uSelected;  // the selected head (l * H + h)
  uniform int uHoverHead;
  uniform int uToken;  // a hovered token: its row (where it looks) and column (what looks at it) stay lit
  varying vec2 vUv;
  flat varying int vHead;
  void main() {
    int j = min(int(vUv.x * float(uT)), uT - 1);
    int i = min(int((1.0 - vUv.y) * float(uT)), uT - 1);
    int l = vHead / uH, h = vHead - l * uH;
    vec3 c;
    if (j > i) {
      c = ((i + j) / 2) % 2 == 0 ? vec3(0.13, 0.14, 0.18) : vec3(0.11, 0.12, 0.15);  // the causal mask
    } else {
      float b = texelFetch(uAttn, ivec3(h * uT + j, i, l), 0).r;
      c = texture2D(uPalette, vec2(b * 255.0 / 256.0 + 0.5 / 256.0, 0.5)).rgb;
    }
    if (uToken >= 0 && i != uToken && j != uToken) c *= 0.28;
    float edge = min(min(vUv.x, 1.0 - vUv.x), min(vUv.y, 1.0 - vUv.y));
    if (vHead == uSelected && edge < 0.035) c = vec3(0.35, 0.55, 1.0);
    else if (vHead == uHoverHead && edge < 0.02) c = vec3(0.9);
    gl_FragColor = vec4(c, 1.0);
  }`;

function paletteTexture() {
  const data = new Uint8Array(256 * 4);
  for (let b = 0; b < 256; b++) {
    data.set([PALETTE[b * 3], PALETTE[b * 3 + 1], PALETTE[b * 3 + 2], 255], b * 4);
  }
  const tex = new THREE.DataTexture(data, 256, 1, THREE.RGBAFormat);
  tex.magFilter = tex.minFilter = THREE.LinearFilter;
  tex.needsUpdate = true;
  return tex;
}

function textSprite(text, { height = 0.3, color = "#e8e9ec", weight = "600", background = null } = {}) {
  const px = 56, pad = 14;
  const canvas = document.createElement("canvas");
  const ctx = canvas.getContext("2d");
  ctx.font = `${weight} ${px}px system-ui, sans-serif`;
  const w = Math.ceil(ctx.measureText(text).width) + 2 * pad;
  canvas.width = w;
  canvas.height = px + 2 * pad;
  ctx.font = `${weight} ${px}px system-ui, sans-serif`;
  if (background) {
    ctx.fillStyle = background;
    ctx.fillRect(0, 0, canvas.width, canvas.height);
  }
  ctx.fillStyle = color;
  ctx.textBaseline = "middle";
  ctx.fillText(text, pad, canvas.height / 2);
  const tex = new THREE.CanvasTexture(canvas);
  tex.colorSpace = THREE.SRGBColorSpace;
  tex.anisotropy = 4;
  const sprite = new THREE.Sprite(new THREE.SpriteMaterial({ map: tex, depthWrite: false, transparent: true }));
  sprite.scale.set((height * canvas.width) / canvas.height, height, 1);
  sprite.center.set(0, 0.5);
  return sprite;
}

export function webglAvailable() {
  try {
    const c = document.createElement("canvas");
    return !!c.getContext("webgl2");
  } catch {
    return false;
  }
}

export class Scene {
  constructor(container, { onHoverToken, onSelectHead, onSelectToken, onUnfold, tip }) {
    this.container = container;
    this.tip = tip;
    this.cb = { onHoverToken, onSelectHead, onSelectToken, onUnfold };
    this.renderer = new THREE.WebGLRenderer({ antialias: true, preserveDrawingBuffer: true });
    this.renderer.setPixelRatio(Math.min(window.devicePixelRatio || 1, 2));
    this.renderer.outputColorSpace = THREE.SRGBColorSpace;
    this.renderer.setClearColor(0x14161c);
    container.append(this.renderer.domElement);
    this.renderer.domElement.setAttribute("aria-label", "3D view of the model; drag to orbit, scroll to zoom");
    this.camera = new THREE.PerspectiveCamera(40, 1, 0.05, 2000);
    this.controls = new OrbitControls(this.camera, this.renderer.domElement);
    this.controls.enableDamping = false;
    this.controls.addEventListener("change", () => this.render());
    this.scene = new THREE.Scene();
    this.scene.add(new THREE.AmbientLight(0xffffff, 1.6));
    const sun = new THREE.DirectionalLight(0xffffff, 1.6);
    sun.position.set(3, 5, 8);
    this.scene.add(sun);
    this.palette = paletteTexture();
    this.raycaster = new THREE.Raycaster();
    this.pointer = new THREE.Vector2();
    this.hoverToken = -1;
    this.hoverHead = -1;
    this.pending = false;
    new ResizeObserver(() => this.resize()).observe(container);
    this.resize();
    const el = this.renderer.domElement;
    let down = null;
    el.addEventListener("pointerdown", (e) => { down = [e.clientX, e.clientY]; });
    el.addEventListener("pointerup", (e) => {
      if (down && Math.hypot(e.clientX - down[0], e.clientY - down[1]) < 5) this.click(e);
      down = null;
    });
    el.addEventListener("pointermove", (e) => this.queueHover(e));
    el.addEventListener("pointerleave", () => { this.tip.hidden = true; this.setHoverHead(-1); this.cb.onHoverToken(-1); });
  }

  resize() {
    const w = this.container.clientWidth, h = this.container.clientHeight;
    if (!w || !h) return;
    this.renderer.setSize(w, h, false);
    this.renderer.domElement.style.width = "100%";
    this.renderer.domElement.style.height = "100%";
    this.camera.aspect = w / h;
    this.camera.updateProjectionMatrix();
    this.render();
  }

  render() {
    if (this.pending) return;
    this.pending = true;
    requestAnimationFrame(() => {
      this.pending = false;
      this.renderer.render(this.scene, this.camera);
    });
  }

  // ---------------------------------------------------------------------------------------------------------
  // building the model from a trace

  clear() {
    if (!this.root) return;
    this.root.traverse((o) => {
      o.geometry?.dispose();
      if (o.material) {
        o.material.map?.dispose();
        o.material.dispose();
      }
    });
    this.attnTexture?.dispose();
    this.scene.remove(this.root);
    this.root = null;
  }

  // same shape as the last trace (another checkpoint of the run, the same text): swap the data, keep the camera
  sameShape(trace) {
    const t = this.trace;
    return t && t.T === trace.T && t.L === trace.L && t.H === trace.H && t.K === trace.K;
  }

  // the blocks drawn: all of a shallow model (or an unfolded one); of a deep one the first two, the selected, the last
  shownLayers(L, selected) {
    if (L <= FOLD_ABOVE || this.unfolded) return Array.from({ length: L }, (_, l) => l);
    return [...new Set([0, 1, selected, L - 1])].filter((l) => l >= 0 && l < L).sort((a, b) => a - b);
  }

  get folded() { return !!this.trace && this.trace.L > FOLD_ABOVE && !this.unfolded; }

  setUnfolded(unfolded) {
    this.unfolded = unfolded;
    if (!this.trace) return;
    this.build(this.trace, this.state, { keepCamera: false });
  }

  build(trace, state, { keepCamera = this.sameShape(trace) } = {}) {
    this.clear();
    this.trace = trace;
    this.state = state;
    this.opsMesh = null;
    this.opsLayer = -1;
    const { T, L, H, K } = trace;
    const root = (this.root = new THREE.Group());
    this.scene.add(root);

    const headsW = H * (P + GAP) - GAP;
    const wallW = Math.min(9, Math.max(4, T * 0.07));
    const cw = wallW / T;
    const x0 = -wallW - WALL_GAP; // the residual wall spans [x0, x0 + wallW]
    const xm = headsW + WALL_GAP; // the MLP bars start here
    const xOps = xm + K * 0.18 + WALL_GAP; // the selected block's operations start here
    const yEmb = 0, yTok = -0.9 * PITCH;
    // one row per shown block, bottom to top; a run of folded blocks between two shown ones takes FOLD
    const shown = (this.shown = this.shownLayers(L, state.layer));
    const rowY = new Map(), folds = [];
    let y = PITCH;
    shown.forEach((l, k) => {
      if (k > 0 && l - shown[k - 1] > 1) {
        folds.push({ from: shown[k - 1] + 1, to: l - 1, y: y - PITCH / 2 + FOLD / 2 });
        y += FOLD;
      }
      rowY.set(l, y);
      y += PITCH;
    });
    const yLayer = (l) => rowY.get(l) ?? yEmb; // a folded block has no row (its instances are hidden)
    const isShown = (l) => rowY.has(l);
    const yLast = yLayer(L - 1);
    this.geo = { headsW, wallW, cw, x0, xm, xOps, yEmb, yTok, yLayer, isShown, yLast, yTop: yLast + PITCH, folds };
    // labels grow with the model's width, so that framing all of it still leaves them readable
    this.ls = Math.min(2.2, Math.max(1, (xOps + 6 - x0) / 15));
    const hidden = new THREE.Matrix4().makeScale(1e-6, 1e-6, 1e-6); // a folded block's instance: nothing to see or hit

    // every head panel: one instanced mesh; the attention of layer l is layer l of one array texture
    const rows = new Uint8Array(L * T * H * T), full = trace.full;
    for (let l = 0; l < L; l++) {
      for (let h = 0; h < H; h++) {
        for (let i = 0; i < T; i++) {
          const src = ((l * H + h) * T + i) * T;
          rows.set(full.subarray(src, src + T), (l * T + i) * H * T + h * T);
        }
      }
    }
    const tex = (this.attnTexture = new THREE.DataArrayTexture(rows, H * T, T, L));
    tex.format = THREE.RedFormat;
    tex.type = THREE.UnsignedByteType;
    tex.minFilter = tex.magFilter = THREE.NearestFilter;
    tex.unpackAlignment = 1;
    tex.needsUpdate = true;
    this.headUniforms = {
      uAttn: { value: tex }, uPalette: { value: this.palette }, uT: { value: T }, uH: { value: H },
      uSelected: { value: state.layer * H + state.head }, uHoverHead: { value: -1 }, uToken: { value: -1 },
    };
    const panel = new THREE.PlaneGeometry(P, P);
    panel.setAttribute("aHead", new THREE.InstancedBufferAttribute(Float32Array.from({ length: L * H }, (_, k) => k), 1));
    const mat = new THREE.ShaderMaterial({ uniforms: this.headUniforms, vertexShader: VERTEX, fragmentShader: FRAGMENT, side: THREE.DoubleSide });
    const heads = (this.heads = new THREE.InstancedMesh(panel, mat, L * H));
    const m = new THREE.Matrix4();
    for (let l = 0; l < L; l++) for (let h = 0; h < H; h++) {
      heads.setMatrixAt(l * H + h, isShown(l) ? m.makeTranslation(h * (P + GAP) + P / 2, yLayer(l), 0) : hidden);
    }
    heads.computeBoundingSphere();
    root.add(heads);

    // the residual stream: (L + 1) x T cells; colour and depth are log(norm) between the smallest and largest
    const norms = trace.a.residual_norm;
    let lo = Infinity, hi = -Infinity;
    for (const n of norms) if (n > 0) { lo = Math.min(lo, Math.log(n)); hi = Math.max(hi, Math.log(n)); }
    const n01 = (n) => (hi > lo ? (Math.log(Math.max(n, 1e-9)) - lo) / (hi - lo) : 0.5);
    const cell = new THREE.BoxGeometry(cw * 0.86, PITCH * 0.42, 1);
    const wall = (this.wall = new THREE.InstancedMesh(cell, new THREE.MeshLambertMaterial(), (L + 1) * T));
    const color = new THREE.Color();
    for (let r = 0; r <= L; r++) for (let t = 0; t < T; t++) {
      if (r > 0 && !isShown(r - 1)) { wall.setMatrixAt(r * T + t, hidden); wall.setColorAt(r * T + t, color.setRGB(0, 0, 0)); continue; }
      const v = n01(norms[r * T + t]);
      m.makeScale(1, 1, 0.08 + 0.9 * v).setPosition(x0 + (t + 0.5) * cw, r === 0 ? yEmb : yLayer(r - 1), (0.08 + 0.9 * v) / 2);
      wall.setMatrixAt(r * T + t, m);
      const b = Math.round(40 + 215 * v);
      wall.setColorAt(r * T + t, color.setRGB(PALETTE[b * 3] / 255, PALETTE[b * 3 + 1] / 255, PALETTE[b * 3 + 2] / 255, THREE.SRGBColorSpace));
    }
    root.add(wall);
    // each token's column rising through the layers: faint lines joining its cells
    const pts = [];
    for (let t = 0; t < T; t++) pts.push(x0 + (t + 0.5) * cw, yTok, 0, x0 + (t + 0.5) * cw, yLast, 0);
    const lines = new THREE.LineSegments(new THREE.BufferGeometry().setAttribute("position", new THREE.Float32BufferAttribute(pts, 3)),
      new THREE.LineBasicMaterial({ color: 0x5b6170, transparent: true, opacity: 0.35 }));
    root.add(lines);
    // the hovered token's column, and the followed token's
    this.columnMark = new THREE.Mesh(new THREE.BoxGeometry(cw, yLast - yTok + PITCH * 0.5, 0.02),
      new THREE.MeshBasicMaterial({ color: 0xffffff, transparent: true, opacity: 0.16, depthWrite: false }));
    this.columnMark.visible = false;
    root.add(this.columnMark);
    // the followed token's column: its vector rises through every block to the logits
    this.followMark = new THREE.Mesh(new THREE.BoxGeometry(cw * 1.1, yLast - yTok + PITCH * 0.5, 0.02),
      new THREE.MeshBasicMaterial({ color: 0x6f8cff, transparent: true, opacity: 0.32, depthWrite: false }));
    root.add(this.followMark);
    // the folded runs of blocks: a translucent slab each, with their count (raycast: a click unfolds them)
    this.foldMeshes = folds.map((f) => {
      const slab = new THREE.Mesh(new THREE.BoxGeometry(xm + K * 0.18 - x0, FOLD * 0.62, 0.5),
        new THREE.MeshLambertMaterial({ color: 0x39405a, transparent: true, opacity: 0.75 }));
      slab.position.set((x0 + xm + K * 0.18) / 2, f.y, 0);
      root.add(slab);
      const count = f.to - f.from + 1;
      const label = textSprite(I(gettext("⋮ %(n)s more blocks (layers %(from)s–%(to)s), the same shape · click to unfold"), { n: count, from: f.from, to: f.to }),
        { height: 0.4 * this.ls, color: "#e8ecf6" });
      label.position.set(0, f.y, 0.6);
      root.add(label);
      return slab;
    });

    // tokens along the bottom: tiles, and their text on one canvas texture
    const tiles = (this.tiles = new THREE.InstancedMesh(new THREE.BoxGeometry(cw * 0.86, 0.25, 0.25),
      new THREE.MeshLambertMaterial({ color: 0x8fa2e8 }), T));
    for (let t = 0; t < T; t++) { m.makeTranslation(x0 + (t + 0.5) * cw, yTok, 0.12); tiles.setMatrixAt(t, m); }
    root.add(tiles);
    root.add((this.strip = this.tokenStrip(trace, x0, wallW, yTok - 0.2)));

    // the MLP: per layer its K strongest neurons, bar height = peak activation
    let vmax = 1e-6;
    for (let l = 0; l < L; l++) for (let k = 0; k < K; k++) for (let t = 0; t < T; t++) vmax = Math.max(vmax, trace.neuronValue(l, k, t));
    const bars = (this.bars = new THREE.InstancedMesh(new THREE.BoxGeometry(0.13, 1, 0.13), new THREE.MeshLambertMaterial(), L * K));
    this.peaks = new Float32Array(L * K);
    for (let l = 0; l < L; l++) for (let k = 0; k < K; k++) {
      if (!isShown(l)) { bars.setMatrixAt(l * K + k, hidden); bars.setColorAt(l * K + k, color.setRGB(0, 0, 0)); continue; }
      let peak = 0;
      for (let t = 0; t < T; t++) peak = Math.max(peak, trace.neuronValue(l, k, t));
      this.peaks[l * K + k] = peak;
      // log scale: a few "massive activations" (common in LLMs) would flatten every other bar on a linear one
      const rel = Math.log1p(Math.max(0, peak)) / Math.log1p(vmax);
      const hgt = 0.04 + P * 0.95 * rel;
      m.makeScale(1, hgt, 1).setPosition(xm + k * 0.18 + 0.07, yLayer(l) - P / 2 + hgt / 2, 0);
      bars.setMatrixAt(l * K + k, m);
      bars.setColorAt(l * K + k, color.setHSL(0.08, 0.85, 0.3 + 0.4 * rel, THREE.SRGBColorSpace));
    }
    root.add(bars);

    // the next-token distribution at the top
    this.buildLogits(trace, state);
    this.buildLabels(trace);
    this.setSelected(state.layer, state.head);
    this.setToken(state.tok);
    if (!keepCamera) this.preset(state.cam, false);
    this.render();
  }

  // The selected block opened up: its attention and its MLP as rows of operations, each with the tensor it makes.
  // One canvas on one plane at the block's right, at the block's height; rebuilt when another block is selected.
  buildOps(l) {
    this.opsMesh?.removeFromParent();
    this.opsMesh?.geometry.dispose();
    this.opsMesh?.material.map?.dispose();
    this.opsMesh?.material.dispose();
    const c = this.trace.config, T = this.trace.T;
    const norm = c.norm === "rmsnorm" ? "RMSNorm" : "LayerNorm";
    const kv = c.n_kv_head !== c.n_head ? `k,v (T, n_kv_head, head_size) = (${T}, ${c.n_kv_head}, ${c.head_size})` : null;
    const act = c.mlp === "swiglu" ? ["SiLU(gate) × up", `(T, ${c.intermediate_size})`] : ["GELU", `(T, ${c.intermediate_size})`];
    const rows = [
      [I(gettext("block %(l)s · attention"), { l }), [
        ["x", `(T, C) = (${T}, ${c.n_embd})`], [norm, "(T, C)"],
        kv ? ["q (T, n_head, head_size)", `= (${T}, ${c.n_head}, ${c.head_size}); ${kv}`]
          : ["q,k,v (T, n_head, head_size)", `= (${T}, ${c.n_head}, ${c.head_size})`],
        [`softmax(q·kᵀ/√${c.head_size} + mask)`, `(n_head, T, T) = (${c.n_head}, ${T}, ${T})`],
        [gettext("weights · v"), `(T, n_head, head_size)`], [gettext("out projection"), `(T, C) = (${T}, ${c.n_embd})`], ["x + …", "(T, C)"]]],
      [I(gettext("block %(l)s · MLP"), { l }), [
        ["x", `(T, C) = (${T}, ${c.n_embd})`], [norm, "(T, C)"],
        [c.mlp === "swiglu" ? gettext("gate, up projections") : gettext("up projection"), `(T, ${c.intermediate_size})`], act,
        [gettext("down projection"), `(T, C) = (${T}, ${c.n_embd})`], ["x + …", "(T, C)"]]],
    ];
    // two columns, read top to bottom like the code: attention, then the MLP (each adds back into x)
    const px = 32, small = 27, pad = 16, boxH = 92, gapY = 40, gapX = 60, titleH = 64;
    const canvas = document.createElement("canvas");
    const ctx = canvas.getContext("2d");
    const bold = `600 ${px}px system-ui, sans-serif`, mono = `${small}px ui-monospace, monospace`;
    const textW = (font, text) => { ctx.font = font; return ctx.measureText(text).width; };
    const colW = rows.map(([title, ops]) => Math.ceil(Math.max(textW(bold, title),
      ...ops.map(([a, b]) => Math.max(textW(bold, a), textW(mono, b)) + 2 * pad))));
    const n = Math.max(...rows.map(([, ops]) => ops.length));
    canvas.width = colW.reduce((a, b) => a + b, 0) + gapX * (rows.length + 1);
    canvas.height = titleH + n * boxH + (n - 1) * gapY + 30;
    ctx.fillStyle = "rgba(28, 32, 44, 0.94)";
    ctx.fillRect(0, 0, canvas.width, canvas.height);
    ctx.textBaseline = "middle";
    let x = gapX;
    rows.forEach(([title, ops], r) => {
      const w = colW[r];
      ctx.fillStyle = r === 0 ? "#9fb4ff" : "#ffc48a";
      ctx.font = bold;
      ctx.fillText(title, x, titleH / 2 + 4);
      ops.forEach(([name, shape], k) => {
        const y = titleH + k * (boxH + gapY);
        ctx.fillStyle = r === 0 ? "#26345e" : "#4a3520";
        ctx.strokeStyle = r === 0 ? "#6f8cff" : "#e39a4f";
        ctx.lineWidth = 3;
        ctx.beginPath(); ctx.roundRect(x, y, w, boxH, 10); ctx.fill(); ctx.stroke();
        ctx.fillStyle = "#f2f4fa"; ctx.font = bold; ctx.fillText(name, x + pad, y + boxH * 0.32);
        ctx.fillStyle = "#c9d0dd"; ctx.font = mono; ctx.fillText(shape, x + pad, y + boxH * 0.72);
        if (k < ops.length - 1) { ctx.fillStyle = "#c9d0dd"; ctx.font = bold; ctx.fillText("↓", x + w / 2 - 8, y + boxH + gapY / 2); }
      });
      x += w + gapX;
    });
    this.opsSplit = (gapX * 1.5 + colW[0]) / canvas.width; // where the attention column ends, as a fraction
    const tex = new THREE.CanvasTexture(canvas);
    tex.colorSpace = THREE.SRGBColorSpace;
    tex.anisotropy = 8;
    // as tall as the drawn tower (between 5 and 10 units), beside it; a bracket joins it to the selected block's row
    const { xOps, xm, yTok, yTop, yLayer } = this.geo;
    const h = Math.min(10, Math.max(5, yTop - yTok)), w = (h * canvas.width) / canvas.height;
    const yc = Math.max((yTok + yTop) / 2, yLayer(l) - h / 2 + 0.6);
    const mesh = (this.opsMesh = new THREE.Mesh(new THREE.PlaneGeometry(w, h),
      new THREE.MeshBasicMaterial({ map: tex, transparent: true, depthWrite: false })));
    mesh.position.set(xOps + w / 2, Math.min(yc, yLayer(l) + h / 2 - 0.6), 0.05);
    const x1 = xm + this.trace.K * 0.18 + 0.05, y = yLayer(l), top = mesh.position.y + h / 2, bottom = top - h;
    const bracket = new THREE.Line(new THREE.BufferGeometry().setFromPoints([
      new THREE.Vector3(x1, y + P / 2, 0.05), new THREE.Vector3(xOps - 0.05, top, 0.05),
      new THREE.Vector3(xOps - 0.05, bottom, 0.05), new THREE.Vector3(x1, y - P / 2, 0.05)]),
      new THREE.LineBasicMaterial({ color: 0x6f8cff, transparent: true, opacity: 0.7 }));
    mesh.add(bracket);
    bracket.position.set(-mesh.position.x, -mesh.position.y, 0);
    this.root.add(mesh);
  }

  tokenStrip(trace, x0, wallW, y) {
    const { T } = trace;
    const colPx = Math.max(8, Math.min(40, Math.floor(4096 / T)));
    const canvas = document.createElement("canvas");
    canvas.width = colPx * T;
    canvas.height = 256;
    const ctx = canvas.getContext("2d");
    ctx.fillStyle = "#d7dbe6";
    ctx.font = `${Math.round(colPx * 0.8)}px ui-monospace, monospace`;
    ctx.textBaseline = "middle";
    ctx.textAlign = "right";
    for (let t = 0; t < T; t++) {
      ctx.save();
      ctx.translate((t + 0.5) * colPx, 4);
      ctx.rotate(-Math.PI / 2);
      const s = show(trace.tokens[t]);
      ctx.fillText(s.length > 12 ? s.slice(0, 11) + "…" : s, 0, 0);
      ctx.restore();
    }
    const tex = new THREE.CanvasTexture(canvas);
    tex.colorSpace = THREE.SRGBColorSpace;
    tex.anisotropy = 8;
    const h = (wallW * canvas.height) / canvas.width;
    const mesh = new THREE.Mesh(new THREE.PlaneGeometry(wallW, h), new THREE.MeshBasicMaterial({ map: tex, transparent: true, depthWrite: false }));
    mesh.position.set(x0 + wallW / 2, y - h / 2, 0.3);
    return mesh;
  }

  buildLogits(trace) {
    const { headsW, yTop } = this.geo;
    this.logitGroup?.removeFromParent();
    const g = (this.logitGroup = new THREE.Group());
    const p = trace.probabilities(1), top = trace.topLogits(5);
    const w = Math.min(1.6, headsW / 5 - 0.2);
    top.forEach(({ id }, r) => {
      const hgt = 0.05 + 1.6 * p[id];
      const bar = new THREE.Mesh(new THREE.BoxGeometry(w, hgt, 0.2), new THREE.MeshLambertMaterial({ color: r === 0 ? 0x5b7cff : 0x8797c9 }));
      const x = r * (w + 0.2) + w / 2;
      bar.position.set(x, yTop + hgt / 2, 0);
      g.add(bar);
      const label = textSprite(`${show(trace.vocab(id))} ${(100 * p[id]).toFixed(1)}%`, { height: 0.3 * this.ls });
      label.position.set(x - w / 2, yTop + hgt + 0.2 * this.ls, 0.1);
      g.add(label);
    });
    this.root.add(g);
  }

  buildLabels(trace) {
    const { x0, xm, yEmb, yTok, yLayer, yTop } = this.geo;
    const c = trace.config, L = trace.L, T = trace.T;
    const add = (text, x, y, opts, z = 0.2) => { const s = textSprite(text, opts); s.position.set(x, y, z); this.root.add(s); return s; };
    const ls = this.ls;
    const muted = { height: 0.36 * ls, color: "#b8bfcb", weight: "500" };
    const small = { height: 0.28 * ls, color: "#a0a7b3", weight: "500" };
    const name = { height: 0.42 * ls, color: "#e1e5ee" };
    // row names stand in front of the wall (its cells stick out toward the camera), right-aligned to its left edge
    const right = (text, y, opts) => { const s = add(text, 0, y, opts, 1.1); s.position.x = x0 - 0.25 - s.scale.x; return s; };
    for (const l of this.shown) right(I(gettext("layer %(l)s"), { l }), yLayer(l), name);
    right(gettext("embedding"), yEmb, name);
    right(I(gettext("tokens (B=1, T=%(T)s)"), { T }), yTok, muted);
    right(c.pos === "learned" ? `wte[token] + wpe[position]` : gettext("wte[token] (positions: RoPE)"), yEmb - 0.45, small);
    add(I(gettext("residual stream (B, T, C=%(C)s)"), { C: c.n_embd }), x0, yTop - PITCH / 2 + 0.2 * ls, muted);
    add(gettext("colour and depth: ‖x‖ of each token's vector"), x0, yTop - PITCH / 2 - 0.18 * ls, small);
    const gqa = c.n_kv_head !== c.n_head ? I(gettext("%(q)s query heads share %(kv)s key/value heads"), { q: c.n_head, kv: c.n_kv_head }) + " · " : "";
    add(I(gettext("attention (B, n_head=%(H)s, T, T)"), { H: c.n_head }), 0, yEmb + 0.1 * ls, muted, 0.6);
    add(gqa + I(gettext("head size %(d)s · row: query, column: key"), { d: c.head_size }), 0, yEmb - 0.26 * ls, small, 0.6);
    add(`MLP (B, T, ${c.intermediate_size})`, xm, yEmb + 0.1 * ls, muted, 0.6);
    add(I(gettext("top %(K)s neurons"), { K: trace.K }), xm, yEmb - 0.26 * ls, small, 0.6);
    add(I(gettext("the selected block, opened up (%(L)s blocks in all)"), { L }), this.geo.xOps, yEmb + 0.1 * ls, muted, 0.6);
    // above the bars (the tallest is 1.65 high, and its label sits on it)
    this.logitTitle = add(I(gettext("logits (B, T, vocab=%(V)s) → softmax → next token after “%(token)s”"), { V: c.vocab_size, token: show(trace.tokens[T - 1]) }), 0,
      yTop + 2 + 0.3 * ls, { height: 0.4 * ls, color: "#e1e5ee" });
  }

  // ---------------------------------------------------------------------------------------------------------
  // state from the page

  setSelected(l, h) {
    if (!this.heads) return;
    if (!this.geo.isShown(l)) { this.build(this.trace, this.state, { keepCamera: true }); return; } // unfold its row
    this.headUniforms.uSelected.value = l * this.trace.H + h;
    if (this.opsLayer !== l) { this.opsLayer = l; this.buildOps(l); }
    this.render();
  }

  setToken(t) {
    this.followed = t;
    if (this.followMark) {
      const { x0, cw, yTok, yLast } = this.geo;
      this.followMark.visible = t >= 0;
      this.followMark.position.set(x0 + (t + 0.5) * cw, (yTok + yLast) / 2, 1.0);
    }
    this.render();
  }

  setHoverToken(t) {
    if (!this.heads) return;
    this.headUniforms.uToken.value = t;
    const { x0, cw } = this.geo;
    this.columnMark.visible = t >= 0;
    if (t >= 0) {
      const { yTok, yLayer } = this.geo;
      this.columnMark.position.set(x0 + (t + 0.5) * cw, (yTok + yLayer(this.trace.L - 1)) / 2, 1.05);
    }
    this.render();
  }

  setHoverHead(k) {
    if (!this.heads || this.hoverHead === k) return;
    this.hoverHead = k;
    this.headUniforms.uHoverHead.value = k;
    this.render();
  }

  // ---------------------------------------------------------------------------------------------------------
  // camera

  // points that outline what is drawn: the corners of every visible object's box (labels where they really are:
  // their left edge is their position), not of one box around everything, whose empty corners would waste the view
  outline(objects = this.root.children) {
    const pts = [];
    const add = (o) => {
      if (!o.visible) return;
      if (o.isGroup) { o.children.forEach(add); return; }
      if (o.isSprite) {
        for (const [dx, dy] of [[0, -0.5], [1, -0.5], [0, 0.5], [1, 0.5]]) {
          pts.push(new THREE.Vector3(o.position.x + dx * o.scale.x, o.position.y + dy * o.scale.y, o.position.z));
        }
        return;
      }
      const box = new THREE.Box3().expandByObject(o);
      for (let k = 0; k < 8; k++) {
        pts.push(new THREE.Vector3(k & 1 ? box.max.x : box.min.x, k & 2 ? box.max.y : box.min.y, k & 4 ? box.max.z : box.min.z));
      }
    };
    objects.forEach(add);
    return pts;
  }

  // frame the whole model (labels included) from direction `name`: centre it, then move back along the direction
  // until every outline point is inside the view
  preset(name, animate = true) {
    if (!this.root) return;
    const dirs = { front: [0, 0, 1], angle: [0.4, 0.2, 0.9], side: [0.95, 0.15, 0.28], top: [0.12, 0.85, 0.5] };
    this.frame(this.outline(), dirs[name] || dirs.angle, animate);
  }

  // look at the points `pts` from direction `dir`, as close as fits them all in the view
  frame(pts, dir, animate = true, margin = 0.96) {
    const d = new THREE.Vector3(...dir).normalize();
    const right = new THREE.Vector3(0, 1, 0).cross(d).normalize(), up = d.clone().cross(right);
    const ext = (axis) => pts.reduce(([lo, hi], p) => [Math.min(lo, p.dot(axis)), Math.max(hi, p.dot(axis))], [Infinity, -Infinity]);
    const [x0, x1] = ext(right), [y0, y1] = ext(up), [z0, z1] = ext(d);
    const target = right.clone().multiplyScalar((x0 + x1) / 2).addScaledVector(up, (y0 + y1) / 2).addScaledVector(d, (z0 + z1) / 2);
    const tanV = Math.tan((this.camera.fov * Math.PI) / 360), tanH = tanV * this.camera.aspect;
    let dist = 0;
    for (const p of pts) {
      const q = p.clone().sub(target);
      const toward = q.dot(d); // how far the point stands out toward the camera
      dist = Math.max(dist, toward + Math.abs(q.dot(right)) / tanH, toward + Math.abs(q.dot(up)) / tanV);
    }
    // perspective makes the near side look bigger than the far side: look through the camera and re-centre a few
    // times, then come as close as the widest side allows
    const probe = this.camera.clone(), ndc = new THREE.Vector3();
    for (let k = 0; k < 4; k++) {
      probe.position.copy(target).addScaledVector(d, dist);
      probe.lookAt(target);
      probe.updateMatrixWorld();
      let [nx0, nx1, ny0, ny1] = [Infinity, -Infinity, Infinity, -Infinity];
      for (const p of pts) {
        ndc.copy(p).project(probe);
        nx0 = Math.min(nx0, ndc.x); nx1 = Math.max(nx1, ndc.x); ny0 = Math.min(ny0, ndc.y); ny1 = Math.max(ny1, ndc.y);
      }
      target.addScaledVector(right, ((nx0 + nx1) / 2) * dist * tanH).addScaledVector(up, ((ny0 + ny1) / 2) * dist * tanV);
      dist *= Math.max((nx1 - nx0) / 2, (ny1 - ny0) / 2) / margin;
    }
    this.moveTo(target, target.clone().addScaledVector(d, dist), animate);
  }

  // frame the part of the model a walk-through step (or a click) is about, nearly face on; `dir` keeps the
  // current viewing direction instead (a click on a head should not swing the camera round)
  focus(kind, l = 0, h = 0, t = 0, { keepDirection = false } = {}) {
    if (!this.geo) return;
    if (!this.geo.isShown(l)) this.build(this.trace, this.state, { keepCamera: true });
    const { x0, xm, xOps, cw, wallW, yEmb, yTok, yLayer, yTop, headsW } = this.geo;
    const K = this.trace.K, v = (x, y, z = 0) => new THREE.Vector3(x, y, z);
    const row = (xa, xb, y, hh = P / 2 + 0.15) => [v(xa, y - hh), v(xb, y + hh)];
    const opsW = this.opsMesh ? this.opsMesh.geometry.parameters.width : 6;
    const opsH = this.opsMesh ? this.opsMesh.geometry.parameters.height : 3;
    let pts;
    if (kind === "head") {
      const x = h * (P + GAP);
      pts = row(x - 0.25, x + P + 0.25, yLayer(l), 0.8);
    } else if (kind === "embedding") {
      const stripH = this.strip.geometry.parameters.height;
      pts = [v(x0 - 3.2 * this.ls, yTok - 0.2 - stripH), v(x0 + wallW + 0.3, yEmb + 0.5), v(x0, yEmb, 1)];
    } else if (kind === "attention") {
      pts = row(-0.2, headsW + 0.2, yLayer(l)).concat(row(xOps, xOps + opsW * this.opsSplit, this.opsMesh.position.y, opsH / 2));
    } else if (kind === "mlp") {
      pts = row(xm - 0.2, xm + K * 0.18 + 0.2, yLayer(l)).concat(row(xOps + opsW * (this.opsSplit - 0.04), xOps + opsW, this.opsMesh.position.y, opsH / 2));
    } else if (kind === "residual") {
      const stripH = this.strip.geometry.parameters.height;
      pts = [v(x0 - 3 * this.ls, yTok - 0.2 - stripH, 1.1), v(x0 + wallW + 0.3, yTop + 0.4 * this.ls, 1.1), v(x0, yEmb, 0)];
    } else if (kind === "logits") {
      pts = this.outline([...this.logitGroup.children, this.logitTitle]).concat([v(0, this.geo.yLast)]);
    } else return;
    const dir = keepDirection ? this.camera.position.clone().sub(this.controls.target).normalize().toArray() : FOCUS_DIR;
    this.frame(pts, dir, true, 0.9);
  }

  moveTo(target, position, animate) {
    const from = this.camera.position.clone(), fromT = this.controls.target.clone();
    if (!animate) {
      this.camera.position.copy(position);
      this.controls.target.copy(target);
      this.controls.update();
      this.render();
      return;
    }
    const start = performance.now(), ms = 650;
    const step = (now) => {
      const k = Math.min(1, (now - start) / ms), e = k * k * (3 - 2 * k);
      this.camera.position.lerpVectors(from, position, e);
      this.controls.target.lerpVectors(fromT, target, e);
      this.controls.update();
      if (k < 1) requestAnimationFrame(step);
    };
    requestAnimationFrame(step);
  }

  // ---------------------------------------------------------------------------------------------------------
  // pointer

  pick(e) {
    if (!this.heads) return null;
    const r = this.renderer.domElement.getBoundingClientRect();
    this.pointer.set(((e.clientX - r.left) / r.width) * 2 - 1, -((e.clientY - r.top) / r.height) * 2 + 1);
    this.raycaster.setFromCamera(this.pointer, this.camera);
    const hit = this.raycaster.intersectObjects([this.heads, this.wall, this.tiles, this.bars, ...this.foldMeshes], false)[0];
    if (!hit) return null;
    if (this.foldMeshes.includes(hit.object)) return { kind: "fold" };
    const { T, H, K } = this.trace;
    if (hit.object === this.heads) {
      const k = hit.instanceId, l = Math.floor(k / H), h = k % H;
      const j = Math.min(T - 1, Math.floor(hit.uv.x * T)), i = Math.min(T - 1, Math.floor((1 - hit.uv.y) * T));
      return { kind: "head", l, h, i, j, k };
    }
    if (hit.object === this.wall) return { kind: "residual", r: Math.floor(hit.instanceId / T), t: hit.instanceId % T };
    if (hit.object === this.tiles) return { kind: "token", t: hit.instanceId };
    return { kind: "mlp", l: Math.floor(hit.instanceId / K), k: hit.instanceId % K };
  }

  queueHover(e) {
    this.lastMove = e;
    if (this.hoverQueued) return;
    this.hoverQueued = true;
    requestAnimationFrame(() => { this.hoverQueued = false; this.hover(this.lastMove); });
  }

  hover(e) {
    const p = this.pick(e), tr = this.trace;
    if (!p) { this.tip.hidden = true; this.setHoverHead(-1); this.cb.onHoverToken(-1); return; }
    const tok = (t) => `“${show(tr.tokens[t])}” (${t})`;
    let text, token = -1;
    if (p.kind === "fold") {
      this.setHoverHead(-1);
      text = I(gettext("%(n)s blocks folded, each like the ones drawn · click to unfold them all"), { n: tr.L - this.shown.length });
    } else if (p.kind === "head") {
      this.setHoverHead(p.k);
      text = p.j > p.i
        ? I(gettext("layer %(l)s · head %(h)s: %(q)s cannot see %(k)s (causal mask)"), { l: p.l, h: p.h, q: tok(p.i), k: tok(p.j) })
        : I(gettext("layer %(l)s · head %(h)s: %(q)s → %(k)s = %(w)s · click to open"),
          { l: p.l, h: p.h, q: tok(p.i), k: tok(p.j), w: tr.weight(p.l, p.h, p.i, p.j).toFixed(3) });
    } else {
      this.setHoverHead(-1);
      if (p.kind === "residual") {
        token = p.t;
        const at = { t: tok(p.t), x: tr.residual(p.r, p.t).toFixed(2) };
        text = p.r === 0
          ? I(gettext("residual embedding at %(t)s: ‖x‖ = %(x)s"), at)
          : I(gettext("residual after layer %(l)s at %(t)s: ‖x‖ = %(x)s (attention wrote ‖%(a)s‖, MLP ‖%(m)s‖)"),
            { ...at, l: p.r - 1, a: tr.attnWrite(p.r - 1, p.t).toFixed(2), m: tr.mlpWrite(p.r - 1, p.t).toFixed(2) });
      } else if (p.kind === "token") {
        token = p.t;
        text = I(gettext("token %(t)s · id %(id)s · click to follow it"), { t: tok(p.t), id: tr.ids[p.t] });
      } else {
        let best = 0;
        for (let t = 1; t < tr.T; t++) if (tr.neuronValue(p.l, p.k, t) > tr.neuronValue(p.l, p.k, best)) best = t;
        text = I(gettext("layer %(l)s MLP neuron #%(n)s: fires %(v)s at %(t)s"), { l: p.l, n: tr.neuron(p.l, p.k), v: tr.neuronValue(p.l, p.k, best).toFixed(2), t: tok(best) });
      }
    }
    this.cb.onHoverToken(token);
    const r = this.container.getBoundingClientRect();
    this.tip.textContent = text;
    this.tip.hidden = false;
    this.tip.style.left = `${Math.min(e.clientX - r.left + 14, r.width - 260)}px`;
    this.tip.style.top = `${e.clientY - r.top + 14}px`;
  }

  click(e) {
    const p = this.pick(e);
    if (!p) return;
    if (p.kind === "fold") {
      this.cb.onUnfold?.();
    } else if (p.kind === "head") {
      this.cb.onSelectHead(p.l, p.h);
      this.focus("head", p.l, p.h, 0, { keepDirection: true });
    } else if (p.kind === "residual" || p.kind === "token") {
      this.cb.onSelectToken(p.t);
    }
  }

  // where head (l, h) is on screen, in client pixels (the browser test clicks it)
  headScreenPoint(l, h) {
    const v = new THREE.Vector3(h * (P + GAP) + P / 2, this.geo.yLayer(l), 0).project(this.camera);
    const r = this.renderer.domElement.getBoundingClientRect();
    return { x: r.left + ((v.x + 1) / 2) * r.width, y: r.top + ((1 - v.y) / 2) * r.height };
  }

  // for tests and screenshots: is anything drawn? (reads back the last frame)
  pixelStats() {
    this.renderer.render(this.scene, this.camera);
    const gl = this.renderer.getContext(), w = gl.drawingBufferWidth, h = gl.drawingBufferHeight;
    const px = new Uint8Array(w * h * 4);
    gl.readPixels(0, 0, w, h, gl.RGBA, gl.UNSIGNED_BYTE, px);
    const colours = new Set();
    let lit = 0;
    for (let i = 0; i < px.length; i += 4 * 7) {
      colours.add((px[i] >> 4) * 256 + (px[i + 1] >> 4) * 16 + (px[i + 2] >> 4));
      if (px[i] + px[i + 1] + px[i + 2] > 120) lit++;
    }
    return { width: w, height: h, colours: colours.size, litFraction: lit / (px.length / 28) };
  }
}
