"""The HF `Trainer` subclass of `ringan train` and its CSV log.

Exact perplexity and bits per byte at every eval, the best weights kept on disk, tokens/s in the logs,
checkpoints that are never half-written, and a CSV log of every line.
"""

from __future__ import annotations

import csv
import json
import os
import shutil
import time
from collections.abc import Sequence
from pathlib import Path

import torch
from transformers import Trainer, TrainerCallback

from .errors import UserError
from .files import save_atomically, writing
from .training import CHECKPOINT_PREFIX, complete_checkpoints, evaluate_examples

INTACT = "; the completed checkpoints are intact"


class CSVLoggerCallback(TrainerCallback):
    """Appends every log line (train and eval) to `metrics.csv`, on the main process only."""

    def __init__(self, path: str | Path):
        self.path = Path(path)

    def on_log(self, args, state, control, logs=None, **kwargs):
        if not state.is_world_process_zero or not logs:
            return
        row = {"step": state.global_step, "epoch": round(state.epoch or 0.0, 4), **logs}
        existing: list[dict] = []
        if self.path.exists():
            with self.path.open(newline="") as f:
                existing = list(csv.DictReader(f))
        fields = list(dict.fromkeys([k for r in existing for k in r] + list(row)))
        tmp = self.path.with_suffix(".csv.tmp")
        try:
            with writing(self.path, "the metrics log", INTACT), tmp.open("w", newline="") as f:
                writer = csv.DictWriter(f, fieldnames=fields)
                writer.writeheader()
                writer.writerows(existing + [row])
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        os.replace(tmp, self.path)


