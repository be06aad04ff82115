import pytest

from sdstudio.engine.errors import RequestError
from sdstudio.engine.prompt_grammar import BREAK, parse_prompt

# AUTOMATIC1111 modules/prompt_parser.py, parse_prompt_attention doctests, with their exact floats.
A1111_DOCTESTS = [
    ("normal text", [("normal text", 1.0)]),
    ("an (important) word", [("an ", 1.0), ("important", 1.1), (" word", 1.0)]),
    ("(unbalanced", [("unbalanced", 1.1)]),
    ("\\(literal\\]", [("(literal]", 1.0)]),
    ("(unnecessary)(parens)", [("unnecessaryparens", 1.1)]),
    (
        "a (((house:1.3)) [on] a (hill:0.5), sun, (((sky))).",
        [
            ("a ", 1.0),
            ("house", 1.5730000000000004),
            (" ", 1.1),
            ("on", 1.0),
            (" a ", 1.1),
            ("hill", 0.55),
            (", sun, ", 1.1),
            ("sky", 1.4641000000000006),
            (".", 1.1),
        ],
    ),
]


@pytest.mark.parametrize(("prompt", "expected"), A1111_DOCTESTS)
def test_matches_a1111_doctests_exactly(prompt, expected):
    assert parse_prompt(prompt) == expected


@pytest.mark.parametrize(
    ("prompt", "expected"),
    [
        ("((word))", [("word", 1.1 * 1.1)]),
        ("[word]", [("word", 1 / 1.1)]),
        ("[[word]]", [("word", 1 / 1.1 / 1.1)]),
        ("(word:1.3)", [("word", 1.3)]),
        ("(word : 0.7 )", [("word ", 0.7)]),
        ("(a [b] c)", [("a ", 1.1), ("b", 1.1 / 1.1), (" c", 1.1)]),
        ("[unbalanced", [("unbalanced", 1 / 1.1)]),
        ("stray) bracket]", [("stray) bracket]", 1.0)]),
        ("no weight :1.2) here", [("no weight :1.2) here", 1.0)]),
        ("\\[x\\) \\\\ y", [("[x) \\ y", 1.0)]),
        ("a:b [c:0.5]", [("a:b ", 1.0), ("c:0.5", 1 / 1.1)]),
        ("", [("", 1.0)]),
    ],
)
def test_emphasis_syntax(prompt, expected):
    result = parse_prompt(prompt)
    assert [text for text, _ in result] == [text for text, _ in expected]
    assert [weight for _, weight in result] == pytest.approx([weight for _, weight in expected], rel=1e-12)


def test_break_splits_runs_and_eats_surrounding_spaces():
    assert parse_prompt("a cat BREAK a dog") == [("a cat", 1.0), BREAK, ("a dog", 1.0)]


def test_break_must_be_a_separate_capitalised_word():
    assert parse_prompt("a break, BREAKFAST") == [("a break, BREAKFAST", 1.0)]


def test_break_inside_brackets_is_still_a_break():
    assert parse_prompt("(a BREAK b)") == [("a", 1.1), BREAK, ("b", 1.1)]


def test_consecutive_breaks_are_kept_apart():
    assert parse_prompt("a BREAK BREAK b") == [("a", 1.0), BREAK, ("", 1.0), BREAK, ("b", 1.0)]


def test_invalid_weight_is_a_request_error():
    with pytest.raises(RequestError, match="not a number"):
        parse_prompt("(word:1.2.3)")
