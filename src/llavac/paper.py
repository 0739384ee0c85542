"""The paper's published tables, set against our scores: same schema, deltas, a Markdown report, git tags.

`reference/paper.yaml` stores each row's numbers under the key paths of metrics/scores.json
(`multimodal.accuracy`, `multimodal.weighted_f1`), so the paper's numbers can be written as a
scores file of their own: as metrics/paper.json in the workspace, and as metrics/scores.json in a
tagged commit, which lets `dvc metrics diff paper-<protocol>` compare paper and workspace.

A row may name its `dataset` (default `mvsa-single`, the paper's). The paper reports no LLaVAC
result on MVSA-Multiple, so there the reference a run is set against is the strongest published
row of its protocol (`Paper.reference_row`), tagged `paper-<dataset>-<protocol>`.
"""

from __future__ import annotations

import logging
import os
import subprocess
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from llavac.data.mvsa import DATASET_NAMES
from llavac.files import json_text
from llavac.labels import TASKS
from llavac.statistics import N_RESAMPLES

ROW_KEYS: tuple[str, ...] = ("table", "protocol", "model", "citation", "llavac", "multimodal")
"""Keys every row of reference/paper.yaml must have."""
PAPER_METRICS: tuple[str, ...] = ("accuracy", "weighted_f1")
"""What the tables report, both of the multimodal label."""
PAPER_DATASET = "mvsa-single"
"""The dataset of the paper's own tables, and of a row that names none."""

TAG_NAME, TAG_EMAIL = "llavac paper-tags", "paper-tags@llavac.invalid"
"""Author and committer of the tag commits, so they need no git identity from the user."""
LOG = logging.getLogger(__name__)


@dataclass(frozen=True)
class PaperRow:
    """One row of a published table: a model's multimodal-label scores under one protocol and dataset."""

    table: int | None
    """The paper's table; None for a result the paper does not print (MVSA-Multiple's)."""
    protocol: str
    model: str
    citation: str
    llavac: bool
    scores: dict[str, dict[str, float]]
    dataset: str = PAPER_DATASET


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

    @property
    def tables(self) -> list[tuple[str, str]]:
        """(dataset, protocol) of every group of rows, in file order."""
        return list(dict.fromkeys((r.dataset, r.protocol) for r in self.rows))

    def rows_for(self, protocol: str, dataset: str = PAPER_DATASET) -> list[PaperRow]:
        """Baselines and LLaVAC of one protocol on one dataset, in the paper's order."""
        return [r for r in self.rows if r.protocol == protocol and r.dataset == dataset]

    def llavac_row(self, protocol: str, dataset: str = PAPER_DATASET) -> PaperRow:
        """The paper's own model under `protocol`."""
        return next(r for r in self.rows_for(protocol, dataset) if r.llavac)

    def reference_row(self, protocol: str, dataset: str = PAPER_DATASET) -> PaperRow:
        """What a run is set against: the paper's LLaVAC, or where the paper has none (MVSA-Multiple)
        the published row with the highest multimodal accuracy. ValueError when there is no row."""
        rows = self.rows_for(protocol, dataset)
        if not rows:
            raise ValueError(f"no published result for dataset {dataset!r} under protocol {protocol!r}")
        return next((r for r in rows if r.llavac), None) or max(rows, key=lambda r: r.scores["multimodal"]["accuracy"])


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
                table=None if raw["table"] is None else int(raw["table"]),
                protocol=str(raw["protocol"]),
                model=str(raw["model"]),
                citation=str(raw["citation"]),
                llavac=bool(raw["llavac"]),
                scores=scores,
                dataset=str(raw.get("dataset", PAPER_DATASET)),
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
    unknown = sorted({r.dataset for r in paper.rows} - set(DATASET_NAMES))
    if unknown:
        raise ValueError(f"{path}: unknown dataset(s) {unknown}; expected one of {list(DATASET_NAMES)}")
    for dataset, protocol in paper.tables:
        n = sum(r.llavac for r in paper.rows_for(protocol, dataset))
        if n != 1 and (dataset == PAPER_DATASET or n > 1):
            expected = "expected 1" if dataset == PAPER_DATASET else "expected at most 1"
            raise ValueError(f"{path}: protocol {protocol!r} has {n} LLaVAC rows (llavac: true), {expected}")
    return paper


def paper_scores(paper: Paper, protocol: str, dataset: str = PAPER_DATASET) -> dict[str, Any]:
    """The reference numbers (`Paper.reference_row`) for `protocol` in the schema of metrics/scores.json."""
    if protocol not in paper.protocols:
        raise ValueError(f"protocol {protocol!r} is not in the paper's tables: {', '.join(paper.protocols)}")
    return {task: dict(metrics) for task, metrics in paper.reference_row(protocol, dataset).scores.items()}


