import random

from sdstudio.engine.prompt_grammar import CHUNK_TOKENS, COMMA
from sdstudio.ui.token_counter import (
    LazyTokenCounter,
    cached_tokenize,
    count_prompt,
    estimate_tokenize,
    format_count,
)


def one_per_word(texts):
    return [[1] for _ in texts]


def test_emphasis_syntax_costs_no_tokens():
    plain = count_prompt("a cat, red", estimate_tokenize)
    weighted = count_prompt("(a cat:1.3), [red]", estimate_tokenize)
    assert weighted.tokens == plain.tokens == 4  # a, cat, ",", red
    assert count_prompt("\\(literal\\)", estimate_tokenize).tokens == 3


def test_lora_tags_are_not_counted_in_the_prompt_and_offsets_stay_in_the_typed_text():
    tagged = "<lora:ink_style:0.8> a cat, <lora:x:1:0.5> red " + "w " * 73
    count = count_prompt(tagged, one_per_word, tags=True)
    assert count.tokens == count_prompt("a cat, red " + "w " * 73, one_per_word).tokens == 76
    assert count.chunks == 2 and tagged[count.boundaries[0]:] == "w "  # the 76th word, in the typed text
    assert count_prompt(tagged, one_per_word).tokens > 76  # the negative prompt encodes tags as text (A1111)


def test_the_word_that_crosses_75_tokens_starts_the_second_chunk():
    text = "w " * 80
    count = count_prompt(text, one_per_word)
    assert count.tokens == 80 and count.chunks == 2
    assert count.boundaries == (2 * CHUNK_TOKENS,)  # character offset of the 76th word
    assert format_count(count) == "80/150"


def test_break_starts_a_new_chunk_early():
    count = count_prompt("cat BREAK dog", one_per_word)
    assert count.chunks == 2 and count.tokens == 2 and count.boundaries == ("cat BREAK dog".index("dog"),)


def test_break_at_the_start_leaves_an_empty_first_chunk_as_the_engine_does():
    # A1111 (and the engine) close the empty first chunk; the counter used to say one chunk here.
    count = count_prompt("BREAK cat", one_per_word)
    assert count.chunks == 2 and count.tokens == 1 and count.boundaries == (6,)


def test_issue_example_comma_backtrack_moves_the_last_words_like_the_engine():
    text = "w " * 70 + ", " + "v " * 10
    count = count_prompt(text, estimate_tokenize)
    assert count.tokens == 81 and count.chunks == 2
    assert count.boundaries == (text.index("v"),)  # [71, 10], not [75, 6]


def test_escaped_boundary_offsets_point_into_the_source_text():
    text = "\\(x\\) " * 40  # each "(x)" is three estimated tokens, escapes included in the offsets
    count = count_prompt(text, estimate_tokenize)
    assert count.tokens == 120 and count.boundaries == (25 * len("\\(x\\) "),)


def test_estimate_is_marked_and_counts_words_digits_and_punctuation():
    assert [len(ids) for ids in estimate_tokenize(["cat,", "2024", "flag:"])] == [2, 4, 2]
    assert estimate_tokenize([","]) == [[COMMA]] and estimate_tokenize([",."]) != [[COMMA]]
    count = count_prompt("red apple")
    assert count.estimated and format_count(count) == "≈2/75"


def test_a_malformed_weight_is_reported_not_raised():
    count = count_prompt("(word:1.2.3)", one_per_word)
    assert "not a number" in count.problem and format_count(count) == "!"