class RinganTrainer(Trainer):
    """`Trainer` with exact perplexity/bits-per-byte evaluation, tokens/s in the logs, and atomic checkpoints."""

    def __init__(
        self,
        *args,
        eval_examples: Sequence[dict] | None = None,
        best_dir: str | Path | None = None,
        run_id: str | None = None,
        **kwargs,
    ):
        super().__init__(*args, **kwargs)
        self.eval_examples = eval_examples
        # the weights with the lowest validation loss so far, kept on disk so a resumed run knows them too; only
        # the weights this run (`run_id`) saved count
        self.best_dir = Path(best_dir) if best_dir else None
        self.run_id = run_id
        self.best = read_best(self.best_dir, run_id)
        self._start_time = time.time()
        self._start_tokens = 0

    def log(self, logs: dict[str, float], *args, **kwargs) -> None:
        if "loss" in logs and self.state.num_input_tokens_seen:
            elapsed = max(time.time() - self._start_time, 1e-9)
            logs["tokens_per_second"] = round((self.state.num_input_tokens_seen - self._start_tokens) / elapsed, 1)
        super().log(logs, *args, **kwargs)

    def train(self, *args, **kwargs):
        self._start_time = time.time()
        self._start_tokens = 0
        resume = kwargs.get("resume_from_checkpoint")
        self._stepped = False
        try:
            if resume:
                state = json.loads((Path(resume) / "trainer_state.json").read_text())
                self._start_tokens = int(state.get("num_input_tokens_seen", 0) or 0)
            return super().train(*args, **kwargs)
        except (TypeError, KeyError, ValueError, AttributeError, IndexError) as err:
            if not resume or self._stepped:
                raise
            # the checkpoint's files parse (`loading.check_checkpoint`) but hold values of the wrong kind
            text = " ".join(str(err).split())[:200]
            raise UserError(
                f"{resume}: a damaged checkpoint: resuming from it failed before the first step ({type(err).__name__}: "
                f"{text}); resume from another checkpoint, or start afresh with --overwrite"
            ) from None

    def training_step(self, *args, **kwargs) -> torch.Tensor:
        self._stepped = True
        loss = super().training_step(*args, **kwargs)
        if not torch.isfinite(loss.detach()).all():
            self.stop_non_finite(self.state.global_step + 1, f"the training loss became {loss.item()}")
        return loss

    def stop_non_finite(self, step: int, what: str) -> None:
        """Stop the run: a model whose loss or weights are not finite is never saved as a checkpoint or as the
        final model (the Trainer's log would only average the NaN away)."""
        kept = complete_checkpoints(self.args.output_dir)
        where = f"the last good checkpoint is {kept[-1]} (--resume it)" if kept else "no checkpoint was saved"
        raise UserError(
            f"training stopped at step {step}: {what}; lower --learning-rate or --weight-decay. "
            f"Nothing was saved from this step on: {where}"
        )

    def check_finite(self) -> None:
        """Stop if a weight is NaN or infinite (an update too large for float32 makes them so)."""
        for name, param in self.model.named_parameters():
            if not torch.isfinite(param.detach()).all():
                self.stop_non_finite(self.state.global_step, f"the weight {name} is no longer finite")

    def evaluate(self, eval_dataset=None, ignore_keys=None, metric_key_prefix: str = "eval") -> dict[str, float]:
        self.check_finite()  # NaN weights are never kept as the best ones
        if self.eval_examples is None:
            return super().evaluate(eval_dataset, ignore_keys, metric_key_prefix)
        result = evaluate_examples(self.model, self.eval_examples, self.args.per_device_eval_batch_size)
        metrics = {f"{metric_key_prefix}_{k}": v for k, v in result.items() if k != "tokens"}
        self.log(metrics)
        if self.best_dir is not None and self.is_world_process_zero():
            if self.best is None or result["loss"] < self.best["eval_loss"]:
                best = {"step": self.state.global_step, "eval_loss": result["loss"], "run_id": self.run_id}

                def save(folder: Path) -> None:
                    self.model.save_pretrained(str(folder))
                    (folder / BEST_FILE).write_text(json.dumps(best))

                save_atomically(save, self.best_dir, "the best weights", INTACT)
                self.best = best
        self.control = self.callback_handler.on_evaluate(self.args, self.state, self.control, metrics=metrics)
        return metrics

    def _save_checkpoint(self, model, trial) -> None:
        """Write the checkpoint into a staging folder, then rename it into place: a run killed at any moment
        leaves only complete `checkpoint-N` folders (older ones are deleted only after the new one exists)."""
        self.check_finite()
        run_dir = self.args.output_dir
        staging_root = os.path.join(run_dir, ".staging")
        if self.args.should_save:
            shutil.rmtree(staging_root, ignore_errors=True)
            os.makedirs(staging_root, exist_ok=True)
        _barrier()  # every process writes its RNG state into the staging folder
        self.args.output_dir = staging_root
        name = f"{CHECKPOINT_PREFIX}{self.state.global_step}"
        try:
            with writing(os.path.join(run_dir, name), "the checkpoint", INTACT):
                super()._save_checkpoint(model, trial)
        except BaseException:
            if self.args.should_save:
                shutil.rmtree(staging_root, ignore_errors=True)  # frees the space a half-written one took
            raise
        finally:
            self.args.output_dir = run_dir
        _barrier()
        if self.args.should_save:
            final = os.path.join(run_dir, name)
            if os.path.exists(final):
                shutil.rmtree(final)
            os.replace(os.path.join(staging_root, name), final)
            shutil.rmtree(staging_root, ignore_errors=True)
            limit = self.args.save_total_limit
            if limit:
                for old in complete_checkpoints(run_dir)[:-limit]:
                    shutil.rmtree(old, ignore_errors=True)
        _barrier()


def _barrier() -> None:
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.barrier()


BEST_FILE = "best.json"


def read_best(best_dir: Path | None, run_id: str | None = None) -> dict | None:
    """`{"step", "eval_loss", "run_id"}` of the best weights saved in `best_dir` by run `run_id`, if any: weights
    another run left there (or an unreadable record) never count."""
    if best_dir is None or not (best_dir / BEST_FILE).is_file() or not (best_dir / "model.safetensors").is_file():
        return None
    try:
        best = json.loads((best_dir / BEST_FILE).read_text())
    except ValueError:
        return None
    if not isinstance(best, dict) or best.get("run_id") != run_id or not isinstance(best.get("eval_loss"), float):
        return None
    return best
