import json

import pytest

from workers.gpt.tasks import (
    INSTRUCTION, INSTRUCTIONS, TASKS, Problem, TaskError, check, evaluate_expression, extract_answer, last_number,
    problems_from_jsonl, split_problems, task_problems,
)


def numeric(answer):
    return Problem("q", answer, "upload", "numeric")


def countdown(numbers, target):
    return Problem("q", str(target), "countdown", "countdown", {"numbers": numbers, "target": target})


# ------------------------------------------------------------------------------------------------ generated tasks


@pytest.mark.parametrize("task", TASKS)
@pytest.mark.parametrize("difficulty", [1, 3, 5])
def test_held_out_problems_never_appear_in_train(task, difficulty):
    n = 30 if task == "arithmetic" and difficulty == 1 else 150
    train = task_problems(task, split="train", n=n, difficulty=difficulty, seed=1)
    # a different seed for the held-out draw: the split is a property of the problem, not of the draw
    held = task_problems(task, split="held_out", n=30, difficulty=difficulty, seed=2)
    assert not {p.prompt for p in train} & {p.prompt for p in held}
    assert len({p.prompt for p in train}) == n  # and no duplicates within a split


@pytest.mark.parametrize("task", TASKS)
def test_the_same_seed_gives_the_same_problems(task):
    a = task_problems(task, n=20, difficulty=2, seed=7)
    assert a == task_problems(task, n=20, difficulty=2, seed=7)
    assert a != task_problems(task, n=20, difficulty=2, seed=8)


@pytest.mark.parametrize("task", TASKS)
@pytest.mark.parametrize("difficulty", [1, 2, 3, 4, 5])
def test_every_generated_problem_is_solved_by_its_own_answer(task, difficulty):
    for p in task_problems(task, n=40, difficulty=difficulty, seed=3):
        text = p.metadata["solution"] if task == "countdown" else p.answer
        result = check(p, f"<think>easy</think><answer>{text}</answer>")
        assert result.correct, (p, result)
        assert p.metadata["difficulty"] == difficulty


def test_arithmetic_difficulty_grows_digits_and_operators():
    easy = task_problems("arithmetic", n=5, difficulty=1)[0].metadata["expression"]
    hard = task_problems("arithmetic", n=5, difficulty=5)[0].metadata["expression"]
    assert len(easy.split()) == 3 and len(hard.split()) == 7
    assert all(len(tok) == 3 for tok in hard.split()[::2])


def test_arithmetic_level_1_is_small_numbers_without_negative_results_and_enough_to_measure():
    held = task_problems("arithmetic", split="held_out", n=250, difficulty=1)  # >= 200 for the GRPO benchmark
    for p in held:
        a, op, b = p.metadata["expression"].split()
        assert 0 <= int(a) <= 30 and 0 <= int(b) <= 30 and op in "+-"
        assert int(p.answer) >= 0


def test_the_short_instruction_changes_the_prompt_only():
    think = task_problems("letters", split="held_out", n=20, difficulty=2, seed=4)
    short = task_problems("letters", split="held_out", n=20, difficulty=2, seed=4, instruction="short")
    assert [p.answer for p in think] == [p.answer for p in short]
    assert [p.metadata for p in think] == [p.metadata for p in short]
    assert all(INSTRUCTION in p.prompt for p in think)
    assert all(INSTRUCTION not in p.prompt and p.prompt.endswith(INSTRUCTIONS["short"]) for p in short)
    with pytest.raises(TaskError, match="unknown instruction"):
        task_problems("letters", instruction="verbose")


def test_a_short_answer_is_read_by_its_last_number():
    # what SmolLM2-135M-Instruct writes to the short instruction (raw greedy answers)
    p = task_problems("arithmetic", n=1, difficulty=1)[0]
    assert check(p, f"The answer is {p.answer}.").correct
    assert check(p, f"{p.metadata['expression']} = {p.answer}").correct
    assert not check(p, f"{p.metadata['expression']} = {int(p.answer) + 1}").correct


def test_letter_counting_counts_letters():
    p = Problem("q", "3", "letters", "numeric", {"word": "strawberry", "letter": "r"})
    assert check(p, "<answer>3</answer>").correct
    assert not check(p, "<answer>2</answer>").correct
    for p in task_problems("letters", n=50, difficulty=4):
        assert p.metadata["word"].count(p.metadata["letter"]) == int(p.answer)
        assert p.metadata["word"] in p.prompt


