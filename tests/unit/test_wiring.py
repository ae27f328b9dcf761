"""Every module of the stack is used by the running stack: a module under
``common/``, ``dispatcher/`` or ``shards/`` that no code outside ``tests/``
imports was built and tested but never runs; wire it in or delete it.

An AST walk over the code folders, no imports executed: ``import x``,
``from x import y`` (``y`` may be a module), relative imports, and the
``"shardnet.x.y:callable"`` strings entry points are named by (the launcher
hands the supervisor the shard entry point as such a string).
"""

from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
CODE = ("common", "dispatcher", "shards", "scripts", "embedded", "package")
CHECKED = ("common", "dispatcher", "shards")
PREFIX = "shardnet."


def _module(path: Path, root: Path) -> str:
    return ".".join(path.relative_to(root).with_suffix("").parts)


def imported_names(path: Path, root: Path) -> set[str]:
    """Dotted names (``shardnet.`` stripped) that the file at ``path`` imports
    or names in a ``"shardnet.x:y"`` string."""
    tree = ast.parse(path.read_text(), filename=str(path))
    package = path.relative_to(root).parent.parts
    seen: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = list(package[: len(package) - (node.level - 1)])
                base = ".".join(parts + ([base] if base else []))
            base = base.removeprefix(PREFIX)
            seen.add(base)
            seen.update(f"{base}.{alias.name}" for alias in node.names)
        elif isinstance(node, ast.Import):
            seen.update(alias.name.removeprefix(PREFIX) for alias in node.names)
        elif isinstance(node, ast.Constant) and isinstance(node.value, str):
            if node.value.startswith(PREFIX):
                seen.add(node.value.removeprefix(PREFIX).split(":")[0])
    return seen


def unwired(root: Path) -> list[str]:
    """Modules of the checked folders under ``root`` that no other module of
    the code folders imports."""
    files = [
        p for folder in CODE if (root / folder).is_dir() for p in (root / folder).rglob("*.py")
    ]
    importers: dict[str, set[str]] = {}
    for path in files:
        me = _module(path, root)
        for name in imported_names(path, root):
            importers.setdefault(name, set()).add(me)
    mods = [
        _module(p, root)
        for p in files
        if p.name != "__init__.py" and p.relative_to(root).parts[0] in CHECKED
    ]
    return sorted(m for m in mods if not importers.get(m, set()) - {m})


def test_every_module_has_an_importer_outside_the_tests() -> None:
    assert unwired(REPO) == []


def test_the_walk_finds_an_unimported_module(tmp_path: Path) -> None:
    (tmp_path / "common" / "wire").mkdir(parents=True)
    (tmp_path / "shards").mkdir()
    (tmp_path / "scripts").mkdir()
    for name in ("common/__init__.py", "common/wire/__init__.py", "shards/__init__.py"):
        (tmp_path / name).write_text("")
    (tmp_path / "common" / "wire" / "used.py").write_text("X = 1\n")
    (tmp_path / "common" / "rel.py").write_text("from .wire import used\n")
    (tmp_path / "common" / "alone.py").write_text("import shardnet.common.alone\n")  # itself
    (tmp_path / "shards" / "entry.py").write_text("from shardnet.common import rel\n")
    (tmp_path / "scripts" / "cli.py").write_text('TARGET = "shardnet.shards.entry:main"\n')
    assert unwired(tmp_path) == ["common.alone"]
