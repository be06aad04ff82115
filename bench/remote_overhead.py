"""What a remote backend adds to a job, and how soon a dead server is noticed (issue 21).

Runs the tests' fake A1111 server (tests/remote/fake_a1111.py, stdlib http.server on 127.0.0.1) with steps of
`--step-ms`, and RemoteBackend against it: the overhead is the job's wall time minus the time the job ran
inside the server (HTTP, JSON, base64 PNG answer, and up to one poll interval of waiting). Then kills the server mid-job and times the
ServerUnavailable. Light: seconds of CPU.

    PYTHONPATH=. python bench/remote_overhead.py --size 512 --steps 20 --jobs 5
"""

from __future__ import annotations

import argparse
import statistics
import threading
import time

from sdstudio.engine.errors import ServerUnavailable
from sdstudio.engine.request import GenerationRequest
from sdstudio.remote.backend import RemoteBackend
from sdstudio.remote.servers import Server
from tests.remote.fake_a1111 import FakeA1111


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--step-ms", type=float, default=50.0)
    parser.add_argument("--jobs", type=int, default=5)
    args = parser.parse_args()
    fake = FakeA1111(steps_seconds=args.step_ms / 1000)
    backend = RemoteBackend(Server("bench", fake.url))
    request = GenerationRequest(steps=args.steps, width=args.size, height=args.size, seed=1)
    overheads, steps_seen = [], []
    for _ in range(args.jobs):
        seen = []
        start = time.perf_counter()
        backend.generate(request, on_step=seen.append)
        overheads.append(time.perf_counter() - start - fake.job_seconds[-1])
        steps_seen.append(sum(1 for s in seen if s.preview is not None))
    print(f"{args.size}x{args.size}, {args.steps} steps of {args.step_ms:g} ms: overhead per job "
          f"median {statistics.median(overheads) * 1000:.0f} ms (min {min(overheads) * 1000:.0f}, "
          f"max {max(overheads) * 1000:.0f}); previews per job {statistics.median(steps_seen):g}")
    long_job = request.replace(steps=10_000)
    killed = []
    fake.started.clear()
    threading.Thread(target=lambda: (fake.started.wait(10), time.sleep(0.5), killed.append(time.perf_counter()),
                                     fake.kill()), daemon=True).start()
    try:
        backend.generate(long_job)
    except ServerUnavailable as exc:
        print(f"killed mid-job: ServerUnavailable {time.perf_counter() - killed[0]:.3f} s after the kill: {exc}")


if __name__ == "__main__":
    main()
