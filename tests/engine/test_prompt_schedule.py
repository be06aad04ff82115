"""prompt_schedule: A1111's documented schedules (prompt_parser.py doctests and its header example, the wiki's
"Prompt editing" and "Alternating words" sections), the AND split, highlight spans and hostile prompts."""

from __future__ import annotations

import time

import pytest

from sdstudio.engine.errors import RequestError
from sdstudio.engine.prompt_schedule import KINDS, entry_for, schedule, spans, split_and, when_step


def g(prompt: str, steps: int = 10) -> list[list]:
    return [list(entry) for entry in schedule(prompt, steps)]


@pytest.mark.parametrize(("prompt", "expected"), [
    ("test", [[10, "test"]]),
    ("a [b:3]", [[3, "a "], [10, "a b"]]),
    ("a [b: 3]", [[3, "a "], [10, "a b"]]),
    ("a [[[b]]:2]", [[2, "a "], [10, "a [[b]]"]]),
    ("[(a:2):3]", [[3, ""], [10, "(a:2)"]]),
    ("a [b : c : 1] d", [[1, "a b  d"], [10, "a  c  d"]]),
    ("a[b:[c:d:2]:1]e", [[1, "abe"], [2, "ace"], [10, "ade"]]),
    ("a [unbalanced", [[10, "a [unbalanced"]]),
    ("a [b:.5] c", [[5, "a  c"], [10, "a b c"]]),
    ("a [{b|d{:.5] c", [[5, "a  c"], [10, "a {b|d{ c"]]),
    ("((a][:b:c [d:3]", [[3, "((a][:b:c "], [10, "((a][:b:c d"]]),
    ("[a|(b:1.1)]", [[k, "a" if k % 2 else "(b:1.1)"] for k in range(1, 11)]),
    ("[fe|]male", [[k, "female" if k % 2 else "male"] for k in range(1, 11)]),
    ("[fe|||]male", [[k, "female" if k % 4 == 1 else "male"] for k in range(1, 11)]),
])
def test_a1111_doctests(prompt, expected):
    assert g(prompt) == expected


def test_a1111_header_example_at_100_steps():
    prompt = ("fantasy landscape with a [mountain:lake:0.25] and [an oak:a christmas tree:0.75][ in foreground::0.6]"
              "[: in background:0.25] [shoddy:masterful:0.5]")
    assert g(prompt, 100) == [
        [25, "fantasy landscape with a mountain and an oak in foreground shoddy"],
        [50, "fantasy landscape with a lake and an oak in foreground in background shoddy"],
        [60, "fantasy landscape with a lake and an oak in foreground in background masterful"],
        [75, "fantasy landscape with a lake and an oak in background masterful"],
        [100, "fantasy landscape with a lake and a christmas tree in background masterful"],
    ]


def test_wiki_examples():
    # wiki "Prompt editing": [to:when] adds after, [from::when] removes after, [from:to:when] swaps
    assert g("a [fantasy:cyberpunk:16] landscape", 30) == [[16, "a fantasy landscape"], [30, "a cyberpunk landscape"]]
    assert g("a [mountain:lake:0.25]", 20) == [[5, "a mountain"], [20, "a lake"]]
    assert g("[to:10]", 20) == [[10, ""], [20, "to"]]
    assert g("[from::10]", 20) == [[10, "from"], [20, ""]]
    # wiki "Alternating words": [cow|horse] in a field
    assert g("[cow|horse] in a field", 4) == [[1, "cow in a field"], [2, "horse in a field"],
                                              [3, "cow in a field"], [4, "horse in a field"]]


def test_nesting_alternation_inside_editing_and_back():
    assert g("[[a|b]:c:2]", 4) == [[1, "a"], [2, "b"], [3, "c"], [4, "c"]]
    assert g("[x:[a|b|c]:1]", 4) == [[1, "x"], [2, "b"], [3, "c"], [4, "a"]]


def test_when_rules_and_rounding():
    assert when_step(".33", 20) == 6  # int(6.6): A1111 truncates
    assert when_step("0.999", 7) == 6
    assert when_step("3", 10) == 3 and when_step("300", 10) == 10 and when_step("1.5", 10) == 10
    assert when_step("-2", 10) == -2 and g("[a:b:-2]", 5) == [[5, "b"]]  # never before: always `to`
    assert when_step("1e1", 50) == 10  # lark's SIGNED_NUMBER takes exponents; no dot: a step number
    assert g("[a:b:0]", 3) == [[3, "b"]]


def test_entry_for_uses_a1111s_call_counter():
    entries = schedule("[a:b:3]", 10)
    assert [entries[entry_for(entries, n)][1] for n in range(10)] == ["a"] * 4 + ["b"] * 6
    alternating = schedule("[a|b]", 5)
    assert [alternating[entry_for(alternating, n)][1] for n in range(7)] == ["a", "a", "b", "a", "b", "a", "a"]


