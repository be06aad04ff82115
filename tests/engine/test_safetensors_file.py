import os
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


def _raw(tmp_path, header: bytes | str, data: bytes = b"", name="h.safetensors"):
    raw = header.encode() if isinstance(header, str) else header
    p = tmp_path / name
    p.write_bytes(struct.pack("<Q", len(raw)) + raw + data)
    return p


def _one(dtype='"F32"', shape="[1]", offsets="[0, 4]") -> str:
    """A header of one tensor 'w', each field given as raw JSON text."""
    return '{"w": {"dtype": ' + dtype + ', "shape": ' + shape + ', "data_offsets": ' + offsets + "}}"


def _refused(path, message):
    with pytest.raises(CheckpointError, match=message) as info:
        read_header(path)
    assert "\n" not in str(info.value) and len(str(info.value)) < 400
    return str(info.value)


def test_negative_offset_pointing_at_the_header_is_refused(tmp_path):
    # Without the check, bytes of the JSON header itself would load as the weights of 'w'.
    p = write_raw_header(tmp_path / "neg.safetensors",
                         {"w": {"dtype": "U8", "shape": [16], "data_offsets": [-16, 0]}}, b"")
    _refused(p, "'w' has data offsets .* outside its data section")


def test_reversed_offsets_are_refused(tmp_path):
    p = write_raw_header(tmp_path / "rev.safetensors",
                         {"w": {"dtype": "U8", "shape": [0], "data_offsets": [8, 0]}}, b"\0" * 8)
    _refused(p, "outside its data section")


def test_a_terabyte_tensor_in_a_small_file_is_refused_before_any_read(tmp_path):
    n = 1 << 40
    p = write_raw_header(tmp_path / "tib.safetensors",
                         {"w": {"dtype": "U8", "shape": [1 << 20, 1 << 20], "data_offsets": [0, n]}}, b"\0" * 64)
    _refused(p, "truncated: tensor 'w' should end")


@pytest.mark.parametrize("shape", ["[1e400]", "[" + "9" * 320 + "]", "[-4]", "[2.5]", "[true]", '["4"]', "4",
                                   "[" + ",".join(["1"] * 40) + "]", "[1099511627776]"])
def test_shapes_that_are_not_small_non_negative_integers_are_refused(tmp_path, shape):
    p = _raw(tmp_path, _one(shape=shape), b"\0" * 4)
    _refused(p, "'w' has an invalid shape|not JSON")


@pytest.mark.parametrize("offsets", ["[0]", "[0, 4, 8]", "[0.0, 4]", '["0", "4"]', "[false, 4]", "null"])
def test_offsets_that_are_not_two_integers_are_refused(tmp_path, offsets):
    p = _raw(tmp_path, _one(offsets=offsets), b"\0" * 4)
    _refused(p, "invalid data offsets")


@pytest.mark.parametrize("dtype", ['"F31"', "4", '["F32"]', "null"])
def test_unknown_dtypes_are_refused(tmp_path, dtype):
    p = _raw(tmp_path, _one(dtype=dtype), b"\0" * 4)
    _refused(p, "unsupported dtype")


def test_deeply_nested_header_is_refused_without_recursing(tmp_path):
    depth = 200_000
    p = _raw(tmp_path, b'{"__metadata__": {"x": ' + b"[" * depth + b"]" * depth + b"}}")
    _refused(p, "nested more than")


def test_brackets_inside_strings_do_not_count_as_nesting(tmp_path):
    meta = {"note": "[" * 500 + '\\"{{{' + "\\" * 3}
    save_file({"w": torch.ones(1)}, tmp_path / "m.safetensors", metadata=meta)
    assert read_header(tmp_path / "m.safetensors").metadata == meta


def test_duplicate_keys_are_refused(tmp_path):
    entry = '"w": {"dtype": "U8", "shape": [1], "data_offsets": [0, 1]}'
    p = _raw(tmp_path, "{" + entry + ", " + entry + "}", b"\0")
    _refused(p, "duplicate key 'w'")


def test_nan_in_a_header_is_refused(tmp_path):
    p = _raw(tmp_path, '{"w": {"dtype": "F32", "shape": [NaN], "data_offsets": [0, 4]}}', b"\0" * 4)
    _refused(p, "NaN is not a JSON number")


def test_non_string_metadata_is_refused(tmp_path):
    p = _raw(tmp_path, '{"__metadata__": {"sdstudio.config": {"scale_factor": 1}}}')
    _refused(p, "metadata 'sdstudio.config' is not a string")


def test_header_that_is_not_utf8_is_refused(tmp_path):
    _refused(_raw(tmp_path, b'{"\xff": 1}'), "not JSON")


def test_long_hostile_names_are_quoted_and_capped(tmp_path):
    name = "\x1b[31m\n" + "x" * 5000
    p = write_raw_header(tmp_path / "n.safetensors", {name: {"dtype": "F99", "shape": [1], "data_offsets": [0, 1]}})
    message = _refused(p, "unsupported dtype")
    assert "\x1b" not in message and "\\x1b" in message


def test_a_fifo_is_refused_without_blocking(tmp_path):
    fifo = tmp_path / "pipe.safetensors"
    os.mkfifo(fifo)
    _refused(fifo, "not a regular file")  # opening it would block forever: the test would hang, not fail
