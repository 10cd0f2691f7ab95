"""A training run's folder: one run at a time (a lock), never two runs mixed (refused unless asked to resume or
to overwrite), leftovers of a killed run recovered, and what every process of a distributed run agrees on.

`prepare_run` is the main process's decision, made while it holds `OUTPUT/.ringan.lock`:

- a fresh run (no `--resume`) needs a folder without another run's files (`checkpoint-N`, `model`, `best`,
  `tokenizer`, `metrics.csv`, `runs`, `run.json`, `options.json`); `--overwrite` deletes them first (nothing else is touched);
- `--resume auto` continues from the run's latest complete checkpoint (a run without one starts again, unless it
  already saved a model); `--resume PATH` from that checkpoint, which must be the latest of its run when it sits in
  OUTPUT (a checkpoint of another folder starts a new run in an empty OUTPUT);
- `run.json` names the run (`run_id`): the keep-best weights (`best/best.json`) count only when they carry it.

`on_main_process` runs such a step on the main process and hands its result, or its failure, to every process.
"""

from __future__ import annotations

import csv
import json
import shutil
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from .errors import ReplicaStopped, UserError
from .files import LOCK_FILE, FolderLock, recover_folder, write_text_atomically

CHECKPOINT_PREFIX = "checkpoint-"


