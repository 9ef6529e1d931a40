"""Words that are true: the README's Layout names every module of the package, and its scorer
table every registered scorer."""

import re
from pathlib import Path

from oodbench.scoring import list_scorers

REPO = Path(__file__).resolve().parent.parent
README = (REPO / "README.md").read_text(encoding="utf-8")


def _section(title: str) -> str:
    """The text of the README section ``## title``, up to the next ``## `` heading."""
    match = re.search(rf"^## {re.escape(title)}\n(.*?)(?=^## )", README, re.S | re.M)
    assert match, f"README.md has no '## {title}' section"
    return match.group(1)


def test_the_layout_names_every_module() -> None:
    layout = _section("Layout")
    block = layout[layout.index("```"):]
    missing = [str(path.relative_to(REPO)) for path in sorted((REPO / "oodbench").rglob("*.py"))
               if path.name != "__init__.py" and not re.search(
                   rf"(?<![\w.]){re.escape(path.name)}", block)]
    packages = [f"{p.name}/" for p in (REPO / "oodbench").iterdir()
                if (p / "__init__.py").is_file() and f"{p.name}/" not in block]
    assert not missing + packages, f"README.md's Layout does not name {missing + packages}"


def test_the_layout_names_no_module_that_is_gone() -> None:
    layout = _section("Layout")
    block = layout[layout.index("```"):]
    files = {p.name for folder in ("oodbench", "tests") for p in (REPO / folder).rglob("*.py")}
    files |= {p.name for p in REPO.glob("*.py")}
    named = set(re.findall(r"(?<![\w./])([a-z_]+\.py)\b", block))
    assert named <= files, f"README.md's Layout names modules that do not exist: {named - files}"


def test_the_scorer_table_lists_every_scorer() -> None:
    table = _section("Scorers")
    missing = [name for name in list_scorers() if f"| `{name}` |" not in table]
    assert not missing, f"README.md's scorer table lacks {missing}"
