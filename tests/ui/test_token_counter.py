from sdstudio.ui.token_counter import (
    CHUNK_TOKENS,
    LazyTokenCounter,
    count_prompt,
    estimate_word,
    format_count,
    word_counter_from_tokenizer,
)


def one_per_word(word: str) -> int:
    return 1


def test_emphasis_syntax_costs_no_tokens():
    def counter(word):
        return estimate_word(word)

    plain = count_prompt("a cat, red", counter)
    weighted = count_prompt("(a cat:1.3), [red]", counter)
    assert weighted.tokens == plain.tokens == 4  # a, cat, ",", red
    assert count_prompt("\\(literal\\)", one_per_word).tokens == 3


def test_the_word_that_crosses_75_tokens_starts_the_second_chunk():
    text = "w " * 80
    count = count_prompt(text, one_per_word)
    assert count.tokens == 80 and count.chunks == 2
    assert count.boundaries == (2 * CHUNK_TOKENS,)  # character offset of the 76th word
    assert format_count(count) == "80/150"


def test_break_starts_a_new_chunk_early():
    count = count_prompt("cat BREAK dog", one_per_word)
    assert count.chunks == 2 and count.tokens == 2 and count.boundaries == ("cat BREAK dog".index("dog"),)
    assert count_prompt("BREAK cat", one_per_word).chunks == 1


def test_estimate_is_marked_and_counts_words_digits_and_punctuation():
    assert estimate_word("cat,") == 2 and estimate_word("2024") == 4 and estimate_word("flag:") == 2
    count = count_prompt("red apple")
    assert count.estimated and format_count(count) == "≈2/75"


def test_counter_uses_the_tokenizer_per_word():
    class Tok:
        calls = 0

        def tokenize(self, word):
            Tok.calls += 1
            return [word[i:i + 2] for i in range(0, len(word), 2)]

    counter = word_counter_from_tokenizer(Tok())
    count = count_prompt("abcd abcd ef", counter)
    assert count.tokens == 5 and not count.estimated and Tok.calls == 2  # "abcd" counted once


def test_lazy_counter_switches_to_the_tokenizer_when_loaded(qtbot):
    lazy = LazyTokenCounter(loader=lambda: one_per_word)
    assert lazy.count("a b").estimated
    with qtbot.waitSignal(lazy.ready, timeout=5000):
        lazy.start()
    assert not lazy.count("a b").estimated


def test_lazy_counter_keeps_estimating_when_the_tokenizer_fails(qtbot):
    def broken():
        raise FileNotFoundError("vocab.json")

    lazy = LazyTokenCounter(loader=broken)
    lazy.start()
    qtbot.waitUntil(lambda: bool(lazy.error), timeout=5000)
    assert "vocab.json" in lazy.error and lazy.count("a").estimated


def test_real_clip_tokenizer_counts_known_tokens():
    from sdstudio.engine.tokenizer import load_tokenizer

    counter = word_counter_from_tokenizer(load_tokenizer())
    # "a photo of a cat" is 5 tokens between BOS and EOS (see docs/references.md).
    assert count_prompt("a photo of a cat", counter).tokens == 5
    assert count_prompt("(a photo:1.2) of [a cat]", counter).tokens == 5
