"""A1111 `<lora:…>` tags: read and removed exactly as A1111's extra_networks.parse_prompt + ExtraNetworkLora."""

from __future__ import annotations

import pytest

from sdstudio.engine.errors import RequestError
from sdstudio.engine.extra_networks import LoraUse, hash_name, parse_prompt, strip_tags, tag_spans


@pytest.mark.parametrize("prompt, clean, loras", [
    # A1111's wiki form <lora:filename:multiplier>; the tag is replaced by "" and the rest left as it is.
    ("a cat, <lora:alicenew:1>, best", "a cat, , best", [LoraUse("alicenew", 1.0, 1.0)]),
    ("<lora:style:0.8>", "", [LoraUse("style", 0.8, 0.8)]),
    ("<lora:style>", "", [LoraUse("style", 1.0, 1.0)]),  # no weight: 1
    # <lora:NAME:TE:UNET:DYN> (A1111 1.5), and the named forms te= / unet= / dyn=.
    ("<lora:x:0.5:0.25>", "", [LoraUse("x", 0.5, 0.25)]),
    ("<lora:x:0.5:0.25:8>", "", [LoraUse("x", 0.5, 0.25, 8)]),
    ("<lora:x:te=0.7:unet=0.3>", "", [LoraUse("x", 0.7, 0.3)]),
    ("<lora:x:unet=0.3:te=0.7>", "", [LoraUse("x", 0.7, 0.3)]),
    ("<lora:x:te=0.4>", "", [LoraUse("x", 0.4, 0.4)]),  # UNET defaults to TE after te= is read
    ("<lora:x:0.5:unet=0.1>", "", [LoraUse("x", 0.5, 0.1)]),
    ("<lora:x:0.5:0.2:te=0.9>", "", [LoraUse("x", 0.9, 0.2)]),  # named beats positional
    ("<lora:x:1:dyn=16>", "", [LoraUse("x", 1.0, 1.0, 16)]),
    # The Lora extension registers <lyco:…> as an alias.
    ("<lyco:loha_style:0.6>", "", [LoraUse("loha_style", 0.6, 0.6)]),
    # Spaces around the tag stay (A1111 substitutes "" and nothing else), also between two tags.
    ("  <lora:a:1>  cat \n<lora:b:-0.5>!", "    cat \n!", [LoraUse("a", 1.0, 1.0), LoraUse("b", -0.5, -0.5)]),
    # float() as A1111 calls it: spaces, exponents, signs.
    ("<lora:x: 0.5 :1e-1>", "", [LoraUse("x", 0.5, 0.1)]),
    # Names keep spaces, dots, dashes and non-ASCII (file stems do).
    ("<lora:My Style v1.5-final_é:0.3>", "", [LoraUse("My Style v1.5-final_é", 0.3, 0.3)]),
    # The same LoRA twice is two uses (their deltas add, as two loaded networks do in A1111).
    ("<lora:x:0.5><lora:x:0.25>", "", [LoraUse("x", 0.5, 0.5), LoraUse("x", 0.25, 0.25)]),
    # Text that is not a tag stays: no ':' after the word, a space before it, no word at all.
    ("a <b> c < lora:x:1> <:x> 1<2 a:b>", "a <b> c < lora:x:1> <:x> 1<2 a:b>", []),
    ("(masterpiece:1.2), [a|b]", "(masterpiece:1.2), [a|b]", []),
])
def test_tags_are_read_and_removed_as_a1111_does(prompt, clean, loras):
    parsed = parse_prompt(prompt)
    assert parsed.prompt == clean
    assert list(parsed.loras) == loras
    assert strip_tags(prompt) == clean
    spans = tag_spans(prompt)
    gaps = zip([(0, 0), *spans], [*spans, (len(prompt), 0)], strict=True)
    kept = "".join(prompt[end:start] for (_, end), (start, _) in gaps)
    assert kept == clean and len(spans) == len(loras)


@pytest.mark.parametrize("prompt, said", [
    ("<lora:>", "not a complete tag"),
    ("a <lora:x:0.8", "not a complete tag"),
    ("<lyco:>", "not a complete tag"),
    ("<lora:x:abc>", "'abc' is not a number"),
    ("<lora:x:0.5:high>", "'high' is not a number"),
    ("<lora:x:te=>", "'' is not a number"),
    ("<lora:x:nan>", "not a finite number"),
    ("<lora:x:inf>", "not a finite number"),
    ("<lora::0.8>", "names no LoRA"),
    ("<lora:te=1>", "names no LoRA"),
    ("<lora:x:1:1:8:9>", "5 parts"),
    ("<lora:x:1:1:8.5>", "not a whole number"),
    ("<lora:x:1:1:0>", "must be 1 or more"),
    ("<lora:x:1:strength=2>", "unknown option 'strength'"),
    ("<hypernet:agm:1.1>", "not one SD Studio reads"),
    ("<LORA:x:1>", "(lower case)"),
])
def test_malformed_tags_are_refused_with_one_line(prompt, said):
    with pytest.raises(RequestError) as caught:
        parse_prompt(f"a photo, {prompt}, best")
    message = str(caught.value)
    assert said in message
    assert "\n" not in message


def test_a_hostile_tag_is_shown_escaped_and_cut():
    with pytest.raises(RequestError) as caught:
        parse_prompt("<lora:x:\x1b[2J" + "9" * 500 + ">")
    message = str(caught.value)
    assert "\x1b" not in message and len(message) < 400


def test_hash_names_lose_colons_and_commas_as_a1111_writes_them():
    assert hash_name("a,b: c") == "ab c"
    assert hash_name("plain") == "plain"


def test_tag_spans_never_judge_a_tag():
    assert tag_spans("a <lora:x:abc> b <hypernet:y> <lora:>") == [(2, 14), (17, 29)]
