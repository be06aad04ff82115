import pytest
import torch

from sdstudio.engine.clip_text import CLIPTextModel, CLIPTextModelWithProjection
from sdstudio.engine.conditioning import (
    PromptEmbedding,
    PromptEncoder,
    apply_emphasis,
    lerp_embeddings,
    sdxl_y,
)
from sdstudio.engine.prompt_grammar import BREAK, Chunk, split_chunks
from sdstudio.engine.text_encoder import TextEncoder, _config
from sdstudio.engine.tokenizer import BOS, COMMA, EOS, OPENCLIP_PAD, tokenize


def tiny_encoder(width=32, projection=False, pad=EOS, mode="last", seed=0):
    torch.manual_seed(seed)
    config = _config(hidden=width, layers=2, heads=2, intermediate=2 * width, act="gelu", proj=24)
    model = (CLIPTextModelWithProjection if projection else CLIPTextModel)(config).eval()
    encoder = TextEncoder(model, pad, mode)
    with torch.no_grad():  # a trained final norm has a bias, so the output mean is not ~0
        encoder.text_model.final_layer_norm.bias.normal_(0.0, 0.5)
    return encoder


class CountingEncoder:
    """Stands in for a TextEncoder: records its inputs, returns token ids as features."""

    def __init__(self, pad_token=EOS, width=4):
        self.pad_token = pad_token
        self.width = width
        self.device = torch.device("cpu")
        self.calls = []

    def __call__(self, tokens, clip_skip, inserts=()):
        self.calls.append((tokens.clone(), clip_skip))
        hidden = tokens.float()[..., None].expand(-1, -1, self.width) + clip_skip
        return hidden, None


def counting_prompt_encoder(**kwargs):
    encoder = CountingEncoder()
    return PromptEncoder([encoder], **kwargs), encoder


CAT = tokenize(["cat"])[0][0]


def test_100_token_prompt_makes_two_chunks_of_77():
    prompt_encoder, fake = counting_prompt_encoder()
    cond = prompt_encoder.encode("cat " * 100)
    assert cond.context.shape == (1, 154, 4)
    assert cond.chunks == 2
    (tokens, _), = fake.calls
    assert tokens.shape == (2, 77)
    assert tokens[0].tolist() == [BOS] + [CAT] * 75 + [EOS]
    assert tokens[1].tolist() == [BOS] + [CAT] * 25 + [EOS] * 51


def test_empty_prompt_is_one_chunk_of_bos_and_padding():
    chunks = PromptEncoder([CountingEncoder()]).chunk_prompt("")
    assert [c.tokens for c in chunks] == [[]]


def test_break_starts_a_new_chunk():
    chunks = PromptEncoder([CountingEncoder()]).chunk_prompt("a cat BREAK a dog")
    assert [len(c.tokens) for c in chunks] == [2, 2]
    assert chunks[1].tokens == tokenize(["a dog"])[0]


def test_weights_follow_their_tokens():
    (chunk,) = PromptEncoder([CountingEncoder()]).chunk_prompt("a (cat:1.5) [dog]")
    assert chunk.weights == pytest.approx([1.0, 1.5, 1 / 1.1])


def test_comma_backtrack_moves_the_words_after_the_last_comma_to_the_next_chunk():
    runs = [("x", 1.0)]
    tokens = [[1] * 70 + [COMMA] + [2] * 10]
    chunks = split_chunks(runs, tokens, comma_backtrack=20)
    assert [len(c.tokens) for c in chunks] == [71, 10]
    assert chunks[0].tokens[-1] == COMMA and chunks[1].tokens == [2] * 10


def test_comma_backtrack_ignores_commas_too_far_back_and_zero_disables_it():
    tokens = [[1] * 50 + [COMMA] + [2] * 30]
    assert [len(c.tokens) for c in split_chunks([("x", 1.0)], tokens, comma_backtrack=20)] == [75, 6]
    tokens = [[1] * 70 + [COMMA] + [2] * 10]
    assert [len(c.tokens) for c in split_chunks([("x", 1.0)], tokens, comma_backtrack=0)] == [75, 6]


def test_split_chunks_break_at_start_gives_an_empty_first_chunk_like_a1111():
    chunks = split_chunks([("", 1.0), BREAK, ("a", 1.0)], [[], [], [5]], comma_backtrack=20)
    assert chunks == [Chunk([], []), Chunk([5], [1.0])]


