import hashlib
import json
import os
import random
import struct
from pathlib import Path

import pytest

from sdstudio import paths
from sdstudio.engine import model_files, network_files
from sdstudio.engine.errors import NetworkFileError


def test_lora_and_embedding_folders_follow_home_then_extras(home, tmp_path):
    extra = tmp_path / "a1111" / "models" / "Lora"
    assert network_files.lora_dirs([extra, "", extra]) == [paths.home() / "models" / "Lora", extra]
    assert network_files.embedding_dirs() == [paths.home() / "embeddings"]


def test_list_files_walks_subfolders_and_skips_other_suffixes(home, tmp_path):
    own = paths.lora_dir()
    (own / "styles").mkdir(parents=True)
    for name in ("b.safetensors", "styles/a.safetensors", "c.pt", "notes.txt", "d.SAFETENSORS"):
        (own / name).write_bytes(b"x")
    (own / "dir.safetensors").mkdir()
    found = network_files.list_files(network_files.lora_dirs([tmp_path / "missing"]), network_files.LORA_SUFFIXES)
    assert [p.relative_to(own).as_posix() for p in found] == [
        "b.safetensors", "c.pt", "d.SAFETENSORS", "styles/a.safetensors"]


def test_checkpoint_list_ignores_the_lora_folder(home):
    (paths.lora_dir()).mkdir(parents=True)
    (paths.lora_dir() / "style.safetensors").write_bytes(b"x")
    (paths.models_dir() / "sd15.safetensors").write_bytes(b"x")
    (paths.models_dir() / "sub").mkdir()
    (paths.models_dir() / "sub" / "lora.safetensors").write_bytes(b"x")
    found = model_files.folder_models(paths.models_dir())
    assert [Path(p).relative_to(paths.models_dir()).as_posix() for p in found] == [
        "sd15.safetensors", "sub/lora.safetensors"]


# --- hashes (A1111: extensions-builtin/Lora/network.py, modules/hashes.py) ------------------------------

