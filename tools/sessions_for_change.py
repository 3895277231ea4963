#!/usr/bin/env python3
"""List the nox sessions a change needs, from the files it touches.

The mapping is read from noxfile.py, so it stays true as sessions change: a session needs to run
when a touched file lies under a path the session names (``"integration_tests"``,
``"docs/mkdocs.yml"`` -> ``docs/``, ``"."`` -> everything) or under ``packages/<dist>/`` for a
distribution it installs (``"fabric-loggers"``; helpers such as ``_install`` count, so every session
that installs fabric-core needs to run when fabric-core changes). Session names and which ones
``nox`` runs by default come from ``nox -l --json`` when nox is installed, else from parsing the file.

A few rules the noxfile cannot show are added: noxfile.py, the root pyproject.toml and conftest.py,
and .ci/ need everything; examples/ is exercised by the integration session. Files no session
covers are reported on stderr.

Examples:
    python tools/sessions_for_change.py packages/fabric-loggers/src/fabric_loggers/csv_logger.py
    python tools/sessions_for_change.py --base origin/main          # what this branch changed
    nox -s $(python tools/sessions_for_change.py --base main)       # run just those
    python tools/sessions_for_change.py --all --json docs/index.md  # optional sessions too, with reasons
"""

from __future__ import annotations

import argparse
import ast
import json
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

REPO_ROOT = Path(__file__).resolve().parent.parent
EVERYTHING = ("noxfile.py", "pyproject.toml", "conftest.py", ".ci/")
# Coverage that lives outside the noxfile: session -> extra paths it exercises.
EXTRA_COVERAGE = {
    "integration": ("examples/",),
    "release": ("packages/",),
    "tools": ("packages/",),  # check_pins reads every package's pyproject and version
}
# A session that runs ruff over "." only cares about the files ruff reads.
RUFF_FILES = (".py", ".pyi", "pyproject.toml")


@dataclass
class Session:
    """A nox session and the repository paths whose change it has to check."""

    name: str
    default: bool = True
    paths: set[str] = field(default_factory=set)  # "packages/fabric-core/", "docs/", "" (= everything)
    only: tuple[str, ...] | None = None  # file endings the session reads, when it says (ruff)

    def covers(self, file: str) -> bool:
        if self.only is not None and not file.endswith(self.only):
            return False
        return any(path == "" or file == path.rstrip("/") or file.startswith(path) for path in self.paths)


# ------------------------------------------------------------------ reading noxfile.py
def _is_session_decorator(node: ast.expr) -> tuple[bool, dict[str, ast.expr]]:
    call = node if isinstance(node, ast.Call) else None
    target = call.func if call else node
    name = target.attr if isinstance(target, ast.Attribute) else target.id if isinstance(target, ast.Name) else ""
    if name != "session":
        return False, {}
    return True, {kw.arg: kw.value for kw in (call.keywords if call else []) if kw.arg}


def _string_literals(function: ast.FunctionDef) -> tuple[list[str], list[str]]:
    """String constants in ``function`` (not its docstring, not f-string fragments) and the names it calls."""
    strings: list[str] = []
    calls: list[str] = []
    body = function.body
    if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
        body = body[1:]

    class Visitor(ast.NodeVisitor):
        def visit_JoinedStr(self, node: ast.JoinedStr) -> None:
            for value in node.values:
                if isinstance(value, ast.FormattedValue):
                    self.visit(value.value)

        def visit_Constant(self, node: ast.Constant) -> None:
            if isinstance(node.value, str):
                strings.append(node.value)

        def visit_Call(self, node: ast.Call) -> None:
            if isinstance(node.func, ast.Name):
                calls.append(node.func.id)
            self.generic_visit(node)

    for statement in body:
        Visitor().visit(statement)
    return strings, calls


def _paths_for_literal(literal: str, root: Path) -> str | None:
    """The repository path a string in the noxfile stands for, or ``None`` when it is not one."""
    if not literal or "\n" in literal or literal.startswith("-") or len(literal) > 200:
        return None
    if literal == ".":
        return ""
    if "/" not in literal and (root / "packages" / literal / "pyproject.toml").exists():
        return f"packages/{literal}/"
    candidate = root / literal
    try:
        exists = candidate.exists()
    except OSError:
        return None
    if not exists or candidate.resolve() == root.resolve():
        return None
    relative = PurePosixPath(literal.strip("/"))
    if candidate.is_dir():
        return f"{relative}/"
    parent = relative.parent
    return f"{parent}/" if str(parent) != "." else str(relative)


