"""The header-only LoRA / embedding catalog: what it reads from a file, hostile files, its cache, its speed."""

from __future__ import annotations

import json
import os
import struct
import subprocess
import sys
import time
from pathlib import Path

import pytest

from sdstudio import paths
from sdstudio.network_catalog import (
    EMBEDDING,
    LORA,
    NetworkCatalog,
    NetworkEntry,
    embedding_family,
    trigger_words,
)
from tests.engine.st_files import write_header_only, write_raw_header

# SD 1.5's transformer blocks (diffusers names) and their widths.
_SD1_ATTENTIONS = ([(f"down_blocks_{b}_attentions_{a}", w) for b, w in enumerate((320, 640, 1280)) for a in (0, 1)]
                   + [("mid_block_attentions_0", 1280)]
                   + [(f"up_blocks_{b}_attentions_{a}", w) for b, w in ((1, 1280), (2, 640), (3, 320))
                      for a in (0, 1, 2)])


def kohya_sd1_shapes(rank: int = 8, text_encoder: bool = True) -> dict[str, tuple[int, ...]]:
    """The tensor names and shapes of a kohya SD 1.5 LoRA (attention, feed-forward, proj, text encoder)."""
    shapes: dict[str, tuple[int, ...]] = {}

    def module(name: str, n_in: int, n_out: int) -> None:
        shapes[f"{name}.lora_down.weight"] = (rank, n_in)
        shapes[f"{name}.lora_up.weight"] = (n_out, rank)
        shapes[f"{name}.alpha"] = ()

    for block, w in _SD1_ATTENTIONS:
        prefix = f"lora_unet_{block}"
        module(f"{prefix}_proj_in", w, w)
        module(f"{prefix}_proj_out", w, w)
        t = f"{prefix}_transformer_blocks_0"
        for attn in ("attn1", "attn2"):
            for proj in ("to_q", "to_k", "to_v", "to_out_0"):
                cross = attn == "attn2" and proj in ("to_k", "to_v")
                module(f"{t}_{attn}_{proj}", 768 if cross else w, w)
        module(f"{t}_ff_net_0_proj", w, 8 * w)
        module(f"{t}_ff_net_2", 4 * w, w)
    for layer in range(12 if text_encoder else 0):
        p = f"lora_te_text_model_encoder_layers_{layer}"
        for proj in ("q_proj", "k_proj", "v_proj", "out_proj"):
            module(f"{p}_self_attn_{proj}", 768, 768)
        module(f"{p}_mlp_fc1", 768, 3072)
        module(f"{p}_mlp_fc2", 3072, 768)
    return shapes


def tag_frequency(tags: dict[str, int], folder: str = "10_subject") -> str:
    return json.dumps({folder: tags})


