"""Adopting shipped weights as every stage's state: a checkout without the work folder continues the model that
shipped, and exporting straight after adopting gives back the shipped tensors."""

import pytest
import torch
from safetensors.torch import load_file

from sdstudio.training.__main__ import main
from sdstudio.training.adopt import adopt_shipped, shipped_steps
from sdstudio.training.export import model_paths
from sdstudio.training.plan import quick_plan


@pytest.fixture(scope="module")
def shipped(tmp_path_factory):
    root = tmp_path_factory.mktemp("adopt")
    assert main(["--quick", "--work-dir", str(root / "work"), "--log-dir", str(root / "logs"),
                 "--out-dir", str(root / "models")]) == 0
    return root


def test_the_shipped_file_records_every_stage_step(shipped):
    assert shipped_steps(model_paths(shipped / "models")[0]) == {
        "autoencoder": 3, "decoder": 3, "diffusion": 3, "preview": 3}


def test_adopt_then_export_gives_back_the_shipped_tensors(shipped):
    before = [load_file(str(p)) for p in model_paths(shipped / "models")]
    out = shipped / "again"
    out.mkdir()
    for path in model_paths(shipped / "models"):
        (out / path.name).write_bytes(path.read_bytes())
    assert main(["--quick", "--adopt-shipped", "--work-dir", str(shipped / "work2"), "--log-dir",
                 str(shipped / "logs2"), "--out-dir", str(out), "--stage", "dataset", "--stage", "latents",
                 "--stage", "export"]) == 0
    after = [load_file(str(p)) for p in model_paths(out)]
    for old, new in zip(before, after, strict=True):
        assert old.keys() == new.keys()
        for key in old:
            assert torch.equal(old[key], new[key]), key


def test_adopting_into_a_folder_with_saved_stages_is_refused(shipped):
    plan = quick_plan(shipped / "work", shipped / "logs")
    with pytest.raises(RuntimeError, match="already holds saved stages"):
        adopt_shipped(plan, shipped / "models")


def test_adopting_without_a_shipped_model_is_refused(tmp_path):
    with pytest.raises(FileNotFoundError, match="no shipped model"):
        adopt_shipped(quick_plan(tmp_path / "w", tmp_path / "l"), tmp_path / "models")
