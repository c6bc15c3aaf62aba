// The evaluation form: offer only the data sets of the chosen method, and only the splits of the chosen data set.
// Without this script every option stays available and the server refuses a mismatch with a clear message.

function wire(form) {
  if (form.dataset.wired) return;
  form.dataset.wired = "1";
  const method = form.querySelector("[name=method]");
  const dataset = form.querySelector("[name=dataset]");
  const split = form.querySelector("[name=split]");
  const k = form.querySelector("[name=k]");

  function syncSplits() {
    const option = dataset.selectedOptions[0];
    const allowed = option ? option.dataset.splits.split(",") : [];
    for (const o of split.options) o.hidden = o.disabled = !allowed.includes(o.value);
    if (split.selectedOptions[0]?.disabled) split.value = allowed[0] || "";
  }

  function syncDatasets() {
    for (const group of dataset.querySelectorAll("optgroup")) {
      const on = group.dataset.method === method.value;
      group.hidden = group.disabled = !on;
    }
    if (!dataset.selectedOptions[0] || dataset.selectedOptions[0].parentElement.disabled) {
      const first = dataset.querySelector(`optgroup[data-method="${method.value}"] option`);
      dataset.value = first ? first.value : "";
    }
    k.disabled = method.value !== "generate";
    if (k.disabled) k.value = 1;
    syncSplits();
  }

  method.addEventListener("change", syncDatasets);
  dataset.addEventListener("change", syncSplits);
  syncDatasets();
}

function wireAll() {
  document.querySelectorAll("[data-evals-form]").forEach(wire);
}

wireAll();
document.body.addEventListener("htmx:afterSettle", wireAll);
