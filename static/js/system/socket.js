// One reconnecting websocket for every page that opens one (generate, training run, arena…).
//
//   const socket = openSocket(path, { onOpen, onMessage, onClose });
//   socket.send({ action: "stop", ... })  // false (and nothing sent) while the socket is down
//
// Messages are JSON both ways. After a close the socket reconnects with exponential back-off (baseMs · 2^tries, at
// most maxMs), unless onClose returns false: a 4xxx close code from the server (not allowed, no such object) means
// trying again will not help. onOpen runs after every (re)connection, so a page can ask for what it missed.

export function openSocket(path, { onOpen = null, onMessage, onClose = null, baseMs = 300, maxMs = 10000 } = {}) {
  let ws = null;
  let tries = 0;
  let stopped = false;

  function connect() {
    const scheme = location.protocol === "https:" ? "wss://" : "ws://";
    ws = new WebSocket(scheme + location.host + path);
    ws.onopen = () => { tries = 0; if (onOpen) onOpen(); };
    ws.onmessage = (e) => onMessage(JSON.parse(e.data));
    ws.onclose = (e) => {
      if (stopped) return;
      if (onClose && onClose(e) === false) { stopped = true; return; }
      setTimeout(connect, Math.min(maxMs, baseMs * 2 ** tries++));
    };
  }

  connect();
  return {
    get open() { return ws !== null && ws.readyState === WebSocket.OPEN; },
    send(message) {
      if (!this.open) return false;
      ws.send(JSON.stringify(message));
      return true;
    },
    close() { stopped = true; if (ws) ws.close(); },
  };
}
