"""read_file_parameters: the one reader of "how was this image made" for Open, --from, re-run and the index."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, PngImagePlugin

from sdstudio.engine.errors import ModelNotFound, RequestError
from sdstudio.engine.model_files import model_hash
from sdstudio.engine.request import GenerationRequest
from sdstudio.history.file_parameters import NO_PARAMETERS, is_plain_name, read_file_parameters
from sdstudio.history.parameters import format_parameters
from sdstudio.history.png import read_png_parameters, save_png
from sdstudio.history.record import Record
from sdstudio.history.store import HistoryStore
from tests.history.test_reconcile import a1111_png, tiny


def textured(size: int = 24) -> Image.Image:
    """Every pixel different, so any resampling, colour conversion or off-by-one shows."""
    rng = np.random.default_rng(5)
    return Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8))


def ragged_mask(size: int = 24) -> Image.Image:
    """Soft and hard edges, values other than 0 and 255."""
    y, x = np.mgrid[:size, :size]
    values = np.clip((x * 11 + y * 7) % 256, 0, 255).astype(np.uint8)
    values[: size // 3] = 0
    return Image.fromarray(values)


@pytest.fixture
def store(tmp_path: Path) -> HistoryStore:
    opened = HistoryStore(tmp_path / "outputs")
    yield opened
    opened.close()


def same_pixels(a: Image.Image, b: Image.Image) -> bool:
    return a.mode == b.mode and a.size == b.size and np.array_equal(np.asarray(a), np.asarray(b))


def made(store: HistoryStore, mode: str):
    init, mask = textured(), ragged_mask()
    request = GenerationRequest(prompt=mode, seed=4, width=24, height=24, strength=0.55,
                                init_image=init, mask=mask if mode == "inpaint" else None)
    return store.add(textured(24).rotate(90), request, "sd15"), request


@pytest.mark.parametrize("mode", ["img2img", "inpaint"])
def test_our_img2img_and_inpaint_pngs_come_back_with_init_and_mask_bit_identical(store, mode) -> None:
    entry, request = made(store, mode)
    found = read_file_parameters(entry.file)
    assert found.mode == mode and found.problem == "" and found.record.id == entry.id
    again = found.rerun_request()
    assert again == request and again.mode == mode
    assert same_pixels(again.init_image, request.init_image)
    if mode == "inpaint":
        assert same_pixels(again.mask, request.mask)
    from_store = store.request_for(entry)
    assert from_store == request and same_pixels(from_store.init_image, request.init_image)


def test_a_copied_history_png_finds_its_sidecars_in_the_history_folder(store, tmp_path) -> None:
    entry, request = made(store, "inpaint")
    copy = tmp_path / "desktop" / "sent-to-me.png"
    copy.parent.mkdir()
    shutil.copy(entry.file, copy)
    assert "missing" in read_file_parameters(copy).problem
    found = read_file_parameters(copy, history_root=store.root)
    assert found.problem == "" and same_pixels(found.request.mask, request.mask)


def test_a_missing_sidecar_is_a_problem_not_a_silent_txt2img(store) -> None:
    entry, _ = made(store, "inpaint")
    mask_name = read_file_parameters(entry.file, pixels=False).record.mask_file
    (entry.file.parent / mask_name).unlink()
    found = read_file_parameters(entry.file, history_root=store.root)
    assert found.mode == "inpaint" and mask_name in found.problem and "missing" in found.problem
    with pytest.raises(RequestError, match=f"{mask_name} is missing"):
        found.rerun_request()
    with pytest.raises(RequestError, match="missing"):
        store.request_for(entry)


def write_record(path: Path, **record_fields) -> Path:
    request = GenerationRequest(prompt="r", width=24, height=24, strength=0.5)
    record = Record(id="x", created=1.0, request=request, **record_fields)
    save_png(path, textured(), format_parameters(request, ""), record.to_json())
    return path


@pytest.mark.parametrize("name", ["../x.png", "/etc/passwd", "sub/x.png", "sub\\x.png", "..", "C:x.png", "x.txt", ""])
def test_sidecar_names_that_are_paths_are_refused_and_never_opened(tmp_path, name) -> None:
    assert not is_plain_name(name)
    if not name:
        return
    folder = tmp_path / "in"
    folder.mkdir()
    (folder / "sub").mkdir()
    textured().save(tmp_path / "x.png")  # what '../x.png' would reach
    textured().save(folder / "sub" / "x.png")
    found = read_file_parameters(write_record(folder / "e.png", init_file=name, mode="img2img"))
    assert "refused" in found.problem and found.request.init_image is None
    with pytest.raises(RequestError, match="refused"):
        found.rerun_request()


def test_plain_sidecar_names_are_accepted() -> None:
    assert is_plain_name("142501-1234-ab12cd34.init.png") and is_plain_name("x.PNG")


def test_an_image_written_without_its_init_image_says_so(tmp_path) -> None:
    found = read_file_parameters(write_record(tmp_path / "cli.png", mode="img2img"))
    assert found.mode == "img2img" and "not kept" in found.problem


def a1111_with_hash(path: Path, name: str, hash_: str) -> Path:
    return a1111_png(path, f"a fox\nSteps: 12, Sampler: Euler a, CFG scale: 6, Seed: 3, Size: 8x8, "
                           f"Model hash: {hash_}, Model: {name}")


@pytest.fixture
def models(tmp_path: Path) -> Path:
    folder = tmp_path / "models"
    (folder / "deep").mkdir(parents=True)
    (folder / "deep" / "local-name.safetensors").write_bytes(b"the weights of a small model")
    (folder / "other.safetensors").write_bytes(b"some other model")
    return folder


def test_a1111_png_resolves_its_model_by_hash(tmp_path, models) -> None:
    target = models / "deep" / "local-name.safetensors"
    png = a1111_with_hash(tmp_path / "a.png", "name-on-their-machine", model_hash(target))
    found = read_file_parameters(png, models_dir=models)
    assert found.model_problem == "" and found.rerun_request().model == str(target)
    assert read_file_parameters(png).request.model == ""  # not looked up when no folder is given


def test_an_unknown_hash_is_a_clear_error_never_the_builtin_model(tmp_path, models) -> None:
    png = a1111_with_hash(tmp_path / "a.png", "anything-v3", "0123456789")
    found = read_file_parameters(png, models_dir=models)
    assert "'anything-v3'" in found.model_problem and "0123456789" in found.model_problem
    assert str(models) in found.model_problem and found.problem == ""
    with pytest.raises(ModelNotFound, match="anything-v3.*0123456789"):
        found.rerun_request()


def test_our_record_from_another_machine_is_resolved_and_our_builtin_stays_builtin(tmp_path, models) -> None:
    target = models / "other.safetensors"
    request = GenerationRequest(prompt="r", width=8, height=8, model="/elsewhere/other.safetensors",
                                model_hash=model_hash(target))
    record = Record(id="x", created=1.0, request=request, model_name="other")
    save_png(tmp_path / "far.png", tiny(), format_parameters(request, "other"), record.to_json())
    assert read_file_parameters(tmp_path / "far.png", models_dir=models).rerun_request().model == str(target)

    builtin = GenerationRequest(prompt="r", width=8, height=8, model="", model_hash="0123456789")
    record = Record(id="y", created=1.0, request=builtin, model_name="sdstudio-emoji")
    save_png(tmp_path / "ours.png", tiny(), format_parameters(builtin, "sdstudio-emoji"), record.to_json())
    assert read_file_parameters(tmp_path / "ours.png", models_dir=models).rerun_request().model == ""


def test_reads_ours_a1111_and_plain_images(tmp_path: Path) -> None:
    a1111 = read_file_parameters(a1111_png(tmp_path / "a.png"))
    assert a1111.has_parameters and a1111.params["Model"] == "anything-v3" and a1111.model_name == "anything-v3"
    assert (a1111.request.prompt, a1111.request.sampler, a1111.request.scheduler) == ("a watercolor fox", "DPM++ 2M", "karras")

    store = HistoryStore(tmp_path / "out")
    request = GenerationRequest(prompt="ours", cfg_scale=4.5, clip_skip=2, width=8, height=8, prediction="v")
    ours = read_file_parameters(store.add(tiny(), request).file)
    assert ours.request == request  # our record keeps fields the A1111 text lacks (prediction)
    store.close()

    tiny().save(tmp_path / "plain.png")
    plain = read_file_parameters(tmp_path / "plain.png")
    assert not plain.has_parameters and plain.request is None and plain.image.size == (8, 8)
    assert plain.problem == NO_PARAMETERS

    unknown = read_file_parameters(a1111_png(tmp_path / "u.png", "a\nSteps: 20, Sampler: DPM++ 2M SDE Heun, CFG scale: 7, Seed: 3, Size: 8x8"))
    # A sampler we lack: read as written, the problem names our nearest, and a re-run refuses until chosen.
    assert unknown.has_parameters and unknown.request.sampler == "DPM++ 2M SDE Heun" and unknown.request.seed == 3
    assert unknown.problem == "sampler 'DPM++ 2M SDE Heun' is not in SD Studio; the nearest is 'DPM++ 2M SDE'"
    assert unknown.listing_request().sampler == "DPM++ 2M SDE Heun"
    with pytest.raises(RequestError, match="nearest is 'DPM\\+\\+ 2M SDE'"):
        unknown.rerun_request()


def comfyui_png(path: Path) -> Path:
    """ComfyUI's own PNGs carry its node graph ("prompt", "workflow"), not A1111 parameters."""
    info = PngImagePlugin.PngInfo()
    info.add_text("prompt", json.dumps({"3": {"class_type": "KSampler", "inputs": {"seed": 5, "steps": 20}}}))
    info.add_text("workflow", json.dumps({"nodes": []}))
    tiny().save(path, pnginfo=info)
    return path