def test_openclip_encoders_get_zero_padding():
    fake = CountingEncoder(pad_token=OPENCLIP_PAD)
    PromptEncoder([fake]).encode("a cat")
    (tokens, _), = fake.calls
    assert tokens[0, :4].tolist() == [BOS, *tokenize(["a cat"])[0], EOS]
    assert tokens[0, 4:].tolist() == [0] * 73


def test_emphasis_multiplies_tokens_then_restores_the_mean():
    torch.manual_seed(0)
    hidden = torch.randn(77, 8) + 0.5
    weights = torch.ones(77)
    weights[3] = 1.5
    out = apply_emphasis(hidden, weights)
    assert out.mean().item() == pytest.approx(hidden.mean().item(), rel=1e-5)
    scale = out[0, 0] / hidden[0, 0]
    assert torch.allclose(out[3], hidden[3] * 1.5 * scale, rtol=1e-5)
    assert torch.allclose(out[10], hidden[10] * scale, rtol=1e-5)
    assert scale.item() != pytest.approx(1.0)


def test_emphasis_without_weights_is_exactly_a_no_op_even_for_zero_mean():
    hidden = torch.randn(77, 8)
    hidden -= hidden.mean()
    assert torch.equal(apply_emphasis(hidden, torch.ones(77)), hidden)


def test_weighted_prompt_differs_from_plain_only_by_emphasis():
    prompt_encoder = PromptEncoder([tiny_encoder()])
    plain = prompt_encoder.encode("a cat").context[0]
    weighted = prompt_encoder.encode("a (cat:1.5)").context[0]
    scale = weighted[0] / plain[0]
    assert torch.allclose(scale, scale[0].expand_as(scale), rtol=1e-4)
    assert torch.allclose(weighted[2], plain[2] * 1.5 * scale[0], rtol=1e-4)
    assert weighted.mean().item() == pytest.approx(plain.mean().item(), rel=1e-5)


def test_unweighted_prompt_is_the_raw_encoder_output():
    encoder = tiny_encoder()
    cond = PromptEncoder([encoder]).encode("a photo of a cat", clip_skip=2)
    tokens = torch.tensor([[BOS, *tokenize(["a photo of a cat"])[0], EOS] + [EOS] * 70])
    with torch.no_grad():
        hidden, _ = encoder(tokens, 2)
    assert cond.context.dtype == torch.float32
    assert torch.allclose(cond.context, hidden, atol=1e-6)


def test_encode_pair_pads_the_shorter_side_with_empty_chunks():
    prompt_encoder = PromptEncoder([tiny_encoder()])
    cond, uncond = prompt_encoder.encode_pair("cat " * 160, "blurry")
    assert cond.context.shape == uncond.context.shape == (1, 3 * 77, 32)
    empty = prompt_encoder.encode("").context
    assert torch.equal(uncond.context[:, :77], prompt_encoder.encode("blurry").context)
    assert torch.equal(uncond.context[:, 77:154], empty)
    assert torch.equal(uncond.context[:, 154:], empty)
    cond2, uncond2 = prompt_encoder.encode_pair("blurry", "cat " * 160)
    assert cond2.context.shape == uncond2.context.shape == (1, 231, 32)


def sdxl_prompt_encoder():
    clip_l = tiny_encoder(width=32, pad=EOS, mode="penultimate_no_norm", seed=1)
    bigg = tiny_encoder(width=48, projection=True, pad=OPENCLIP_PAD, mode="penultimate_no_norm", seed=2)
    return PromptEncoder([clip_l, bigg], zero_empty_negative=True), clip_l, bigg


def test_sdxl_concatenates_encoders_on_features_and_pools_the_first_chunk_of_bigg():
    prompt_encoder, clip_l, bigg = sdxl_prompt_encoder()
    cond = prompt_encoder.encode("a cat " * 50)
    assert cond.context.shape == (1, 154, 80)
    assert torch.equal(cond.context[..., :32], PromptEncoder([clip_l]).encode("a cat " * 50).context)
    bigg_only = PromptEncoder([bigg]).encode("a cat " * 50)
    assert torch.equal(cond.context[..., 32:], bigg_only.context)
    first_chunk = torch.tensor([[BOS] + tokenize(["a cat " * 50])[0][:75] + [EOS]])
    with torch.no_grad():
        _, pooled = bigg(first_chunk)
    assert cond.pooled.shape == (1, 24)
    assert torch.allclose(cond.pooled, pooled, atol=1e-6)


