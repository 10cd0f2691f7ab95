"""The tests' fresh-process check: the package's `run_python_without_ringan`, asserted and read back as JSON."""

from __future__ import annotations

import json
from pathlib import Path

from ringan.fresh_process import run_python_without_ringan


def run_without_ringan(code: str, workdir: Path) -> dict:
    """Run `code` (it must print one JSON line last) with `ringan` blocked; return that JSON."""
    env = {"HF_HUB_OFFLINE": "1", "PATH": "/usr/bin:/bin", "HF_HOME": str(workdir / "hf")}
    result = run_python_without_ringan(code, cwd=workdir, env=env, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])
