// The arena's island: streams a battle's two answers into #battle and opens the vote once both are complete.
// It talks to ws/arena/battles/<uid>/ (apps/arena/consumers.py), which forwards the inference workers' events per
// side; htmx swaps #battle when a battle starts or a vote is cast, and this script follows the swap. The socket is
// system/socket.js's, so it reconnects; on every connection (and after a Redis restart) the server sends each side
// as stored, which repairs whatever was missed.
import { openSocket } from "../system/socket.js";

let ws = null;
let current = null; // the uid the socket is for
const sides = {}; // "a" | "b" -> {count, gap, status}

const FINISHED = ["done", "failed", "stopped"];

function part(side, what) {
  return document.querySelector(`#side-${side} [data-${what}]`);
}

// A side's status in the reader's language; the badge keeps the value itself in data-status.
const STATUS_WORDS = {queued: gettext("queued"), running: gettext("running"), done: gettext("done"),
                      failed: gettext("failed"), stopped: gettext("stopped")};

function setStatus(side, status) {
  sides[side].status = status;
  const badge = part(side, "status");
  if (badge) {
    badge.dataset.status = status;
    badge.textContent = STATUS_WORDS[status] || status;
    badge.className = `badge status-${status === "done" ? "succeeded" : status}`;
  }
}

function showSide(m) {
  const text = part(m.side, "text");
  if (typeof m.text === "string" && (FINISHED.includes(m.status) || m.type === "side")) {
    text.textContent = m.text; // the stored (or final) text is the truth; it repairs any batch the socket dropped
    sides[m.side].count = m.n_tokens || 0;
    sides[m.side].gap = false;
  }
  if (m.error) {
    const box = part(m.side, "error");
    box.textContent = m.error;
    box.hidden = false;
  }
  setStatus(m.side, m.status);
}

function appendTokens(m) {
  const s = sides[m.side];
  if (m.offset > s.count) s.gap = true; // a batch went missing: the final state event carries the whole text
  const fresh = m.pieces.slice(Math.max(0, s.count - m.offset));
  if (!s.gap) part(m.side, "text").textContent += fresh.join("");
  s.count = Math.max(s.count, m.offset + m.pieces.length);
}

function updateVote() {
  const done = ["a", "b"].every((k) => FINISHED.includes(sides[k].status));
  const complete = ["a", "b"].every((k) => sides[k].status === "done");
  document.querySelectorAll("#vote [data-vote]").forEach((b) => { b.disabled = !complete; });
  const note = document.getElementById("vote-note");
  if (!note) return;
  if (complete) note.textContent = gettext("Both answers are in: vote, then see who they were.");
  else if (done) note.textContent = gettext("An answer did not complete, so this battle cannot be judged: start another.");
  else note.textContent = gettext("Voting opens when both answers have finished.");
}

function follow() {
  const battle = document.getElementById("battle");
  const uid = battle && battle.dataset.uid;
  if (!uid || battle.dataset.voted === "1") { // no battle, or judged: nothing more to stream
    if (ws) { ws.close(); ws = null; current = null; }
    return;
  }
  if (uid === current && ws) return; // the same battle re-rendered (a refused vote): keep streaming
  if (ws) ws.close();
  current = uid;
  sides.a = {count: 0, gap: false, status: part("a", "status").dataset.status};
  sides.b = {count: 0, gap: false, status: part("b", "status").dataset.status};
  ws = openSocket(battle.dataset.ws, {
    onMessage: (m) => {
      if (!sides[m.side] || !document.getElementById(`side-${m.side}`)) return;
      if (m.type === "tokens") appendTokens(m);
      else if (m.type === "side" || m.type === "state") showSide(m);
      updateVote();
    },
    onClose: (e) => {
      if (e.code === 4401 || e.code === 4403) {
        const note = document.getElementById("vote-note");
        if (note) note.textContent = gettext("This battle is not yours to watch: sign in as its owner or start one.");
        return false;
      }
      // both sides finished: nothing more will come, so no need to reconnect
      return !["a", "b"].every((k) => FINISHED.includes(sides[k].status));
    },
  });
}

document.body.addEventListener("htmx:afterSwap", follow);
follow();
