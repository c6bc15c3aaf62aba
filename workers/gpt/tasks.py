"""
Tasks with checkers: problems whose answers a program can verify, for reinforcement learning with verifiable rewards
(GRPO, as in DeepSeek-R1) and for generate-then-check evaluation.

Standard library only: the web side imports this module to preview tasks and validate uploads, and must not import
torch. Three generated tasks, each seeded and with a difficulty from 1 to 5:

- arithmetic: "What is 48 + 7 * 13?"; difficulty sets the number of digits and of operators.
- countdown: reach a target with the given numbers, each used at most once, with + - * / (the TinyZero task). Any
  correct expression counts; the checker parses it with `ast` and evaluates it with exact fractions, never eval().
- letters: "How many times does the letter r appear in strawberry?", words from the bundled Shakespeare corpus.

What this module guarantees:
- Problems are a pure function of (task, split, n, difficulty, seed).
- The held-out split never shares a problem with the train split, whatever the seeds: a problem's split is decided
  by a hash of what makes it that problem (the expression; the sorted numbers and target; the word and letter), not
  by the order it was drawn in.
- check() never raises on model output: any text gets a reward and a reason.

User problems come as JSONL ({"prompt", "answer", optional "match": "exact"|"numeric"}); problems_from_jsonl()
validates every line before returning anything, so a caller that saves its result never saves half a file.
"""

import ast
import dataclasses
import hashlib
import json
import random
import re
from collections import Counter
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from fractions import Fraction
from functools import lru_cache
from pathlib import Path

TASKS = ("arithmetic", "countdown", "letters")
MATCHES = ("exact", "numeric", "countdown")
SPLITS = ("train", "held_out")
DIFFICULTIES = (1, 2, 3, 4, 5)
HELD_OUT_PERCENT = 20  # share of each task's problem space that belongs to the held-out split

INSTRUCTION = ("Think step by step inside <think> </think> tags, then give only the final answer inside "
               "<answer> </answer> tags.")
# what follows the task statement: the R1 format (the default), or a short answer (cheap RL steps for a small model
# that cannot yet keep the format; the checker then reads the last number)
INSTRUCTIONS = {"think": INSTRUCTION, "short": "Answer in one short sentence."}
MAX_EXPRESSION_CHARS = 200  # longer "expressions" are refused unparsed: nothing is worth parsing a megabyte for
MAX_JSONL_LINES = 100_000
MAX_PROMPT_CHARS = 20_000
WORDS_CORPUS = Path(__file__).resolve().parents[2] / "data" / "corpora" / "shakespeare.txt"


class TaskError(ValueError):
    """A task request or an uploaded problem is invalid. `line` is the 1-based JSONL line, when there is one."""

    def __init__(self, message: str, line: int | None = None):
        super().__init__(f"line {line}: {message}" if line is not None else message)
        self.line = line


@dataclass(frozen=True)
class Problem:
    prompt: str  # what the model is asked (the task statement plus INSTRUCTION)
    answer: str  # the reference answer: a number, a string, or for countdown the target
    task: str  # "arithmetic" | "countdown" | "letters" | "upload"
    match: str = "numeric"  # how check() compares: "exact" | "numeric" | "countdown"
    metadata: dict = field(default_factory=dict, compare=False)  # e.g. the numbers, a solution, the difficulty

    def to_dict(self) -> dict:
        return {"prompt": self.prompt, "answer": self.answer, "task": self.task, "match": self.match,
                "metadata": self.metadata}


@dataclass(frozen=True)
class CheckResult:
    reward: float  # 1.0 for a correct answer, plus format_reward when the text has the think/answer format
    correct: bool
    answer: str | None  # what was read as the final answer (None: nothing could be read)
    formatted: bool  # the whole text is <think>...</think><answer>...</answer>
    reason: str  # a short human sentence: why it is right or wrong


# ------------------------------------------------------------------------------------------------ generated tasks


