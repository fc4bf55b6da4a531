"""The suite as a newcomer finds it: a map, helpers in one place, test modules on their own.

tests/conftest.py's docstring maps every part of the product to the test modules that hold
its tests, and every helper under tests/support/ to what it is; these tests keep that map
true as modules come and go. What two test modules share is a helper under tests/support/:
a test module never imports another one (nor conftest.py), so each can be read, run and
moved alone.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TESTS = ROOT / "tests"
PACKAGES = ("compiler", "backends", "server")
# A map line: a path, two spaces or more, what tests it; continuation lines are indented.
ENTRY = re.compile(r"^(\S+) {2,}(\S.*)$")
TEST_MODULE = re.compile(r"\btest_[a-z0-9_]+\.py\b")


def the_map() -> str:
    docstring = ast.get_docstring(ast.parse((TESTS / "conftest.py").read_text()))
    assert docstring, "tests/conftest.py has no docstring"
    return docstring


def entries() -> dict[str, str]:
    """Each map line's path -> its text, continuation lines included."""
    found: dict[str, str] = {}
    current = None
    for line in the_map().splitlines():
        entry = ENTRY.match(line)
        if entry:
            current = entry.group(1)
            found[current] = entry.group(2)
        elif current and line.startswith(" ") and line.strip():
            found[current] += " " + line.strip()
        else:
            current = None
    return found


def mapped(path: str, paths: set[str]) -> bool:
    return path in paths or any(p.endswith("/") and path.startswith(p) for p in paths)


def product_parts() -> list[str]:
    """What the map must name: every module of the three packages (a folder entry covers
    what is under it), the chart, the README and every page and example of the docs."""
    modules = [
        str(path.relative_to(ROOT))
        for package in PACKAGES
        for path in sorted((ROOT / package).rglob("*.py"))
        if path.name != "__init__.py"
    ]
    chart = [str(path.relative_to(ROOT)) for path in sorted((ROOT / "charts").rglob("*.*"))]
    docs = [
        str(path.relative_to(ROOT))
        for path in sorted([*(ROOT / "docs").glob("*.md"), *(ROOT / "docs" / "examples").iterdir()])
    ]
    return [*modules, *chart, *docs, "README.md"]


def test_every_part_of_the_product_is_on_the_map() -> None:
    paths = set(entries())
    missing = [part for part in product_parts() if not mapped(part, paths)]
    assert missing == [], f"add these to the map in tests/conftest.py's docstring: {missing}"


def test_every_path_on_the_map_exists() -> None:
    gone = [path for path in entries() if not path.startswith("support/")]
    gone = [path for path in gone if not (ROOT / path).exists()]
    assert gone == [], f"the map in tests/conftest.py names what is not there: {gone}"


def test_every_test_module_is_on_the_map_and_every_one_it_names_exists() -> None:
    named = set(TEST_MODULE.findall(the_map()))
    present = {path.name for path in TESTS.glob("test_*.py")}
    assert sorted(present - named) == [], "name these in tests/conftest.py's map"
    assert sorted(named - present) == [], "the map names test modules that are not there"


def test_every_helper_under_tests_support_is_on_the_map() -> None:
    paths = set(entries())
    helpers = {
        f"support/{path.name}"
        for path in (TESTS / "support").glob("*.py")
        if path.name != "__init__.py"
    }
    assert sorted(helpers - paths) == [], "describe these in tests/conftest.py's map"
    assert sorted({p for p in paths if p.startswith("support/")} - helpers) == []


def test_helpers_live_under_tests_support() -> None:
    """Beside conftest.py, tests/ holds test modules only: a newcomer looks for helpers in
    one place."""
    strays = [
        path.name
        for path in TESTS.glob("*.py")
        if path.name != "conftest.py" and not path.name.startswith("test_")
    ]
    assert strays == [], f"move these under tests/support/: {strays}"


def imported_modules(path: Path) -> set[str]:
    """Every module `path` imports, absolute (`from tests import x` gives `tests.x`)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
    return found


def test_no_test_module_imports_another_test_module() -> None:
    """What two test modules share belongs under tests/support/."""
    test_modules = {f"tests.{path.stem}" for path in TESTS.glob("test_*.py")} | {"tests.conftest"}
    offending = {
        str(path.relative_to(ROOT)): sorted(imported_modules(path) & test_modules)
        for path in sorted(TESTS.rglob("*.py"))
        if imported_modules(path) & test_modules
    }
    assert offending == {}
