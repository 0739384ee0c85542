"""The paper's published tables, set against our scores: same schema, deltas, a Markdown report, git tags.

`reference/paper.yaml` stores each row's numbers under the key paths of metrics/scores.json
(`multimodal.accuracy`, `multimodal.weighted_f1`), so the paper's numbers can be written as a
scores file of their own: as metrics/paper.json in the workspace, and as metrics/scores.json in a
tagged commit, which lets `dvc metrics diff paper-<protocol>` compare paper and workspace.
"""

from __future__ import annotations

import os
import subprocess
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from llavac.files import json_text
from llavac.labels import TASKS

ROW_KEYS: tuple[str, ...] = ("table", "protocol", "model", "citation", "llavac", "multimodal")
"""Keys every row of reference/paper.yaml must have."""
PAPER_METRICS: tuple[str, ...] = ("accuracy", "weighted_f1")
"""What the tables report, both of the multimodal label."""
REPORT_METRICS: tuple[str, ...] = ("accuracy", "weighted_f1", "macro_f1")
"""Columns of the report's per-label table; each has a `<metric>_std` in scores.json."""

TAG_NAME, TAG_EMAIL = "llavac paper-tags", "paper-tags@llavac.invalid"
"""Author and committer of the tag commits, so they need no git identity from the user."""


@dataclass(frozen=True)
class PaperRow:
    """One row of a published table: a model's multimodal-label scores under one protocol."""

    table: int
    protocol: str
    model: str
    citation: str
    llavac: bool
    scores: dict[str, dict[str, float]]


@dataclass(frozen=True)
class Paper:
    """The published tables and where they come from."""

    source: str
    headline: str
    rows: tuple[PaperRow, ...]

    @property
    def protocols(self) -> list[str]:
        """Protocols in table order."""
        return list(dict.fromkeys(r.protocol for r in self.rows))

    def rows_for(self, protocol: str) -> list[PaperRow]:
        """Baselines and LLaVAC of one protocol, in the paper's order."""
        return [r for r in self.rows if r.protocol == protocol]

    def llavac_row(self, protocol: str) -> PaperRow:
        """The paper's own model under `protocol`."""
        return next(r for r in self.rows_for(protocol) if r.llavac)


def load_paper(path: Path) -> Paper:
    """Read and check reference/paper.yaml: every row complete, numbers in percent, one LLaVAC row per protocol."""
    with open(path, encoding="utf-8") as f:
        doc = yaml.safe_load(f) or {}
    missing = [k for k in ("source", "headline", "rows") if k not in doc]
    if missing:
        raise ValueError(f"{path}: lacks the top-level keys {missing}")
    rows = []
    for i, raw in enumerate(doc["rows"], start=1):
        missing = [k for k in ROW_KEYS if k not in raw]
        if missing:
            raise ValueError(f"{path}: row {i} lacks {missing}")
        scores = {"multimodal": {m: float(v) for m, v in raw["multimodal"].items()}}
        if set(scores["multimodal"]) != set(PAPER_METRICS) or not all(
            0 <= v <= 100 for v in scores["multimodal"].values()
        ):
            raise ValueError(f"{path}: row {i} needs exactly multimodal {PAPER_METRICS}, in percent (0-100)")
        rows.append(
            PaperRow(
                table=int(raw["table"]),
                protocol=str(raw["protocol"]),
                model=str(raw["model"]),
                citation=str(raw["citation"]),
                llavac=bool(raw["llavac"]),
                scores=scores,
            )
        )
    if not rows:
        raise ValueError(f"{path}: no rows")
    src = doc["source"]
    paper = Paper(
        source=f"{src['authors']} ({src['year']}), \"{src['title']}\"",
        headline=" ".join(str(doc["headline"]["claim"]).split()),
        rows=tuple(rows),
    )
    for protocol in paper.protocols:
        n = sum(r.llavac for r in paper.rows_for(protocol))
        if n != 1:
            raise ValueError(f"{path}: protocol {protocol!r} has {n} LLaVAC rows (llavac: true), expected 1")
    return paper


def paper_scores(paper: Paper, protocol: str) -> dict[str, Any]:
    """The paper's LLaVAC numbers for `protocol` in the schema of metrics/scores.json."""
    if protocol not in paper.protocols:
        raise ValueError(f"protocol {protocol!r} is not in the paper's tables: {', '.join(paper.protocols)}")
    return {task: dict(metrics) for task, metrics in paper.llavac_row(protocol).scores.items()}


def versus_paper(ours: Mapping[str, Any], paper: Mapping[str, Any]) -> dict[str, Any]:
    """For every metric both score files have, `{ours, paper, delta}` with delta = ours - paper."""
    out: dict[str, Any] = {}
    for key, theirs in paper.items():
        if key not in ours:
            continue
        if isinstance(theirs, Mapping):
            nested = versus_paper(ours[key], theirs)
            if nested:
                out[key] = nested
        else:
            out[key] = {"ours": ours[key], "paper": theirs, "delta": round(ours[key] - theirs, 2)}
    return out


@dataclass(frozen=True)
class RunInfo:
    """What our run was, for the report: which model on which data."""

    model: str
    raw_dir: str
    synthetic_sample: bool
    valid_pairs: int | None = None


def _table(header: Sequence[str], rows: Sequence[Sequence[object]]) -> list[str]:
    """Markdown table lines."""
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return lines


