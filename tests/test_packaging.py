"""The package declares what it imports: test extras must not hide a missing runtime dependency.

`make test` installs the test extras, so an import that only they provide would pass here and
crash `make serve` on a fresh machine (it happened with httpx). `.ci/run` also starts the server
from a venv without extras; this test catches the mistake in every `make test`.
"""

from __future__ import annotations

import ast
import re
import sys
from importlib import metadata
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src" / "localxai"


def imported_modules() -> dict[str, str]:
    """Top-level third-party modules that src/ imports, with one file that imports each."""
    found: dict[str, str] = {}
    for path in SRC.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            else:
                continue
            for name in names:
                top = name.split(".")[0]
                if top != "localxai" and top not in sys.stdlib_module_names:
                    found.setdefault(top, str(path.relative_to(SRC)))
    return found


def runtime_requirements() -> set[str]:
    """Distribution names of localxai's dependencies outside any extra."""
    names = set()
    for requirement in metadata.requires("localxai") or []:
        if "extra ==" in requirement:
            continue
        name = re.match(r"[A-Za-z0-9_.-]+", requirement)
        assert name is not None
        names.add(_normal(name.group(0)))
    return names


def _normal(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def test_every_import_is_a_declared_runtime_dependency() -> None:
    distributions = metadata.packages_distributions()
    declared = runtime_requirements()
    missing = {}
    for module, where in imported_modules().items():
        # A module not installed here is one imported for other Pythons only (tomli): declared by name.
        providers = {_normal(d) for d in distributions.get(module, [])} or {_normal(module)}
        if not providers & declared:
            missing[module] = where
    assert not missing, f"imported but not declared in [project.dependencies]: {missing}"
