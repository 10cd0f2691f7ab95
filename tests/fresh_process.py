"""Run Python in a fresh process where `ringan` cannot be imported: proves a checkpoint is self-contained."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

BLOCK_RINGAN = """
import importlib.abc, sys
class BlockRingan(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name == "ringan" or name.startswith("ringan."):
            raise ImportError("ringan is blocked in this test")
sys.meta_path.insert(0, BlockRingan())
"""


def run_without_ringan(code: str, workdir: Path) -> dict:
    """Run `code` (it must print one JSON line last) with `ringan` blocked; return that JSON."""
    script = BLOCK_RINGAN + f"sys.path = [p for p in sys.path if p not in ('', {str(workdir)!r})]\n"
    script += textwrap.dedent(code) + "\nassert 'ringan' not in sys.modules\n"
    env = {"HF_HUB_OFFLINE": "1", "PATH": "/usr/bin:/bin", "HF_HOME": str(workdir / "hf")}
    result = subprocess.run(
        [sys.executable, "-c", script], cwd=workdir, env=env, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])
