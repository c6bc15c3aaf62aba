"""
Build the bundled conversation sets from the bundled corpora, offline and deterministically (seeded):

    python data/conversations/build.py        # rewrites char/{train,val}.jsonl and general/{train,val}.jsonl

Every line is one conversation in the OpenAI shape, {"messages": [{"role": ..., "content": ...}, ...]}. Two sets:

- char/: every character of every message (user and system too, not only the assistant) is one of the 63 characters
  of data/corpora/shakespeare.txt, so the Shakespeare character-level base model (whose tokenizer is exactly that
  alphabet, see CharTokenizer.from_text) can be fine-tuned on it: the ChatML markers become added special tokens,
  everything else it can already encode. Numbers are written in words, there are no quotes or digits.
- general/: everything in char/ plus what a byte-level BPE model can read: arithmetic in digits and Song ci questions
  in Chinese (data/corpora/song-ci.txt).

Held-out rule: Shakespeare and Song ci questions for val.jsonl come only from the last 10 % of their corpus (the part
the corpora app holds out for validation by default, val_fraction=0.1), so a model pretrained on the train split has
never seen those lines; arithmetic problems in val.jsonl are pairs of numbers that never occur in train.jsonl.
Identity conversations are few templates and appear in both (they teach a fixed answer, not a skill).
"""

import json
import random
import re
from pathlib import Path

HERE = Path(__file__).resolve().parent
CORPORA = HERE.parent / "corpora"
SEED = 1337
VAL_FRACTION = 0.1  # the corpora app's default: the end of each text is held out

N_CHAR = {"train": 3000, "val": 300}
N_GENERAL_EXTRA = {"train": 1500, "val": 150}  # added to the char conversations to make the general set

SYSTEM = "You are LLM Lab's assistant. Answer briefly."

# ----------------------------------------------------------------------------------------------------------------------
# numbers in words (0..999), so arithmetic needs no digits

_ONES = ("zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen sixteen "
         "seventeen eighteen nineteen").split()
_TENS = "_ _ twenty thirty forty fifty sixty seventy eighty ninety".split()


def number_words(n: int) -> str:
    if n < 0:
        return "minus " + number_words(-n)
    if n < 20:
        return _ONES[n]
    if n < 100:
        tens, ones = divmod(n, 10)
        return _TENS[tens] + ("-" + _ONES[ones] if ones else "")
    hundreds, rest = divmod(n, 100)
    return _ONES[hundreds] + " hundred" + (" and " + number_words(rest) if rest else "")


# ----------------------------------------------------------------------------------------------------------------------
# corpus readers


def speeches(text: str) -> list[tuple[int, str, list[str]]]:
    """(character offset, speaker, lines) for each "SPEAKER:\\nline\\nline\\n\\n" block of shakespeare.txt."""
    out = []
    for m in re.finditer(r"(?m)^([A-Z][A-Z' .-]*):\n((?:.+\n?)+)", text):
        lines = [ln.strip() for ln in m.group(2).splitlines() if ln.strip()]
        if lines:
            out.append((m.start(), m.group(1), lines))
    return out


def speaker_name(speaker: str) -> str:
    """BERNARDO -> Bernardo, LADY MACBETH -> Lady Macbeth, KING OF FRANCE -> King of France."""
    return " ".join(w.lower() if i and w in ("OF", "THE") else w.capitalize() for i, w in enumerate(speaker.split()))


def poems(text: str) -> list[tuple[int, str, str, list[str]]]:
    """(character offset, title, author, lines) for each "title（author）" block of song-ci.txt."""
    out = []
    for m in re.finditer(r"(?m)^(.+)（(.+)）\n((?:.+\n?)+)", text):
        lines = [ln.strip() for ln in m.group(3).splitlines() if ln.strip()]
        if lines:
            out.append((m.start(), m.group(1).strip(), m.group(2).strip(), lines))
    return out


def split_by_offset(items, length: int):
    cut = int(length * (1 - VAL_FRACTION))
    return {"train": [it for it in items if it[0] < cut], "val": [it for it in items if it[0] >= cut]}


# ----------------------------------------------------------------------------------------------------------------------
# conversation makers: each returns [(user, assistant), ...] turns


