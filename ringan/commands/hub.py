"""`ringan push`: publish a model folder to the Hub (the card it uploads is the one training wrote: `ringan.model_card`)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..errors import OptionError, UserError
from ..loading import TOPIC_CONTEXTS_FILE, check_model_folder, check_saved_model
from ..options import Options, option
from .common import model_folder, model_option

# what a model folder needs on the Hub besides its modeling code (the `.py` files its config.json's auto_map names)
PUSHED_FILES = (
    "config.json",
    "generation_config.json",
    "model.safetensors",
    "model.safetensors.index.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "added_tokens.json",
    "chat_template.jinja",
    "README.md",
    TOPIC_CONTEXTS_FILE,
)


@dataclass(frozen=True, kw_only=True)
class PushOptions(Options):
    """Publish a saved model folder to the Hugging Face Hub (weights, modeling files, tokenizer, model card)."""

    model: str | None = model_option()
    repo_id: str = option("", "the Hub repository, e.g. 'user/ringan-dialog'")
    private: bool = option(False, "create the repository as private")
    token: str | None = option(None, "a Hub token", default_text="the logged-in one")
    commit_message: str = option("Upload Ringan model", "the commit message")
    dry_run: bool = option(False, "list the files and print the model card that would be uploaded; upload nothing")


def push(options: PushOptions | None = None, /, **overrides) -> str:
    """Upload the files the model needs (weights, config, tokenizer, card, modeling code) in one commit; nothing
    else in the folder, and nothing a link points to outside it. Returns the repo URL."""
    from huggingface_hub import CommitOperationAdd, HfApi

    o = PushOptions.build(options, overrides)
    if not o.repo_id or "/" not in o.repo_id:
        raise OptionError("--repo-id", "expected 'user/name'", repr(o.repo_id))
    folder = check_model_folder(model_folder(o.model))
    missing = [n for n in ("modeling_ringan.py", "README.md") if not (folder / n).is_file()]
    if missing:
        raise UserError(f"{folder}: cannot publish, missing {', '.join(missing)} (save it with `ringan train`)")
    check_saved_model(folder)  # a damaged folder is never published
    files = files_to_push(folder)
    left_out = sorted(
        p.relative_to(folder).as_posix()
        for p in folder.rglob("*")
        if (p.is_file() or p.is_symlink()) and p not in files
    )
    card = card_for_repo((folder / "README.md").read_text(encoding="utf-8"), o.repo_id)
    if left_out:
        shown = ", ".join(left_out[:5]) + (f" and {len(left_out) - 5} more" if len(left_out) > 5 else "")
        print(f"push: leaves out {len(left_out)} files a model does not need ({shown})")
    if o.dry_run:
        print(f"push --dry-run: would upload {len(files)} files of {folder} to {o.repo_id} (private: {o.private}):")
        for path in files:
            print(f"  {path.name:<32} {path.stat().st_size:>12,} bytes")
        print("\n== README.md (the model card, as it would be uploaded) ==\n" + card)
        return f"https://huggingface.co/{o.repo_id}"
    operations = [
        CommitOperationAdd(path_in_repo=p.name, path_or_fileobj=card.encode() if p.name == "README.md" else str(p))
        for p in files
    ]
    try:
        api = HfApi(token=o.token)
        url = api.create_repo(o.repo_id, private=o.private, exist_ok=True, repo_type="model")
        api.create_commit(repo_id=o.repo_id, repo_type="model", operations=operations, commit_message=o.commit_message)
    except Exception as err:  # network, authentication, the Hub's refusals: one line, never a traceback
        first = (str(err).strip().splitlines() or [""])[0][:300]
        raise UserError(f"push to {o.repo_id} failed: {type(err).__name__}: {first}") from None
    print(f"pushed {len(files)} files of {folder} to {url}")
    return str(url)


def card_for_repo(card: str, repo_id: str) -> str:
    """The model card as uploaded to `repo_id`: its usage snippet loads from the repository, not the local folder."""
    import re

    return re.sub(r'^model_id = ".*"$', lambda _: f'model_id = "{repo_id}"', card, flags=re.MULTILINE)


def _inside(folder: Path, path: Path) -> Path:
    """`path`, if it really lies in `folder`: a link that leads out of it is refused, except the shipped base's
    links to this package's own modeling code (the code the folder runs with `trust_remote_code`)."""
    modeling = Path(__file__).resolve().parents[1] / "modeling"
    if path.suffix == ".py" and path.resolve().parent == modeling:
        return path
    if folder.resolve() not in path.resolve().parents:
        raise UserError(
            f"{path}: is a link to {path.resolve()}, outside the model folder; push never follows a link out of the "
            "folder (copy the file in instead)"
        )
    return path


def files_to_push(folder: Path) -> list[Path]:
    """The files of a model folder that go to the Hub: `PUSHED_FILES`, the weight shards an index names, and the
    modeling code `config.json`'s `auto_map` names with the files it imports."""
    import json
    import re

    names = [n for n in PUSHED_FILES if (folder / n).is_file()]
    index = folder / "model.safetensors.index.json"
    if index.is_file():
        names += sorted(set(json.loads(index.read_text(encoding="utf-8")).get("weight_map", {}).values()))
    auto_map = json.loads((folder / "config.json").read_text(encoding="utf-8")).get("auto_map") or {}
    # a value is "module.Class" or, in the standard form for tokenizers, a list of them (None for a missing one)
    refs = [
        r
        for v in (auto_map.values() if isinstance(auto_map, dict) else [None])
        for r in (v if isinstance(v, list) else [v])
    ]
    if not isinstance(auto_map, dict) or not all(r is None or isinstance(r, str) for r in refs):
        raise UserError(
            f"{folder / 'config.json'}: auto_map: expected a mapping of class -> 'module.Class' (or a list of them)"
        )
    modules = [ref.split("--")[-1].rsplit(".", 1)[0] for ref in refs if ref]
    code: list[str] = []
    while modules:
        module = modules.pop()
        name = f"{module}.py"
        if name in code or not (folder / name).is_file():
            continue
        code.append(name)
        text = _inside(folder, folder / name).read_text(encoding="utf-8")
        modules += re.findall(r"^\s*from\s+\.(\w+)\s+import", text, flags=re.MULTILINE)
    return [_inside(folder, folder / n) for n in dict.fromkeys([*names, *sorted(code)])]
