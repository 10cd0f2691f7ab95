"""`ringan serve`: an OpenAI-compatible HTTP server and a web chat page for a Ringan model.

- `protocol`: request bodies checked into typed requests, OpenAI-style errors;
- `conversation`: a chat's messages as dialogue-format token pieces, and the hash chain that keys saved states;
- `state_cache`: saved recurrent states (memory LRU, a folder, Redis);
- `batcher`: the continuous-batching decode loop (one thread; requests join and leave between steps);
- `replies`: a reply's streamed text (stop sequences, held-back partial characters);
- `metrics`: counters and histograms in the Prometheus text format;
- `server`: the model, decode loop, state cache and metrics behind the routes;
- `app`: the Starlette application (routes, limits, API key, streaming) and `static/index.html`, the chat page.

Starlette and uvicorn are an optional extra (`pip install 'ringan[serve]'`); nothing here is imported by the CLI
until `ringan serve` runs.
"""
