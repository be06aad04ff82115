"""Re-running a history entry whose LoRA is not on this machine: the job fails with one line naming the LoRA
and its hash (the gallery's re-run queues `HistoryStore.request_for(entry)`, as here)."""

from __future__ import annotations

from sdstudio import paths
from sdstudio.engine.api import Engine
from sdstudio.engine.checkpoint import load_checkpoint
from sdstudio.engine.network_files import lora_short_hash
from sdstudio.engine.request import GenerationRequest
from sdstudio.history.store import HistoryStore
from sdstudio.ui.worker import default_engine_factory
from tests.engine.lora_files import lora_tensors, tiny_family_checkpoint, write_lora


def test_rerun_of_an_entry_whose_lora_is_gone_names_it(qtbot, make_window, home):
    models = home / "models"
    models.mkdir(parents=True)
    checkpoint = tiny_family_checkpoint(models / "sd1.safetensors", "sd1", seed=1)
    tensors, _ = lora_tensors(load_checkpoint(checkpoint), "kohya_ldm", seed=2)
    paths.lora_dir().mkdir(parents=True)
    lora = write_lora(paths.lora_dir() / "ink.safetensors", tensors)
    request = GenerationRequest(prompt="<lora:ink:0.7> apple", steps=1, width=64, height=64, seed=2,
                                model=str(checkpoint))
    store = HistoryStore(paths.outputs_dir(), paths.history_db())
    [entry] = store.add_result(Engine().generate(request))
    rerun = store.request_for(entry)
    store.close()
    short = lora_short_hash(lora)
    assert rerun.lora_hashes == (("ink", short),)
    lora.unlink()
    window = make_window(factory=default_engine_factory)
    with qtbot.waitSignal(window.worker.jobFailed, timeout=60_000) as failed:
        window.submit_request(rerun)
    message = failed.args[1]
    assert f"LoRA 'ink' (hash {short}) is not in" in message and "\n" not in message
