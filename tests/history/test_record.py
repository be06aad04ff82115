"""The ``sdstudio`` record: ids in our own format, and no path of the writer's machine in what a PNG carries."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from sdstudio.engine.request import GenerationRequest
from sdstudio.history.png import png_text_chunks
from sdstudio.history.record import Record, file_name, is_entry_id, new_entry_id, record_from_json
from sdstudio.history.store import HistoryStore
from tests.history.test_file_parameters import ragged_mask, textured


def test_new_ids_are_of_our_format_and_distinct() -> None:
    ids = {new_entry_id() for _ in range(100)}
    assert len(ids) == 100 and all(is_entry_id(i) for i in ids)


def test_file_name_drops_every_folder_part() -> None:
    assert file_name("/home/me/models/x.safetensors") == "x.safetensors"
    assert file_name("C:\\Users\\me\\models\\x.safetensors") == "x.safetensors"
    assert file_name("x.safetensors") == "x.safetensors" and file_name("") == ""


def test_a_stored_png_carries_no_path_of_this_machine(tmp_path: Path) -> None:
    models = tmp_path / "me" / "models"
    request = GenerationRequest(
        prompt="a fox", width=24, height=24, seed=5, init_image=textured(), mask=ragged_mask(), strength=0.5,
        model=str(models / "sd15" / "dream.safetensors"), vae=str(models / "vae" / "ft-mse.safetensors"),
        taesd=str(Path.home() / "taesd_decoder.safetensors"), model_hash="0123456789",
    )
    store = HistoryStore(tmp_path / "outputs")
    entry = store.add(textured(), request, "dream")
    store.close()
    with open(entry.file, "rb") as file:
        chunks = png_text_chunks(file)
    assert set(chunks) == {"parameters", "sdstudio"}
    for text in chunks.values():
        assert str(tmp_path) not in text and str(Path.home()) not in text and "me/models" not in text
    record = record_from_json(json.loads(chunks["sdstudio"]))
    assert (record.request.model, record.request.vae, record.request.taesd, record.request.model_hash) == (
        "dream.safetensors", "ft-mse.safetensors", "taesd_decoder.safetensors", "0123456789")
    assert record.model_name == "dream" and "/" not in record.init_file + record.mask_file


def test_a_record_round_trips_apart_from_the_folders() -> None:
    request = GenerationRequest(prompt="p", cfg_scale=4.5, prediction="v", model="/m/x.safetensors")
    again = record_from_json(Record(id="0" * 32, created=2.0, request=request, model_name="x").to_json())
    assert again.request == request.replace(model="x.safetensors") and again.id == "0" * 32


def test_variation_seed_and_seed_resize_round_trip_through_the_json_chunk() -> None:
    request = GenerationRequest(prompt="p", seed=3, subseed=2**32 - 1, subseed_strength=0.125,
                                seed_resize_from_w=320, seed_resize_from_h=448)
    data = json.loads(json.dumps(Record(id="0" * 32, created=2.0, request=request).to_json()))
    assert record_from_json(data).request == request
    # A record written before these fields existed reads with them off.
    for key in ("subseed", "subseed_strength", "seed_resize_from_w", "seed_resize_from_h"):
        del data["request"][key]
    assert record_from_json(data).request == request.replace(subseed=0, subseed_strength=0.0,
                                                             seed_resize_from_w=0, seed_resize_from_h=0)
    data["request"]["subseed_strength"] = "strong"
    with pytest.raises(ValueError, match="subseed_strength should be float"):
        record_from_json(data)


def test_lora_and_ti_hashes_round_trip_through_the_json_chunk() -> None:
    request = GenerationRequest(prompt="<lora:ink:0.8> a fox",
                                lora_hashes=(("ink", "0123456789ab"), ("b c", "ba9876543210")),
                                ti_hashes=(("easynegative", "c74b4e810b03"),))
    data = json.loads(json.dumps(Record(id="0" * 32, created=2.0, request=request).to_json()))
    assert data["request"]["lora_hashes"] == [["ink", "0123456789ab"], ["b c", "ba9876543210"]]
    again = record_from_json(data)
    assert again.request == request
    assert again.request.lora_hashes == request.lora_hashes and again.request.ti_hashes == request.ti_hashes
    plain = Record(id="0" * 32, created=2.0, request=GenerationRequest())
    empty = record_from_json(json.loads(json.dumps(plain.to_json())))
    assert empty.request.lora_hashes == () and empty.request.ti_hashes == ()


@pytest.mark.parametrize("value", ["ink: 0123", [["ink"]], [["ink", 5]], [[None, "x"]], {"ink": "x"},
                                   [["\ud800", "x"]], [["a", "b"]] * 1000])
def test_hostile_hash_lists_are_refused_by_name(value) -> None:
    data = Record(id="0" * 32, created=2.0, request=GenerationRequest()).to_json()
    data["request"]["lora_hashes"] = value
    with pytest.raises(ValueError, match="lora_hashes"):
        record_from_json(data)
