"""Run Python in a fresh process where `ringan` cannot be imported: proves a saved model is self-contained.

The quickstart's reload check and the tests' remote-code checks both run through `run_python_without_ringan`.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from collections.abc import Mapping
from pathlib import Path

# A finder placed before every other one on `sys.meta_path`: an installed (or editable) `ringan` stays out of
# reach however it was installed, so only the files saved beside the weights can serve `trust_remote_code`.
IMPORT_BLOCKER = """
import importlib.abc, sys
class BlockRingan(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name == "ringan" or name.startswith("ringan."):
            raise ImportError("ringan is blocked in this process on purpose")
sys.meta_path.insert(0, BlockRingan())
"""


def run_python_without_ringan(
    code: str, *args: str, cwd: str | Path, env: Mapping[str, str], timeout: float | None = None
) -> subprocess.CompletedProcess:
    """Run `code` as `python -c code *args` in `cwd` with `ringan` blocked and neither the current folder nor
    `cwd` on `sys.path`; the process also fails if `ringan` ended up in `sys.modules`. Output is captured as text."""
    script = IMPORT_BLOCKER + f"sys.path = [p for p in sys.path if p not in ('', {str(cwd)!r})]\n"
    script += textwrap.dedent(code) + "\nassert 'ringan' not in sys.modules\n"
    return subprocess.run(
        [sys.executable, "-c", script, *args], cwd=cwd, env=dict(env), capture_output=True, text=True, timeout=timeout
    )
