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

// A translated sentence with %(name)s placeholders as a <p>: a param that is a DOM node (a token chip, code) is
// inserted as that node, an array as its items in order, anything else as text. Never innerHTML: tokens are user text.
function say(format, params = {}) {
  const el = document.createElement("p");
  let last = 0;
  for (const m of format.matchAll(/%\((\w+)\)s/g)) {
    el.append(format.slice(last, m.index));
    const v = params[m[1]];
    if (Array.isArray(v)) el.append(...v); else el.append(v instanceof Node ? v : String(v));
    last = m.index + m[0].length;
  }
  el.append(format.slice(last));
  return el;
}

// "a 12%, b 5%, c 1%": token chips each followed by its number
function listed(items) {
  const out = [];
  items.forEach(([s, num], k) => out.push(tok(s), ` ${num}`, k < items.length - 1 ? gettext(", ") : ""));
  return out;
}

function code(text) {
  const el = document.createElement("code");
  el.textContent = text;
  return el;
}

export const STEPS = [
  { key: "embedding", title: gettext("Embedding") },
  { key: "attention", title: gettext("Attention") },
  { key: "mlp", title: gettext("MLP") },
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
    const cut = tr.header.text_tokens > T;
    return [
      say(cut ? ngettext("Your text is %(T)s token (of %(all)s; the rest was cut).", "Your text is %(T)s tokens (of %(all)s; the rest was cut).", T)
        : ngettext("Your text is %(T)s token.", "Your text is %(T)s tokens.", T), { T: n(T), all: n(tr.header.text_tokens) }),
      say(gettext("The model never sees letters: each token is an id, and the first thing it does is look that id up in " +
        "the embedding table, a %(V)s × %(C)s matrix, to get a vector of C = %(C)s numbers."), { V: n(c.vocab_size), C: n(c.n_embd) }),
      last
        ? say(c.pos === "learned"
          ? gettext("The last token, %(token)s (id %(id)s), becomes %(vector)s plus the learned vector for position %(pos)s, " +
            "%(position)s, giving %(sum)s.")
          : gettext("The last token, %(token)s (id %(id)s), becomes %(vector)s. No position vector is added: this " +
            "Llama-style model rotates queries and keys by position (RoPE) inside attention."),
        { token: tok(here), id: tr.ids[T - 1], vector: code(vec(e.token)), pos: T - 1, position: e.position ? vec(e.position) : "",
          sum: e.sum ? vec(e.sum) : "" })
        : say(gettext("Follow a token by clicking it; the numbers here are for the last one.")),
      say(gettext("Stacked for all tokens that is a (B=1, T=%(T)s, C=%(C)s) tensor — the residual stream — and the last " +
        "token's vector has norm %(norm)s. Every layer above reads from it and adds to it."), { T, C: c.n_embd, norm: fmt(e.norm) }),
    ];
  }
  if (key === "attention") {
    const top = tr.topKeys(l, h, t, 3);
    const stats = ["previous", "first", "self"].map((s) => tr.headStat(l, h, s));
    const entropy = fmt(tr.headStat(l, h, "entropy"), 2);
    const kind = stats[0] > 0.5
      ? gettext("This head's rows have an average entropy of %(entropy)s nats — it is a previous-token head: most tokens look one step back.")
      : stats[1] > 0.5
        ? gettext("This head's rows have an average entropy of %(entropy)s nats — it is an attention sink: most tokens dump their attention on the first token.")
        : stats[2] > 0.5
          ? gettext("This head's rows have an average entropy of %(entropy)s nats — it is a self head: tokens mostly look at themselves.")
          : gettext("This head's rows have an average entropy of %(entropy)s nats.");
    const gqa = c.n_kv_head !== c.n_head
      ? interpolate(gettext("Its %(q)s query heads share %(kv)s key/value heads (grouped-query attention)."), { q: c.n_head, kv: c.n_kv_head }, true) + " "
      : "";
    return [
      say(gettext("In layer %(l)s, head %(h)s, the token %(token)s (%(t)s) asks a question (its query, %(d)s numbers) and " +
        "every token up to itself offers an answer (its key). Their dot products, divided by √%(d)s, go through a " +
        "softmax: it puts %(top)s."), { l, h, token: tok(here), t, d: c.head_size, top: listed(top.map(({ j, w }) => [tr.tokens[j], pct(w)])) }),
      say(gettext("Each of the layer's %(H)s heads does this in parallel, an attention matrix of shape (B, n_head=%(H)s, " +
        "T=%(T)s, T=%(T)s); the weights then mix the tokens' values.") + " %(gqa)s%(kind)s",
      { H: c.n_head, T, gqa, kind: interpolate(kind, { entropy }, true) }),
      say(gettext("What the attention of layer %(l)s adds to %(token)s's residual vector has norm %(norm)s."),
        { l, token: tok(here), norm: fmt(tr.attnWrite(l, t)) }),
    ];
  }
  if (key === "mlp") {
    const tn = tr.tokenNeuron(l, t);
    let best = 0;
    for (let s = 1; s < T; s++) if (tr.neuronValue(l, 0, s) > tr.neuronValue(l, 0, best)) best = s;
    const act = c.mlp === "swiglu" ? gettext("SwiGLU (a SiLU gate times a second projection)") : "GELU";
    const frac = tr.a.mlp_active_fraction[l];
    return [
      say(gettext("After attention, each token goes through the layer's MLP on its own: its %(C)s numbers are projected " +
        "up to %(I)s, passed through %(act)s, and projected back down."), { C: n(c.n_embd), I: n(c.intermediate_size), act }),
      say((c.mlp === "swiglu"
        ? gettext("In layer %(l)s, %(frac)s of the hidden units are clearly active (|h| > 0.1) over your text.")
        : gettext("In layer %(l)s, %(frac)s of the hidden units are positive over your text.")) + " " +
        gettext("At %(token)s the strongest is neuron #%(n)s (%(v)s); the layer's strongest neuron overall, #%(top)s, " +
          "fires %(value)s at %(at)s."),
      { l, frac: pct(frac), token: tok(here), n: tn.n, v: fmt(tn.v), top: tr.neuron(l, 0), value: fmt(tr.neuronValue(l, 0, best)),
        at: tok(tr.tokens[best]) }),
      say(gettext("The MLP's output added to %(token)s has norm %(norm)s. The bars at the right of each layer in the 3D " +
        "view are its %(K)s strongest neurons."), { token: tok(here), norm: fmt(tr.mlpWrite(l, t)), K: tr.K }),
    ];
  }
  if (key === "residual") {
    let big = 0, bigMlp = false, bigVal = -1;
    for (let k = 0; k < L; k++) {
      if (tr.attnWrite(k, t) > bigVal) { bigVal = tr.attnWrite(k, t); big = k; bigMlp = false; }
      if (tr.mlpWrite(k, t) > bigVal) { bigVal = tr.mlpWrite(k, t); big = k; bigMlp = true; }
    }
    return [
      say(gettext("A block never replaces the stream: x = x + attention(norm(x)), then x = x + MLP(norm(x)). Each layer " +
        "only adds its contribution, so what the embedding put in is still there at the top.")),
      say(gettext("At %(token)s the stream's norm goes from %(from)s after the embedding to %(to)s after layer %(last)s.") + " " +
        (bigMlp ? gettext("The biggest single write is layer %(big)s's MLP (norm %(norm)s).")
          : gettext("The biggest single write is layer %(big)s's attention (norm %(norm)s).")),
      { token: tok(here), from: fmt(tr.residual(0, t)), to: fmt(tr.residual(L, t)), last: L - 1, big, norm: fmt(bigVal) }),
      say(gettext("In the 3D view this is the wall at the left: one column per token rising through the layers; a cell's " +
        "colour and depth show the norm there.")),
    ];
  }
  if (key === "logits") {
    const top = tr.topLogits(3);
    const norm = c.norm === "rmsnorm" ? "RMSNorm" : "LayerNorm";
    return [
      say(c.tie_embeddings
        ? gettext("At the top, a final %(norm)s and the unembedding — a %(C)s × %(V)s matrix, the embedding table itself, " +
          "reused — turn the last token's vector into %(V)s scores, one per token in the vocabulary: the logits, (B, T, vocab).")
        : gettext("At the top, a final %(norm)s and the unembedding — a %(C)s × %(V)s matrix — turn the last token's vector " +
          "into %(V)s scores, one per token in the vocabulary: the logits, (B, T, vocab)."),
      { norm, C: n(c.n_embd), V: n(c.vocab_size) }),
      say(gettext("After %(token)s the highest are %(top)s. Only differences between logits matter: adding the same number " +
        "to all of them changes nothing."), { token: tok(tr.tokens[T - 1]), top: listed(top.map(({ id, logit }) => [tr.vocab(id), fmt(logit, 2)])) }),
    ];
  }
  const probs = tr.probabilities(st.temperature);
  const top = tr.topLogits(3);
  let nll = 0, count = 0;
  for (let s = 0; s < T - 1; s++) { nll -= Math.log(Math.max(tr.a.target_prob[s], 1e-12)); count++; }
  return [
    say(gettext("A softmax turns the logits divided by the temperature (%(tau)s) into probabilities that sum to 1: %(top)s. " +
      "Sampling draws the next token from this; lower temperature sharpens it toward the top token, higher flattens it. " +
      "Move the slider below to see it."), { tau: st.temperature.toFixed(2), top: listed(top.map(({ id }) => [tr.vocab(id), pct(probs[id])])) }),
    count
      ? say(gettext("Along your text the model gave the token that actually came next an average loss of %(loss)s nats " +
        "(perplexity %(ppl)s) — the number training drives down."), { loss: fmt(nll / count, 2), ppl: fmt(Math.exp(nll / count), 1) })
      : say(gettext("With a single token there is no \"next token\" in your text to score.")),
  ];
}
