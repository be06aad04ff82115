import threading

from sdstudio.remote.dispatch import Dispatcher


class Clock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


def taken(dispatcher, lane, timeout=2.0):
    """Take on another thread (take blocks); the job, or None when it is still blocked after `timeout`."""
    got = []
    thread = threading.Thread(target=lambda: got.append(dispatcher.take(lane)), daemon=True)
    thread.start()
    thread.join(timeout)
    return got[0] if got else None


def test_each_free_lane_takes_the_oldest_job_so_two_servers_run_at_once():
    d = Dispatcher()
    d.set_lanes(["local", "a"])
    for job in ("j1", "j2", "j3"):
        d.put(job)
    assert d.take("a") == "j1" and d.take("local") == "j2"
    assert d.running() == {"a": "j1", "local": "j2"} and d.waiting() == 1
    d.finish("a")
    assert d.take("a") == "j3" and d.waiting() == 0


def test_a_pinned_job_waits_for_its_lane_and_others_pass_it():
    d = Dispatcher(accepts=lambda lane, job: not job.startswith("load@") or job == f"load@{lane}")
    d.set_lanes(["local", "a"])
    d.put("load@local")
    d.put("gen")
    assert d.take("a") == "gen"  # the load is not its job
    assert d.take("local") == "load@local"


def test_a_lane_whose_server_went_away_rests_and_the_queue_goes_elsewhere():
    clock = Clock()
    d = Dispatcher(rest_s=30.0, clock=clock)
    d.set_lanes(["a", "b"])
    d.put("j1")
    assert d.take("a") == "j1"
    d.finish("a", unavailable=True)
    d.put("j2")
    assert d.resting("a")
    assert taken(d, "a", timeout=0.3) is None  # a rests: it does not take j2 ...
    assert d.take("b") == "j2"  # ... b does
    clock.now = 31.0
    assert not d.resting("a")


def test_a_lane_after_its_rest_takes_jobs_again():
    clock = Clock()
    d = Dispatcher(rest_s=5.0, clock=clock)
    d.set_lanes(["a"])
    d.put("j1")
    d.take("a")
    d.finish("a", unavailable=True)
    clock.now = 6.0
    d.put("j2")
    assert taken(d, "a") == "j2"


def test_removing_a_lane_or_stopping_ends_its_takes_and_clear_keeps_what_it_is_told():
    d = Dispatcher()
    assert d.set_lanes(["local", "a"]) == ["local", "a"]
    assert d.set_lanes(["b", "local"]) == ["b"] and d.lanes() == ["b", "local"]  # the order given
    assert d.take("a") is None  # a removed lane's runner ends
    for job in ("load", "g1", "g2"):
        d.put(job)
    assert d.clear(keep=lambda job: job == "load") == ["g1", "g2"] and d.waiting() == 1
    assert d.stop() == ["load"]
    assert d.take("local") is None


def test_a_lane_removed_and_added_again_is_a_new_lane_its_old_runner_ends():
    d = Dispatcher()
    d.set_lanes(["a"])
    old = d.ticket("a")
    d.put("j1")
    assert d.take("a", old) == "j1"
    d.set_lanes([])
    d.set_lanes(["a"])
    new = d.ticket("a")
    d.put("j2")
    d.finish("a", unavailable=True, ticket=old)  # the old runner's job ends: the new lane is not affected
    assert not d.resting("a")
    assert d.take("a", old) is None and d.take("a", new) == "j2"