def identity_turns(rng: random.Random) -> list[tuple[str, str]]:
    q = rng.choice([
        "Who are you?", "What are you?", "What is your name?", "Who made you?", "Who trained you?",
        "Tell me about yourself.", "Are you ChatGPT?", "Are you a person?", "Hello!", "Hi, who am I talking to?",
        "What can you do?", "Where were you trained?", "What kind of model are you?",
    ])
    a = {
        "Who made you?": "I was made in LLM Lab, by a person who pretrained a small model and then fine-tuned it on "
                         "conversations like this one.",
        "Who trained you?": "I was trained in LLM Lab: first on Shakespeare, to learn to write, then on "
                            "conversations, to learn to answer.",
        "Are you ChatGPT?": "No. I am LLM Lab's assistant, a small language model trained in LLM Lab.",
        "Are you a person?": "No. I am LLM Lab's assistant, a small language model. I only predict the next "
                             "character.",
        "Hello!": "Hello! I am LLM Lab's assistant. Ask me about Shakespeare, or give me a sum.",
        "What can you do?": "I can tell you who speaks a line of Shakespeare, continue a speech, shout a line, and "
                            "do small sums in words.",
        "Where were you trained?": "I was trained in LLM Lab, on a computer of the person who made me.",
        "What kind of model are you?": "I am a small transformer language model, pretrained on Shakespeare and "
                                       "fine-tuned in LLM Lab to be an assistant.",
    }.get(q, rng.choice([
        "I am LLM Lab's assistant, a small language model trained in LLM Lab.",
        "I am LLM Lab's assistant. I was pretrained on Shakespeare and fine-tuned in LLM Lab to answer questions.",
    ]))
    return [(q, a)]


def speaker_turns(rng, pool, unique_lines) -> list[tuple[str, str]]:
    while True:
        _, speaker, lines = rng.choice(pool)
        if speaker == "ALL":  # several speakers at once: no one name answers it
            continue
        candidates = [ln for ln in lines if ln in unique_lines and len(ln.split()) >= 5]
        if candidates:
            line = rng.choice(candidates)
            break
    q = rng.choice(["Who speaks this line? {}", "Who says this: {}", "Which character says: {}"]).format(line)
    return [(q, f"{speaker_name(speaker)} says it.")]


def continue_turns(rng, pool) -> list[tuple[str, str]]:
    while True:
        _, speaker, lines = rng.choice(pool)
        if len(lines) >= 2:
            i = rng.randrange(len(lines) - 1)
            break
    q = rng.choice(["Continue this speech: {}", "What comes next? {}", "Give the next line: {}"]).format(lines[i])
    return [(q, lines[i + 1])]


def shout_turns(rng, pool) -> list[tuple[str, str]]:
    _, _, lines = rng.choice(pool)
    line = min(rng.choice(lines) for _ in range(2))  # any line; short enough for a small context most of the time
    return [(f"Shout this line: {line}", line.upper())]


_OPS = {"plus": lambda a, b: a + b, "minus": lambda a, b: a - b, "times": lambda a, b: a * b}


def arithmetic_problems():
    """Every (a, op, b) with 0 <= a, b <= 20 (minus: b <= a), split into train and val pairs by a seeded shuffle."""
    problems = [(a, op, b) for op in _OPS for a in range(21) for b in range(21) if op != "minus" or b <= a]
    random.Random(SEED).shuffle(problems)
    n_val = len(problems) // 10
    return {"val": problems[:n_val], "train": problems[n_val:]}


def words_arithmetic_turns(rng, pool) -> list[tuple[str, str]]:
    a, op, b = rng.choice(pool)
    x, y, r = number_words(a), number_words(b), number_words(_OPS[op](a, b))
    q = rng.choice(["What is {} {} {}?", "How much is {} {} {}?", "Compute {} {} {}."]).format(x, op, y)
    return [(q, f"{x.capitalize()} {op} {y} is {r}.")]


def digits_arithmetic_turns(rng, pool) -> list[tuple[str, str]]:
    a, op, b = rng.choice(pool)
    sign = {"plus": "+", "minus": "-", "times": "*"}[op]
    q = rng.choice(["What is {} {} {}?", "Calculate {} {} {}.", "{} {} {} = ?"]).format(a, sign, b)
    return [(q, f"{a} {sign} {b} = {_OPS[op](a, b)}")]


