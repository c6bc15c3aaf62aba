// The playground's island: hover linking between a token and its id, the "ids beside tokens" toggle, and the
// state in the URL (tokenizers, options, and the text — deflate-compressed when long) so a view can be shared.
// Tokenizing itself is htmx: the form posts as you type and the server renders the panes.

const form = document.getElementById("playground");
const results = () => document.getElementById("results");
const LINK_TEXT_PLAIN_MAX = 400; // characters kept readable in the URL; longer text is compressed
const LINK_MAX = 60000; // longer links are not written to the address bar (browsers and chat apps cut them)

// Hovering a token lights up its id(s) and the other way round, within one pane.
function highlight(event, on) {
  const el = event.target.closest("[data-i]");
  const pane = el && el.closest(".pane");
  if (!pane) return;
  for (const twin of pane.querySelectorAll(`[data-i="${el.dataset.i}"]`)) twin.classList.toggle("hl", on);
}
document.addEventListener("mouseover", (e) => highlight(e, true));
document.addEventListener("mouseout", (e) => highlight(e, false));

// Ids beside tokens: a class on #results, no round trip.
const showIds = document.getElementById("show-ids");
function applyShowIds() { results()?.classList.toggle("show-ids", showIds.checked); }
showIds.addEventListener("change", () => { applyShowIds(); writeUrl(); });

async function deflate(text) {
  const stream = new Blob([text]).stream().pipeThrough(new CompressionStream("deflate-raw"));
  const bytes = new Uint8Array(await new Response(stream).arrayBuffer());
  let binary = "";
  for (let i = 0; i < bytes.length; i += 0x8000) binary += String.fromCharCode(...bytes.subarray(i, i + 0x8000));
  return btoa(binary).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
}

let pending = 0;
async function writeUrl() {
  const ticket = ++pending;
  const data = new FormData(form);
  const params = new URLSearchParams();
  for (const name of data.getAll("t")) if (name) params.append("t", name);
  for (const flag of ["ws", "special", "ids"]) if (data.get(flag)) params.set(flag, "1");
  const text = data.get("text") || "";
  if (text.length <= LINK_TEXT_PLAIN_MAX) params.set("text", text);
  else params.set("z", await deflate(text));
  if (ticket !== pending) return; // a newer state was written meanwhile
  const url = `${location.pathname}?${params}`;
  const note = document.getElementById("link-note");
  if (url.length > LINK_MAX) {
    note.textContent = interpolate(gettext("text too long to share in a link (%s KB compressed)"), [Math.round(url.length / 1024)]);
    history.replaceState(null, "", location.pathname + "?" + new URLSearchParams(params.getAll("t").map((t) => ["t", t])));
  } else {
    note.textContent = "";
    history.replaceState(null, "", url);
  }
}

document.body.addEventListener("htmx:afterSwap", (e) => {
  if (e.detail.target.id === "results") { applyShowIds(); writeUrl(); }
});

document.getElementById("copy-link").addEventListener("click", async () => {
  await writeUrl();
  const note = document.getElementById("link-note");
  try {
    await navigator.clipboard.writeText(location.href);
    note.textContent = gettext("link copied");
  } catch {
    note.textContent = gettext("copy the address bar: it holds this view");
  }
});

applyShowIds();
