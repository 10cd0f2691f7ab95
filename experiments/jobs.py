"""Run worker subprocesses, at most `parallel` at once (the machine has 2 cores; each worker uses 1 thread)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

# glibc returns big freed blocks to the OS and page-faults them back on the next step; keeping them measured
# 2,880 -> 3,346 training tokens/s (one thread). Changes no result, only the speed.
FAST_MALLOC = {"MALLOC_MMAP_THRESHOLD_": "4294967296", "MALLOC_TRIM_THRESHOLD_": "4294967296"}


def run_jobs(script: str, jobs: list[dict], log_dir: Path, parallel: int = 2) -> None:
    """Each job is a JSON-able dict passed as `script --worker '<json>'`; its output goes to log_dir/<name>.log.
    Raises if any worker fails (after the others finish)."""
    log_dir.mkdir(parents=True, exist_ok=True)
    pending, running, failed = list(jobs), [], []
    while pending or running:
        while pending and len(running) < parallel:
            job = pending.pop(0)
            path = log_dir / f"{job['name']}.log"
            handle = path.open("w")
            proc = subprocess.Popen(
                [sys.executable, script, "--worker", json.dumps(job)],
                stdout=handle,
                stderr=subprocess.STDOUT,
                env={**os.environ, **FAST_MALLOC},
            )
            print(time.strftime("%H:%M:%S"), f"started {job['name']} (pid {proc.pid}, log {path})", flush=True)
            running.append((job, proc, handle, time.time()))
        time.sleep(2)
        for item in list(running):
            job, proc, handle, start = item
            if proc.poll() is not None:
                handle.close()
                running.remove(item)
                status = "ok" if proc.returncode == 0 else f"FAILED rc={proc.returncode}"
                print(time.strftime("%H:%M:%S"), f"{job['name']} {status} after {time.time() - start:.0f}s", flush=True)
                if proc.returncode != 0:
                    failed.append(job["name"])
    if failed:
        raise SystemExit(f"workers failed: {failed} (see {log_dir})")
