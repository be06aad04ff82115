"""The ``sdstudio`` record: ids in our own format, and no path of the writer's machine in what a PNG carries."""

from __future__ import annotations

import json
from pathlib import Path

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


def test_lora_and_embedding_hashes_round_trip_through_json() -> None:
    request = GenerationRequest(prompt="<lora:style:0.8> cat", lora_hashes=(("style", "0123456789ab"),),
                                ti_hashes=(("bad-hands", "ba9876543210"), ("x", "")))
    text = json.dumps(Record(id="1" * 32, created=2.0, request=request, model_name="x").to_json())
    again = record_from_json(json.loads(text))
    assert again.request.lora_hashes == request.lora_hashes and again.request.ti_hashes == request.ti_hashes


def test_malformed_hash_lists_are_refused_with_the_field_named() -> None:
    good = Record(id="1" * 32, created=2.0, request=GenerationRequest(), model_name="x").to_json()
    for bad in ("style:0123", [["a"]], [["a", 1]], [["a", "b"]] * 1000, {"a": "b"}):
        data = json.loads(json.dumps(good))
        data["request"]["lora_hashes"] = bad
        try:
            record_from_json(data)
        except ValueError as e:
            assert "lora_hashes" in str(e)
        else:
            raise AssertionError(f"{bad!r} was accepted")
