from sdstudio.ui.first_image import MARK, FirstImageRun
from sdstudio.ui.screenshot import DEMO_PROMPT


def test_first_image_run_prints_the_time_to_the_finished_image(qtbot, window, engine, capsys):
    window.panel.prompt_edit.setPlainText("")
    ages = iter([1.234, 99.0])
    run = FirstImageRun(window, lambda: next(ages))
    with qtbot.waitSignal(run.done, timeout=10_000) as blocker:
        run.start()
    assert blocker.args == [0]
    assert window.state.prompt == DEMO_PROMPT  # an empty prompt gets the demo one, as --screenshot does
    assert engine.steps_run == window.state.steps
    assert f"{MARK} 1234 ms" in capsys.readouterr().out


def test_a_failed_job_ends_the_run_with_code_1(qtbot, window, engine, capsys, tmp_path):
    bad = tmp_path / "broken.txt"  # the fake engine fails to load anything but a .safetensors file
    bad.write_text("x")
    window.state.model = str(bad)
    run = FirstImageRun(window, lambda: 1.0)
    with qtbot.waitSignal(run.done, timeout=10_000) as blocker:
        run.start()
    assert blocker.args == [1]
    assert MARK not in capsys.readouterr().out
