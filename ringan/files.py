"""Writing folders safely: atomic swaps that a killed process leaves recoverable, write failures (a full disk) as
one line, an exclusive lock per output folder, and the check that keeps a verb from writing over its input.

A folder is written as `NAME.tmp`, marked complete, then swapped in: `NAME` -> `NAME.old`, `NAME.tmp` -> `NAME`.
A process killed between the two renames leaves no `NAME` but a complete `NAME.tmp` (and `NAME.old`):
`readable_folder` finds it without changing anything, and `recover_folder` (run by whoever holds the folder's
lock) finishes the swap. A write that fails (`ENOSPC`, a file-size limit, torch's or safetensors' own write
errors) becomes a `WriteError` naming what could not be written; the half-written `NAME.tmp` is removed.
"""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from .errors import UserError

COMPLETE_MARKER = ".complete"  # written last into NAME.tmp: the folder is whole
LOCK_FILE = ".ringan.lock"
# how torch (PytorchStreamWriter), safetensors and the OS word a failed write
_WRITE_FAILURE = re.compile(
    r"inline_container|file write failed|unexpected pos|Error while serializing|I/O error|os error|"
    r"No space left|File too large|Disk quota",
    re.IGNORECASE,
)


class WriteError(UserError, OSError):
    """A file or folder could not be written (full disk, quota, file-size limit); `str()` names it."""


def is_write_failure(err: BaseException) -> bool:
    """Whether `err`, raised while saving, is the file system refusing a write."""
    return isinstance(err, OSError) or bool(_WRITE_FAILURE.search(str(err)))


def _reason(err: BaseException) -> str:
    if isinstance(err, OSError) and err.strerror:
        return err.strerror
    text = " ".join(str(err).split())
    match = re.search(r"I/O error: (.*?)(?: \(os error \d+\))?$", text)
    if match:
        return match.group(1)
    return "the write failed" if "inline_container" in text or "unexpected pos" in text else text[:200]


@contextmanager
def writing(target: str | Path, what: str, note: str = "") -> Iterator[None]:
    """Turn a failed write inside the block into one `WriteError` line: `TARGET: cannot write WHAT (reason)`."""
    try:
        yield
    except UserError:
        raise
    except Exception as err:
        if not is_write_failure(err):
            raise
        raise WriteError(f"{target}: cannot write {what} ({_reason(err)}; is the disk full?){note}") from err


def _siblings(folder: Path) -> tuple[Path, Path]:
    return folder.with_name(folder.name + ".tmp"), folder.with_name(folder.name + ".old")


def readable_folder(folder: str | Path) -> Path:
    """`folder`, or the complete copy a killed swap left beside it (`NAME.tmp`, else `NAME.old`); changes nothing."""
    folder = Path(folder)
    if folder.exists():
        return folder
    tmp, old = _siblings(folder)
    if (tmp / COMPLETE_MARKER).is_file():
        return tmp
    return old if old.is_dir() else folder


def recover_folder(folder: str | Path) -> bool:
    """Finish (or undo) a swap a killed process left half done, and drop stale `NAME.tmp`/`NAME.old`. Only the
    holder of the folder's lock may call this. Returns whether `folder` was restored."""
    folder = Path(folder)
    tmp, old = _siblings(folder)
    restored = False
    if not folder.exists():
        if (tmp / COMPLETE_MARKER).is_file():
            os.replace(tmp, folder)
            restored = True
        elif old.is_dir():
            os.replace(old, folder)
            restored = True
    if restored:
        (folder / COMPLETE_MARKER).unlink(missing_ok=True)
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.rmtree(old, ignore_errors=True)
    return restored


def save_atomically(save_fn: Callable[[Path], object], folder: str | Path, what: str = "files", note: str = ""):
    """Run `save_fn(tmp_folder)`, then swap the folder into place, so `folder` is never half-written; returns what
    `save_fn` returns. A failed write removes the temporary folder and raises `WriteError`."""
    folder = Path(folder)
    tmp, old = _siblings(folder)
    recover_folder(folder)
    try:
        with writing(folder, what, note):
            tmp.mkdir(parents=True)
            result = save_fn(tmp)
            (tmp / COMPLETE_MARKER).write_text("")
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if folder.exists():
        os.replace(folder, old)
    os.replace(tmp, folder)
    (folder / COMPLETE_MARKER).unlink(missing_ok=True)
    shutil.rmtree(old, ignore_errors=True)
    return result