def task_problems(task: str, *, split: str = "train", n: int = 100, difficulty: int = 1, seed: int = 0,
                  instruction: str = "think") -> list[Problem]:
    """n distinct problems of `task` from `split` ("train" or "held_out") at `difficulty` (1-5); `instruction`
    ("think" or "short", INSTRUCTIONS) is what follows each task statement. It does not change which problems are
    drawn or their split."""
    if task not in TASKS:
        raise TaskError(f"unknown task {task!r}: choose one of {', '.join(TASKS)}")
    if split not in SPLITS:
        raise TaskError(f"unknown split {split!r}: choose 'train' or 'held_out'")
    if difficulty not in DIFFICULTIES:
        raise TaskError(f"difficulty ({difficulty!r}) must be an integer from 1 to 5")
    if not isinstance(n, int) or n < 1:
        raise TaskError(f"n ({n!r}) must be a positive number of problems")
    if instruction not in INSTRUCTIONS:
        raise TaskError(f"unknown instruction {instruction!r}: choose one of {', '.join(INSTRUCTIONS)}")
    make = {"arithmetic": _arithmetic, "countdown": _countdown, "letters": _letters}[task]
    rng = random.Random(f"{task}:{difficulty}:{seed}:{split}")  # str seeds hash the same in every process
    problems, seen = [], set()
    attempts = 0
    while len(problems) < n:
        attempts += 1
        if attempts > 200 * n + 2000:
            raise TaskError(f"only {len(problems)} distinct {task} problems of difficulty {difficulty} exist in the "
                            f"{split} split: ask for fewer, or raise the difficulty for a larger space")
        key, problem = make(rng, difficulty)
        if key in seen or in_held_out(key) != (split == "held_out"):
            continue
        seen.add(key)
        if instruction != "think":
            problem = dataclasses.replace(problem,
                                          prompt=problem.prompt.replace(INSTRUCTION, INSTRUCTIONS[instruction]))
        problems.append(problem)
    return problems


def in_held_out(key: str) -> bool:
    """Whether the problem with this identity belongs to the held-out split (a stable hash, not a draw)."""
    return int(hashlib.sha256(key.encode()).hexdigest()[:8], 16) % 100 < HELD_OUT_PERCENT


# difficulty -> (digits per operand, number of operators, operators to draw from). Level 1 is the exception: two
# numbers from 0 to SMALL_MAX, a sum or a difference that is never negative ("23 - 7", "5 + 18"); about 1,450
# problems, so ~290 held out (one-digit numbers give only 200 problems, 40 held out: too few to measure a change)
ARITHMETIC_LEVELS = {1: (2, 1, "+-"), 2: (2, 1, "+-"), 3: (2, 2, "+-*"), 4: (3, 2, "+-*"), 5: (3, 3, "+-*")}
SMALL_MAX = 30


def _arithmetic(rng: random.Random, difficulty: int) -> tuple[str, Problem]:
    digits, n_ops, ops = ARITHMETIC_LEVELS[difficulty]
    if difficulty == 1:
        a, b, op = rng.randint(0, SMALL_MAX), rng.randint(0, SMALL_MAX), rng.choice(ops)
        if op == "-" and b > a:
            a, b = b, a
        expr = f"{a} {op} {b}"
    else:
        lo = 0 if digits == 1 else 10 ** (digits - 1)
        numbers = [rng.randint(lo, 10 ** digits - 1) for _ in range(n_ops + 1)]
        expr = str(numbers[0])
        for x in numbers[1:]:
            expr += f" {rng.choice(ops)} {x}"
    value = evaluate_expression(expr)
    answer = str(value.numerator)  # + - * of integers stays an integer
    prompt = f"What is {expr}? {INSTRUCTION}"
    return expr, Problem(prompt, answer, "arithmetic", "numeric",
                         {"expression": expr, "difficulty": difficulty})


# difficulty -> (how many numbers are given, largest number, how many of them the hidden solution uses)
COUNTDOWN_LEVELS = {1: (3, 10, 2), 2: (3, 20, 3), 3: (4, 25, 3), 4: (4, 50, 4), 5: (5, 100, 4)}


