"""The README's Architecture section names every module in the tree, each under its package."""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _architecture() -> str:
    readme = (ROOT / "README.md").read_text()
    return readme.split("\n## Architecture\n", 1)[1].split("\n## ", 1)[0]


def test_the_readme_lists_every_module_under_its_package() -> None:
    text = _architecture()
    listed: dict[str, set[str]] = {}
    package = ""
    for line in text.splitlines():
        if line and not line.startswith(" "):  # a package's line, or another folder's
            is_package = line.startswith(("protocol/", "node/")) and not line.startswith("node/errors.py")
            package = line.split()[0].rstrip("/") if is_package else ""
        elif line.startswith("  ") and package and line.split()[0].endswith((".py", "/")):
            listed.setdefault(package, set()).add(line.split()[0].rstrip("/"))
    for directory in [ROOT / "protocol", *sorted((ROOT / "node").iterdir())]:
        if not directory.is_dir() or directory.name == "__pycache__":
            continue
        package = str(directory.relative_to(ROOT))
        modules = {
            p.name
            for p in directory.iterdir()
            if (p.suffix == ".py" and p.name not in {"__init__.py", "errors.py"})
            or (p.is_dir() and (p / "__init__.py").exists())
        }
        assert listed.get(package, set()) >= modules, (package, modules - listed.get(package, set()))
        assert listed.get(package, set()) <= modules | {"errors.py"}, (package, listed[package] - modules)
