// The Generate page's socket (ws/inference/, apps/inference/consumers.py), over static/js/system/socket.js.
//
// The page sends {"action": "generate" | "branch" | "stop", ...}; the server answers "created", then the worker's
// "tokens" batches (each placed by its `offset`, so a repeated batch changes nothing) and a final "state". If a batch
// was dropped on the way (channels-redis drops messages to slow clients), the final state's n_tokens says so and the
// stored generation is fetched instead (panel.js).

import { openSocket } from "../system/socket.js";
import { showError, updateButtons } from "./form.js";
import { $, boot, state } from "./state.js";

let socket = null;
const status = $("ws-status");

export function connect() {
  socket = openSocket(boot.urls.ws, {
    baseMs: 300,
    maxMs: 5000,
    onOpen: () => { status.textContent = gettext("live"); status.className = "badge ok"; },
    onClose: () => {
      status.textContent = gettext("disconnected — reconnecting…");
      status.className = "badge bad";
      for (const panel of Object.values(state.panels)) panel.connectionLost();
    },
    onMessage: handle,
  });
}

export function send(message) {
  if (!socket || !socket.send(message)) {
    showError(gettext("Not connected to the server yet: try again in a moment."));
    return false;
  }
  return true;
}

function handle(m) {
  if (m.type === "error") {
    const panel = m.panel && state.panels[m.panel];
    if (panel && panel.pending) panel.failed(m.message);
    else showError(m.message);
    updateButtons();
    return;
  }
  if (m.type === "created") {
    const panel = state.panels[m.panel];
    if (!panel) return;
    const version = panel.started(m);
    state.byUid.set(m.generation, { panel, version });
    updateButtons();
    return;
  }
  const entry = state.byUid.get(m.generation);
  if (!entry) return;
  if (m.type === "tokens") entry.panel.tokens(entry.version, m);
  else if (m.type === "state") entry.panel.state(entry.version, m);
  updateButtons();
}