def _countdown(rng: random.Random, difficulty: int) -> tuple[str, Problem]:
    count, largest, used = COUNTDOWN_LEVELS[difficulty]
    while True:
        numbers = [rng.randint(1, largest) for _ in range(count)]
        # a hidden solution: combine `used` of the numbers left to right with random operators
        picked = rng.sample(numbers, used)
        expr = str(picked[0])
        for x in picked[1:]:
            op = rng.choice("+-*/")
            expr = f"({expr} {op} {x})" if op in "+-" else f"{expr} {op} {x}"
        try:
            value = evaluate_expression(expr)
        except ValueError:
            continue  # divided by zero
        if value.denominator == 1 and 1 <= value <= 1000:
            break
    target = int(value)
    shown = ", ".join(str(x) for x in numbers)
    prompt = (f"Using the numbers [{shown}], each at most once, and the operations + - * /, write an expression "
              f"equal to {target}. {INSTRUCTION} For example <answer>(1 + 2) * 3</answer>.")
    key = f"{sorted(numbers)}={target}"
    return key, Problem(prompt, str(target), "countdown", "countdown",
                        {"numbers": numbers, "target": target, "solution": expr, "difficulty": difficulty})


# difficulty -> (shortest and longest word, chance that the letter asked about is absent from the word)
LETTER_LEVELS = {1: (3, 5, 0.0), 2: (5, 7, 0.0), 3: (7, 9, 0.1), 4: (9, 11, 0.2), 5: (11, 20, 0.2)}


def _letters(rng: random.Random, difficulty: int) -> tuple[str, Problem]:
    shortest, longest, absent = LETTER_LEVELS[difficulty]
    words = [w for w in corpus_words() if shortest <= len(w) <= longest]
    word = rng.choice(words)
    if rng.random() < absent:
        letter = rng.choice(sorted(set("abcdefghijklmnopqrstuvwxyz") - set(word)))
    else:
        letter = rng.choice(word)  # letters that occur more often are asked about more often, as in "strawberry"
    count = word.count(letter)
    prompt = f'How many times does the letter "{letter}" appear in the word "{word}"? {INSTRUCTION}'
    return f"{word}:{letter}", Problem(prompt, str(count), "letters", "numeric",
                                       {"word": word, "letter": letter, "difficulty": difficulty})


@lru_cache(maxsize=1)
def corpus_words() -> tuple[str, ...]:
    """Distinct lower-case alphabetic words of the bundled Shakespeare corpus, sorted (so draws are reproducible)."""
    text = WORDS_CORPUS.read_text(encoding="utf-8").lower()
    return tuple(sorted(set(re.findall(r"\b[a-z]{3,}\b", text))))


# ----------------------------------------------------------------------------------------------------- the checker

_ANSWER = re.compile(r"<answer>(.*?)</answer>", re.DOTALL)
_FORMAT = re.compile(r"\s*<think>.*?</think>\s*<answer>.*?</answer>\s*", re.DOTALL)
# a number: optional minus (not when it follows a digit: "5-3" is a subtraction), digits with optional thousands
# commas ("1,000"), optional decimals. A trailing full stop is not a decimal point: "42." reads 42
_NUMBER = re.compile(r"(?<![\d.])-?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?")


def check(problem: Problem, text: str, *, format_reward: float = 0.0) -> CheckResult:
    """Score a model's `text` against `problem`: reward = correct + format_reward * formatted."""
    formatted = _FORMAT.fullmatch(text) is not None and len(_ANSWER.findall(text)) == 1
    content = extract_answer(text)
    if problem.match == "countdown":
        correct, answer, reason = _check_countdown(problem, content if content is not None else _last_line(text))
    elif problem.match == "numeric":
        answer = last_number(content if content is not None else text)
        if answer is None:
            correct, reason = False, "no number found in the answer"
        else:
            correct = _same_number(answer, problem.answer)
            reason = f"{answer} {'equals' if correct else 'is not'} {problem.answer}"
    else:
        answer = content if content is not None else _last_line(text)
        correct = normalize_text(answer) == normalize_text(problem.answer)
        reason = f"{answer.strip()!r} {'matches' if correct else 'does not match'} {problem.answer!r}"
    reward = float(correct) + (format_reward if formatted else 0.0)
    return CheckResult(reward=reward, correct=correct, answer=answer, formatted=formatted, reason=reason)