def parse_noxfile(noxfile: Path) -> list[Session]:
    """Sessions declared in ``noxfile`` with the paths each one depends on (helpers followed)."""
    tree = ast.parse(noxfile.read_text(), filename=str(noxfile))
    root = noxfile.parent
    functions = {node.name: node for node in tree.body if isinstance(node, ast.FunctionDef)}

    literal_cache: dict[str, set[str]] = {}

    def literals(name: str, seen: frozenset[str] = frozenset()) -> set[str]:
        if name in literal_cache:
            return literal_cache[name]
        strings, calls = _string_literals(functions[name])
        found = set(strings)
        for callee in calls:
            if callee in functions and callee not in seen:
                found |= literals(callee, seen | {name})
        literal_cache[name] = found
        return found

    sessions = []
    for node in tree.body:
        if not isinstance(node, ast.FunctionDef):
            continue
        for decorator in node.decorator_list:
            is_session, kwargs = _is_session_decorator(decorator)
            if not is_session:
                continue
            name_node = kwargs.get("name")
            name = name_node.value if isinstance(name_node, ast.Constant) else node.name
            default_node = kwargs.get("default")
            default = not (isinstance(default_node, ast.Constant) and default_node.value is False)
            paths = {p for p in (_paths_for_literal(s, root) for s in literals(node.name)) if p is not None}
            paths |= set(EXTRA_COVERAGE.get(name, ()))
            only = RUFF_FILES if "ruff" in literals(node.name) else None
            sessions.append(Session(name, default, paths, only))
    return sessions


def nox_default_sessions(root: Path) -> list[str] | None:
    """Names ``nox`` runs by default (``nox -l --json``), or ``None`` when nox cannot tell."""
    nox = shutil.which("nox")
    command = [nox] if nox else [sys.executable, "-m", "nox"]
    try:
        result = subprocess.run([*command, "-l", "--json"], cwd=root, capture_output=True, text=True, timeout=60)
        listed = json.loads(result.stdout) if result.returncode == 0 else None
    except (OSError, subprocess.TimeoutExpired, json.JSONDecodeError):
        return None
    if not isinstance(listed, list):
        return None
    return [entry.get("name") or entry["session"] for entry in listed]


def load_sessions(root: Path, use_nox: bool = True) -> list[Session]:
    sessions = parse_noxfile(root / "noxfile.py")
    defaults = nox_default_sessions(root) if use_nox else None
    if defaults is not None:
        by_name = {s.name: s for s in sessions}
        for session in sessions:
            session.default = session.name in defaults
        sessions += [Session(name, True, {""}) for name in defaults if name not in by_name]  # unparsable: run it
    return sessions


# ------------------------------------------------------------------- the changed files
def changed_files(root: Path, base: str | None) -> list[str]:
    """Files changed since ``base``'s merge base (or HEAD), committed or not, untracked included."""

    def git(*args: str) -> list[str]:
        result = subprocess.run(["git", *args], cwd=root, capture_output=True, text=True, check=True)
        return [line for line in result.stdout.splitlines() if line]

    start = git("merge-base", base, "HEAD")[0] if base else "HEAD"
    files = git("diff", "--name-only", start) + git("ls-files", "--others", "--exclude-standard")
    return sorted(set(files))


def normalise(file: str, root: Path) -> str:
    path = Path(file)
    if path.is_absolute():
        try:
            path = path.resolve().relative_to(root.resolve())
        except ValueError:
            return str(PurePosixPath(path))
    return str(PurePosixPath(*path.parts)).removeprefix("./")


# ---------------------------------------------------------------------------- choosing
def sessions_for(files: list[str], sessions: list[Session]) -> tuple[dict[str, list[str]], list[str]]:
    """``{session: [files that need it]}`` in noxfile order, and the files no session covers."""
    needed: dict[str, list[str]] = {}
    uncovered = []
    for file in files:
        global_change = any(file == rule or (rule.endswith("/") and file.startswith(rule)) for rule in EVERYTHING)
        hits = [s for s in sessions if global_change or s.covers(file)]
        if not hits:
            uncovered.append(file)
        for session in hits:
            needed.setdefault(session.name, []).append(file)
    order = [s.name for s in sessions]
    return {name: needed[name] for name in order if name in needed}, uncovered


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("files", nargs="*", help="changed files (default: what git reports against --base, or HEAD)")
    parser.add_argument("--base", help="git ref to compare with (its merge base with HEAD), e.g. origin/main")
    parser.add_argument(
        "--all", action="store_true", help="also list sessions nox does not run by default (hardware legs, bench)"
    )
    parser.add_argument(
        "--json", action="store_true", help="print sessions, optional sessions, reasons and uncovered files as JSON"
    )
    parser.add_argument("--no-nox", action="store_true", help="do not call nox; read everything from noxfile.py")
    parser.add_argument("--root", type=Path, default=REPO_ROOT, help="repository root (default: this checkout)")
    args = parser.parse_args(argv)

    root = args.root
    files = [normalise(f, root) for f in args.files] if args.files else changed_files(root, args.base)
    sessions = load_sessions(root, use_nox=not args.no_nox)
    defaults = {s.name for s in sessions if s.default}
    needed, uncovered = sessions_for(files, sessions)
    chosen = [name for name in needed if name in defaults]
    optional = [name for name in needed if name not in defaults]

    if args.json:
        print(
            json.dumps(
                {"sessions": chosen, "optional": optional, "reasons": needed, "uncovered": uncovered, "files": files},
                indent=2,
            )
        )
        return 0
    for name in chosen + (optional if args.all else []):
        print(name)
    if optional and not args.all:
        print(f"also relevant, not run by default (--all lists them): {', '.join(optional)}", file=sys.stderr)
    if uncovered:
        print(f"no nox session covers: {', '.join(uncovered)}", file=sys.stderr)
    if not files:
        print("no changed files", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
