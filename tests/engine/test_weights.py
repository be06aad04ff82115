import torch
from safetensors.torch import save_file

from sdstudio.engine import weights
from sdstudio.engine.safetensors_file import read_header
from sdstudio.engine.weights import load_state_dict_file, load_tensors, read_tensor


def test_reads_report_every_byte_in_pieces(tmp_path, monkeypatch):
    monkeypatch.setattr(weights, "READ_PIECE", 1000)
    big = torch.arange(2600, dtype=torch.float32).reshape(26, 100)  # 10400 bytes: 11 pieces
    save_file({"big": big, "small": torch.ones(3, dtype=torch.float16)}, str(tmp_path / "t.safetensors"))
    pieces = []
    state = load_tensors(read_header(tmp_path / "t.safetensors"), on_bytes=pieces.append)
    assert torch.equal(state["big"], big)
    assert sum(pieces) == big.numel() * 4 + 3 * 2
    assert max(pieces) == 1000 and len(pieces) == 12


def test_each_tensor_goes_straight_to_its_device_and_dtype(tmp_path):
    t = torch.linspace(-3, 3, 64).reshape(8, 8)
    save_file({"w": t.half(), "i": torch.arange(4)}, str(tmp_path / "t.safetensors"))
    header = read_header(tmp_path / "t.safetensors")
    with open(header.path, "rb") as f:
        on_meta = read_tensor(f, header.tensors["w"], torch.float32, "meta")
    assert on_meta.device.type == "meta" and on_meta.dtype == torch.float32 and on_meta.shape == (8, 8)
    state, _ = load_state_dict_file(tmp_path / "t.safetensors", dtype=torch.float32, device="cpu")
    assert torch.equal(state["w"], t.half().float())
    assert state["i"].dtype == torch.int64  # integer tensors keep their dtype
