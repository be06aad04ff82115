from pathlib import Path

from sdstudio import paths
from sdstudio.engine import model_files, network_files


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
