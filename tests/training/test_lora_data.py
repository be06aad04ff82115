"""Fine-tuning images: kohya captions beside the images, else "<trigger> <class>"; aspect buckets within the
training area; crops and flips drawn from the step's generator (the same generator gives the same batch)."""

from __future__ import annotations

import pytest
import torch
from PIL import Image

from sdstudio.engine.errors import ImageFileError
from sdstudio.training.lora_data import BucketedImages, buckets, load_examples, nearest_bucket, tag_frequency


@pytest.fixture
def folder(tmp_path):
    Image.new("RGB", (200, 100), (255, 0, 0)).save(tmp_path / "wide.png")
    Image.new("RGB", (100, 200), (0, 0, 255)).save(tmp_path / "tall.jpg")
    Image.new("RGB", (64, 64), (0, 255, 0)).save(tmp_path / "square.webp")
    (tmp_path / "tall.txt").write_text("  a blue sks bar, tall \n")
    (tmp_path / "notes.md").write_text("not an image")
    return tmp_path


def test_captions_from_txt_else_trigger_and_class(folder):
    examples = {e.path.name: e for e in load_examples(folder, "sks", "bar")}
    assert sorted(examples) == ["square.webp", "tall.jpg", "wide.png"]
    assert examples["tall.jpg"].caption == "a blue sks bar, tall"
    assert examples["wide.png"].caption == "sks bar"
    assert tag_frequency(list(examples.values())) == {"sks bar": 2, "a blue sks bar": 1, "tall": 1}


def test_unreadable_image_is_named(folder):
    (folder / "zz.png").write_bytes(b"garbage")
    with pytest.raises(ImageFileError, match="'zz.png'"):
        load_examples(folder, "sks")


def test_buckets_fit_the_area_and_match_aspect():
    sizes = buckets(512, 64)
    assert (512, 512) in sizes and (768, 320) in sizes and (320, 768) in sizes
    assert all(w * h <= 512 * 512 and w % 64 == 0 and h % 64 == 0 for w, h in sizes)
    assert nearest_bucket((200, 100), sizes)[0] > nearest_bucket((200, 100), sizes)[1]
    assert nearest_bucket((1000, 1000), sizes) == (512, 512)
    assert all(w % 32 == 0 and h % 32 == 0 and w * h <= 64 * 64 for w, h in buckets(64, 32))


def test_batches_share_a_bucket_and_repeat_with_the_generator(folder):
    data = BucketedImages(load_examples(folder, "sks"), 64, 32, random_crop=True, flip=True)
    a, captions = data.batch(3, torch.Generator().manual_seed(4))
    b, _ = data.batch(3, torch.Generator().manual_seed(4))
    assert torch.equal(a, b) and len(captions) == 3
    assert a.shape[0] == 3 and a.shape[2] * a.shape[3] <= 64 * 64
    assert float(a.min()) >= -1 and float(a.max()) <= 1
