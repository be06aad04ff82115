"""What the API server adds to a job: the same txt2img (built-in model, 64x64) run by the engine directly
(with a step callback, so it makes the same live previews) and through `serve` over HTTP with the webuiapi
client (mapping, queue, history PNG, base64, JSON), alternating, after a warm-up of each. Prints the median
seconds of each and their difference.

    python bench/serve_overhead.py --repeats 5 --steps 4
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("SDSTUDIO_HOME", tempfile.mkdtemp(prefix="sdstudio-bench-"))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--steps", type=int, default=4)
    args = parser.parse_args()
    import torch
    import webuiapi

    from sdstudio import paths
    from sdstudio.engine.api import Engine
    from sdstudio.engine.request import GenerationRequest
    from sdstudio.history.store import HistoryStore
    from sdstudio.server.app import Server
    from tests.server.conftest import running

    engine = Engine(device="cpu")
    store = HistoryStore(paths.outputs_dir(), paths.history_db(), reconcile=False)
    server = Server(engine, store)
    request = GenerationRequest(prompt="red apple", steps=args.steps, width=64, height=64, sampler="Euler a",
                                scheduler="karras", cfg_scale=5.0, seed=1)
    direct, served = [], []
    with running(server) as port:
        api = webuiapi.WebUIApi(port=port)
        body = dict(prompt="red apple", steps=args.steps, width=64, height=64, sampler_name="Euler a",
                    scheduler="karras", cfg_scale=5.0, seed=1)
        engine.generate(request)
        api.txt2img(**body)  # warm-up
        for _ in range(args.repeats):
            t0 = time.perf_counter()
            engine.generate(request, on_step=lambda info: None)  # previews made, as the server asks for them
            direct.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            api.txt2img(**body)
            served.append(time.perf_counter() - t0)
    server.jobs.close()
    store.close()
    d, s = statistics.median(direct), statistics.median(served)
    load = os.getloadavg()[0]
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, load average {load:.1f}")
    print(f"engine directly: {d * 1000:.0f} ms; through serve: {s * 1000:.0f} ms; "
          f"added: {(s - d) * 1000:.0f} ms (median of {args.repeats}, {args.steps} steps, 64x64)")


if __name__ == "__main__":
    main()
