"""The four steps of building a language model, as the home page tells them."""

STEPS = [
    {
        "n": 1,
        "key": "data",
        "url_name": "corpora:list",
        "title": "Data",
        "lead": "A model learns only from the text it is shown.",
        "body": "Pick a corpus — Shakespeare's plays or a thousand Song-dynasty poems are built in — or upload your "
        "own. See its size, its characters and words, and how it splits into training and validation text.",
    },
    {
        "n": 2,
        "key": "tokenizers",
        "url_name": "tokenization:playground",
        "title": "Tokens",
        "lead": "The model never sees letters: it sees integers.",
        "body": "A tokenizer cuts text into pieces and numbers them. Type into the playground and watch GPT-2, "
        "GPT-4's cl100k and o200k cut the same sentence differently; train your own byte-level BPE and step "
        "through its merges.",
    },
    {
        "n": 3,
        "key": "training",
        "url_name": "training:runs",
        "title": "Pretraining",
        "lead": "Predict the next token, billions of times.",
        "body": "Submit a GPT pretraining run from the browser — a nanoGPT-sized model trains on a laptop CPU in "
        "minutes — and watch its loss curve arrive live from a worker, with learning rate, gradient norm, "
        "tokens per second and samples as it learns.",
    },
    {
        "n": 4,
        "key": "generate",
        "url_name": "inference:generate",
        "title": "Inference",
        "lead": "Sampling, one token at a time.",
        "body": "Generate from your model or a real pretrained one (SmolLM2-135M), token by token, and see the "
        "probabilities behind each choice. Open the explorer to look inside the forward pass: attention per "
        "layer and head, on your own text.",
    },
]
