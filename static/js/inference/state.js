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
export const STOP_REASONS = { eos: "end of text", stop: "stop string", length: "max new tokens", user: "stopped",
  disconnected: "connection lost", timeout: "time limit", error: "error" };

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
