import pickle
import struct

import pytest
import torch
from safetensors.torch import save_file

from sdstudio.engine.errors import CheckpointError
from sdstudio.engine.safetensors_file import read_header
from sdstudio.engine.weights import load_state_dict_file, load_tensors
from tests.engine.st_files import write_header_only, write_raw_header


def test_reads_tensors_and_metadata_written_by_the_safetensors_library(tmp_path):
    sd = {"a.weight": torch.randn(3, 4), "b": torch.arange(5, dtype=torch.int64), "c": torch.randn(2).half()}
    save_file(sd, tmp_path / "m.safetensors", metadata={"k": "v"})
    header = read_header(tmp_path / "m.safetensors")
    assert header.metadata == {"k": "v"}
    assert header.shapes() == {"a.weight": (3, 4), "b": (5,), "c": (2,)}
    loaded = load_tensors(header)
    for k in sd:
        assert torch.equal(loaded[k], sd[k]) and loaded[k].dtype == sd[k].dtype


def test_converts_fp16_file_to_fp32_and_leaves_integers_alone(tmp_path):
    sd = {"w": torch.randn(4, 4).half(), "ids": torch.arange(3)}
    save_file(sd, tmp_path / "m.safetensors")
    out = load_tensors(read_header(tmp_path / "m.safetensors"), dtype=torch.float32)
    assert out["w"].dtype == torch.float32 and torch.equal(out["w"], sd["w"].float())
    assert out["ids"].dtype == torch.int64


def test_prefix_is_stripped(tmp_path):
    save_file({"model.x": torch.ones(1), "other.y": torch.zeros(1)}, tmp_path / "m.safetensors")
    assert list(load_tensors(read_header(tmp_path / "m.safetensors"), prefix="model.")) == ["x"]


def test_not_a_safetensors_file(tmp_path):
    p = tmp_path / "junk.safetensors"
    p.write_bytes(b"hello world, this is a text file and not a model at all" * 3)
    with pytest.raises(CheckpointError, match="not a safetensors file"):
        read_header(p)


def test_too_short(tmp_path):
    p = tmp_path / "tiny.safetensors"
    p.write_bytes(b"abc")
    with pytest.raises(CheckpointError, match="too short"):
        read_header(p)


def test_truncated_header(tmp_path):
    p = tmp_path / "t.safetensors"
    p.write_bytes(struct.pack("<Q", 1000) + b"{}")
    with pytest.raises(CheckpointError, match="truncated"):
        read_header(p)


def test_truncated_data(tmp_path):
    p = tmp_path / "m.safetensors"
    save_file({"w": torch.randn(100, 100)}, p)
    data = p.read_bytes()
    p.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="truncated.*incomplete download"):
        read_header(p)


def test_header_that_lies_about_a_tensor_size(tmp_path):
    p = write_raw_header(tmp_path / "lie.safetensors",
                         {"w": {"dtype": "F32", "shape": [10, 10], "data_offsets": [0, 40]}}, b"\0" * 40)
    with pytest.raises(CheckpointError, match="lies about tensor 'w'"):
        read_header(p)


def test_overlapping_tensors(tmp_path):
    p = write_raw_header(tmp_path / "o.safetensors", {
        "a": {"dtype": "F32", "shape": [4], "data_offsets": [0, 16]},
        "b": {"dtype": "F32", "shape": [4], "data_offsets": [8, 24]}}, b"\0" * 24)
    with pytest.raises(CheckpointError, match="overlaps"):
        read_header(p)


def test_header_not_json(tmp_path):
    p = tmp_path / "bad.safetensors"
    p.write_bytes(struct.pack("<Q", 6) + b"{oops}")
    with pytest.raises(CheckpointError, match="not JSON"):
        read_header(p)


def test_pickle_is_named_as_pickle(tmp_path):
    p = tmp_path / "model.safetensors"
    p.write_bytes(pickle.dumps({"a": 1}, protocol=2) + b"\0" * 64)
    with pytest.raises(CheckpointError, match="pickled PyTorch checkpoint"):
        read_header(p)


def test_ckpt_refused_by_default_and_loaded_weights_only_on_request(tmp_path):
    p = tmp_path / "m.ckpt"
    torch.save({"state_dict": {"w": torch.ones(2)}}, p)
    with pytest.raises(CheckpointError, match="refuses them by default"):
        load_state_dict_file(p)
    sd, _ = load_state_dict_file(p, allow_pickle=True)
    assert torch.equal(sd["w"], torch.ones(2))


def test_ckpt_with_code_is_refused_even_with_opt_in(tmp_path):
    class Evil:
        def __reduce__(self):
            return (print, ("owned",))

    p = tmp_path / "evil.ckpt"
    with open(p, "wb") as f:
        pickle.dump({"w": Evil()}, f)
    with pytest.raises(CheckpointError, match="weights-only"):
        load_state_dict_file(p, allow_pickle=True)


def test_sparse_full_size_header_reads_without_data(tmp_path):
    p = write_header_only(tmp_path / "big.safetensors", {"w": (50000, 50000)})
    header = read_header(p)
    assert header.file_size > 4_000_000_000 and header.tensors["w"].numel == 2_500_000_000
