"""The code's shape: no import cycle (in the package, the experiments or the benchmarks), no god module, a
docstring atop every module, no block written twice, verbs that do not import each other, scripts that do not edit
`sys.path`."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "ringan"
LONG_ON_PURPOSE = {
    PACKAGE / "modeling" / "modeling_ringan.py",  # transformers' one-file model layout (config aside)
}
SCRIPT_FOLDERS = [PACKAGE.parent / "experiments", PACKAGE.parent / "benchmarks"]
COMMAND_HELPERS = {"common", "sampling", "train_setup", "batch"}  # shared parts of the verbs, not verbs
# the quickstart is, by design, the other verbs run in order (tokenizer, train, eval, generate): it calls them
COMPOSED_VERBS = {"quickstart": {"tokenizer", "train", "generate", "evaluate"}}
MAX_LINES = 400
REPEAT_LINES = 11  # a block of more than 10 lines may stand in one place only


# the shipped base's links to ringan/modeling/ (the code `trust_remote_code` runs), never imported as modules;
# tests/test_interop.py holds them equal to the package's files
MODEL_FOLDER_CODE = PACKAGE / "base"


def modules() -> dict[str, Path]:
    found = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        if MODEL_FOLDER_CODE in path.parents:
            continue
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return found


def imports(name: str, path: Path, known: set[str]) -> set[str]:
    """The package modules `name` imports anywhere in its file (module level or inside functions)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    edges = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, *([base] if base else [])])
            targets = [base] + [f"{base}.{alias.name}" for alias in node.names]
        else:
            continue
        edges |= {t for t in targets if t in known and t != name}
    return edges


def test_no_import_cycle_in_the_package():
    found = modules()
    graph = {name: imports(name, path, set(found)) for name, path in found.items()}
    # a module that imports its own package's __init__ (or the reverse) is Python's usual package layout,
    # not a cycle: drop the edges between a module and the packages that contain it
    graph = {n: {t for t in ts if not n.startswith(t + ".") and not t.startswith(n + ".")} for n, ts in graph.items()}
    cycles = _cycles(graph)
    assert not cycles, cycles
    # the CLI sits on top: only `python -m ringan` imports it
    assert {name for name, targets in graph.items() if "ringan.cli" in targets} == {"ringan.__main__"}


def test_no_module_is_a_god_module_and_each_says_what_it_is_for():
    for name, path in modules().items():
        text = path.read_text()
        if path not in LONG_ON_PURPOSE:
            assert len(text.splitlines()) <= MAX_LINES, (name, len(text.splitlines()))
        if text.strip():
            docstring = ast.get_docstring(ast.parse(text))
            assert docstring and docstring.strip(), f"{name} opens with no docstring"


def test_no_block_of_more_than_ten_lines_is_written_twice():
    """Exact repeats, white space folded, blank and comment lines skipped (the `duplicates` tool also finds blocks
    of the same shape). `ringan/modeling/` is left out: it is changed in another line of work."""
    seen: dict[tuple[str, ...], tuple[str, int]] = {}
    repeats = []
    for name, path in modules().items():
        if name.startswith("ringan.modeling"):
            continue
        lines = [(i + 1, " ".join(line.split())) for i, line in enumerate(path.read_text().splitlines())]
        lines = [(i, line) for i, line in lines if line and not line.startswith("#")]
        for start in range(len(lines) - REPEAT_LINES + 1):
            block = tuple(line for _, line in lines[start : start + REPEAT_LINES])
            place = (name, lines[start][0])
            first = seen.setdefault(block, place)
            if first != place and not (first[0] == name and place[1] - first[1] < REPEAT_LINES):
                repeats.append((first, place))
    assert not repeats, repeats[:5]


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    cycles, state = [], {}

    def visit(node: str, stack: list[str]) -> None:
        state[node] = "open"
        for target in sorted(graph[node]):
            if state.get(target) == "open":
                cycles.append(stack[stack.index(target) :] + [target])
            elif target not in state:
                visit(target, [*stack, target])
        state[node] = "done"

    for name in sorted(graph):
        if name not in state:
            visit(name, [name])
    return cycles


def test_verbs_do_not_import_each_other():
    """A verb's module imports the library and the commands' shared helpers, never another verb (the quickstart,
    which runs the others in order, aside)."""
    found = modules()
    verbs = {n.rpartition(".")[2] for n in found if n.startswith("ringan.commands.")} - COMMAND_HELPERS
    assert verbs >= {"train", "generate", "chat", "serve", "hub"}, verbs
    for verb in sorted(verbs):
        name = f"ringan.commands.{verb}"
        imported = {
            t.rpartition(".")[2] for t in imports(name, found[name], set(found)) if t.startswith("ringan.commands.")
        }
        others = (imported & verbs) - {verb} - COMPOSED_VERBS.get(verb, set())
        assert not others, f"{name} imports the verb(s) {sorted(others)}"


def test_experiments_and_benchmarks_have_no_cycles_and_no_path_edits():
    """Each folder's scripts import their neighbours by name (the script's folder is on `sys.path` when it runs):
    no cycle among them, and none edits `sys.path`."""
    for folder in SCRIPT_FOLDERS:
        scripts = {p.stem: p for p in sorted(folder.glob("*.py"))}
        graph = {}
        for name, path in scripts.items():
            tree = ast.parse(path.read_text())
            graph[name] = set()
            for node in ast.walk(tree):
                if isinstance(node, ast.Import):
                    graph[name] |= {a.name for a in node.names if a.name in scripts}
                elif isinstance(node, ast.ImportFrom) and not node.level and node.module in scripts:
                    graph[name].add(node.module)
            assert "sys.path" not in path.read_text(), f"{path} edits sys.path"
            docstring = ast.get_docstring(tree)
            assert docstring and docstring.strip(), f"{path} opens with no docstring"
        assert not _cycles(graph), (folder.name, _cycles(graph))
