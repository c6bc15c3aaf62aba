// The Generate page's shared state: the boot data the template embeds, the settings of panels A and B, the panels,
// and which generation (uid) belongs to which panel. Every other module of the page imports it.

export const boot = JSON.parse(document.getElementById("gen-boot").textContent);
export const $ = (id) => document.getElementById(id);
export const FIELDS = ["temperature", "top_p", "min_p", "repetition_penalty", "top_k", "max_new_tokens", "seed", "stop"];
export const PRESETS = {
  greedy: { temperature: 0, top_k: 0, top_p: 1, min_p: 0, repetition_penalty: 1 },
  precise: { temperature: 0.3, top_k: 40, top_p: 0.9, min_p: 0.05, repetition_penalty: 1.1 },
  balanced: { temperature: 0.8, top_k: 40, top_p: 0.95, min_p: 0.05, repetition_penalty: 1.1 },
  creative: { temperature: 1.2, top_k: 0, top_p: 0.98, min_p: 0.05, repetition_penalty: 1.05 },
};
export const STOP_REASONS = { eos: gettext("end of text"), stop: gettext("stop string"), length: gettext("max new tokens"),
  user: gettext("stopped"), disconnected: gettext("connection lost"), timeout: gettext("time limit"), error: gettext("error") };

// a translated sentence with %(name)s filled in (the JS catalogue, templates/inference/generate.html)
export const I = (format, params) => interpolate(format, params, true);
const n = (x) => Number(x).toLocaleString();

// The worker sends notes as a code and its numbers (workers/inference.py); they are worded here, in the reader's
// language.
export function noteText(note) {
  if (typeof note === "string") return note;
  const p = { ...note, block: n(note.block ?? 0), context: n(note.context ?? 0) };
  if (note.code === "cropped") {
    return I(gettext("The context is %(context)s tokens; %(model)s sees at most %(block)s, so only the last %(block)s were used."), p);
  }
  if (note.code === "timeout") return I(gettext("Stopped after the time limit of %(seconds)s s."), p);
  if (note.code === "context_window") {
    return I(gettext("A model's context window is the most tokens it can read at once: %(model)s reads %(block)s " +
      "(its block_size). This text grew longer than that, so each new token was predicted from the last %(block)s " +
      "only (a sliding window); the beginning no longer shapes what comes next. This is normal for long generations."), p);
  }
  return note.code;
}

export const models = Object.fromEntries(boot.models.map((m) => [m.slug, m]));
export const defaults = { ...boot.defaults, stop: "", seed: "", model: boot.model };

export const state = {
  mode: "completion",
  compare: false,
  editing: "a",
  colorBy: "p",
  settings: { a: { ...defaults }, b: { ...defaults } },
  panels: {},
  byUid: new Map(), // generation uid -> {panel, version}
};