def test_cached_tokenize_asks_once_per_word():
    asked = []

    def tokenize(texts):
        asked.extend(texts)
        return [[len(t)] * ((len(t) + 1) // 2) for t in texts]

    cached = cached_tokenize(tokenize)
    count = count_prompt("abcd abcd ef", cached)
    assert count.tokens == 5 and not count.estimated and asked == ["abcd", "ef"]
    count_prompt("ef abcd", cached)
    assert asked == ["abcd", "ef"]


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
    from sdstudio.engine.tokenizer import tokenize

    # "a photo of a cat" is 5 tokens between BOS and EOS (see docs/references.md).
    assert count_prompt("a photo of a cat", tokenize).tokens == 5
    assert count_prompt("(a photo:1.2) of [a cat]", tokenize).tokens == 5


def random_prompt(rng: random.Random) -> str:
    pieces = ["cat", "a", "photo", "Of", "BREAK", "BREAKFAST", ",", ", ", " ", "(", ")", "[", "]", ":1.3)",
              ":0.5)", "\\(", "\\)", "\\\\", "emoji 🍎", "2024", "don't", "x_y", "\n", "\t", "  ", "red,blue",
              "masterpiece", "ultra-detailed", "(best:1.2)"]
    return "".join(rng.choice(pieces) for _ in range(rng.randint(0, 160)))


def test_ui_count_equals_the_engine_chunk_layout_with_the_real_tokenizer():
    import torch

    from sdstudio.engine.conditioning import PromptEncoder
    from sdstudio.engine.tokenizer import tokenize

    class NoEncoder:
        pad_token, device = 0, torch.device("cpu")

    engine = PromptEncoder([NoEncoder()])
    rng = random.Random(1234)
    for _ in range(150):
        prompt = random_prompt(rng)
        chunks = engine.chunk_prompt(prompt)
        count = count_prompt(prompt, tokenize)
        assert count.chunks == len(chunks), prompt
        assert count.tokens == sum(len(c.tokens) for c in chunks), prompt
        assert count.boundaries == tuple(c.start for c in chunks[1:]), prompt


def test_embeddings_count_one_token_per_vector_without_torch(tmp_path):
    import subprocess
    import sys

    import numpy as np
    from safetensors.numpy import save_file

    from sdstudio.engine.embedding_files import EmbeddingCounts

    save_file({"emb_params": np.zeros((5, 768), np.float32)}, str(tmp_path / "five.safetensors"))
    save_file({"clip_l": np.zeros((3, 768), np.float32), "clip_g": np.zeros((3, 1280), np.float32)},
              str(tmp_path / "xl.safetensors"))
    counts = EmbeddingCounts([tmp_path])
    counts.refresh()
    assert count_prompt("a five cat", one_per_word, counts).tokens == 7
    assert count_prompt("a embedding:xl, cat", one_per_word, counts).tokens == 3 + 3
    count = count_prompt("w " * 71 + "five", one_per_word, counts)  # does not fit: starts chunk 2
    assert (count.tokens, count.chunks, count.estimated) == (76, 2, False)
    missing = count_prompt("embedding:nothere", one_per_word, counts)
    assert "'nothere' was not found" in missing.problem and format_count(missing) == "!"
    # the header reads and the counter never import torch
    code = ("import sys; from sdstudio.engine.embedding_files import EmbeddingCounts; "
            "from sdstudio.ui.token_counter import count_prompt; "
            f"c = EmbeddingCounts([{str(tmp_path)!r}]); c.refresh(); "
            "print(count_prompt('five', None, c).tokens, 'torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["5", "False"]


def test_pt_embedding_counts_come_from_the_pickle_shapes_and_legacy_files_are_estimated(tmp_path):
    import pickle

    import torch

    from sdstudio.engine.embedding_files import EmbeddingCounts

    param = torch.zeros(4, 768, requires_grad=True)
    torch.save({"string_to_token": {"*": 265}, "string_to_param": {"*": param}, "name": "four", "step": 10},
               tmp_path / "four.pt")
    (tmp_path / "legacy.bin").write_bytes(pickle.dumps({"x": [1, 2]}))
    counts = EmbeddingCounts([tmp_path])
    counts.refresh()
    exact = count_prompt("a four", one_per_word, counts)
    assert (exact.tokens, exact.estimated) == (5, False)
    guess = count_prompt("a legacy", one_per_word, counts)
    assert (guess.tokens, guess.estimated, guess.unknown_embeddings) == (2, True, ("legacy",))


def test_lazy_counter_relists_the_embeddings_folders_in_the_background(qtbot, home):
    import numpy as np
    from safetensors.numpy import save_file

    lazy = LazyTokenCounter(loader=lambda: one_per_word, relist_seconds=0.0)
    with qtbot.waitSignal(lazy.ready, timeout=5000):
        lazy.start()
    assert lazy.count("a newemb").tokens == 2
    qtbot.waitUntil(lambda: not lazy._listing, timeout=5000)  # that count's re-list has finished
    (home / "embeddings").mkdir(parents=True)
    save_file({"emb_params": np.ones((3, 768), np.float32)}, str(home / "embeddings" / "newemb.safetensors"))
    with qtbot.waitSignal(lazy.ready, timeout=5000):
        lazy.count("a newemb")  # stale listing: re-listed off the GUI thread, then a recount is asked for
    assert lazy.count("a newemb").tokens == 4


def test_prompt_editing_counts_the_longest_text_a_step_encodes():
    count = count_prompt("a [cat:big red dog:0.5] on [grass|sand]", one_per_word, tags=True)
    assert count.tokens == count_prompt("a big red dog on grass", one_per_word).tokens == 6
    assert count_prompt("x AND " + "w " * 80, one_per_word, tags=True).chunks == 2
    long = count_prompt("[" + "w " * 80 + "::3] cat", one_per_word)
    assert (long.tokens, long.chunks, long.boundaries) == (81, 2, ())  # no single typed text to mark
    assert format_count(count_prompt("(" * 500 + "x", one_per_word)) == "!"
    # a plain prompt is counted as before, its chunk starts marked
    plain = count_prompt("w " * 80, one_per_word, tags=True)
    assert plain.boundaries and plain.tokens == 80
