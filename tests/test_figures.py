"""Every measured figure quoted in the README or docs/ agrees with the committed file it names.

The convention (docs/figures.md): a figure is a Markdown link whose text is the number and whose
target is the file, relative to the Markdown file, with the key path after `#`:
`[81.79](../metrics/scores.json#multimodal.accuracy)`. Keys are separated by dots; a list item is
named by its index from 0. A figure agrees when it is the file's value rounded to the digits shown.
"""

from __future__ import annotations

import json
import re
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from helpers import committed_text

REPO = Path(__file__).resolve().parents[1]

FIGURE = re.compile(r"\[(?P<shown>[-+]?\d[\d,]*(?:\.\d+)?)\]\((?P<file>[^)\s#]+)#(?P<keys>[^)\s]+)\)")
"""A number as link text, linking to a file with a key path: `[82.05](metrics/scores.json#text.accuracy)`."""
CODE = re.compile(r"^ *```.*?^ *```|`[^`\n]*`", flags=re.MULTILINE | re.DOTALL)
"""Fenced code blocks and inline code spans."""


@dataclass(frozen=True)
class Figure:
    """One quoted figure: where it is quoted, what it says, and which file and key it names."""

    markdown: Path
    shown: str
    file: Path
    keys: str

    def __str__(self) -> str:
        return f"{self.markdown.relative_to(REPO)}: [{self.shown}]({self.file.relative_to(REPO)}#{self.keys})"


def documentation() -> list[Path]:
    """The Markdown a user reads: the README and every page under docs/."""
    return [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]


def figures_in(markdown: Path, text: str) -> list[Figure]:
    """Every figure of `text` (the content of `markdown`), its file resolved against `markdown`'s folder.

    Code (fenced blocks and `inline spans`) is not prose: a link written there is an example.
    """
    prose = CODE.sub("", text)
    return [
        Figure(markdown, m["shown"], (markdown.parent / m["file"]).resolve(), m["keys"])
        for m in FIGURE.finditer(prose)
    ]


def value_at(file: Path, keys: str, text: str | None = None) -> Any:
    """The value at the dotted key path `keys` of a JSON or YAML file (of `text`, its content, when given);
    KeyError naming the missing step."""
    text = file.read_text(encoding="utf-8") if text is None else text
    node = json.loads(text) if file.suffix == ".json" else yaml.safe_load(text)
    for key in keys.split("."):
        if isinstance(node, list) and key.isdigit() and int(key) < len(node):
            node = node[int(key)]
        elif isinstance(node, dict) and key in node:
            node = node[key]
        else:
            raise KeyError(f"{file.relative_to(REPO)} has no {key!r} on the path {keys!r}")
    return node


def agrees(shown: str, value: Any) -> bool:
    """Whether `value` rounds to `shown` at the digits `shown` gives (half a unit of its last digit)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return False
    decimals = len(shown.partition(".")[2])
    return abs(float(shown.replace(",", "")) - value) <= 0.5 * 10**-decimals + 1e-9


def problems(figure: Figure, committed: set[Path]) -> str | None:
    """Why `figure` fails (with the remedy), or None when it agrees with its committed file."""
    if figure.file not in committed:
        return f"{figure}: {figure.file.relative_to(REPO)} is not a file committed in git; name a committed results file"
    try:
        value = value_at(figure.file, figure.keys, committed_text(figure.file))
    except KeyError as missing:
        return f"{figure}: {missing.args[0]}; fix the key path"
    if not agrees(figure.shown, value):
        return (f"{figure}: the file holds {value!r}; if the file was regenerated (dvc repro, a benchmark), "
                f"update the figure and the text around it, else the figure is wrong")
    return None


def test_the_convention_is_parsed():
    markdown = REPO / "docs" / "page.md"
    found = figures_in(markdown, "accuracy [81.79](../metrics/scores.json#multimodal.accuracy) ± 4.93, "
                                 "[1,000](../b.json#results.0.pairs) rows, a [link](x.md#anchor), [3](y.md), "
                                 "`[4](../c.json#example)`\n```\n[5](../c.json#block)\n```\n")
    assert [(f.shown, f.file, f.keys) for f in found] == [
        ("81.79", REPO / "metrics" / "scores.json", "multimodal.accuracy"),
        ("1,000", REPO / "b.json", "results.0.pairs"),
    ]


def test_a_figure_agrees_only_within_the_rounding_of_its_last_digit():
    assert agrees("8.79", 8.785) and agrees("17.90", 17.8974) and agrees("0.5550", 0.555) and agrees("1,000", 1000)
    assert not agrees("8.79", 8.7951) and not agrees("81.8", 81.74) and not agrees("1", "1") and not agrees("1", True)


def test_key_paths_walk_dicts_and_lists(tmp_path):
    (tmp_path / "r.yaml").write_text("rows:\n  - {a: {b: 1.5}}\n  - {a: {b: 2.5}}\n")
    assert value_at(tmp_path / "r.yaml", "rows.1.a.b") == 2.5


def test_every_figure_of_the_readme_and_docs_agrees_with_its_file():
    committed = {
        (REPO / name).resolve()
        for name in subprocess.run(["git", "ls-tree", "-r", "--name-only", "HEAD"], cwd=REPO, capture_output=True, text=True,
                                   check=True).stdout.split()
    }
    figures = [f for page in documentation() for f in figures_in(page, page.read_text(encoding="utf-8"))]
    assert len(figures) >= 20, "docs/figures.md's figures are no longer written as links to their files"
    failed = [p for p in (problems(f, committed) for f in figures) if p]
    assert not failed, "figures that disagree with their files:\n" + "\n".join(failed)
