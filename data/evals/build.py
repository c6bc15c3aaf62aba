"""
Build the bundled multiple-choice set from the bundled Shakespeare corpus, offline and deterministically (seeded):

    python data/evals/build.py        # rewrites shakespeare-words.jsonl

Each line is one problem, {"context": ..., "choices": [4 strings], "answer": index of the right choice}: the
speaker and the start of a line of verse, laid out as in the corpus ("SPEAKER:\nstart of the line"), and four words that could end it, one of them Shakespeare's. Scored the
lm-evaluation-harness way (workers/gpt/evaluate.py multiple_choice): the log-likelihood of each choice's tokens
given the context, acc (sum) and acc_norm (divided by the choice's length in characters). Chance is 25 %.

Choices start with the space that separates them from the context, as HellaSwag's do, and use only characters of
shakespeare.txt, so the char-level model can score them. Lines come only from the last 10 % of shakespeare.txt (the
part held out for validation by default), so a model pretrained on the train split has not read them. The three
wrong words are drawn from the last words of other held-out lines of similar length (within 2 characters), so
word length alone gives nothing away.
"""

import importlib.util
import json
import random
import re
from pathlib import Path

HERE = Path(__file__).resolve().parent


def _conversations_build():
    """data/conversations/build.py, for its corpus reader and held-out rule (loaded by path: it is not a package)."""
    spec = importlib.util.spec_from_file_location("conversations_build", HERE.parent / "conversations" / "build.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


_cb = _conversations_build()
VAL_FRACTION, speeches = _cb.VAL_FRACTION, _cb.speeches

SEED = 1337
N_PROBLEMS = 500


def build() -> list[dict]:
    text = (HERE.parent / "corpora" / "shakespeare.txt").read_text(encoding="utf-8")
    cut = int(len(text) * (1 - VAL_FRACTION))
    candidates = []  # (speaker, start of the line, its last word)
    for offset, speaker, lines in speeches(text):
        if offset < cut:
            continue
        for line in lines:
            m = re.fullmatch(r"(.*\S) ([A-Za-z]{3,})[.,;:!?]*", line)
            if m and len(m.group(1).split()) >= 4:
                candidates.append((speaker, m.group(1), m.group(2)))
    words = sorted({w for _, _, w in candidates})
    rng = random.Random(SEED)
    rng.shuffle(candidates)
    problems, seen = [], set()
    for speaker, start, word in candidates:
        if (start, word) in seen:
            continue
        seen.add((start, word))
        near = [w for w in words if abs(len(w) - len(word)) <= 2 and w.lower() != word.lower()]
        if len(near) < 3:
            continue
        wrong = rng.sample(near, 3)
        choices = [" " + word] + [" " + w for w in wrong]
        rng.shuffle(choices)
        problems.append({"context": f"{speaker}:\n{start}", "choices": choices,
                         "answer": choices.index(" " + word)})
        if len(problems) == N_PROBLEMS:
            break
    return problems


def main():
    path = HERE / "shakespeare-words.jsonl"
    problems = build()
    with open(path, "w", encoding="utf-8", newline="\n") as f:
        for p in problems:
            f.write(json.dumps(p, ensure_ascii=False) + "\n")
    print(f"{path.relative_to(HERE.parent.parent)}: {len(problems)} problems, {path.stat().st_size:,} bytes")


if __name__ == "__main__":
    main()
