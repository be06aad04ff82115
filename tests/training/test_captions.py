"""Caption tokens: the SD 1.x layout, the empty caption for guidance, and the engine's view of brackets."""

from sdstudio.engine.tokenizer import BOS, EOS
from sdstudio.training.stage_diffusion import caption_tokens, prompt_text


def test_captions_are_bos_tokens_eos_then_eos_padding_with_empty_caption_last():
    tokens = caption_tokens(["red apple", "flag: Japan"])
    assert tokens.shape == (3, 77)
    assert tokens[0, 0] == BOS and (tokens[0, 3:] == EOS).all() and (tokens[0, 1:3] != EOS).all()
    assert tokens[2, 0] == BOS and (tokens[2, 1:] == EOS).all()
    assert not (tokens[0] == tokens[1]).all()


def test_bracketed_names_are_tokenized_as_the_engine_reads_the_prompt():
    assert prompt_text("A button (blood type)") == "A button blood type"
    assert prompt_text("flag: Japan") == "flag: Japan"