def _lora_bytes(metadata: dict[str, str] | None, data: bytes, pad: int = 0) -> bytes:
    header: dict = {"__metadata__": metadata} if metadata else {}
    header["lora_unet_x.lora_down.weight"] = {"dtype": "F32", "shape": [len(data) // 4], "data_offsets": [0, len(data)]}
    raw = json.dumps(header).encode() + b" " * pad
    return struct.pack("<Q", len(raw)) + raw + data


def _write(path: Path, raw: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(raw)
    return path


DATA = bytes(random.Random(5).randrange(256) for _ in range(4096))


def test_lora_hash_is_sha256_of_the_data_after_the_header(tmp_path):
    path = _write(tmp_path / "a.safetensors", _lora_bytes({"ss_output_name": "a"}, DATA))
    assert network_files.lora_short_hash(path) == hashlib.sha256(DATA).hexdigest()[:12]
    # Metadata and header padding are outside the hashed bytes: editing them keeps the hash (kohya's intent).
    other = _write(tmp_path / "b.safetensors", _lora_bytes({"ss_output_name": "renamed", "x": "y"}, DATA, pad=8))
    assert network_files.lora_short_hash(other) == network_files.lora_short_hash(path)
    # One data byte changed changes it.
    flipped = DATA[:100] + bytes([DATA[100] ^ 1]) + DATA[101:]
    changed = _write(tmp_path / "c.safetensors", _lora_bytes({"ss_output_name": "a"}, flipped))
    assert network_files.lora_short_hash(changed) != network_files.lora_short_hash(path)


def test_lora_hash_prefers_the_files_sshs_model_hash_as_a1111_does(tmp_path):
    declared = "ABCDEF0123456789" + "0" * 48
    path = _write(tmp_path / "k.safetensors", _lora_bytes({"sshs_model_hash": declared}, DATA))
    assert network_files.lora_short_hash(path) == "abcdef012345"
    # A value that is no hash is not taken.
    junk = _write(tmp_path / "j.safetensors", _lora_bytes({"sshs_model_hash": "not a hash at all"}, DATA))
    assert network_files.lora_short_hash(junk) == hashlib.sha256(DATA).hexdigest()[:12]


def test_pt_lora_and_embedding_hash_the_whole_file(tmp_path):
    raw = b"PK\x03\x04" + DATA
    lora = _write(tmp_path / "old.pt", raw)
    embedding = _write(tmp_path / "emb.safetensors", _lora_bytes(None, DATA))
    assert network_files.lora_short_hash(lora) == hashlib.sha256(raw).hexdigest()[:12]
    assert network_files.embedding_short_hash(embedding) == hashlib.sha256(embedding.read_bytes()).hexdigest()[:12]


def test_hashes_are_cached_per_path_size_and_mtime(tmp_path, monkeypatch):
    path = _write(tmp_path / "a.safetensors", _lora_bytes(None, DATA))
    first = network_files.lora_short_hash(path)
    opened = []
    real_open = open
    monkeypatch.setattr("builtins.open", lambda *a, **k: opened.append(a[0]) or real_open(*a, **k))
    assert network_files.lora_short_hash(path) == first and opened == []
    monkeypatch.undo()
    _write(path, _lora_bytes(None, DATA[::-1]))  # new content, new size or mtime: hashed again
    os.utime(path, ns=(1, 1))
    assert network_files.lora_short_hash(path) == hashlib.sha256(DATA[::-1]).hexdigest()[:12]


@pytest.mark.parametrize("raw, said", [
    (b"\x01\x02", "too short"),
    (struct.pack("<Q", 10**6) + b"{}", "truncated"),
    (b"\x80\x02}q\x00" + b"\x00" * 64, "pickle"),
])
def test_damaged_lora_files_get_one_line(tmp_path, raw, said):
    path = _write(tmp_path / "bad.safetensors", raw)
    with pytest.raises(NetworkFileError) as caught:
        network_files.lora_short_hash(path)
    assert said in str(caught.value).lower() and "\n" not in str(caught.value)


# --- finding the file a tag or an image names ----------------------------------------------------------

def test_find_lora_by_stem_then_alias_then_hash(home, tmp_path):
    own = paths.lora_dir()
    extra = tmp_path / "a1111" / "Lora"
    by_stem = _write(own / "styles" / "ink.safetensors", _lora_bytes({"ss_output_name": "inkv2"}, DATA))
    by_alias = _write(extra / "last-000010.safetensors", _lora_bytes({"ss_output_name": "watercolor"}, DATA[:2048]))
    pt = _write(extra / "Old.pt", b"PK" + DATA[:512])
    assert network_files.find_lora("ink", "", [extra]) == by_stem
    assert network_files.find_lora("INK", "", [extra]) == by_stem  # case only differs: still found
    assert network_files.find_lora("watercolor", "", [extra]) == by_alias
    assert network_files.find_lora("Old", "", [extra]) == pt
    # A stem wins over another file's alias of the same name (A1111 looks names up first).
    clash = _write(own / "inkv2.safetensors", _lora_bytes(None, DATA[:1024]))
    assert network_files.find_lora("inkv2", "", [extra]) == clash
    # By hash: a renamed file is found; a same-named file with another hash is not the one.
    wanted = network_files.lora_short_hash(by_alias)
    assert network_files.find_lora("gone", wanted, [extra]) == by_alias
    assert network_files.find_lora("ink", wanted, [extra]) == by_alias
    assert network_files.find_lora("ink", network_files.lora_short_hash(by_stem).upper(), [extra]) == by_stem


def test_find_lora_says_what_is_missing_and_where_it_looked(home, tmp_path):
    own = paths.lora_dir()
    _write(own / "ink.safetensors", _lora_bytes(None, DATA))
    _write(own / "broken.safetensors", b"\x01")
    extra = tmp_path / "more"
    with pytest.raises(NetworkFileError) as caught:
        network_files.find_lora("watercolor", "", [extra])
    message = str(caught.value)
    assert "LoRA 'watercolor' is not in" in message and str(own) in message and str(extra) in message
    assert "broken.safetensors" in message and "\n" not in message
    with pytest.raises(NetworkFileError, match=r"'ink' \(hash 0123456789ab\).*different hash"):
        network_files.find_lora("ink", "0123456789ab")


def test_find_lora_refuses_an_ambiguous_name(home, tmp_path):
    _write(paths.lora_dir() / "a" / "style.safetensors", _lora_bytes(None, DATA))
    _write(paths.lora_dir() / "b" / "style.safetensors", _lora_bytes(None, DATA[:8]))
    with pytest.raises(NetworkFileError, match="several LoRA files are named 'style'"):
        network_files.find_lora("style")
    # A hash settles it.
    chosen = paths.lora_dir() / "b" / "style.safetensors"
    assert network_files.find_lora("style", network_files.lora_short_hash(chosen)) == chosen


def test_find_embedding_by_stem_or_hash(home, tmp_path):
    emb = _write(paths.embeddings_dir() / "neg" / "easynegative.safetensors", _lora_bytes(None, DATA))
    assert network_files.find_embedding("easynegative") == emb
    short = network_files.embedding_short_hash(emb)
    assert network_files.find_embedding("EasyNegative_v2", short) == emb
    with pytest.raises(NetworkFileError, match=r"embedding 'badhands' \(hash 0123456789ab\) is not in"):
        network_files.find_embedding("badhands", "0123456789ab")


def test_a_name_from_an_image_is_shown_escaped(home):
    with pytest.raises(NetworkFileError) as caught:
        network_files.find_lora("evil\x1b[2J\u202e")
    assert "\x1b" not in str(caught.value) and "\u202e" not in str(caught.value)
