"""
Models in files: outside formats in, our own format, and back out to one. numpy only: no torch, no Django.

    imported = gguf.read_gguf("SmolLM2-135M-Instruct.Q4_1.gguf")   # a Llama-family GGUF, any quantization gguf reads
    imported = hf.read_hf("path/to/dir")                          # config.json + model.safetensors (GPT-2 or Llama)
    path = llmlab.write_checkpoint(imported, "artifacts/models/7")  # ckpt-000000.safetensors + .json + tokenizer/
    model = checkpoint.load_model(path)                             # ... which model.py runs (the worker, with torch)
    hf.export_hf(path, "out/")                                      # config.json + model.safetensors + tokenizer.json

One module per format:

    imported.py     what an import produces (Imported), ImportRefused, the shape and value checks every reader runs
    gguf.py         GGUF files (llama.cpp), read
    hf.py           Hugging Face checkpoint directories, read and written (weights, config.json, tokenizer.json)
    safetensors.py  .safetensors headers and tensors with numpy (bfloat16 by hand)
    llmlab.py       OUR checkpoint format: its names, the JSON sidecar, and a numpy writer/reader of it
                    (workers/gpt/checkpoint.py, the torch side, takes the same names from there)

The tokenizer these readers build (ImportedTokenizer) and its directory format are in workers/gpt/tokenizers.py.

Why numpy only: converting is reading, reshaping and writing arrays, which needs no autograd. Without torch the
`seed` command can import SmolLM2 at first start from the launcher process, and the tests check every result against
torch references (our GPT, and Hugging Face transformers where it is installed) instead of trusting it.

What bites, and where it is handled:
- llama.cpp's GGUF conversion permutes the rows of the query and key projections, per head, from Hugging Face's
  "rotate half" RoPE layout to the interleaved-pairs layout its kernels use (convert_hf_to_gguf.py, `permute`).
  model.py rotates halves, so gguf.read_gguf applies the inverse permutation (`_unpermute_rope`).
- A byte-level BPE vocabulary from GGUF or tokenizer.json may lack a few single bytes (SmolLM2's lacks 21: control
  characters and bytes that never start valid UTF-8). tiktoken needs a rank for every byte, so those bytes get ranks
  past the end of the model's vocabulary; ImportedTokenizer.encode drops the ids the model has no row for.
- Pickle is never loaded: only .gguf and .safetensors files are read, and a directory that holds only
  pytorch_model.bin (a pickle, which can run code when loaded) is refused with the reason.
- Every file is checked before anything is written: magic and header, every tensor present with the shape the
  config implies, finite values. A refusal raises ImportRefused with a message that says what is wrong.
"""

from .imported import Imported, ImportRefused

__all__ = ["Imported", "ImportRefused"]
