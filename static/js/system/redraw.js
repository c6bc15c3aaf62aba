// Redraws that never slow what the page watches. A training run can publish many steps a second, and on a laptop
// the browser draws in software on the same cores that train, so a page must not draw once per message:
//
//   const redraw = redrawer(() => { chart.update(); renderStats(); }, { everyMs: 250 });
//   redraw();   // "something changed": call it as often as you like
//
// Calls are batched: draw() runs in an animation frame, at most once every `everyMs` (4 times a second by
// default), however many redraw() calls came in between. While the tab is hidden nothing is drawn at all; the
// calls are remembered, and one draw catches up when the tab is shown again.

export function redrawer(draw, { everyMs = 250 } = {}) {
  let wanted = false, frame = 0, timer = 0, last = -Infinity;

  function run() {
    frame = 0;
    if (document.hidden) return;  // still wanted: drawn on visibilitychange
    wanted = false;
    last = performance.now();
    draw();
  }

  function request() {
    wanted = true;
    if (frame || timer || document.hidden) return;
    const wait = last + everyMs - performance.now();
    if (wait > 0) timer = setTimeout(() => { timer = 0; frame = requestAnimationFrame(run); }, wait);
    else frame = requestAnimationFrame(run);
  }

  document.addEventListener("visibilitychange", () => { if (!document.hidden && wanted) request(); });
  return request;
}
