// The guided walk-through: one forward pass in six steps, each told with the numbers of the current trace (the
// user's text, the chosen model, layer, head and token). Text is assembled as DOM nodes: token strings are never
// parsed as HTML.

import { show } from "./trace.js";
import { fmt, pct } from "./views2d.js";

const n = (x) => x.toLocaleString("en-US");
const vec = (xs) => "[" + xs.map((x) => (x >= 0 ? " " : "") + x.toFixed(3)).join(", ") + ", …]";

function tok(s) {
  const el = document.createElement("span");
  el.className = "tok";
  el.textContent = show(s);
  return el;
}

function p(...parts) {
  const el = document.createElement("p");
  for (const part of parts) el.append(typeof part === "string" ? document.createTextNode(part) : part);
  return el;
}

function code(text) {
  const el = document.createElement("code");
  el.textContent = text;
  return el;
}

export const STEPS = [
  { key: "embedding", title: gettext("Embedding") },
  { key: "attention", title: gettext("Attention") },
  { key: "mlp", title: "MLP" },
  { key: "residual", title: gettext("Residual stream") },
  { key: "logits", title: gettext("Logits") },
  { key: "probabilities", title: gettext("Probabilities") },
];

// the body of step `key` for the trace and the page's state (layer, head, followed token, temperature)
export function walkBody(key, tr, st) {
  const c = tr.config, t = st.tok, T = tr.T, L = tr.L, l = st.layer, h = st.head;
  const here = tr.tokens[t];
  if (key === "embedding") {
    const e = tr.header.embedding;
    const last = t === T - 1;
    return [
      p(`Your text is ${n(T)} token${T === 1 ? "" : "s"}`, tr.header.text_tokens > T ? ` (of ${n(tr.header.text_tokens)}; the rest was cut)` : "",
        `. The model never sees letters: each token is an id, and the first thing it does is look that id up in the `,
        `embedding table, a ${n(c.vocab_size)} × ${n(c.n_embd)} matrix, to get a vector of C = ${n(c.n_embd)} numbers.`),
      last
        ? p(`The last token, `, tok(here), ` (id ${tr.ids[T - 1]}), becomes `, code(vec(e.token)), " ",
          c.pos === "learned"
            ? `plus the learned vector for position ${T - 1}, ${vec(e.position)}, giving ${vec(e.sum)}.`
            : `No position vector is added: this Llama-style model rotates queries and keys by position (RoPE) inside attention.`)
        : p(`Follow a token by clicking it; the numbers here are for the last one.`),
      p(`Stacked for all tokens that is a (B=1, T=${T}, C=${c.n_embd}) tensor — the residual stream — and the last `,
        `token's vector has norm ${fmt(e.norm)}. Every layer above reads from it and adds to it.`),
    ];
  }
  if (key === "attention") {
    const top = tr.topKeys(l, h, t, 3);
    const stats = ["previous", "first", "self"].map((s) => tr.headStat(l, h, s));
    const kind = stats[0] > 0.5 ? "a previous-token head: most tokens look one step back"
      : stats[1] > 0.5 ? "an attention sink: most tokens dump their attention on the first token"
      : stats[2] > 0.5 ? "a self head: tokens mostly look at themselves" : "";
    const parts = [];
    top.forEach(({ j, w }, k) => { parts.push(tok(tr.tokens[j]), ` ${pct(w)}`, k < top.length - 1 ? ", " : ""); });
    const gqa = c.n_kv_head !== c.n_head ? ` Its ${c.n_head} query heads share ${c.n_kv_head} key/value heads (grouped-query attention).` : "";
    return [
      p(`In layer ${l}, head ${h}, the token `, tok(here), ` (${t}) asks a question (its query, ${c.head_size} numbers) `,
        `and every token up to itself offers an answer (its key). Their dot products, divided by √${c.head_size}, go `,
        `through a softmax: it puts `, ...parts, `.`),
      p(`Each of the layer's ${c.n_head} heads does this in parallel, an attention matrix of shape (B, n_head=${c.n_head}, T=${T}, T=${T}); `,
        `the weights then mix the tokens' values.${gqa} `,
        `This head's rows have an average entropy of ${fmt(tr.headStat(l, h, "entropy"), 2)} nats`,
        kind ? ` — it is ${kind}.` : `.`),
      p(`What the attention of layer ${l} adds to `, tok(here), `'s residual vector has norm ${fmt(tr.attnWrite(l, t))}.`),
    ];
  }
  if (key === "mlp") {
    const tn = tr.tokenNeuron(l, t);
    let best = 0;
    for (let s = 1; s < T; s++) if (tr.neuronValue(l, 0, s) > tr.neuronValue(l, 0, best)) best = s;
    const act = c.mlp === "swiglu" ? "SwiGLU (a SiLU gate times a second projection)" : "GELU";
    const frac = tr.a.mlp_active_fraction[l];
    return [
      p(`After attention, each token goes through the layer's MLP on its own: its ${n(c.n_embd)} numbers are projected up `,
        `to ${n(c.intermediate_size)}, passed through ${act}, and projected back down.`),
      p(`In layer ${l}, ${pct(frac)} of the hidden units are ${c.mlp === "swiglu" ? "clearly active (|h| > 0.1)" : "positive"} `,
        `over your text. At `, tok(here), ` the strongest is neuron #${tn.n} (${fmt(tn.v)}); the layer's strongest neuron `,
        `overall, #${tr.neuron(l, 0)}, fires ${fmt(tr.neuronValue(l, 0, best))} at `, tok(tr.tokens[best]), `.`),
      p(`The MLP's output added to `, tok(here), ` has norm ${fmt(tr.mlpWrite(l, t))}. The bars at the right of each layer `,
        `in the 3D view are its ${tr.K} strongest neurons.`),
    ];
  }
  if (key === "residual") {
    let big = 0, bigKind = "attention", bigVal = -1;
    for (let k = 0; k < L; k++) {
      if (tr.attnWrite(k, t) > bigVal) { bigVal = tr.attnWrite(k, t); big = k; bigKind = "attention"; }
      if (tr.mlpWrite(k, t) > bigVal) { bigVal = tr.mlpWrite(k, t); big = k; bigKind = "MLP"; }
    }
    return [
      p(`A block never replaces the stream: x = x + attention(norm(x)), then x = x + MLP(norm(x)). Each layer only `,
        `adds its contribution, so what the embedding put in is still there at the top.`),
      p(`At `, tok(here), ` the stream's norm goes from ${fmt(tr.residual(0, t))} after the embedding to `,
        `${fmt(tr.residual(L, t))} after layer ${L - 1}. The biggest single write is layer ${big}'s ${bigKind} (norm ${fmt(bigVal)}).`),
      p(`In the 3D view this is the wall at the left: one column per token rising through the layers; a cell's colour `,
        `and depth show the norm there.`),
    ];
  }
  if (key === "logits") {
    const top = tr.topLogits(3);
    const parts = [];
    top.forEach(({ id, logit }, k) => { parts.push(tok(tr.vocab(id)), ` ${fmt(logit, 2)}`, k < 2 ? ", " : ""); });
    return [
      p(`At the top, a final ${c.norm === "rmsnorm" ? "RMSNorm" : "LayerNorm"} and the unembedding — a ${n(c.n_embd)} × `,
        `${n(c.vocab_size)} matrix${c.tie_embeddings ? ", the embedding table itself, reused" : ""} — turn the last `,
        `token's vector into ${n(c.vocab_size)} scores, one per token in the vocabulary: the logits, (B, T, vocab).`),
      p(`After `, tok(tr.tokens[T - 1]), ` the highest are `, ...parts, `. Only differences between logits matter: `,
        `adding the same number to all of them changes nothing.`),
    ];
  }
  const probs = tr.probabilities(st.temperature);
  const top = tr.topLogits(3);
  const parts = [];
  top.forEach(({ id }, k) => { parts.push(tok(tr.vocab(id)), ` ${pct(probs[id])}`, k < 2 ? ", " : ""); });
  let nll = 0, count = 0;
  for (let s = 0; s < T - 1; s++) { nll -= Math.log(Math.max(tr.a.target_prob[s], 1e-12)); count++; }
  return [
    p(`A softmax turns the logits divided by the temperature (${st.temperature.toFixed(2)}) into probabilities that sum to 1: `,
      ...parts, `. Sampling draws the next token from this; lower temperature sharpens it toward the top token, higher `,
      `flattens it. Move the slider below to see it.`),
    count
      ? p(`Along your text the model gave the token that actually came next an average loss of ${fmt(nll / count, 2)} nats `,
        `(perplexity ${fmt(Math.exp(nll / count), 1)}) — the number training drives down.`)
      : p(`With a single token there is no "next token" in your text to score.`),
  ];
}