def complete_checkpoints(run_dir: str | Path) -> list[Path]:
    """Checkpoint folders of a run, oldest first (staging folders are never listed)."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        return []
    found = [p for p in run_dir.iterdir() if p.is_dir() and p.name.startswith(CHECKPOINT_PREFIX)]
    found = [p for p in found if p.name[len(CHECKPOINT_PREFIX) :].isdigit()]
    return sorted(found, key=lambda p: int(p.name[len(CHECKPOINT_PREFIX) :]))


RUN_FILE = "run.json"
OPTIONS_FILE = "options.json"  # the options a run resolved (`ringan train --config OUTPUT/options.json` replays it)
RUN_FILES = ("model", "best", "tokenizer", "metrics.csv", "runs", RUN_FILE, OPTIONS_FILE, ".staging")
TOKENIZER_DIR = "tokenizer"  # the tokenizer a run trained, shared by its processes and reused on resume


@dataclass(frozen=True)
class RunPlan:
    """What every process of a run follows: its id and the checkpoint it resumes from (None: from step 0)."""

    run_id: str
    resume_from: str | None


def run_files(folder: Path, keep: Sequence[Path] = ()) -> list[Path]:
    """The files and folders in `folder` that a training run writes (`NAME.tmp`/`NAME.old` included)."""
    if not folder.is_dir():
        return []
    kept = {Path(p).resolve() for p in keep}
    found = []
    for path in sorted(folder.iterdir()):
        base = path.name.removesuffix(".tmp").removesuffix(".old")
        if path.resolve() in kept or path.name == LOCK_FILE:
            continue
        if base in RUN_FILES or base.startswith(CHECKPOINT_PREFIX):
            found.append(path)
    return found


def checkpoint_step(checkpoint: str | Path) -> int:
    """The optimizer step a checkpoint was saved at (its `trainer_state.json`)."""
    state = Path(checkpoint) / "trainer_state.json"
    try:
        return int(json.loads(state.read_text(encoding="utf-8"))["global_step"])
    except (OSError, ValueError, KeyError, TypeError):
        raise UserError(f"{state}: not a readable trainer state (a complete checkpoint has one)") from None


def read_run(output: Path) -> dict:
    path = output / RUN_FILE
    try:
        data = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}
    except ValueError:
        raise UserError(f"{path}: not valid JSON (delete it, or train with --overwrite)") from None
    return data if isinstance(data, dict) else {}


def write_run(output: Path, **values) -> None:
    data = {**read_run(output), **values}
    write_text_atomically(output / RUN_FILE, json.dumps(data, indent=1, ensure_ascii=False), "the run record")


def remove(paths: Sequence[Path]) -> None:
    """Delete files and folders (a link is removed, never followed)."""
    for path in paths:
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        else:
            path.unlink(missing_ok=True)


def _names(paths: Sequence[Path]) -> str:
    names = [p.name for p in paths]
    return ", ".join(names[:5]) + (f" and {len(names) - 5} more" if len(names) > 5 else "")


def trim_metrics(path: Path, step: int) -> None:
    """Drop the rows a killed attempt logged after `step` (the resumed run logs them again)."""
    if not path.is_file():
        return
    with path.open(newline="") as f:
        reader = csv.DictReader(f)
        fields, rows = reader.fieldnames or [], list(reader)
    kept = [r for r in rows if not (r.get("step") or "").isdigit() or int(r["step"]) <= step]
    if len(kept) == len(rows):
        return
    tmp = path.with_name(path.name + ".tmp")
    with tmp.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=fields)
        writer.writeheader()
        writer.writerows(kept)
    tmp.replace(path)


def refuse_other_run(output: Path, keep: Sequence[Path] = (), locked: bool = False) -> None:
    """Stop when another process is using OUTPUT (unless `locked`: this one holds it), or when OUTPUT holds the
    files of another training run."""
    if not locked:
        FolderLock(output).check_free()
    existing = run_files(output, keep)
    if existing:
        raise UserError(
            f"{output}: holds another training run ({_names(existing)}); pass --resume auto to continue it, "
            "--overwrite to replace it, or choose another --output"
        )


def prepare_run(
    output: Path, resume: str | None, overwrite: bool, keep: Sequence[Path] = (), say: Callable = print
) -> tuple[RunPlan, FolderLock]:
    """The main process's decision for OUTPUT (see the module docstring); returns the plan and the held lock.
    `keep`: paths inside OUTPUT that are inputs of this run (a `--tokenizer` there), never deleted."""
    if resume and overwrite:
        raise UserError("--resume and --overwrite: choose one (continue the run, or replace it)")
    lock = FolderLock(output).acquire()
    try:
        for name in ("model", "best", TOKENIZER_DIR):
            if recover_folder(output / name):
                say(f"recovered {output / name} (a run was stopped while replacing it)")
        shutil.rmtree(output / ".staging", ignore_errors=True)  # a checkpoint that was never completed
        (output / "metrics.csv.tmp").unlink(missing_ok=True)
        return _plan(output, resume, overwrite, keep, say), lock
    except BaseException:
        lock.release()
        raise


def _plan(output: Path, resume: str | None, overwrite: bool, keep: Sequence[Path], say: Callable) -> RunPlan:
    existing = run_files(output, keep)
    checkpoints = complete_checkpoints(output)
    if resume == "auto":
        if checkpoints:
            return _continue(output, checkpoints[-1], say)
        if (output / "model").exists():
            raise UserError(
                f"{output}: holds a saved model but no checkpoint to resume from; pass --overwrite to train again"
            )
        say(f"resume: no checkpoint in {output}, starting fresh")
        existing = [p for p in existing if p.name != TOKENIZER_DIR]  # a killed first attempt's tokenizer is reused
        overwrite = True
    elif resume:
        checkpoint = Path(resume)
        if checkpoint.resolve().parent == output.resolve():
            step = checkpoint_step(checkpoint)
            later = [p for p in checkpoints if checkpoint_step(p) > step]
            if later:
                raise UserError(
                    f"--resume {resume}: {output} has later checkpoints ({_names(later)}); resume from the latest "
                    "(--resume auto) or delete them"
                )
            return _continue(output, checkpoint, say)
    if not overwrite:
        refuse_other_run(output, keep, locked=True)
    if existing:
        if resume != "auto":
            say(f"overwrite: removing the earlier run in {output} ({_names(existing)})")
        remove(existing)
    plan = RunPlan(uuid.uuid4().hex[:12], str(resume) if resume and resume != "auto" else None)
    write_run(output, run_id=plan.run_id, finished=False)
    return plan


def _continue(output: Path, checkpoint: Path, say: Callable) -> RunPlan:
    from .loading import check_checkpoint

    check_checkpoint(checkpoint)  # before anything in OUTPUT changes
    step = checkpoint_step(checkpoint)
    trim_metrics(output / "metrics.csv", step)
    run_id = read_run(output).get("run_id")
    if not run_id:  # a run from before run.json: it gets an id now (its earlier keep-best weights do not count)
        run_id = uuid.uuid4().hex[:12]
        write_run(output, run_id=run_id, finished=False)
    say(f"resume: from {checkpoint}")
    return RunPlan(run_id, str(checkpoint))


def on_main_process(fn: Callable):
    """`fn()` on the main process only; its result (picklable) reaches every process of a distributed run, and
    if it fails every other process stops too (`ReplicaStopped`, printed by nobody but the main process)."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1):
        return fn()
    payload: list = [None]
    if dist.get_rank() == 0:
        try:
            payload = [("ok", fn())]
        except BaseException:
            dist.broadcast_object_list([("error", None)], src=0)
            raise
    dist.broadcast_object_list(payload, src=0)
    status, value = payload[0]
    if status != "ok":
        raise ReplicaStopped("the main process stopped")
    return value
