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


# --- chunking, shared by the engine and the UI's token counter ---------------------------------------------

import random  # noqa: E402

from sdstudio.engine.prompt_grammar import (  # noqa: E402
    CHUNK_TOKENS,
    COMMA,
    chunk_prompt,
    parse_runs,
    split_chunks,
)
from sdstudio.engine.tokenizer import tokenize  # noqa: E402


def test_runs_know_the_source_offset_of_every_character():
    prompt = "a (cat:1.2) \\(x\\) BREAK [dog]"
    runs = parse_runs(prompt)
    for run in runs:
        if not run.is_break:
            assert len(run.starts) == len(run.text)
            for char, offset in zip(run.text, run.starts, strict=True):
                assert prompt[offset] == char or prompt[offset:offset + 2] == "\\" + char
    (brk,) = [run for run in runs if run.is_break]
    assert prompt[brk.at:] == "[dog]"


def test_issue_example_gives_71_then_10_tokens():
    prompt = "cat " * 70 + ", " + "dog " * 10
    chunks = chunk_prompt(prompt, tokenize)
    assert [len(c.tokens) for c in chunks] == [71, 10]
    assert chunks[0].tokens[-1] == COMMA and chunks[1].start == prompt.index("dog")


def test_overflow_without_a_comma_starts_at_the_word_that_crosses_the_line():
    prompt = "(cat) " * 80
    chunks = chunk_prompt(prompt, tokenize)
    assert [len(c.tokens) for c in chunks] == [75, 5]
    assert chunks[1].start == 75 * len("(cat) ") + 1  # the "c" after the bracket
    assert chunks[1].weights == [1.1] * 5


def test_an_empty_chunk_between_breaks_starts_after_the_first_break():
    prompt = "cat BREAK BREAK dog"
    chunks = chunk_prompt(prompt, tokenize)
    assert [c.tokens for c in chunks] == [tokenize(["cat"])[0], [], tokenize(["dog"])[0]]
    assert [c.start for c in chunks] == [0, len("cat BREAK "), prompt.index("dog")]
    assert len(chunk_prompt("cat BREAK ", tokenize)) == 1  # a trailing BREAK adds no chunk (A1111)


def random_prompt(rng: random.Random) -> str:
    pieces = ["cat", "a", "photo", "Of", "BREAK", "BREAKFAST", ",", ", ", ",,", " ", "(", ")", "[", "]", ":1.3)",
              "(x:0.5)", "\\(", "\\]", "\\\\", "🍎", "é", "2024", "don't", "it's", "x_y", "\n", "\t", "  ", "\x0c",
              "\xa0", "\u3000", "漢字", "red,blue", "ultra-detailed", "<lora:x:1>", "&amp;", "a.b.c"]
    return "".join(rng.choice(pieces) for _ in range(rng.randint(0, 200)))


def test_word_by_word_tokens_and_layout_equal_tokenising_whole_runs():
    """The grammar tokenises per word; A1111 tokenises per run. Over many generated prompts both give the same
    ids, weights and chunks, and every token's offset points at text, never at a separator."""
    rng = random.Random(20240611)
    for _ in range(300):
        prompt = random_prompt(rng)
        runs = parse_runs(prompt)
        texts = [run.text for run in runs if not run.is_break]
        whole = iter(tokenize(texts))
        token_runs = [[] if run.is_break else next(whole) for run in runs]
        as_runs = [("BREAK", -1.0) if run.is_break else (run.text, run.weight) for run in runs]
        expected = split_chunks(as_runs, token_runs, comma_backtrack=20)
        chunks = chunk_prompt(prompt, tokenize)
        assert chunks == expected, prompt
        for chunk in chunks:
            assert len(chunk.tokens) <= CHUNK_TOKENS
            assert chunk.offsets == sorted(chunk.offsets)
            assert all(prompt[offset] not in " \t\n\r" for offset in chunk.offsets)
        assert [c.start for c in chunks[1:]] == sorted(c.start for c in chunks[1:])