def paper_tag(protocol: str, dataset: str = PAPER_DATASET) -> str:
    """`paper-<protocol>` for the paper's own dataset (the tags as they always were), else `paper-<dataset>-<protocol>`."""
    return f"paper-{protocol}" if dataset == PAPER_DATASET else f"paper-{dataset}-{protocol}"


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
    """What our run was, for the report: which model on which data, split how."""

    model: str
    raw_dir: str
    synthetic_sample: bool
    valid_pairs: int | None = None
    split_source: str = "generated"
    split_seed: int | None = None
    seed: int | None = None
    method: str = "lora"
    modalities: str = "both"
    dataset_id: str = PAPER_DATASET
    """The `dataset` param: whose layout, label rule and published rows."""

    @property
    def dataset(self) -> str:
        """`synthetic sample`, `MVSA-Single` or `MVSA-Multiple`: what the numbers were measured on."""
        return "synthetic sample" if self.synthetic_sample else DATASET_NAMES[self.dataset_id]

    @property
    def split_description(self) -> str:
        """E.g. `generated (split seed 42)` or `official`."""
        return f"generated (split seed {self.split_seed})" if self.split_source == "generated" else self.split_source


def run_facts(run: RunInfo, ours: Mapping[str, Any]) -> dict[str, Any]:
    """The `run` block of metrics/vs_paper.json: what the numbers beside the paper's were measured on."""
    return {
        "dataset": run.dataset,
        "comparable_with_paper": not run.synthetic_sample,
        "valid_pairs": run.valid_pairs,
        "test_pairs": ours["n_test_pairs"],
        "splits": ours["n_splits"],
        "split_source": run.split_source,
        "split_seed": run.split_seed,
        "seed": run.seed,
        "method": run.method,
        "modalities": run.modalities,
        "invalid_rate": ours["multimodal"]["invalid_rate"],
    }


SAMPLE_KEY = "synthetic_sample"
"""metrics/vs_paper.json's name for our figure when the run was on the synthetic sample (`vs_paper_json`)."""


def vs_paper_json(ours: Mapping[str, Any], paper: Mapping[str, Any], run: RunInfo) -> dict[str, Any]:
    """metrics/vs_paper.json: the run's facts, then ours and the paper's per metric, with `delta` (ours -
    paper) only on MVSA-Single: a difference between the synthetic sample and the paper means nothing.
    On the sample our figure is named `synthetic_sample`, not `ours`, so that `dvc metrics show`'s column
    headers say, beside the paper's, what was measured."""
    compared = versus_paper(ours, paper)
    if run.synthetic_sample:
        compared = {task: {m: {SAMPLE_KEY: d["ours"], "paper": d["paper"]} for m, d in metrics.items()}
                    for task, metrics in compared.items()}
    return {"run": run_facts(run, ours), **compared}


def _table(header: Sequence[str], rows: Sequence[Sequence[object]]) -> list[str]:
    """Markdown table lines."""
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return lines


def with_interval(block: Mapping[str, Any], metric: str) -> str:
    """`mean [low, high]` of one metric of a scores block: the 95 % bootstrap interval, one decimal."""
    return f"{block[metric]:.1f} [{block[f'{metric}_ci_low']:.1f}, {block[f'{metric}_ci_high']:.1f}]"


def _published_part(paper: Paper, protocol: str, ours: Mapping[str, Any], run: RunInfo) -> tuple[str, list[str]]:
    """The report's heading and its part on the published table of the run's protocol and dataset.

    On real data our row joins the table, with its difference from `Paper.reference_row` (the paper's
    LLaVAC, or on MVSA-Multiple the strongest published result); on the synthetic sample our row stays
    out of the table and no difference is printed; with no published row, the report says so.
    """
    name = DATASET_NAMES[run.dataset_id]
    rows = paper.rows_for(protocol, run.dataset_id)
    if not rows:
        return (f"# Results: {name}, protocol `{protocol}`",
                [f"No published result on {name} under protocol `{protocol}` in reference/paper.yaml: nothing to compare with."])
    reference = paper.reference_row(protocol, run.dataset_id)
    own_table = reference.llavac and run.dataset_id == PAPER_DATASET
    heading = (f"# Results: protocol `{protocol}` (Table {reference.table} of the paper)" if own_table
               else f"# Results: {name}, protocol `{protocol}`")
    header = ["model", "source", "accuracy", "weighted F1"]
    paper_rows = [
        [f"{r.model} (paper)" if r.llavac else r.model, r.citation] + [f"{r.scores['multimodal'][m]:.2f}" for m in PAPER_METRICS]
        for r in rows
    ]
    if run.synthetic_sample:
        return heading, [
            f"## The published table ({name}), multimodal label, in %", "", *_table(header, paper_rows), "",
            "Our run is on the synthetic sample: it is not in this table and has no difference from it.",
        ]
    mm, published = ours["multimodal"], reference.scores["multimodal"]
    our_row = [f"LLaVAC (ours, `{run.model}`)", "this run"] + [with_interval(mm, m) for m in PAPER_METRICS]
    deltas = ", ".join(f"{m.replace('_f1', ' F1')} {mm[m] - published[m]:+.2f}" for m in PAPER_METRICS)
    against = ("the paper's LLaVAC" if own_table
               else f"the strongest published result, {reference.model} ({reference.citation})")
    return heading, [
        "## Multimodal label, in %", "", *_table(header, [*paper_rows, our_row]), "",
        f"Ours minus {against}: {deltas} (the published results give no interval).",
    ]