def test_sdxl_empty_negative_is_zeros_with_matching_chunks():
    prompt_encoder, _, _ = sdxl_prompt_encoder()
    cond, uncond = prompt_encoder.encode_pair("cat " * 100, "")
    assert uncond.context.shape == cond.context.shape
    assert not uncond.context.any() and not uncond.pooled.any()
    _, real_negative = prompt_encoder.encode_pair("cat", "blurry")
    assert real_negative.context.abs().sum() > 0


def test_cache_reuses_encodings_per_prompt_and_clip_skip():
    prompt_encoder, fake = counting_prompt_encoder(cache_size=2)
    first = prompt_encoder.encode("a cat")
    assert prompt_encoder.encode("a cat") is first
    assert len(fake.calls) == 1
    prompt_encoder.encode("a cat", clip_skip=2)
    assert len(fake.calls) == 2
    prompt_encoder.encode_pair("a cat", "blurry")  # "a cat" cached, "blurry" encoded
    assert len(fake.calls) == 3
    prompt_encoder.encode("a cat", clip_skip=2)  # least recently used, evicted by "blurry"
    assert len(fake.calls) == 4
    prompt_encoder.encode_pair("cat " * 100, "x")  # chunk counts differ: "" is encoded for padding
    assert [tokens.shape[0] for tokens, _ in fake.calls[4:]] == [2, 1, 1]
    assert fake.calls[-1][0][0, :2].tolist() == [BOS, EOS]


def test_sdxl_y_matches_diffusers_add_time_embedding():
    from diffusers.models.embeddings import Timesteps

    pooled = torch.randn(2, 1280)
    y = sdxl_y(pooled, original_size=(1024, 768), crop=(16, 8), target_size=(896, 1152))
    assert y.shape == (2, 2816)
    assert torch.equal(y[:, :1280], pooled)
    # diffusers StableDiffusionXLPipeline: add_time_ids = original + crop + target, embedded by the UNet's
    # add_time_proj = Timesteps(256, flip_sin_to_cos=True, downscale_freq_shift=0), flattened per sample.
    time_ids = torch.tensor([1024, 768, 16, 8, 896, 1152], dtype=torch.float32)
    expected = Timesteps(256, flip_sin_to_cos=True, downscale_freq_shift=0)(time_ids).reshape(1, -1)
    assert torch.allclose(y[:, 1280:], expected.expand(2, -1), atol=1e-5)


# --- textual-inversion embeddings ---

def embedding_library(tmp_path, **files):
    """An EmbeddingLibrary over tmp_path with NAME.safetensors per keyword: a tensor, or (clip_l, clip_g)."""
    from safetensors.torch import save_file

    from sdstudio.engine.embeddings import EmbeddingLibrary

    for name, value in files.items():
        data = {"clip_l": value[0], "clip_g": value[1]} if isinstance(value, tuple) else {"emb_params": value}
        save_file(data, tmp_path / f"{name}.safetensors")
    return EmbeddingLibrary([tmp_path])


def vectors(n, width, seed):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, width, generator=g) + torch.linspace(-1, 1, width)


def layout(prompt_encoder, prompt):
    return [(len(c.tokens), [(e.start, e.name, e.count) for e in c.embeddings]) for c in
            prompt_encoder.chunk_prompt(prompt)]


def test_embedding_takes_one_slot_per_vector_a1111_and_comfyui_forms(tmp_path):
    prompt_encoder, _ = counting_prompt_encoder()
    prompt_encoder.embeddings = embedding_library(tmp_path, Style=vectors(3, 4, 0))
    assert layout(prompt_encoder, "a Style, cat") == [(6, [(1, "Style", 3)])]
    (chunk,) = prompt_encoder.chunk_prompt("a style,cat")  # case-insensitive; the comma splits it off
    assert chunk.tokens == [tokenize(["a"])[0][0], 0, 0, 0, COMMA, CAT]
    for form in ("embedding:Style", "embedding:Style.safetensors", "(embedding:Style:1.0)"):
        assert layout(prompt_encoder, f"a {form} cat") == [(5, [(1, "Style", 3)])], form
    assert layout(prompt_encoder, "a Styles cat") == [(3, [])]  # a longer word is text