def extract_answer(text: str) -> str | None:
    """The content of the last closed <answer>...</answer>; else what follows an unclosed last <answer> (the model
    ran out of tokens mid-answer); else None. The last one wins, as in TinyZero: a model that corrects itself
    writes its final answer last."""
    closed = _ANSWER.findall(text)
    if closed:
        return closed[-1]
    at = text.rfind("<answer>")
    if at >= 0:
        return text[at + len("<answer>"):]
    return None


def last_number(text: str) -> str | None:
    """The last number in text, thousands commas removed ("1,000" -> "1000"); None if there is none."""
    found = _NUMBER.findall(text)
    return found[-1].replace(",", "") if found else None


def _same_number(a: str, b: str) -> bool:
    try:
        return Decimal(a.replace(",", "").strip()) == Decimal(b.replace(",", "").strip())  # "7.0" equals "7"
    except InvalidOperation:
        return False


def normalize_text(s: str) -> str:
    """For exact match: case, surrounding whitespace, quotes and trailing punctuation do not count."""
    s = " ".join(s.split()).lower()
    s = s.rstrip(".!?,;:")
    return s.strip("\"'`").strip()


def _last_line(text: str) -> str:
    lines = [line for line in text.strip().splitlines() if line.strip()]
    return lines[-1] if lines else ""


def _check_countdown(problem: Problem, content: str) -> tuple[bool, str | None, str]:
    numbers, target = problem.metadata["numbers"], problem.metadata["target"]
    expr = content.split("=")[0].strip()  # "(3 + 5) * 2 = 16" states its result: judge the left side
    if not expr:
        return False, None, "no expression found"
    try:
        used = expression_numbers(expr)
        value = evaluate_expression(expr)
    except ValueError as e:
        return False, expr, str(e)
    extra = Counter(used) - Counter(numbers)
    if extra:
        return False, expr, f"uses {', '.join(map(str, sorted(extra.elements())))} more often than given"
    if value != target:
        shown = value.numerator if value.denominator == 1 else float(value)
        return False, expr, f"{expr} is {shown}, not {target}"
    return True, expr, f"{expr} = {target}"


# ------------------------------------------------------------------------------- a safe arithmetic evaluator (ast)

_OPS = {ast.Add: lambda a, b: a + b, ast.Sub: lambda a, b: a - b, ast.Mult: lambda a, b: a * b}


def _parse(expr: str) -> ast.AST:
    if len(expr) > MAX_EXPRESSION_CHARS:
        raise ValueError(f"expression longer than {MAX_EXPRESSION_CHARS} characters")
    # "×" and "÷" are what people (and models) write
    expr = expr.replace("×", "*").replace("÷", "/").replace("−", "-")
    try:
        return ast.parse(expr.strip(), mode="eval").body
    except SyntaxError:
        raise ValueError(f"{expr.strip()!r} is not an arithmetic expression") from None


def evaluate_expression(expr: str) -> Fraction:
    """The exact value of an expression of non-negative integers, + - * / and parentheses. Anything else (names,
    calls, **, unary minus, floats) is refused with ValueError, as is division by zero. Never calls eval()."""
    return _evaluate(_parse(expr))


def expression_numbers(expr: str) -> list[int]:
    """The integer literals of an expression, in order (for "each number at most once")."""
    tree = _parse(expr)
    return [node.value for node in ast.walk(tree) if isinstance(node, ast.Constant)]


