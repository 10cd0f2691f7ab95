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


@pytest.fixture(scope="session")
def tiny_onnx(tmp_path_factory):
    """`tiny_onnx(attention_type)` -> `(model, folder, report)`: `helpers.tiny_model(attention_type)` (a fresh copy
    each call), its fp32 ONNX export and `export_onnx`'s report, made once per test process. Tests that use it are
    grouped per mixer (`onnx_group`), so one pytest-xdist worker exports each mixer once. Read the folder, never
    change it."""
    from helpers import tiny_model

    from ringan.conversion import export_onnx

    exports: dict[str, tuple[Path, dict]] = {}

    def get(attention_type: str):
        if attention_type not in exports:
            folder = tmp_path_factory.mktemp(f"onnx-{attention_type}")
            tiny_model(attention_type).save_pretrained(folder / "fp32")
            exports[attention_type] = folder / "onnx", export_onnx(folder / "fp32", folder / "onnx")
        return tiny_model(attention_type), *exports[attention_type]

    return get
