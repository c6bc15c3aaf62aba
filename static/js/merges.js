// The merge explorer's island: ◀ ▶ buttons, the number box and "Play" move the slider; htmx re-tokenizes on its
// input event (the form listens to #merge-n).

const slider = document.getElementById("merge-n");
const number = document.getElementById("merge-n-num");
const play = document.getElementById("merge-play");
let timer = null;

function setN(n) {
  n = Math.max(0, Math.min(Number(slider.max), Math.round(n)));
  slider.value = n;
  number.value = n;
  slider.dispatchEvent(new Event("input", { bubbles: true }));
}

slider.addEventListener("input", () => { number.value = slider.value; });
number.addEventListener("change", () => setN(Number(number.value)));
document.getElementById("merge-prev").addEventListener("click", () => setN(Number(slider.value) - 1));
document.getElementById("merge-next").addEventListener("click", () => setN(Number(slider.value) + 1));

// Clicking a token jumps to the merge that made it.
document.addEventListener("click", (e) => {
  const tok = e.target.closest(".merge-tokens [data-merge]");
  if (tok) setN(Number(tok.dataset.merge));
});

function stop() { clearInterval(timer); timer = null; play.textContent = gettext("▶ Play"); }
play.addEventListener("click", () => {
  if (timer) return stop();
  const max = Number(slider.max);
  if (Number(slider.value) >= max) setN(0);
  // about 200 steps from start to end; one merge at a time for small vocabularies
  const step = Math.max(1, Math.round(max / 200));
  play.textContent = gettext("❚❚ Pause");
  timer = setInterval(() => {
    const next = Number(slider.value) + step;
    setN(next);
    if (next >= max) stop();
  }, 250);
});