def write_text_atomically(path: str | Path, text: str, what: str = "the file") -> None:
    """Write a text file through `PATH.tmp` and a rename; a failed write leaves `path` as it was."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    try:
        with writing(path, what):
            tmp.write_text(text, encoding="utf-8")
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    os.replace(tmp, path)


# ---------------------------------------------------------------------------------------------- locking


class FolderLock:
    """An exclusive `flock` on `FOLDER/.ringan.lock`: a second process that wants the folder fails at once. The
    kernel drops the lock when its holder exits, however it exits, so a killed run never blocks the next."""

    def __init__(self, folder: str | Path):
        self.folder = Path(folder)
        self.fd: int | None = None

    def _lock(self, fd: int) -> None:
        import fcntl

        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 32).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            raise UserError(
                f"{self.folder}: another ringan run is using this folder (pid {holder}); wait for it to finish or "
                "choose another --output"
            ) from None

    def check_free(self) -> None:
        """Raise the in-use error if another process holds the lock; creates and changes nothing."""
        if (self.folder / LOCK_FILE).is_file():
            fd = os.open(self.folder / LOCK_FILE, os.O_RDONLY)
            self._lock(fd)
            os.close(fd)  # it was free: let go at once

    def acquire(self) -> FolderLock:
        self.folder.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.folder / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)  # no O_TRUNC: the holder's pid stays
        self._lock(fd)
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self.fd = fd
        return self

    def release(self) -> None:
        if self.fd is not None:
            os.close(self.fd)  # closing the descriptor releases the flock
            self.fd = None


# --------------------------------------------------------------------------------------- output folders


def _holds_model(folder: Path) -> bool:
    return (folder / "config.json").is_file() or any(folder.glob("*.safetensors"))


def _holds_run(folder: Path) -> bool:
    return (folder / "run.json").is_file() or any(folder.glob("checkpoint-*")) or (folder / "model").is_dir()


# what a ringan verb writes into an output folder (a model, a tokenizer, ONNX graphs, their card and code): only a
# folder holding nothing else is replaced by --overwrite, so a user's own files are never deleted with it
_OUTPUT_FILES = re.compile(
    r"^(.*\.(json|safetensors|py|onnx|jinja)|weights\.bin|README\.md|merges\.txt|\.complete|\.ringan\.lock)$"
)


def _refuse_inputs(flag: str, out: Path, inputs: Sequence[str | Path], noun: str) -> None:
    resolved = out.resolve()
    for source in inputs:
        src = Path(source).resolve()
        if resolved == src or src in resolved.parents or resolved in src.parents:
            where = "is" if resolved == src else ("is inside" if src in resolved.parents else "holds")
            raise UserError(f"{flag} {out}: {where} the input {source}; write to another {noun}")


def check_output(output: str | Path, inputs: Sequence[str | Path], overwrite: bool, flag: str = "--output") -> Path:
    """Refuse an output folder that is (or holds, or sits inside) one of `inputs`, that is a file, that holds a
    training run, or that already holds something, unless `overwrite` and what it holds is an earlier output of a
    ringan verb (then it is replaced whole once the new one is complete)."""
    if not str(output).strip():
        raise UserError(f"{flag}: expected a folder name, got ''")
    out = Path(output)
    _refuse_inputs(flag, out, inputs, "folder")
    if out.exists() and not out.is_dir():
        raise UserError(f"{flag} {out}: exists and is not a folder")
    if out.is_dir() and _holds_run(out):  # never replaced, --overwrite or not
        raise UserError(f"{flag} {out}: holds a training run; write to another folder")
    if out.is_dir() and any(out.iterdir()):
        if not overwrite:
            what = "holds a model" if _holds_model(out) else "is not empty"
            raise UserError(f"{flag} {out}: {what}; pass --overwrite to replace it, or choose another folder")
        foreign = sorted(p.name for p in out.iterdir() if p.is_dir() or not _OUTPUT_FILES.match(p.name))
        if foreign:
            raise UserError(
                f"{flag} {out}: holds {foreign[0]!r}, which no ringan verb writes; --overwrite replaces only an "
                "earlier ringan output: move it away or choose another folder"
            )
    return out


def check_output_file(
    output: str | Path, inputs: Sequence[str | Path], flag: str, protected: Sequence[str | Path] = ()
) -> Path:
    """A file a verb writes (results, replies), checked before any work: in an existing folder, not a folder,
    not one of `inputs` (or inside an input folder), not inside a `protected` folder (a model's)."""
    if not str(output).strip():
        raise UserError(f"{flag}: expected a file name, got ''")
    out = Path(output)
    if out.is_dir():
        raise UserError(f"{flag} {out}: is a folder; name a file")
    if out.exists() and not out.is_file():
        raise UserError(f"{flag} {out}: is not a regular file; name a file")
    if not out.parent.is_dir():
        raise UserError(f"{flag} {out}: no such folder {out.parent}")
    _refuse_inputs(flag, out, inputs, "file")
    for folder in protected:
        if Path(folder).resolve() in out.resolve().parents:
            raise UserError(f"{flag} {out}: is inside the model folder {folder}; write it elsewhere")
    return out


def regular_file(path: str | Path, what: str) -> Path:
    """`path`, refused unless it is a regular file: a FIFO, a device (`/dev/zero`) or a socket would block a
    read forever or never end it."""
    path = Path(path)
    if not path.exists():
        raise UserError(f"{path}: no such {what}")
    if path.is_dir():
        raise UserError(f"{path}: is a folder, not a {what}")
    if not path.is_file():
        raise UserError(f"{path}: not a regular file (a pipe or a device?); expected a {what}")
    return path
