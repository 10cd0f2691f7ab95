"""What the CLI tests share: the tiny training flags, running `ringan` in a subprocess, the one-line-error check,
and a snapshot of a folder to prove that a refused command wrote or changed nothing."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TINY = [
    "--init-from", "none",
    "--hidden-size", "32", "--intermediate-size", "64", "--num-heads", "4", "--max-length", "96",
    "--vocab-size", "400", "--batch-size", "4", "--logging-steps", "1",
]  # fmt: skip


def run_cli(args: list[str], cwd: Path | None = None, env: dict | None = None, timeout: int = 600, stdin: str = ""):
    """`python -m ringan ARGS` in a fresh process, output captured as text."""
    full_env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(ROOT), **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", "ringan", *args],
        cwd=cwd or ROOT,
        env=full_env,
        capture_output=True,
        text=True,
        timeout=timeout,
        input=stdin,
    )


def one_line_error(code: int, err: str, verb: str, *fragments: str) -> str:
    """The error line of a refused command: exit 2, exactly one stderr line `ringan VERB: error: ...` holding every
    fragment, no traceback."""
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2, (code, err[-3000:])
    assert len(lines) == 1, err[-3000:]
    assert lines[0].startswith(f"ringan {verb}: error: ") and "Traceback" not in err, err[-3000:]
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])
    return lines[0]


def error_line(code: int, err: str, verb: str, *fragments: str) -> str:
    """The error line of a command that failed while it worked (progress bars may stand above it): exit 2, one
    line with `error:`, on its own line, no traceback."""
    errors = [line for line in err.splitlines() if "error:" in line]
    assert code == 2 and len(errors) == 1 and "Traceback" not in err, (code, err[-3000:])
    assert errors[0].startswith(f"ringan {verb}: error: "), err[-3000:]
    for fragment in fragments:
        assert fragment in errors[0], (fragment, errors[0])
    return errors[0]


def snapshot(folder: Path) -> dict[str, tuple]:
    """Every file and folder under `folder` (links not followed): its kind, size, mtime and content hash."""
    found = {}
    for path in sorted(folder.rglob("*")):
        rel = path.relative_to(folder).as_posix()
        if path.is_symlink():
            found[rel] = ("link", os.readlink(path))
        elif path.is_dir():
            found[rel] = ("dir",)
        else:
            stat = path.stat()
            found[rel] = ("file", stat.st_size, stat.st_mtime_ns, hashlib.sha1(path.read_bytes()).hexdigest())
    return found
