"""The package's layers hold (issue 14): the import contract in ``.importlinter`` is kept, and no module
hides an import of emotalk's own code inside a function or behind an importlib string.

A function-level import (or ``importlib.import_module("emotalk...")``) is invisible to import-linter, so it
is exactly how a cycle between layers comes back unnoticed; these tests close that hole. Lazy imports of
heavy *third-party* libraries (dlib, scipy, sklearn, ...) inside functions stay allowed.
"""
from __future__ import annotations

import ast
import configparser
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "emotalk"
CONTRACT = ROOT / ".importlinter"

#: files allowed to import emotalk modules inside functions, each with the reason it must stay lazy
#: (none today: keep it that way unless a module truly cannot be imported at the top)
LAZY_IMPORTS_ALLOWED: dict[str, str] = {}

#: files allowed to name emotalk modules in strings for importlib, each with the reason
STRING_IMPORTS_ALLOWED: dict[str, str] = {
    # `import emotalk` (and so `import emotalk.errors`, the CLI's --help, ...) must not load torch; the
    # top-level package belongs to no layer and re-exports Pipeline & co. through a module __getattr__.
    "emotalk/__init__.py": "lazy `emotalk.Pipeline` export",
}
# (emotalk/cli/main.py imports only the command that runs, by name, so `emotalk --help` answers at once;
# it names modules of its own layer only, which the string check allows without an entry here.)


def _lint_imports_exe() -> str:
    here = Path(sys.executable).parent / "lint-imports"
    exe = str(here) if here.is_file() else shutil.which("lint-imports")
    if exe is None:
        pytest.fail("import-linter is not installed: pip install -e '.[test]'")
    return exe


def test_import_contract_is_kept():
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    # run in the repository root, where lint-imports picks up .importlinter by itself (any 2.x version)
    proc = subprocess.run([_lint_imports_exe(), "--no-cache"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=300)
    report = proc.stdout + proc.stderr
    assert proc.returncode == 0, "import contract broken (.importlinter):\n" + report[report.find("Broken"):]
    assert "1 kept, 0 broken" in report  # the contract was really read and checked


def _layers() -> list[set[str]]:
    """The layers of .importlinter, top first, as sets of module names (optional '(x)' unwrapped)."""
    cp = configparser.ConfigParser()
    cp.read(CONTRACT)
    section = next(s for s in cp.sections() if cp[s].get("type") == "layers")
    out = []
    for line in cp[section]["layers"].strip().splitlines():
        out.append({m.strip().strip("()") for m in re.split(r"[|:]", line) if m.strip()})
    return out


def _module_name(path: Path) -> str:
    rel = path.relative_to(ROOT).with_suffix("")
    parts = rel.parts[:-1] if rel.name == "__init__" else rel.parts
    return ".".join(parts)


def _place(module: str, layers: list[set[str]]) -> tuple[int, str] | None:
    """(layer index, top first; the layer member containing ``module``), or None outside every layer."""
    for i, layer in enumerate(layers):
        for m in layer:
            if module == m or module.startswith(m + "."):
                return i, m
    return None


def _layer_of(module: str, layers: list[set[str]]) -> int | None:
    place = _place(module, layers)
    return None if place is None else place[0]


def _is_own_import(node: ast.AST) -> bool:
    if isinstance(node, ast.ImportFrom):
        return node.level > 0 or (node.module or "").split(".")[0] == "emotalk"
    if isinstance(node, ast.Import):
        return any(a.name.split(".")[0] == "emotalk" for a in node.names)
    return False


def _sources():
    files = sorted(PACKAGE.rglob("*.py"))
    assert len(files) > 50, "the package was not found"
    for f in files:
        yield f.relative_to(ROOT).as_posix(), ast.parse(f.read_text(), filename=str(f))


def function_level_imports() -> dict[str, list[str]]:
    """file -> ["line N: from emotalk.x import y", ...] for imports of emotalk inside functions."""
    found: dict[str, list[str]] = {}
    for rel, tree in _sources():
        for fn in ast.walk(tree):
            if not isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)):
                continue
            for node in ast.walk(fn):
                if _is_own_import(node):
                    found.setdefault(rel, []).append(f"line {node.lineno}: {ast.unparse(node)}")
    return {k: sorted(set(v), key=lambda s: int(s.split()[1].rstrip(":"))) for k, v in found.items()}


def test_no_emotalk_imports_inside_functions():
    found = {k: v for k, v in function_level_imports().items() if k not in LAZY_IMPORTS_ALLOWED}
    lines = [f"{f}: {len(v)} ({v[0]}{', ...' if len(v) > 1 else ''})" for f, v in sorted(found.items())]
    assert not found, ("imports of emotalk modules inside functions (move them to the top of the module; a "
                       "cycle they dodge means code is in the wrong layer):\n  " + "\n  ".join(lines))


_DOTTED = re.compile(r"^emotalk(\.[A-Za-z_]\w*)+(:[A-Za-z_]\w*)?$")


def string_references() -> list[tuple[str, int, str]]:
    """(file, line, target) for string constants naming an emotalk module ('emotalk.x.y' or 'emotalk.x:Cls')
    and f-strings starting with 'emotalk.', outside docstrings: importlib registries."""
    out = []
    for rel, tree in _sources():
        docstrings = set()
        for node in ast.walk(tree):
            body = getattr(node, "body", None)
            if isinstance(body, list) and body and isinstance(body[0], ast.Expr) \
                    and isinstance(body[0].value, ast.Constant):
                docstrings.add(id(body[0].value))
        for node in ast.walk(tree):
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings \
                    and _DOTTED.match(node.value):
                out.append((rel, node.lineno, node.value.split(":")[0]))
            elif isinstance(node, ast.JoinedStr) and node.values and isinstance(node.values[0], ast.Constant) \
                    and str(node.values[0].value).startswith("emotalk."):
                out.append((rel, node.lineno, str(node.values[0].value).rstrip(".")))
    return out


def test_no_string_registries_pointing_up_or_sideways():
    layers = _layers()
    bad = []
    for rel, line, target in string_references():
        if rel in STRING_IMPORTS_ALLOWED:
            continue
        src, dst = _place(_module_name(ROOT / rel), layers), _place(target, layers)
        within = src is not None and dst is not None and src[1] == dst[1]  # e.g. cli -> cli.<command>
        if not within and (src is None or dst is None or dst[0] <= src[0]):
            bad.append(f"{rel}:{line} -> {target}")
    assert not bad, ("importlib-style string references to emotalk modules in the same or a higher layer "
                     "(import the module normally, or pass the object in from the caller):\n  " + "\n  ".join(bad))


def test_the_checks_can_fail(tmp_path):
    """The scanners see what they are meant to see (so a passing run means something)."""
    src = "def f():\n    from emotalk.train import trainer\n    import numpy\n\nX = {'a': 'emotalk.train.x:Cls'}\n"
    tree = ast.parse(src)
    inner = [n for fn in ast.walk(tree) if isinstance(fn, ast.FunctionDef) for n in ast.walk(fn)
             if _is_own_import(n)]
    assert [ast.unparse(n) for n in inner] == ["from emotalk.train import trainer"]
    assert _DOTTED.match("emotalk.train.x:Cls") and not _DOTTED.match("emotalk is nice")
    layers = _layers()
    assert _layer_of("emotalk.cli.main", layers) == 0
    assert _layer_of("emotalk.train.trainer", layers) == _layer_of("emotalk.eval", layers)
    assert _layer_of("emotalk.models.x", layers) > _layer_of("emotalk.data.x", layers)