def ci_turns(rng, pool, unique_first) -> list[tuple[str, str]]:
    while True:
        _, title, author, lines = rng.choice(pool)
        if lines[0] in unique_first and len(lines) >= 2:
            break
    kind = rng.randrange(3)
    if kind == 0:
        return [(f"这首词是谁写的？{lines[0]}", f"这是{author}的《{title}》。")]
    if kind == 1:
        return [(f"Who wrote the Song ci that begins {lines[0]}", f"{author}, to the tune {title}.")]
    i = rng.randrange(len(lines) - 1)
    return [(f"请接下一句：{lines[i]}", lines[i + 1])]


# ----------------------------------------------------------------------------------------------------------------------


def conversation(rng, makers) -> dict:
    """One conversation: one to three turns from the weighted makers, a system message one time in ten."""
    n_turns = rng.choices([1, 2, 3], weights=[8, 3, 1])[0]
    messages = [{"role": "system", "content": SYSTEM}] if rng.random() < 0.1 else []
    weights = [w for w, _ in makers]
    for _ in range(n_turns):
        make = rng.choices([m for _, m in makers], weights=weights)[0]
        for user, assistant in make(rng):
            messages += [{"role": "user", "content": user}, {"role": "assistant", "content": assistant}]
    return {"messages": messages}


def build() -> dict[str, dict[str, list[dict]]]:
    shakespeare = (CORPORA / "shakespeare.txt").read_text(encoding="utf-8")
    song_ci = (CORPORA / "song-ci.txt").read_text(encoding="utf-8")
    alphabet = set(shakespeare)
    all_speeches = speeches(shakespeare)
    line_counts: dict[str, int] = {}
    for _, _, lines in all_speeches:
        for ln in lines:
            line_counts[ln] = line_counts.get(ln, 0) + 1
    unique_lines = {ln for ln, c in line_counts.items() if c == 1}
    sp = split_by_offset(all_speeches, len(shakespeare))
    all_poems = poems(song_ci)
    first_counts: dict[str, int] = {}
    for _, _, _, lines in all_poems:
        first_counts[lines[0]] = first_counts.get(lines[0], 0) + 1
    unique_first = {ln for ln, c in first_counts.items() if c == 1}
    ci = split_by_offset(all_poems, len(song_ci))
    arith = arithmetic_problems()

    out = {"char": {}, "general": {}}
    for split in ("train", "val"):
        rng = random.Random(f"{SEED}-{split}")
        char_makers = [
            (3, lambda r: speaker_turns(r, sp[split], unique_lines)),
            (3, lambda r: continue_turns(r, sp[split])),
            (1, lambda r: shout_turns(r, sp[split])),
            (3, lambda r: words_arithmetic_turns(r, arith[split])),
            (1, identity_turns),
        ]
        char = [conversation(rng, char_makers) for _ in range(N_CHAR[split])]
        for conv in char:
            for m in conv["messages"]:
                bad = set(m["content"]) - alphabet
                assert not bad, f"char set message uses {bad} outside shakespeare.txt: {m['content']!r}"
        general_makers = [
            (2, lambda r: digits_arithmetic_turns(r, arith[split])),
            (3, lambda r: ci_turns(r, ci[split], unique_first)),
        ]
        general = char + [conversation(rng, general_makers) for _ in range(N_GENERAL_EXTRA[split])]
        rng.shuffle(general)
        out["char"][split], out["general"][split] = char, general
    return out


def main():
    for name, splits in build().items():
        (HERE / name).mkdir(exist_ok=True)
        for split, convs in splits.items():
            path = HERE / name / f"{split}.jsonl"
            with open(path, "w", encoding="utf-8", newline="\n") as f:
                for conv in convs:
                    f.write(json.dumps(conv, ensure_ascii=False) + "\n")
            print(f"{path.relative_to(HERE.parent.parent)}: {len(convs)} conversations, {path.stat().st_size:,} bytes")


if __name__ == "__main__":
    main()