def _evaluate(node: ast.AST) -> Fraction:
    if isinstance(node, ast.Constant) and type(node.value) is int:
        return Fraction(node.value)
    if isinstance(node, ast.BinOp):
        if isinstance(node.op, ast.Div):
            divisor = _evaluate(node.right)
            if divisor == 0:
                raise ValueError("division by zero")
            return _evaluate(node.left) / divisor
        if type(node.op) in _OPS:
            return _OPS[type(node.op)](_evaluate(node.left), _evaluate(node.right))
        if isinstance(node.op, ast.Pow):
            raise ValueError("** is not allowed: only + - * / and parentheses")
        raise ValueError(f"the operator {type(node.op).__name__} is not allowed: only + - * / and parentheses")
    if isinstance(node, ast.Constant):
        raise ValueError(f"{node.value!r} is not a whole number")
    if isinstance(node, ast.UnaryOp):
        raise ValueError("signs are not allowed: only + - * / between the given numbers")
    raise ValueError(f"{type(node).__name__} is not allowed: only numbers, + - * / and parentheses")


# ---------------------------------------------------------------------------------------------- uploaded problems


def problems_from_jsonl(data: bytes | str, *, max_lines: int = MAX_JSONL_LINES) -> list[Problem]:
    """Parse user problems, one JSON object a line: {"prompt": str, "answer": str|number, "match"?: "exact"|
    "numeric"}. Blank lines are skipped; other keys are kept as metadata. The first bad line raises TaskError
    naming its number; nothing is returned half-done. match defaults to numeric when the answer is a number."""
    if isinstance(data, bytes):
        try:
            data = data.decode("utf-8")
        except UnicodeDecodeError as e:
            raise TaskError(f"the file is not valid UTF-8 (byte {e.start}): save it as UTF-8 and upload again") \
                from None
    problems = []
    for number, line in enumerate(data.splitlines(), start=1):
        if not line.strip():
            continue
        if len(problems) >= max_lines:
            raise TaskError(f"more than {max_lines} problems: split the file", number)
        problems.append(_problem_from_line(line, number))
    if not problems:
        raise TaskError("the file has no problems: one JSON object per line, e.g. "
                        '{"prompt": "What is 2 + 2?", "answer": "4"}')
    return problems


def _problem_from_line(line: str, number: int) -> Problem:
    try:
        obj = json.loads(line)
    except json.JSONDecodeError as e:
        raise TaskError(f"not valid JSON ({e.msg} at column {e.colno})", number) from None
    if not isinstance(obj, dict):
        raise TaskError(f"expected a JSON object with \"prompt\" and \"answer\", got {type(obj).__name__}", number)
    prompt, answer = obj.get("prompt"), obj.get("answer")
    if not isinstance(prompt, str) or not prompt.strip():
        raise TaskError('"prompt" is missing or not a non-empty string', number)
    if len(prompt) > MAX_PROMPT_CHARS:
        raise TaskError(f'"prompt" is longer than {MAX_PROMPT_CHARS} characters', number)
    if isinstance(answer, bool) or not isinstance(answer, (str, int, float)):
        raise TaskError('"answer" is missing or not a string or number', number)
    answer = str(answer).strip()
    if not answer:
        raise TaskError('"answer" is empty', number)
    is_number = re.fullmatch(r"-?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?", answer) is not None
    match = obj.get("match", "numeric" if is_number else "exact")
    if match not in ("exact", "numeric"):
        raise TaskError(f'"match" must be "exact" or "numeric", not {match!r}', number)
    if match == "numeric" and not is_number:
        raise TaskError(f'"match" is "numeric" but the answer {answer!r} is not a number: use "exact"', number)
    metadata = {k: v for k, v in obj.items() if k not in ("prompt", "answer", "match")}
    return Problem(prompt, answer.replace(",", "") if match == "numeric" else answer, "upload", match, metadata)


def split_problems(problems: list[Problem], *, held_out_percent: int = HELD_OUT_PERCENT) -> dict[str, list[Problem]]:
    """Split uploaded problems into train and held_out by a hash of the prompt: the same prompt (a duplicate line)
    always lands in the same split, so the two never overlap."""
    out = {"train": [], "held_out": []}
    for p in problems:
        h = int(hashlib.sha256(p.prompt.strip().encode()).hexdigest()[:8], 16) % 100
        out["held_out" if h < held_out_percent else "train"].append(p)
    return out