def lora_file(path: Path, **metadata: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    return write_header_only(path, kohya_sd1_shapes(), metadata=metadata or None)


@pytest.fixture
def catalog(home):
    return NetworkCatalog()


def by_name(entries: list[NetworkEntry]) -> dict[str, NetworkEntry]:
    return {e.name: e for e in entries}


def test_lists_loras_and_embeddings_with_family_alias_triggers_and_previews(home, tmp_path, catalog):
    lora = paths.lora_dir()
    lora_file(lora / "styles" / "inkpunk.safetensors", ss_output_name="Inkpunk_v2",
              ss_tag_frequency=tag_frequency({"ink": 3, "punk": 40, " neon ": 12}))
    (lora / "styles" / "inkpunk.png").write_bytes(b"png")
    (lora / "styles" / "inkpunk.preview.png").write_bytes(b"png")  # A1111 prefers this one
    lora_file(lora / "plain.safetensors")
    (lora / "old.pt").write_bytes(b"\x80\x02}q\x00.")  # a pickle: listed, never opened
    xl = write_header_only(lora / "xl.safetensors", {"lora_te1_x.lora_down.weight": (4, 768)})
    extra = tmp_path / "a1111" / "Lora"
    lora_file(extra / "extra_one.safetensors")
    (extra / "extra_one.jpg").write_bytes(b"jpg")
    emb = paths.embeddings_dir()
    emb.mkdir(parents=True)
    write_header_only(emb / "bad-hands.safetensors", {"emb_params": (6, 768)})
    write_header_only(emb / "xl-neg.safetensors", {"clip_l": (2, 768), "clip_g": (2, 1280)})

    entries = catalog.scan(lora_extra=[extra])
    assert [e.kind for e in entries] == [LORA] * 5 + [EMBEDDING] * 2
    found = by_name(entries)
    ink = found["inkpunk"]
    assert (ink.alias, ink.family, ink.problem) == ("Inkpunk_v2", "sd1", "")
    assert ink.triggers == ("punk", "neon", "ink")
    assert ink.preview == str(lora / "styles" / "inkpunk.preview.png")
    assert found["plain"].preview == "" and found["plain"].triggers == ()
    assert found["plain"].family == "sd1"
    assert found["xl"].family == "sdxl" and found["xl"].path == str(xl)
    assert found["extra_one"].preview == str(extra / "extra_one.jpg")
    assert (found["bad-hands"].family, found["bad-hands"].vectors) == ("sd1", 6)
    assert (found["xl-neg"].family, found["xl-neg"].vectors) == ("sdxl", 2)
    pickled = [e for e in entries if e.path.endswith(".pt")]
    assert len(pickled) == 1 and pickled[0].family is None and pickled[0].problem == ""


def test_trigger_words_sum_over_folders_most_frequent_first():
    meta = {"ss_tag_frequency": json.dumps({"5_a": {"cat": 2, "dog": 9}, "3_b": {"cat": 8, "bird": 1}})}
    assert trigger_words(meta) == ("cat", "dog", "bird")
    assert trigger_words(meta, limit=1) == ("cat",)
    for bad in ("not json", "[1, 2]", '{"a": [1]}', '{"a": {"x": "many", "y": true}}', "[" * 10_000, ""):
        assert trigger_words({"ss_tag_frequency": bad}) == ()


@pytest.mark.parametrize(("shapes", "expected"), [
    ({"emb_params": (3, 768)}, ("sd1", 3)),
    ({"string_to_param.*": (1, 1024)}, ("sd2", 1)),
    ({"clip_l": (4, 768), "clip_g": (4, 1280)}, ("sdxl", 4)),
    ({"emb_params": (768,)}, ("sd1", 1)),
    ({"emb_params": (3, 999)}, (None, 3)),
    ({"a": (1, 768), "b": (1, 768)}, (None, 0)),
])
def test_embedding_family_and_vector_count(shapes, expected):
    assert embedding_family(shapes) == expected


def _hostile_files(folder: Path) -> dict[str, str]:
    """File name -> a word its problem must contain."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "empty.safetensors").write_bytes(b"")
    (folder / "short.safetensors").write_bytes(b"\x01\x02")
    (folder / "pickle.safetensors").write_bytes(b"PK\x03\x04" + b"\x00" * 60)
    (folder / "huge.safetensors").write_bytes(struct.pack("<Q", 2**62) + b"{}")
    (folder / "truncated.safetensors").write_bytes(struct.pack("<Q", 500) + b"{}")
    raw = b"[" * 100_000 + b"]" * 100_000
    (folder / "deep.safetensors").write_bytes(struct.pack("<Q", len(raw)) + raw)
    write_raw_header(folder / "lying.safetensors",
                     {"x.lora_down.weight": {"dtype": "F16", "shape": [4, 768], "data_offsets": [0, 10**9]}})
    write_raw_header(folder / "meta.safetensors", {"__metadata__": {"ss_output_name": 5}})
    write_raw_header(folder / "notjson.safetensors", {}, b"")
    (folder / "notjson.safetensors").write_bytes(struct.pack("<Q", 4) + b"\xff\xfe{[")
    (folder / "dir.safetensors").mkdir()  # a folder named like a file is skipped by the listing
    return {"empty": "too short", "short": "too short", "pickle": "", "huge": "", "truncated": "truncated",
            "deep": "nested", "lying": "", "meta": "not a string", "notjson": "JSON"}


def test_hostile_headers_are_listed_as_unreadable_with_the_reason(home, catalog):
    expected = _hostile_files(paths.lora_dir())
    lora_file(paths.lora_dir() / "good.safetensors")
    found = by_name(catalog.scan())
    assert set(found) == {*expected, "good"}
    assert found["good"].problem == ""
    for name, word in expected.items():
        assert found[name].problem, name
        assert word in found[name].problem, (name, found[name].problem)
        assert "\n" not in found[name].problem
    assert NetworkCatalog().scan()  # and they come back from the cache file unchanged
    assert by_name(NetworkCatalog().scan())["lying"].problem == found["lying"].problem


def test_second_scan_reads_no_header_and_a_changed_file_is_read_again(home, catalog):
    for i in range(5):
        lora_file(paths.lora_dir() / f"l{i}.safetensors", ss_output_name=f"alias{i}")
    first = catalog.scan()
    assert catalog.read_count == 5
    assert catalog.scan() == first and catalog.read_count == 0
    changed = paths.lora_dir() / "l2.safetensors"
    write_header_only(changed, {"lora_te1_x.lora_down.weight": (4, 768)})
    os.utime(changed, ns=(time.time_ns(), time.time_ns() + 10**9))
    (paths.lora_dir() / "l4.safetensors").unlink()
    third = by_name(catalog.scan())
    assert catalog.read_count == 1
    assert third["l2"].family == "sdxl" and "l4" not in third
    restarted = NetworkCatalog()
    assert by_name(restarted.scan()) == third and restarted.read_count == 0
    saved = json.loads(restarted.cache_path.read_text(encoding="utf-8"))
    assert len(saved["files"]) == 4  # the removed file left the cache


def test_a_damaged_or_foreign_cache_file_is_ignored_and_rewritten(home, catalog):
    lora_file(paths.lora_dir() / "one.safetensors")
    catalog.scan()
    for damage in ("{not json", json.dumps({"version": 999, "files": {}}),
                   json.dumps({"version": 1, "files": {"x": 5, "lora:" + str(paths.lora_dir()): [1, 2, {}]}})):
        catalog.cache_path.write_text(damage, encoding="utf-8")
        fresh = NetworkCatalog()
        assert [e.name for e in fresh.scan()] == ["one"]
        assert fresh.read_count == 1
        assert NetworkCatalog().scan() and json.loads(catalog.cache_path.read_text())["version"] == 1


def test_compatibility_and_search():
    entry = NetworkEntry(kind=LORA, path="/m/Lora/styles/Ink_Punk.safetensors", name="Ink_Punk", alias="inkpunk v2",
                         family="sd1")
    assert entry.compatible("sd1") and entry.compatible(None)
    assert not entry.compatible("sdxl")
    assert NetworkEntry(kind=LORA, path="x", name="x").compatible("sdxl")
    assert entry.matches("ink") and entry.matches("PUNK v2") and entry.matches("styles")
    assert not entry.matches("ink xl")


def test_the_catalog_loads_neither_torch_nor_qt():
    code = ("import sys, sdstudio.network_catalog; "
            "print(sorted(m for m in ('PySide6', 'torch') if m in sys.modules))")
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env)
    assert result.stdout.strip() == "[]"


@pytest.mark.perf
def test_scanning_1000_lora_files_takes_under_a_second_after_the_first_time(home):
    folder = paths.lora_dir()
    shapes = kohya_sd1_shapes(rank=16)
    counts = {f"tag{i}": (i * 37) % 101 for i in range(200)}
    tags = tag_frequency(counts)
    for i in range(1000):
        sub = folder / f"set{i % 10}"
        sub.mkdir(parents=True, exist_ok=True)
        write_header_only(sub / f"lora_{i:04d}.safetensors", shapes,
                          metadata={"ss_output_name": f"lora {i}", "ss_tag_frequency": tags,
                                    "ss_base_model_version": "sd_v1"})
        if i % 3 == 0:
            (sub / f"lora_{i:04d}.preview.png").write_bytes(b"png")
    header_kb = (folder / "set0" / "lora_0000.safetensors").open("rb").read(8)
    header_kb = struct.unpack("<Q", header_kb)[0] / 1024
    t0 = time.perf_counter()
    first = NetworkCatalog().scan()
    t1 = time.perf_counter()
    second = NetworkCatalog().scan()  # a new catalog: what a restart sees, from the cache file
    t2 = time.perf_counter()
    again = NetworkCatalog()
    again.scan()
    again.scan()  # in memory
    t3 = time.perf_counter() - t2
    print(f"\n1000 LoRA files ({len(shapes)} tensors, {header_kb:.0f} KB header each): first scan "
          f"{t1 - t0:.2f} s, second scan after restart {t2 - t1:.3f} s, cached + in-memory rescan "
          f"{t3:.3f} s", file=sys.stderr)
    assert len(first) == 1000 and second == first
    assert sum(bool(e.preview) for e in second) == 334
    assert all(e.family == "sd1" and e.triggers[0] == min(counts, key=lambda t: (-counts[t], t)) for e in second)
    assert t2 - t1 < 1.0