def test_embedding_that_does_not_fit_starts_the_next_chunk_like_a1111(tmp_path):
    prompt_encoder, fake = counting_prompt_encoder()
    prompt_encoder.embeddings = embedding_library(tmp_path, four=vectors(4, 4, 0))
    assert layout(prompt_encoder, "cat " * 71 + "four") == [(75, [(71, "four", 4)])]  # fits exactly
    assert layout(prompt_encoder, "cat " * 72 + "four cat") == [(72, []), (5, [(0, "four", 4)])]
    assert layout(prompt_encoder, "cat " * 75 + "four") == [(75, []), (4, [(0, "four", 4)])]
    prompt_encoder.encode("cat " * 72 + "four cat")
    (tokens, _), = fake.calls
    assert tokens[0].tolist() == [BOS] + [CAT] * 72 + [EOS] * 4  # closed early and padded
    assert tokens[1, :7].tolist() == [BOS, 0, 0, 0, 0, CAT, EOS]


def test_comma_backtrack_moves_an_embedding_with_the_words_after_the_comma(tmp_path):
    prompt_encoder, _ = counting_prompt_encoder()
    prompt_encoder.embeddings = embedding_library(tmp_path, four=vectors(4, 4, 0))
    prompt = "cat " * 60 + ", four " + "cat " * 12  # 60 + comma + 4 + 10 fill the chunk; the 11th cat cuts
    assert layout(prompt_encoder, prompt) == [(61, []), (16, [(0, "four", 4)])]
    after = layout(prompt_encoder, "cat " * 60 + "four , " + "cat " * 12)
    assert after == [(65, [(60, "four", 4)]), (12, [])]


def manual(encoder, tokens, inserts, clip_skip=1):
    with torch.no_grad():
        return encoder(torch.tensor([tokens]), clip_skip, inserts)


def test_embedding_vectors_replace_the_token_embeddings_and_take_weights(tmp_path):
    encoder = tiny_encoder()
    vecs = vectors(2, 32, 1)
    prompt_encoder = PromptEncoder([encoder])
    prompt_encoder.embeddings = embedding_library(tmp_path, duo=vecs)
    ids = tokenize(["a", "on grass"])
    tokens = [BOS, *ids[0], 0, 0, *ids[1], EOS] + [EOS] * 70
    hidden, _ = manual(encoder, tokens, [(0, 2, vecs)])
    cond = prompt_encoder.encode("a duo on grass")
    assert torch.allclose(cond.context[0], hidden[0], atol=1e-6)
    weighted = prompt_encoder.encode("a (duo:1.5) on grass").context[0]
    weights = torch.ones(77)
    weights[2:4] = 1.5
    assert torch.allclose(weighted, apply_emphasis(hidden[0], weights), atol=1e-6)
    with torch.no_grad():
        plain, _ = encoder(torch.tensor([tokens]), 1)
    assert (hidden - plain).abs().max() > 1e-2  # the inserted vectors matter


def test_sdxl_embedding_sends_clip_l_to_the_first_encoder_and_clip_g_to_the_second(tmp_path):
    prompt_encoder, clip_l, bigg = sdxl_prompt_encoder()
    vl, vg = vectors(2, 32, 2), vectors(2, 48, 3)
    prompt_encoder.embeddings = embedding_library(tmp_path, xl=(vl, vg))
    cond = prompt_encoder.encode("a xl cat")
    a, cat = tokenize(["a"])[0][0], CAT
    hidden_l, _ = manual(clip_l, [BOS, a, 0, 0, cat, EOS] + [EOS] * 71, [(0, 2, vl)])
    hidden_g, pooled = manual(bigg, [BOS, a, 0, 0, cat, EOS] + [OPENCLIP_PAD] * 71, [(0, 2, vg)])
    assert torch.allclose(cond.context[0, :, :32], hidden_l[0], atol=1e-6)
    assert torch.allclose(cond.context[0, :, 32:], hidden_g[0], atol=1e-6)
    assert torch.allclose(cond.pooled, pooled, atol=1e-6)


def test_prompts_without_embeddings_are_bit_identical_with_a_library(tmp_path):
    plain = PromptEncoder([tiny_encoder()])
    with_library = PromptEncoder([tiny_encoder()])
    with_library.embeddings = embedding_library(tmp_path, dog=vectors(1, 32, 0))
    for prompt in ("a cat, (sitting:1.3) on a [mat] BREAK at night", "cat " * 90, "", "embedding x,y"):
        assert torch.equal(plain.encode(prompt).context, with_library.encode(prompt).context), prompt


