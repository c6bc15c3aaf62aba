// The main menu on a narrow screen: one button folds and unfolds the navigation (the CSS decides when it shows).
// Escape or a click outside closes it; the links themselves are plain links.
const button = document.getElementById("menu-button");
const nav = document.getElementById("main-nav");
if (button && nav) {
  const setOpen = (open) => {
    button.setAttribute("aria-expanded", String(open));
    nav.classList.toggle("open", open);
  };
  button.addEventListener("click", () => setOpen(button.getAttribute("aria-expanded") !== "true"));
  document.addEventListener("keydown", (e) => { if (e.key === "Escape") setOpen(false); });
  document.addEventListener("click", (e) => {
    if (!nav.contains(e.target) && !button.contains(e.target)) setOpen(false);
  });
}