def test_a_tiny_problem_space_says_so():
    with pytest.raises(TaskError, match="distinct arithmetic problems"):
        task_problems("arithmetic", split="held_out", n=1000, difficulty=1)


@pytest.mark.parametrize("kwargs, message", [
    (dict(task="chess"), "unknown task"), (dict(task="letters", split="test"), "unknown split"),
    (dict(task="letters", difficulty=9), "difficulty"), (dict(task="letters", n=0), "positive"),
])
def test_bad_task_requests_are_refused(kwargs, message):
    task = kwargs.pop("task")
    with pytest.raises(TaskError, match=message):
        task_problems(task, **kwargs)


# ---------------------------------------------------------------------------------------- reading the answer


@pytest.mark.parametrize("text, expected", [
    ("<think>2+2</think><answer>4</answer>", "4"),
    ("<answer>1</answer> wait <answer>2</answer>", "2"),  # the last answer wins
    ("<think>hmm</think><answer>12", "12"),  # unclosed: ran out of tokens mid-answer
    ("no tags at all", None),
    ("<answer></answer>", ""),
])
def test_extract_answer(text, expected):
    assert extract_answer(text) == expected


@pytest.mark.parametrize("text, expected", [
    ("the answer is 1,000", "1000"),
    ("1,234,567 apples", "1234567"),
    ("it is -5", "-5"),
    ("x=-3", "-3"),
    ("10-3 = 7", "7"),
    ("5-3", "3"),  # a subtraction, not minus three... the last number is 3
    ("pi is 3.14", "3.14"),
    ("so 42.", "42"),  # a full stop is not a decimal point
    ("42!", "42"),
    ("first 3, then 4", "4"),
    ("no digits", None),
])
def test_last_number(text, expected):
    assert last_number(text) == expected


@pytest.mark.parametrize("text, correct", [
    ("<think>a</think><answer>1000</answer>", True),
    ("<answer>1,000</answer>", True),
    ("<answer>1000.0</answer>", True),
    ("<answer>The answer is 1000.</answer>", True),
    ("I think it is 1000", True),  # no tags: the last number of the text
    ("<answer>999</answer> but really 1000", False),  # tags present: the text outside them does not count
    ("<answer>1000</answer><answer>7</answer>", False),  # the last answer tag is the answer
    ("<answer>-1000</answer>", False),
    ("<answer>10000</answer>", False),
    ("<answer>one thousand</answer>", False),
    ("", False),
])
def test_numeric_check(text, correct):
    assert check(numeric("1000"), text).correct is correct


def test_negative_and_decimal_answers():
    assert check(numeric("-7"), "<answer>-7</answer>").correct
    assert not check(numeric("-7"), "<answer>7</answer>").correct
    assert check(numeric("2.5"), "<answer>2.50</answer>").correct


def test_format_reward_needs_think_then_exactly_one_answer():
    p = numeric("4")
    good = check(p, "<think>2 and 2</think>\n<answer>4</answer>", format_reward=0.1)
    assert good.formatted and good.reward == pytest.approx(1.1)
    assert check(p, "<think>x</think><answer>5</answer>", format_reward=0.1).reward == pytest.approx(0.1)
    for text in ["<answer>4</answer>", "<think>x</think><answer>4", "<think>x</think><answer>3</answer><answer>4"
                 "</answer>", "<think>x</think><answer>4</answer> trailing words"]:
        r = check(p, text, format_reward=0.1)
        assert not r.formatted and r.reward == (1.0 if r.correct else 0.0), text
    assert check(p, "<answer>4</answer>").reward == 1.0  # format_reward defaults to off


def test_exact_match_ignores_case_whitespace_quotes_and_trailing_punctuation():
    p = Problem("capital of France?", "Paris", "upload", "exact")
    for text in ["<answer>paris</answer>", "<answer> Paris. </answer>", '<answer>"Paris"</answer>', "Paris!"]:
        assert check(p, text).correct, text
    assert not check(p, "<answer>London</answer>").correct
    assert not check(p, "<answer>Paris, Texas</answer>").correct


# -------------------------------------------------------------------------------------------------- countdown


