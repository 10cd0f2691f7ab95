import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
if os.environ.get("PYTEST_XDIST_WORKER"):  # one worker per core: a worker's torch (and its subprocesses') uses one
    os.environ.setdefault("OMP_NUM_THREADS", "1")


@pytest.fixture(scope="session", autouse=True)
def _onnx_cache(tmp_path_factory):
    """`--runtime auto` exports models to ONNX into a cache: one for the session, never the user's."""
    os.environ["RINGAN_CACHE"] = str(tmp_path_factory.mktemp("ringan-cache"))


@pytest.fixture(scope="session")
def trained_run(tmp_path_factory) -> Path:
    """A tiny `ringan train` run on the shipped corpus (8 steps, checkpoints and evals every 4): read it, never
    change it (copy what a test changes)."""
    from cli_helpers import TINY

    from ringan.cli import main

    out = tmp_path_factory.mktemp("run")
    assert (
        main(["train", "--output", str(out), *TINY, "--max-steps", "8", "--eval-steps", "4", "--save-steps", "4"]) == 0
    )
    return out
