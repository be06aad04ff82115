"""Telling a T2I-Adapter and its family from a header (no torch)."""

from __future__ import annotations

from sdstudio.engine.t2i_adapter_keys import adapter_family, is_adapter


def test_adapters_are_told_by_their_marks_in_each_layout():
    assert is_adapter(["adapter.body.0.resnets.0.block1.weight", "adapter.conv_in.weight"])
    assert is_adapter(["conv_in.weight", "body.0.block1.weight"])
    assert is_adapter(["body.0.in_conv.weight", "body.0.body.0.block1.weight"])
    assert not is_adapter(["input_hint_block.0.weight", "zero_convs.0.0.weight"])
    assert not is_adapter(["controlnet_cond_embedding.conv_in.weight"])


def test_the_family_follows_the_pixel_unshuffle_of_the_first_conv():
    assert adapter_family({"conv_in.weight": (320, 192, 3, 3)}) == "sd1"
    assert adapter_family({"conv_in.weight": (320, 64, 3, 3)}) == "sd1"  # one-channel sketch / canny
    assert adapter_family({"adapter.body.0.in_conv.weight": (80, 192, 1, 1)}) == "sd1"  # light
    assert adapter_family({"adapter.conv_in.weight": (320, 768, 3, 3)}) == "sdxl"
    assert adapter_family({"adapter.conv_in.weight": (320, 100, 3, 3)}) is None
    assert adapter_family({"body.0.block1.weight": (320, 320, 3, 3)}) is None
