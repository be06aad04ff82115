"""Resumable state, loss logs, EMA and the learning-rate schedule."""

import pytest
import torch

from sdstudio.training.state import EMA, Checkpointer, LossLog, lr_at


def test_checkpointer_restores_weights_optimiser_step_and_rng(tmp_path):
    model = torch.nn.Linear(3, 2)
    opt = torch.optim.AdamW(model.parameters(), lr=0.1)
    model(torch.ones(1, 3)).sum().backward()
    opt.step()
    ckpt = Checkpointer(tmp_path / "state.pt", every_s=0.0, model=model, opt=opt)
    torch.manual_seed(7)
    ckpt.save(12)
    expected_draw = torch.rand(3)

    fresh = torch.nn.Linear(3, 2)
    fresh_opt = torch.optim.AdamW(fresh.parameters(), lr=0.1)
    step = Checkpointer(tmp_path / "state.pt", every_s=0.0, model=fresh, opt=fresh_opt).resume()
    assert step == 12
    assert torch.equal(fresh.weight, model.weight)
    assert fresh_opt.state_dict()["state"][0]["step"] == 1
    assert torch.equal(torch.rand(3), expected_draw)


def test_checkpointer_without_saved_state_starts_at_zero(tmp_path):
    model = torch.nn.Linear(2, 2)
    assert Checkpointer(tmp_path / "none.pt", every_s=60.0, model=model).resume() == 0


def test_loss_log_writes_header_once_and_continues_elapsed_time(tmp_path):
    path = tmp_path / "loss.csv"
    LossLog(path, ["loss"]).write(1, loss=0.5)
    LossLog(path, ["loss"]).write(2, loss=0.25)
    rows = path.read_text().splitlines()
    assert rows[0] == "step,elapsed_s,loss"
    assert [r.split(",")[0] for r in rows[1:]] == ["1", "2"]
    assert float(rows[2].split(",")[1]) >= float(rows[1].split(",")[1])


def test_ema_moves_towards_the_model():
    model = torch.nn.Linear(1, 1, bias=False)
    with torch.no_grad():
        model.weight.fill_(0.0)
    ema = EMA(model, decay=0.9)
    with torch.no_grad():
        model.weight.fill_(1.0)
    ema.update(model)
    target = torch.nn.Linear(1, 1, bias=False)
    ema.copy_to(target)
    assert target.weight.item() == pytest.approx(0.1)


def test_lr_warms_up_then_decays_to_a_tenth():
    assert lr_at(0, 100, 1.0, 10) == pytest.approx(0.1)
    assert lr_at(9, 100, 1.0, 10) == pytest.approx(1.0)
    assert lr_at(10, 100, 1.0, 10) == pytest.approx(1.0)
    assert lr_at(55, 100, 1.0, 10) == pytest.approx(0.55)
    assert lr_at(100, 100, 1.0, 10) == pytest.approx(0.1)


def test_loss_log_repeats_the_header_when_a_resumed_stage_adds_a_column(tmp_path):
    path = tmp_path / "stage.csv"
    LossLog(path, ["loss"]).write(1, loss=1.0)
    LossLog(path, ["loss"]).write(2, loss=0.5)
    LossLog(path, ["loss", "extra"]).write(3, loss=0.25, extra=2.0)
    lines = path.read_text().splitlines()
    assert [line.split(",")[0] for line in lines] == ["step", "1", "2", "step", "3"]
    assert lines[3] == "step,elapsed_s,loss,extra" and lines[4].endswith(",0.25,2")


def test_adopted_state_has_weights_only_and_the_optimiser_starts_fresh(tmp_path, capsys):
    model = torch.nn.Linear(3, 2)
    torch.save({"model": model.state_dict(), "step": 40, "adopted": "shipped.safetensors"}, tmp_path / "state.pt")
    fresh = torch.nn.Linear(3, 2)
    opt = torch.optim.AdamW(fresh.parameters(), lr=0.1)
    assert Checkpointer(tmp_path / "state.pt", every_s=60.0, model=fresh, opt=opt).resume() == 40
    assert torch.equal(fresh.weight, model.weight)
    assert opt.state_dict()["state"] == {}
    assert "'opt' starts fresh" in capsys.readouterr().out


def test_a_saved_state_missing_a_part_is_an_error_unless_adopted(tmp_path):
    model = torch.nn.Linear(3, 2)
    torch.save({"model": model.state_dict(), "step": 40, "rng": torch.get_rng_state()}, tmp_path / "state.pt")
    opt = torch.optim.AdamW(model.parameters(), lr=0.1)
    with pytest.raises(KeyError):
        Checkpointer(tmp_path / "state.pt", every_s=60.0, model=model, opt=opt).resume()