@pytest.mark.parametrize("text, correct, reason", [
    ("<answer>(25 - 5) * 4</answer>", True, "= 80"),
    ("<answer>4 * (25 - 5) = 80</answer>", True, "= 80"),  # any correct expression, stated result allowed
    ("<answer>(25 - 5) × 4</answer>", True, "= 80"),
    ("<answer>25 * 4 - 5 * 4</answer>", False, "more often than given"),  # 4 used twice
    ("<answer>25 * 3</answer>", False, "more often"),  # 3 is not given
    ("<answer>25 + 5 + 4</answer>", False, "is 34, not 80"),
    ("<answer>25 / (5 - 5) * 4</answer>", False, "division by zero"),
    ("<answer>4 ** 25</answer>", False, "not allowed"),  # huge exponents never evaluated
    ("<answer>-5 + 85</answer>", False, "signs are not allowed"),
    ("<answer>__import__('os').system('true')</answer>", False, "not allowed"),
    ("<answer>2.5 * 32</answer>", False, "not a whole number"),
    ("<answer>(25 - 5 * 4</answer>", False, "not an arithmetic expression"),
    ("<answer>" + "+".join(["4"] * 200) + "</answer>", False, "longer than"),
    ("<answer></answer>", False, "no expression"),
])
def test_countdown_check(text, correct, reason):
    result = check(countdown([25, 5, 4, 7], 80), text)
    assert result.correct is correct
    assert reason in result.reason


def test_countdown_accepts_exact_fractions_along_the_way():
    assert check(countdown([3, 6, 9], 18), "<answer>9 / 3 * 6</answer>").correct
    assert check(countdown([1, 3, 4, 6], 24), "<answer>6 / (1 - 3 / 4)</answer>").correct  # 6 / (1/4)


def test_evaluate_expression_refuses_what_is_not_arithmetic():
    assert evaluate_expression("(1 + 2) * 3 - 4 / 2") == 7
    for bad in ["2 ** 1000000000", "x + 1", "len('a')", "1 if 1 else 2", "[1]", "1 // 2", "1 % 2"]:
        with pytest.raises(ValueError):
            evaluate_expression(bad)


# ------------------------------------------------------------------------------------------ uploaded problems


def test_uploaded_jsonl_becomes_problems():
    lines = [{"prompt": "2+2?", "answer": "4"}, {"prompt": "Capital of France?", "answer": "Paris"},
             {"prompt": "big?", "answer": 1000, "match": "numeric", "id": 7}, {"prompt": "x?", "answer": "1,000"}]
    problems = problems_from_jsonl("\n".join(json.dumps(o) for o in lines).encode() + b"\n\n")
    assert [p.match for p in problems] == ["numeric", "exact", "numeric", "numeric"]
    assert problems[2].answer == "1000" and problems[2].metadata == {"id": 7}
    assert problems[3].answer == "1000"
    assert check(problems[1], "<answer>paris</answer>").correct


@pytest.mark.parametrize("content, message", [
    (b'{"prompt": "a", "answer": "1"}\n{"prompt": "b", "answer": "2"\n', "line 2: not valid JSON"),
    (b'{"prompt": "a", "answer": "1"}\n\n[1, 2]\n', "line 3: expected a JSON object"),
    (b'{"answer": "1"}', "line 1: \"prompt\" is missing"),
    (b'{"prompt": "a"}', "line 1: \"answer\" is missing"),
    (b'{"prompt": "a", "answer": true}', "line 1: \"answer\" is missing"),
    (b'{"prompt": "a", "answer": " "}', "line 1: \"answer\" is empty"),
    (b'{"prompt": "a", "answer": "x", "match": "numeric"}', "not a number"),
    (b'{"prompt": "a", "answer": "x", "match": "regex"}', "\"match\" must be"),
    (b"\xff\xfe", "not valid UTF-8"),
    (b"\n  \n", "no problems"),
])
def test_a_bad_upload_names_the_line_and_returns_nothing(content, message):
    with pytest.raises(TaskError, match=message):
        problems_from_jsonl(content)


def test_too_many_lines_are_refused():
    with pytest.raises(TaskError, match="line 4: more than 3"):
        problems_from_jsonl("\n".join('{"prompt": "p%d", "answer": "1"}' % i for i in range(5)), max_lines=3)


def test_uploaded_splits_do_not_overlap_even_with_duplicate_lines():
    problems = problems_from_jsonl("\n".join('{"prompt": "q%d", "answer": "1"}' % (i % 150) for i in range(300)))
    split = split_problems(problems)
    assert split["train"] and split["held_out"]
    assert not {p.prompt for p in split["train"]} & {p.prompt for p in split["held_out"]}
    assert len(split["train"]) + len(split["held_out"]) == 300
