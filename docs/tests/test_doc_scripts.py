"""Every full script in the documentation runs, as a reader would run it.

Convention in docs/pages/**/*.md: a fenced ``python`` block right after an HTML comment

    <!-- run -->                                   python script.py
    <!-- run: fabric run --devices 2 {script} -->  the command a reader types ({script} is the file)

is written to a file in a fresh folder and executed there in a subprocess; it must exit 0. A plain
``python script.py`` runs as a fork of a server that has imported torch already (conftest.py's
``preloaded_python``: the same argv, folder, environment and ``__main__`` as a fresh interpreter, without
paying ``import torch`` per script); launchers (``fabric run``, ``torchrun``) start real interpreters.
``python``, ``fabric`` and ``torchrun`` at the start of a command mean this interpreter's. A block
that imports one of our packages which is not installed here (``fabric_loggers`` outside its
session) is skipped, saying which.

A block that imports ``fabric_core`` and creates a ``Fabric`` is a full script: it must carry
``<!-- run -->``, or ``<!-- no-run: reason -->`` when it cannot run here (a GPU, a cluster).
"""

from __future__ import annotations

import ast
import importlib.util
import re
import shlex
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from conftest import PreloadedPython, script_env

PAGES = Path(__file__).resolve().parent.parent / "pages"
_MARKER = re.compile(r"^<!--\s*(run|no-run)\s*(?::\s*(.*?))?\s*-->\s*$")
_FENCE = re.compile(r"^(```+|~~~+)\s*(\w+)?(.*)$")
_COMMANDS = {
    "python": [sys.executable],
    "fabric": [sys.executable, "-m", "fabric_core.cli"],
    "torchrun": [sys.executable, "-m", "torch.distributed.run"],
}
TIMEOUT_S = 240


@dataclass(frozen=True)
class Block:
    page: Path
    line: int  # 1-based line of the opening fence
    language: str
    code: str
    marker: str | None  # "run", "no-run" or None
    argument: str | None  # the command (run) or the reason (no-run)

    @property
    def id(self) -> str:
        return f"{self.page.relative_to(PAGES)}:{self.line}"


def blocks() -> list[Block]:
    found = []
    for page in sorted(PAGES.rglob("*.md")):
        lines = page.read_text().splitlines()
        i = 0
        while i < len(lines):
            match = _FENCE.match(lines[i].strip())
            if not match:
                i += 1
                continue
            fence, language = match.group(1), (match.group(2) or "")
            start = i
            i += 1
            body = []
            while i < len(lines) and not lines[i].strip().startswith(fence):
                body.append(lines[i])
                i += 1
            i += 1
            previous = next((lines[j].strip() for j in range(start - 1, -1, -1) if lines[j].strip()), "")
            marker = _MARKER.match(previous)
            indent = len(lines[start]) - len(lines[start].lstrip())
            code = "\n".join(line[indent:] for line in body) + "\n"
            found.append(
                Block(
                    page,
                    start + 1,
                    language,
                    code,
                    marker.group(1) if marker else None,
                    marker.group(2) if marker else None,
                )
            )
    return found


def _runnable() -> list[Block]:
    return [b for b in blocks() if b.marker == "run"]


def _our_imports(code: str) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(code)):
        if isinstance(node, ast.Import):
            names |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module.split(".")[0])
    return {n for n in names if n.startswith("fabric_")}


def _command(argument: str | None, script: Path) -> list[str]:
    words = shlex.split(argument or "python {script}")
    head = _COMMANDS.get(words[0])
    if head is None:
        raise ValueError(f"unknown command {words[0]!r} in a run marker; use one of {', '.join(_COMMANDS)}")
    return [*head, *(str(script) if w == "{script}" else w for w in words[1:])]


@pytest.mark.parametrize("block", _runnable(), ids=lambda b: b.id)
def test_script_runs(block: Block, tmp_path: Path, preloaded_python: PreloadedPython) -> None:
    missing = sorted(m for m in _our_imports(block.code) if importlib.util.find_spec(m) is None)
    if missing:
        pytest.skip(f"needs {', '.join(missing)}, which is not installed in this environment")
    script = tmp_path / "train.py"
    script.write_text(block.code)
    command = _command(block.argument, script)
    result = preloaded_python.run(command, cwd=tmp_path, env=script_env(), timeout=TIMEOUT_S)
    assert result.returncode == 0, (
        f"{block.id} exited {result.returncode}\n--- stdout\n{result.stdout[-3000:]}\n--- stderr\n{result.stderr[-5000:]}"
    )


def _is_full_script(code: str) -> bool:
    try:
        tree = ast.parse(code)
    except SyntaxError:
        return False
    imports_core = any(
        (isinstance(n, ast.ImportFrom) and (n.module or "").startswith("fabric_core"))
        or (isinstance(n, ast.Import) and any(a.name.startswith("fabric_core") for a in n.names))
        for n in tree.body
    )
    creates = any(
        isinstance(n, ast.Call) and getattr(n.func, "id", getattr(n.func, "attr", None)) == "Fabric"
        for n in ast.walk(tree)
    )
    return imports_core and creates


def test_every_full_script_is_marked() -> None:
    unmarked = [b.id for b in blocks() if b.language == "python" and b.marker is None and _is_full_script(b.code)]
    assert not unmarked, f"full scripts without <!-- run --> or <!-- no-run: reason -->: {unmarked}"


def test_run_markers_sit_on_python_blocks_and_name_known_commands() -> None:
    for block in blocks():
        if block.marker == "run":
            assert block.language == "python", f"{block.id}: <!-- run --> before a {block.language or 'plain'} block"
            _command(block.argument, Path("x.py"))
        if block.marker == "no-run":
            assert block.argument, f"{block.id}: <!-- no-run: reason --> needs a reason"


def test_the_docs_hold_scripts_to_run() -> None:
    assert len(_runnable()) >= 10