def test_literals_and_emphasis_stay_verbatim():
    assert g(r"\[a:b:2\] (x:1.2) BREAK y") == [[10, r"\[a:b:2\] (x:1.2) BREAK y"]]
    assert g(r"[\[a\]:b:2]", 4) == [[2, r"\[a\]"], [4, "b"]]
    assert g("[a:b]", 4) == [[4, "[a:b]"]]
    assert g("[3] (2) [a [0.5]:b:1]", 4) == [[1, "[3] (2) a [0.5]"], [4, "[3] (2) b"]]  # numbers alone: emphasis  # no number: emphasis that A1111 reads as text
    # a `|` outside [a|b] (or a trailing backslash) makes A1111's parser give up: no editing at all
    assert g("a|b [c:d:2]", 4) == [[4, "a|b [c:d:2]"]]
    assert g("[c:d:2] \\", 4) == [[4, "[c:d:2] \\"]]


def test_escaped_bar_and_brackets_are_literal_text():
    from sdstudio.engine.prompt_grammar import parse_prompt

    assert g("a \\| b [c:d:2]", 4) == [[2, "a \\| b c"], [4, "a \\| b d"]]
    assert parse_prompt(schedule("a \\| b", 4)[0][1]) == [("a | b", 1.0)]
    assert g("[a\\|b:c:2]", 4) == [[2, "a\\|b"], [4, "c"]]
    assert g("[a\\]b:c:2]", 4) == [[2, "a\\]b"], [4, "c"]]


def test_and_split_follows_a1111():
    assert split_and("a penguin :1.0 AND a clown :0.8") == [
        split_and("a penguin")[0], split_and(" a clown:0.8")[0]]
    subs = split_and("a penguin :1.0 AND a clown :0.8 AND (x:1.2)")
    assert [(s.text, s.weight) for s in subs] == [("a penguin", 1.0), (" a clown", 0.8), (" (x:1.2)", 1.0)]
    assert [(s.text, s.weight) for s in split_and("ANDROID and AND")] == [("ANDROID and", 1.0), ("", 1.0)]
    assert [(s.text, s.weight) for s in split_and("cat :-.5")] == [("cat", -0.5)]


def test_spans_mark_constructs():
    prompt = "a [b:c:3] [d|e] (x:1.2) AND f :0.5"
    kinds = {(prompt[s.start:s.end], s.kind) for s in spans(prompt)}
    assert {("[", "schedule"), (":", "schedule"), ("3", "when"), ("|", "alternate"), ("(", "emphasis"),
            (":1.2", "weight"), ("AND", "and"), (" :0.5", "weight")} <= kinds
    assert not [s for s in spans(prompt) if s.kind == "problem"]


def test_spans_show_problems_without_raising():
    assert [s.kind for s in spans("a AND b", split=False)] == []
    (problem,) = [s for s in spans("a|b") if s.kind == "warning"]
    assert (problem.start, problem.end) == (1, 2) and "'|'" in problem.message
    deep = "[" * 10_000
    found = spans(deep)
    assert [s.kind for s in found] == ["problem"] and "deep" in found[0].message
    (problem,) = [s for s in spans("x [a:b:1e999]") if s.kind == "problem"]
    assert "finite" in problem.message and (problem.start, problem.end) == (0, 13)


@pytest.mark.parametrize("prompt", ["[" * 10_000 + "a", "(" * 10_000 + "a" + ")" * 10_000,
                                    "[a:" * 5_000 + "b" + ":1]" * 5_000, "[a:b:1e999]", "[a:b:9" + "9" * 400 + ".5]"])
def test_hostile_prompts_fail_in_one_line_fast(prompt):
    start = time.perf_counter()
    with pytest.raises(RequestError) as info:
        schedule(prompt, 20)
    assert "\n" not in str(info.value) and time.perf_counter() - start < 1.0


def test_huge_step_numbers_are_capped_and_many_alternations_stay_bounded():
    assert g("[a:b:" + "9" * 300 + "]", 10) == [[10, "a"]]
    entries = schedule(" ".join(f"[a{k}|b{k}|c{k}]" for k in range(200)), 150)
    assert len(entries) == 150


def test_random_syntax_soup_never_breaks_the_parser():
    import random

    rng = random.Random(17)
    alphabet = ["a", "b ", "[", "]", "(", ")", ":", "|", "\\", "0.5", "3", " AND ", "<lora:x:1>", "BREAK", "🍎"]
    for _ in range(3000):
        prompt = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 30)))
        entries = schedule(prompt, 7)
        assert entries[-1][0] == 7 and [u for u, _ in entries] == sorted({u for u, _ in entries})
        assert all(isinstance(text, str) for _, text in entries)
        for span in spans(prompt):
            assert 0 <= span.start < span.end <= len(prompt) and span.kind in KINDS
