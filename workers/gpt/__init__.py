"""The model library: pure PyTorch + numpy + tiktoken, nothing from Django.

Half of it needs no torch, and the web process imports only that half: the modules listed in TORCH_FREE (config,
tokenizers, chat templates, file formats, atomic files). tests/test_boundary.py checks that every `apps.*` import of
workers.gpt names one of them, and that none of them imports torch or Django. Everything else here (model, train,
generate, checkpoint, trace, data, ...) runs only in the workers.
"""

TORCH_FREE = (
    "workers.gpt",
    "workers.gpt.config",
    "workers.gpt.tokenizers",
    "workers.gpt.chat",
    "workers.gpt.tasks",
    "workers.gpt.conversations",
    "workers.gpt.fileio",
    "workers.gpt.formats",
    "workers.gpt.formats.imported",
    "workers.gpt.formats.gguf",
    "workers.gpt.formats.hf",
    "workers.gpt.formats.safetensors",
    "workers.gpt.formats.llmlab",
    "workers.gpt.scaling",
    "workers.gpt.grpo_config",
)
