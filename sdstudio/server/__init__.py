"""`python -m sdstudio serve`: our engine behind AUTOMATIC1111's web API (`/sdapi/v1/...`), so A1111 clients
(scripts, the `webuiapi` package, plugins) drive SD Studio unchanged.

Modules by job: `body` reads typed fields and base64 images out of a JSON body, `mapping` turns A1111's
txt2img/img2img bodies into GenerationRequests (`control` its ControlNet units), `checkpoints` lists and names
models as A1111 does, `jobs` runs one job at a time in a worker thread, `shaping` builds the response bodies,
and `app` is the Starlette application that ties them to routes. No Qt here.
"""
