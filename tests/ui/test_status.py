from sdstudio.ui.status import JobStatus, StepRate, format_eta, format_rate


class Clock:
    def __init__(self):
        self.t = 0.0

    def __call__(self):
        return self.t


def test_rate_and_eta_follow_recent_steps():
    clock = Clock()
    rate = StepRate(window=4, clock=clock)
    rate.add(0)
    clock.t = 5.0  # slow first step (warm-up)
    rate.add(1)
    for step in range(2, 10):
        clock.t += 0.5
        rate.add(step)
    assert abs(rate.per_second() - 2.0) < 1e-9  # the warm-up has left the window
    assert abs(rate.eta_seconds(20) - 5.5) < 1e-9  # 11 steps left


def test_formats():
    assert format_rate(2.5) == "2.50 it/s" and format_rate(0.5) == "2.00 s/it" and format_rate(None) == ""
    assert format_eta(75) == "ETA 1:15" and format_eta(None) == ""


def test_status_widget_shows_step_speed_and_queue(qtbot):
    status = JobStatus()
    qtbot.addWidget(status)
    status.started()
    status.step(3, 20)
    assert status.bar.format() == "Step 3/20" and status.bar.value() == 3
    status.set_queue(2)
    assert status.queue.text() == "Queue: 2"
    status.set_queue(0)
    assert status.queue.text() == ""


def test_the_backend_badge_names_where_running_jobs_run(qtbot):
    from sdstudio.ui.status import BackendBadge

    badge = BackendBadge()
    qtbot.addWidget(badge)
    badge.show()
    badge.routed(1, "box")
    badge.routed(2, "This computer")
    badge.routed(3, "box")
    assert badge.text() == "on box, This computer" and badge.isVisible()
    badge.ended(1)
    badge.ended(2)
    assert badge.text() == "on box"
    badge.ended(3)
    assert badge.isHidden()


def test_a_note_shows_between_steps_until_the_next_step(qtbot):
    status = JobStatus()
    qtbot.addWidget(status)
    status.started()
    status.step(3, 10)
    status.note("Loading the hires checkpoint anime…")
    assert status.message.text() == "Loading the hires checkpoint anime…"
    status.step(4, 10)
    assert status.message.text() == "Generating"