def _with_std(block: Mapping[str, Any], metric: str) -> str:
    """`mean ± std` of one metric of a scores block."""
    return f"{block[metric]:.2f} ± {block[f'{metric}_std']:.2f}"


def results_markdown(paper: Paper, protocol: str, ours: Mapping[str, Any], run: RunInfo) -> str:
    """reports/results.md: the protocol's published table with our row added, and what our run was."""
    published = paper.llavac_row(protocol).scores["multimodal"]
    mm = ours["multimodal"]
    if run.synthetic_sample:
        data_line = (
            f"Data: `{run.raw_dir}`, the **synthetic sample** embedded in this repository. The comparison "
            "with the paper is a wiring check of the pipeline, not a reproduction."
        )
    else:
        data_line = f"Data: `{run.raw_dir}`, real data supplied by the researcher (not the synthetic sample)."
    pairs = f"{ours['n_test_pairs']} test pairs over {ours['n_splits']} split(s)"
    if run.valid_pairs is not None:
        pairs += f", from {run.valid_pairs} valid pairs after preprocessing"

    paper_rows = [
        [f"{r.model} (paper)" if r.llavac else r.model, r.citation]
        + [f"{r.scores['multimodal'][m]:.2f}" for m in PAPER_METRICS]
        for r in paper.rows_for(protocol)
    ]
    our_row = [f"LLaVAC (ours, `{run.model}`)", "this run"] + [_with_std(mm, m) for m in PAPER_METRICS]
    label_rows = [
        [task, *(_with_std(ours[task], m) for m in REPORT_METRICS), f"{ours[task]['invalid_rate']:.2f}"]
        for task in TASKS
    ]
    deltas = ", ".join(f"{m.replace('_f1', ' F1')} {mm[m] - published[m]:+.2f}" for m in PAPER_METRICS)
    lines = [
        f"# Results: protocol `{protocol}` (Table {paper.llavac_row(protocol).table} of the paper)",
        "",
        data_line,
        "",
        f"Model: `{run.model}`. {pairs}. Our numbers are the mean ± population std over splits.",
        "",
        "## Multimodal label, in %",
        "",
        *_table(["model", "source", "accuracy", "weighted F1"], [*paper_rows, our_row]),
        "",
        f"Ours minus the paper's LLaVAC: {deltas}.",
        "",
        "## All three labels of our run, in %",
        "",
        *_table(["label", "accuracy", "weighted F1", "macro F1", "invalid answers"], label_rows),
        "",
        "Invalid answers are generations whose label could not be parsed; they are scored as wrong.",
        "",
        f"Published numbers: {paper.source}. The paper's headline claim: {paper.headline}",
        "",
    ]
    return "\n".join(lines)


def _git(repo: Path, *args: str, stdin: str | None = None, env: Mapping[str, str] | None = None) -> str:
    """Run one git command in `repo` and return its stdout, or fail with git's own message."""
    result = subprocess.run(
        ["git", *args],
        cwd=repo,
        input=stdin,
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
    )
    if result.returncode != 0:
        raise RuntimeError(f"git {' '.join(args)} failed in {repo}: {result.stderr.strip()}")
    return result.stdout.strip()


def make_paper_tags(
    repo: Path, paper: Paper, protocols: Sequence[str] | None = None, scores_path: str = "metrics/scores.json"
) -> list[str]:
    """Tag `paper-<protocol>` on a commit whose `scores_path` holds the paper's numbers; return the tags.

    Each commit is HEAD's tree with only that file replaced, and HEAD as parent, so DVC finds the
    same dvc.yaml there and `dvc metrics diff paper-<protocol>` lines the paper up with the
    workspace key by key. Built with git plumbing in a throw-away index: the working tree, the
    index and the branch are never touched. Author and dates are fixed (HEAD's date), so re-running
    on the same HEAD yields the same commits, and on a new HEAD moves the tags (`tag -f`).
    """
    repo = Path(repo)
    head = _git(repo, "rev-parse", "--verify", "HEAD^{commit}")
    date = _git(repo, "show", "-s", "--format=%cI", head)
    identity = {
        f"GIT_{role}_{key}": value
        for role in ("AUTHOR", "COMMITTER")
        for key, value in (("NAME", TAG_NAME), ("EMAIL", TAG_EMAIL), ("DATE", date))
    }
    tags = []
    for protocol in protocols or paper.protocols:
        content = json_text(paper_scores(paper, protocol))
        blob = _git(repo, "hash-object", "-w", "--stdin", stdin=content)
        with tempfile.TemporaryDirectory() as tmp:
            index = {"GIT_INDEX_FILE": str(Path(tmp) / "index")}
            _git(repo, "read-tree", head, env=index)
            _git(repo, "update-index", "--add", "--cacheinfo", f"100644,{blob},{scores_path}", env=index)
            tree = _git(repo, "write-tree", env=index)
        row = paper.llavac_row(protocol)
        message = (
            f"Paper numbers for protocol {protocol}: LLaVAC in Table {row.table} of {paper.source}\n\n"
            f"{scores_path} holds the published scores; compare with `dvc metrics diff paper-{protocol}`.\n"
        )
        commit = _git(repo, "commit-tree", tree, "-p", head, stdin=message, env=identity)
        tag = f"paper-{protocol}"
        _git(repo, "tag", "-f", tag, commit)
        tags.append(tag)
    return tags