def results_markdown(paper: Paper, protocol: str, ours: Mapping[str, Any], run: RunInfo) -> str:
    """reports/results.md: what our run was, the published table of its protocol and dataset, and our numbers."""
    pairs = f"{ours['n_test_pairs']} test pairs over {ours['n_splits']} split(s)"
    if run.valid_pairs is not None:
        pairs = f"{run.valid_pairs} valid pairs after preprocessing; " + pairs
    if run.synthetic_sample:
        data_line = (
            f"Data: **synthetic sample** (`{run.raw_dir}`, embedded in this repository), {pairs}. It is a wiring "
            "check of the pipeline, not a reproduction: its numbers cannot be compared with published ones."
        )
    else:
        data_line = f"Data: **{run.dataset}** (`{run.raw_dir}`, real data supplied by the researcher), {pairs}."
    label_rows = [
        [task, *(with_interval(ours[task], m) for m in PAPER_METRICS),
         *(f"{ours[task][f'{m}_std']:.2f}" for m in PAPER_METRICS), f"{ours[task]['macro_f1']:.2f}",
         f"{ours[task]['invalid_rate']:.2f}"]
        for task in TASKS
    ]
    heading, published_part = _published_part(paper, protocol, ours, run)
    lines = [
        heading,
        "",
        data_line,
        "",
        f"Model: `{run.model}`, seed {run.seed}, "
        + ("fine-tuned (LoRA)" if run.method == "lora" else "not fine-tuned (`train.method: none`, zero-shot)")
        + f", modalities `{run.modalities}`. Splits: {run.split_description}.",
        "",
        *published_part,
        "",
        f"## All three labels of our run ({run.dataset}), in %",
        "",
        *_table(["label", "accuracy [95 % CI]", "weighted F1 [95 % CI]", "accuracy std over splits",
                 "weighted F1 std over splits", "macro F1", "invalid answers"], label_rows),
        "",
        "Each score is the mean over splits. [low, high] is a 95 % bootstrap interval (test pairs resampled within "
        f"each split, {N_RESAMPLES:,} resamples); the std is the population standard deviation of the per-split scores. "
        "Invalid answers are generations whose labels could not be parsed; they are scored as wrong.",
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
    """Tag `paper_tag(protocol, dataset)` on a commit whose `scores_path` holds the reference numbers of
    every (dataset, protocol) of the paper (only `protocols`, if given); return the tags.

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
    for dataset, protocol in paper.tables:
        if protocols and protocol not in protocols:
            continue
        content = json_text(paper_scores(paper, protocol, dataset))
        blob = _git(repo, "hash-object", "-w", "--stdin", stdin=content)
        with tempfile.TemporaryDirectory() as tmp:
            index = {"GIT_INDEX_FILE": str(Path(tmp) / "index")}
            _git(repo, "read-tree", head, env=index)
            _git(repo, "update-index", "--add", "--cacheinfo", f"100644,{blob},{scores_path}", env=index)
            tree = _git(repo, "write-tree", env=index)
        row, tag = paper.reference_row(protocol, dataset), paper_tag(protocol, dataset)
        what = (f"LLaVAC in Table {row.table} of {paper.source}" if row.llavac and dataset == PAPER_DATASET
                else f"the strongest published result on {DATASET_NAMES[dataset]}, {row.model} ({row.citation})")
        message = (
            f"Paper numbers for protocol {protocol}: {what}\n\n"
            f"{scores_path} holds the published scores; compare with `dvc metrics diff {tag}`.\n"
        )
        commit = _git(repo, "commit-tree", tree, "-p", head, stdin=message, env=identity)
        previous = _tagged_commit(repo, tag)
        if previous and previous != commit:
            LOG.info("%s: moved from %s to %s (a child of HEAD)", tag, previous[:12], commit[:12])
        _git(repo, "tag", "-f", tag, commit)
        tags.append(tag)
    return tags


def _tagged_commit(repo: Path, tag: str) -> str | None:
    """The commit tag `tag` points at, or None when there is no such tag; ValueError when the tag exists
    but `make_paper_tags` did not make it (its commit has another author): a user's own tag is never moved."""
    found = subprocess.run(["git", "rev-parse", "--verify", "--quiet", f"refs/tags/{tag}^{{commit}}"], cwd=repo,
                           capture_output=True, text=True)
    if found.returncode != 0:
        return None
    commit = found.stdout.strip()
    author = _git(repo, "show", "-s", "--format=%an <%ae>", commit)
    if author != f"{TAG_NAME} <{TAG_EMAIL}>":
        raise ValueError(f"the tag {tag} exists and was not made by `llavac paper-tags` (its commit {commit[:12]} is by "
                         f"{author}): rename it (`git tag -m ... NEW {tag} && git tag -d {tag}`) and run `make paper-tags`")
    return commit
