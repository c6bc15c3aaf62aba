"""The four steps of building a language model, as the home page tells them, and the pages still to come.

Each page that a later piece of work fills is listed in PLANNED with what it will do, so the page says so plainly.
"""

STEPS = [
    {
        "n": 1,
        "key": "data",
        "title": "Data",
        "lead": "A model learns only from the text it is shown.",
        "body": "Pick a corpus — Shakespeare's plays or a thousand Song-dynasty poems are built in — or upload your "
        "own. See its size, its characters and words, and how it splits into training and validation text.",
    },
    {
        "n": 2,
        "key": "tokenizers",
        "title": "Tokens",
        "lead": "The model never sees letters: it sees integers.",
        "body": "A tokenizer cuts text into pieces and numbers them. Type into the playground and watch GPT-2, "
        "GPT-4's cl100k and o200k cut the same sentence differently; train your own byte-level BPE and step "
        "through its merges.",
    },
    {
        "n": 3,
        "key": "training",
        "title": "Pretraining",
        "lead": "Predict the next token, billions of times.",
        "body": "Submit a GPT pretraining run from the browser — a nanoGPT-sized model trains on a laptop CPU in "
        "minutes — and watch its loss curve arrive live from a worker, with learning rate, gradient norm, "
        "tokens per second and samples as it learns.",
    },
    {
        "n": 4,
        "key": "generate",
        "title": "Inference",
        "lead": "Sampling, one token at a time.",
        "body": "Generate from your model or a real pretrained one (SmolLM2-135M), token by token, and see the "
        "probabilities behind each choice. Open the explorer to look inside the forward pass: attention per "
        "layer and head, on your own text.",
    },
]

PLANNED = {
    "data": {
        "title": "Data",
        "what": "Corpora: the bundled Shakespeare and Song ci texts, your uploads (UTF-8 checked, size-limited), "
        "their statistics and preview, the train/validation split, and encoding a corpus into token shards "
        "with a live progress bar.",
    },
    "tokenizers": {
        "title": "Tokenizers",
        "what": "The tokenizer playground (tokens as coloured spans as you type, ids, counts, side-by-side "
        "comparison of gpt2, p50k, cl100k and o200k), byte-level BPE training on a corpus, the merge explorer "
        "and a vocabulary browser.",
    },
    "training": {
        "title": "Training",
        "what": "GPT pretraining runs submitted from the browser with presets and live estimates, a queue, and a "
        "live dashboard (loss curves, learning rate, gradient norm, tokens/s, MFU, samples), with cancel, "
        "resume and fork.",
    },
    "generate": {
        "title": "Generate",
        "what": "Streaming generation with sampling controls, each token coloured by its probability with the "
        "alternatives on hover, branching, side-by-side comparison, and an OpenAI-compatible HTTP API.",
    },
    "explorer": {
        "title": "Explorer",
        "what": "A 3D view of the forward pass on real weights and your own text: attention patterns per layer "
        "and head, the residual stream, next-token probabilities, a guided walk-through, and attention "
        "forming across a run's checkpoints.",
    },
    "models": {
        "title": "Models",
        "what": "The model registry: checkpoints promoted from runs, imported models (SmolLM2-135M out of the "
        "box, GGUF and Hugging Face files), their lineage from corpus to checkpoint. Staff manage them in "
        "the admin.",
    },
}