def test_cache_is_keyed_on_the_embedding_files(tmp_path):
    prompt_encoder, fake = counting_prompt_encoder()
    prompt_encoder.embeddings = embedding_library(tmp_path, one=vectors(1, 4, 0))
    first = prompt_encoder.encode("a one")
    assert prompt_encoder.encode("a one") is first and len(fake.calls) == 1
    embedding_library(tmp_path, one=vectors(2, 4, 5))
    import os
    path = tmp_path / "one.safetensors"
    os.utime(path, ns=(path.stat().st_atime_ns, path.stat().st_mtime_ns + 10**9))
    prompt_encoder.embeddings.refresh()
    assert prompt_encoder.encode("a one").context is not first.context
    assert len(fake.calls) == 2 and prompt_encoder.chunk_prompt("a one")[0].embeddings[0].count == 2


def test_embeddings_used_lists_names_and_hashes_and_checks_widths(tmp_path):
    import hashlib

    from sdstudio.engine.errors import NetworkFileError

    prompt_encoder = PromptEncoder([tiny_encoder()])
    prompt_encoder.embeddings = embedding_library(tmp_path, good=vectors(1, 32, 0), neg=vectors(2, 32, 1),
                                                  sd1=vectors(1, 768, 2))
    digest = {n: hashlib.sha256((tmp_path / f"{n}.safetensors").read_bytes()).hexdigest()[:12]
              for n in ("good", "neg")}
    assert prompt_encoder.embeddings_used("a good cat, good", "neg, blurry") == (
        ("good", digest["good"]), ("neg", digest["neg"]))
    assert prompt_encoder.embeddings_used("a cat", "") == ()
    with pytest.raises(NetworkFileError, match="width 768 .SD 1.x.; the loaded model's are 32"):
        prompt_encoder.encode("a embedding:sd1 cat")
    assert prompt_encoder.embeddings_used("a sd1 cat", "") == ()  # a plain word naming it stays a word
    with pytest.raises(NetworkFileError, match="'nothere' was not found"):
        prompt_encoder.encode("a embedding:nothere cat")


# --- prompt blending (lerp_embeddings, encode_pair's blend) ---


def _embedding(chunks, width=6, pooled=True, seed=0):
    g = torch.Generator().manual_seed(seed)
    context = torch.randn(1, 77 * chunks, width, generator=g) * 3 + 1
    return PromptEmbedding(context, torch.randn(1, 5, generator=g) if pooled else None)


def test_lerp_is_comfyui_conditioning_average_with_strength_towards_the_second():
    a, b, empty = _embedding(1, seed=1), _embedding(1, seed=2), _embedding(1, seed=3)
    for s in (0.0, 0.25, 0.5, 0.9, 1.0):
        out = lerp_embeddings(s, a, b, empty)
        # ConditioningAverage: conditioning_to * s + conditioning_from * (1 - s), "to" = b
        assert torch.allclose(out.context, b.context * s + a.context * (1 - s), atol=1e-6)
        assert torch.allclose(out.pooled, b.pooled * s + a.pooled * (1 - s), atol=1e-6)
    assert torch.equal(lerp_embeddings(0.0, a, b, empty).context, a.context)
    assert torch.equal(lerp_embeddings(1.0, a, b, empty).context, b.context)
    assert torch.equal(lerp_embeddings(1.0, a, b, empty).pooled, b.pooled)


def test_lerp_pads_the_shorter_prompt_with_empty_chunks_not_zeros():
    a, b, empty = _embedding(1, seed=1), _embedding(3, seed=2), _embedding(1, seed=3)
    for first, second in ((a, b), (b, a)):
        out = lerp_embeddings(0.25, first, second, empty)
        assert out.chunks == 3
        t_short = 0.25 if first is a else 0.75  # weight of the 3-chunk prompt
        tail = out.context[:, 77:]
        expected = (1 - t_short) * torch.cat([empty.context] * 2, dim=1) + t_short * b.context[:, 77:]
        assert torch.allclose(tail, expected, atol=1e-6)
    assert lerp_embeddings(0.5, a, a, empty).chunks == 1  # equal lengths: no padding


def test_lerp_refuses_embeddings_of_different_encoders():
    with pytest.raises(ValueError, match="different text encoders"):
        lerp_embeddings(0.5, _embedding(1, width=6), _embedding(1, width=8), _embedding(1, width=6))
    with pytest.raises(ValueError, match="different text encoders"):
        lerp_embeddings(0.5, _embedding(1), _embedding(1, pooled=False), _embedding(1))