def test_store_reconcile_and_open_agree_on_the_same_files(tmp_path: Path, models: Path) -> None:
    root = tmp_path / "outputs"
    first = HistoryStore(root)
    ours, _ = made(first, "inpaint")
    first.close()
    drop = root / "dropped"
    drop.mkdir()
    target = models / "deep" / "local-name.safetensors"
    files = [
        ours.file,
        a1111_with_hash(drop / "a1111.png", "local-name", model_hash(target)),
        a1111_with_hash(drop / "missing-model.png", "gone", "0123456789"),
        a1111_png(drop / "unknown-sampler.png", "a\nSteps: 20, Sampler: DPM++ 2M SDE Heun, CFG scale: 7, Seed: 3, Size: 8x8"),
        comfyui_png(drop / "comfy.png"),
    ]
    tiny().save(drop / "plain.png")
    files.append(drop / "plain.png")
    (ours.file.parent / ours.file.name).rename(drop / "ours.png")  # reconcile indexes it anew from the file
    files[0] = drop / "ours.png"
    for kind in ("init", "mask"):
        sidecar = ours.file.with_name(ours.file.name[:-4] + f".{kind}.png")
        sidecar.rename(drop / f"ours.{kind}.png")
    # The record names the sidecars by their old names; point them at the moved ones as a user copy would keep.
    text, data = read_png_parameters(files[0])
    data.update(init_file="ours.init.png", mask_file="ours.mask.png")
    with Image.open(files[0]) as image:
        save_png(files[0], image.convert("RGB"), text, data)

    store = HistoryStore(root)
    by_file = {entry.file: entry for entry in store.page()}
    for path in files:
        opened = read_file_parameters(path, models_dir=models, history_root=root)
        entry = by_file.get(path)
        assert (entry is not None) == opened.has_parameters, path.name
        if entry is None:
            continue
        listed = opened.listing_request()
        assert (entry.prompt, entry.sampler, entry.steps, entry.seed, entry.model_name, entry.mode) == (
            listed.prompt, listed.sampler, listed.steps, listed.seed, opened.model_name, opened.mode), path.name
        assert store.parameters_text(entry) == opened.text
        try:
            expected = opened.rerun_request()
        except (RequestError, ModelNotFound) as e:
            with pytest.raises(type(e)) as from_store:
                store.request_for(entry, models)
            assert str(from_store.value) == str(e)
            continue
        again = store.request_for(entry, models)
        assert again == expected and again.mode == expected.mode, path.name
    assert {p.name for p in files if p in by_file} == {"ours.png", "a1111.png", "missing-model.png", "unknown-sampler.png"}
    store.close()
