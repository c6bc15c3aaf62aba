"""The journey of building a language model, as the home page tells it and each step's page ends it.

One list, in order. A step is a page of the app (`url_name`) and the URL prefix its pages live under (`prefix`);
the "Next step" box at the end of a page is the step after the one whose prefix the page is under. A later step
(fine-tuning, RL) joins the journey by adding a line here once its page exists; `journey()` drops any step whose URL
does not resolve, so the home page and the next-step links never point at a page that is not there.
"""

from django.urls import NoReverseMatch, reverse
from django.utils.translation import gettext_lazy as _

STEPS = [
    {
        "n": 1,
        "key": "data",
        "url_name": "corpora:list",
        "prefix": "/data/",
        "title": _("Data"),
        "lead": _("A model learns only from the text it is shown."),
        "body": _("Pick a corpus — Shakespeare's plays or a thousand Song-dynasty poems are built in — or upload your "
                  "own. See its size, its characters and words, and how it splits into training and validation text."),
        "open": _("Open the data sets"),
        "next_note": _("Chosen your text? Next, see how a tokenizer turns it into the integers a model reads."),
    },
    {
        "n": 2,
        "key": "tokenizers",
        "url_name": "tokenization:playground",
        "prefix": "/tokenizers/",
        "title": _("Tokens"),
        "lead": _("The model never sees letters: it sees integers."),
        "body": _("A tokenizer cuts text into pieces and numbers them. Type into the playground and watch GPT-2, "
                  "GPT-4's cl100k and o200k cut the same sentence differently; train your own byte-level BPE and "
                  "step through its merges."),
        "open": _("Open the tokenizer playground"),
        "next_note": _("Next, train a small GPT on those tokens: the smallest preset gives a recognisable result in "
                       "minutes on a laptop CPU."),
    },
    {
        "n": 3,
        "key": "training",
        "url_name": "training:runs",
        "prefix": "/training/",
        "title": _("Pretraining"),
        "lead": _("Predict the next token, billions of times."),
        "body": _("Submit a GPT pretraining run from the browser — a nanoGPT-sized model trains on a laptop CPU in "
                  "minutes — and watch its loss curve arrive live from a worker, with learning rate, gradient norm, "
                  "tokens per second and samples as it learns."),
        "open": _("Open pretraining"),
        "next_note": _("Once a run has a checkpoint, promote it to a model on the run's page; then generate with it."),
    },
    {
        "n": 4,
        "key": "generate",
        "url_name": "inference:generate",
        "prefix": "/generate/",
        "title": _("Inference"),
        "lead": _("Sampling, one token at a time."),
        "body": _("Generate from your model or a real pretrained one (SmolLM2-135M), token by token, and see the "
                  "probabilities behind each choice. Open the explorer to look inside the forward pass: attention "
                  "per layer and head, on your own text."),
        "open": _("Open Generate"),
        "next_note": _("Next, look inside the forward pass that chose those tokens: embeddings, attention, the MLP "
                       "and the logits, on your own text."),
    },
    {
        "n": 5,
        "key": "explorer",
        "url_name": "explorer:page",
        "prefix": "/explorer/",
        "title": _("Inside the model"),
        "lead": _("Follow your tokens through every layer."),
        "body": _("A 3D walk through the forward pass: the embedding, one block's attention and MLP with the shape "
                  "of every tensor, and the logits that become the next token's probabilities."),
        "open": _("Open the explorer"),
        "next_note": "",
    },
]


def _resolves(url_name: str) -> str | None:
    try:
        return reverse(url_name)
    except NoReverseMatch:
        return None


def journey() -> list[dict]:
    """The steps whose pages exist, each with its `url`, renumbered in order."""
    steps = []
    for step in STEPS:
        if url := _resolves(step["url_name"]):
            steps.append({**step, "url": url, "n": len(steps) + 1})
    return steps


def journey_next(path: str) -> dict | None:
    """For a page at `path`: the step it belongs to and the step after it (None off the journey or at its end)."""
    steps = journey()
    for here, step in enumerate(steps):
        if path.startswith(step["prefix"]) and here + 1 < len(steps):
            return {"here": step, "next": steps[here + 1]}
    return None
