"""`llavac compare`: the workspace and every DVC experiment, one short row each; seeds grouped; two runs paired.

`dvc exp show` and `dvc metrics diff` print every metric of every file (hundreds of columns); a
researcher comparing runs wants a handful: what differs between the runs, what data they ran on,
the multimodal accuracy and weighted F1 with their 95 % intervals, the two unimodal accuracies,
and the paper's numbers where the data is MVSA-Single (never beside the synthetic sample).

`--paired A B` reads both runs' per-pair predictions (`artifacts/predictions`, a DVC output that
every experiment commits to the DVC cache) through `dvc.api.DVCFileSystem` at the run's revision,
and compares them on the same test pairs (`statistics`).
"""

from __future__ import annotations

import subprocess
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np
import pandas as pd
import yaml

from llavac.data.mvsa import DATASET_NAMES
from llavac.labels import TASKS
from llavac.metrics import read_split
from llavac.statistics import METRICS, label_codes, mcnemar_exact, paired_difference_interval

SETTINGS = ("dataset", "protocol", "model", "train.method", "prompt.modalities", "seed", "splits.source", "train.backend",
            "predict.mode")
"""Params that tell runs apart; a column is shown only where the runs differ, the rest in one line below."""
SETTING_HEADERS = {"splits.source": "splits"}

COLUMNS = (
    ("mm acc", "multimodal", "accuracy", "multimodal.accuracy.paper"),
    ("mm wF1", "multimodal", "weighted_f1", "multimodal.weighted_f1.paper"),
    ("text acc", "text", "accuracy", None),
    ("image acc", "image", "accuracy", None),
)
"""(header, label, metric, key of the paper's number in metrics/vs_paper.json or None)."""

SCORES_FILE = "metrics/scores.json"
PREDICTIONS = "artifacts/predictions"
WORKSPACE = "workspace"

PAIR_PARAMS = ("protocol", "data.raw_dir", "splits.source", "splits.dir", "splits.seed", "sample")
"""Params that choose the test pairs: named when two runs' pairs differ."""


def metric(row: Mapping[str, Any], key: str) -> Any:
    """`row[key]` of `dvc.api.exp_show()`, also where DVC prefixed the key with metrics/scores.json because
    another metrics file (metrics/paper.json) has the same one."""
    return row.get(key, row.get(f"{SCORES_FILE}:{key}"))


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def interval_cell(row: Mapping[str, Any], label: str, name: str) -> str:
    """`81.8 [78.0, 85.6]`: the mean over splits and its 95 % bootstrap interval; `81.8` for older runs without one."""
    value = metric(row, f"{label}.{name}")
    if not _number(value):
        return "-"
    low, high = metric(row, f"{label}.{name}_ci_low"), metric(row, f"{label}.{name}_ci_high")
    return f"{value:.1f} [{low:.1f}, {high:.1f}]" if _number(low) and _number(high) else f"{value:.1f}"


def data_cell(row: Mapping[str, Any]) -> str:
    """`sample 390/10` or `MVSA-Single 4511/10`: the dataset, its test pairs and splits (metrics/vs_paper.json)."""
    dataset, pairs, splits = row.get("run.dataset"), row.get("run.test_pairs"), row.get("run.splits")
    if dataset not in ("synthetic sample", *DATASET_NAMES.values()) or not (_number(pairs) and _number(splits)):
        return "-"
    return f"{'sample' if dataset == 'synthetic sample' else dataset} {pairs:.0f}/{splits:.0f}"


def paper_cell(row: Mapping[str, Any], key: str | None) -> str:
    """The paper's number, only for a run on MVSA-Single: a synthetic run's numbers are not comparable."""
    value = row.get(key) if key else None
    comparable = row.get("run.comparable_with_paper") in (True, "True")  # exp_show gives booleans as strings
    return f"{value:.2f}" if _number(value) and comparable else "n/a"


def run_name(row: Mapping[str, Any]) -> str:
    """The experiment's name, `workspace`, or a commit's short rev."""
    rev = str(row.get("rev", "?"))
    return row.get("Experiment") or (rev[:7] if len(rev) == 40 else rev)


def _setting(row: Mapping[str, Any], key: str) -> str:
    """A param as text: `42` (DVC hands numbers over as floats), `-` where the run has none."""
    value = row.get(key)
    if value is None or value == "None":  # exp_show writes a missing value as the string 'None'
        return "-"
    return f"{value:.0f}" if isinstance(value, float) and value.is_integer() else str(value)


def finished(row: Mapping[str, Any]) -> bool:
    """Whether the run's metrics are its own: not a queued, running or failed experiment (those show the
    workspace's metrics until they finish)."""
    return row.get("State") in (None, "Success", "None")


def seed_groups(experiments: Sequence[Mapping[str, Any]], param_keys: Iterable[str]) -> list[list[Mapping[str, Any]]]:
    """Named experiments that differ only in `seed` (all other params equal), two or more per group."""
    others = [key for key in param_keys if key != "seed"]
    groups: dict[tuple[str, ...], list[Mapping[str, Any]]] = {}
    for row in experiments:
        if row.get("Experiment") and finished(row) and _number(metric(row, "multimodal.accuracy")):
            groups.setdefault(tuple(repr(row.get(key)) for key in others), []).append(row)
    return [sorted(rows, key=lambda row: float(row.get("seed") or 0)) for rows in groups.values()
            if len({row.get("seed") for row in rows}) > 1]


def seed_cell(rows: Sequence[Mapping[str, Any]], label: str, name: str) -> str:
    """`80.9 ± 1.2`: mean and sample standard deviation (n - 1) over the seeds' runs."""
    values = [metric(row, f"{label}.{name}") for row in rows]
    values = [v for v in values if _number(v)]
    return f"{np.mean(values):.1f} ± {np.std(values, ddof=1):.1f}" if len(values) > 1 else "-"


def comparison_rows(
    experiments: Sequence[Mapping[str, Any]], param_keys: Iterable[str] = SETTINGS
) -> tuple[list[list[str]], list[str]]:
    """(table, notes) for `dvc.api.exp_show()`'s rows: header, one row per run, then one per group of seeds.

    A setting column appears only where the finished runs differ, the paper's columns only when a run
    is on MVSA-Single; what is left out is said in the notes.
    """
    done = [row for row in experiments if finished(row)]
    varying = [key for key in SETTINGS if len({_setting(row, key) for row in done}) > 1]
    shared = [f"{key} {_setting(done[0], key)}" for key in SETTINGS if key not in varying] if done else []
    with_paper = any(paper_cell(row, COLUMNS[0][3]) != "n/a" for row in done)

    def score_cells(value: Callable[[str, str], str], paper_row: Mapping[str, Any]) -> list[str]:
        cells = []
        for _, label, name, paper in COLUMNS:
            cells += [value(label, name), paper_cell(paper_row, paper)] if paper and with_paper else [value(label, name)]
        return cells

    header = ["experiment", *(SETTING_HEADERS.get(key, key.split(".")[-1]) for key in varying), "data"]
    for name, _, _, paper in COLUMNS:
        header += [name, "paper"] if paper and with_paper else [name]
    header.append("invalid %")
    rows = [header]
    for row in experiments:
        if not finished(row):
            rows.append([f"{run_name(row)} ({str(row.get('State')).lower()})", *[""] * (len(header) - 1)])
            continue
        invalid = metric(row, "multimodal.invalid_rate")
        rows.append([run_name(row), *(_setting(row, key) for key in varying), data_cell(row),
                     *score_cells(lambda label, name, row=row: interval_cell(row, label, name), row),
                     f"{invalid:.1f}" if _number(invalid) else "-"])
    for group in seed_groups(done, param_keys):
        seeds = ",".join(_setting(row, "seed") for row in group)
        rows.append([f"mean of {len(group)} seeds", *(seeds if key == "seed" else _setting(group[0], key) for key in varying),
                     data_cell(group[0]), *score_cells(lambda label, name, group=group: seed_cell(group, label, name), group[0]),
                     ""])
    notes = [
        f"All runs: {', '.join(shared)}." if shared else "",
        "Scores in %, mean over splits [95 % bootstrap interval: test pairs resampled within each split]. "
        "data: dataset test-pairs/splits. 'mean of N seeds': mean ± std (n - 1) over runs that differ only in seed.",
        "paper: the paper's LLaVAC on MVSA-Single; n/a beside the synthetic sample, which is not comparable."
        if with_paper else "No run is on MVSA-Single, so the paper's numbers are left out: the synthetic sample is not "
        "comparable with them.",
    ]
    return rows, [note for note in notes if note]


def render(rows: list[list[str]]) -> str:
    """Rows as a plain aligned table."""
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip() for row in rows)


def flat_params(tree: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """params.yaml as DVC names its keys: `train.method`, `models.tiny.recipe.lora_r`."""
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        flat.update(flat_params(value, name + ".") if isinstance(value, Mapping) else {name: value})
    return flat


def compare_experiments(repo: Path = Path("."), num: int = 1) -> str:
    """The table for the repository at `repo`: the workspace, the last `num` commits and their experiments
    (as `dvc exp show -n num`), with its notes."""
    import dvc.api

    params = flat_params(yaml.safe_load((repo / "params.yaml").read_text(encoding="utf-8")))
    # HEAD named by its sha: in a git worktree DVC can otherwise take another worktree's branch for HEAD
    shown = dvc.api.exp_show(repo=str(repo), revs=_git(repo, "rev-parse", "HEAD").stdout.strip(), num=num)
    baselines = [row for row in shown if row.get("typ") == "baseline" and row.get("rev") != WORKSPACE]
    older = {id(row) for row in baselines[1:]}  # older commits are history: only their experiments are runs to compare
    rows, notes = comparison_rows([row for row in shown if id(row) not in older], params)
    return render(rows) + "\n\n" + "\n".join(notes)


@dataclass(frozen=True)
class Run:
    """One run's params and test predictions, as its revision holds them."""

    name: str
    params: dict[str, Any]
    splits: dict[int, pd.DataFrame]


def _git(repo: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """One git command in `repo`; the caller reads its stdout and return code."""
    return subprocess.run(["git", *args], cwd=repo, capture_output=True, text=True)


def resolve_revision(name: str, repo: Path) -> str | None:
    """The git revision of `name`: an experiment's name as `dvc exp show` lists it (on any baseline commit),
    a commit-ish, or `workspace` (None: the working tree)."""
    if name == WORKSPACE:
        return None
    refs = _git(repo, "for-each-ref", "--format=%(objectname) %(refname)", "refs/exps").stdout.split("\n")
    experiments = {line.split()[1].rsplit("/", 1)[1]: [] for line in refs if line.strip()}
    for line in filter(str.strip, refs):
        sha, ref = line.split()
        experiments[ref.rsplit("/", 1)[1]].append(sha)
    if len(experiments.get(name, [])) > 1:
        raise ValueError(f"{name!r} names {len(experiments[name])} experiments (on different commits): give one's commit")
    if name in experiments:
        return experiments[name][0]
    found = _git(repo, "rev-parse", "--verify", "--quiet", f"{name}^{{commit}}")
    if found.returncode:
        raise ValueError(f"{name!r} is not `workspace`, an experiment (`dvc exp show -A` lists them) or a commit")
    return found.stdout.strip()


def read_run(name: str, rev: str | None, repo: Path) -> Run:
    """Params and test predictions of revision `rev` (None: the workspace), read through DVC.

    The predictions are a DVC-cached output, so an experiment's are in the local cache once it ran
    here (or after `dvc exp pull`); a clear error says so when they are not.
    """
    from dvc.api import DVCFileSystem
    from dvc_data.index.index import DataIndexError

    fs = DVCFileSystem(str(repo), rev=rev)
    with fs.open("params.yaml", mode="r", encoding="utf-8") as f:
        params = flat_params(yaml.safe_load(f))
    try:
        files = [PurePosixPath(p) for p in fs.ls(PREDICTIONS, detail=False)]
        splits = {}
        for path in files:
            if path.suffix == ".jsonl" and path.stem.isdigit():
                with fs.open(str(path), mode="r", encoding="utf-8") as f:
                    splits[int(path.stem)] = read_split(f, f"{name}:{path}")
    except (FileNotFoundError, DataIndexError) as error:  # DVC's index error: the folder's listing is not cached
        raise FileNotFoundError(
            f"{name}: its test predictions ({PREDICTIONS}) are not in the DVC cache ({error}); fetch them with "
            f"`dvc fetch --all-commits` (a commit) or `dvc exp pull <git remote> {name}` "
            "(an experiment), or run it here"
        ) from error
    if not splits:
        raise FileNotFoundError(f"{name}: no <split>.jsonl under {PREDICTIONS}; run `dvc repro predict`")
    return Run(name, params, dict(sorted(splits.items())))


def pairs_differ(a: Run, b: Run) -> str | None:
    """Why `a` and `b` were not scored on the same test pairs (ids and gold labels per split), or None."""
    problems = []
    if set(a.splits) != set(b.splits):
        problems.append(f"{a.name} has splits {sorted(a.splits)}, {b.name} has {sorted(b.splits)}")
    for k in sorted(set(a.splits) & set(b.splits)):
        gold = [f"{task}_label" for task in TASKS]
        left, right = (run.splits[k].set_index("id")[gold] for run in (a, b))
        only_a, only_b = left.index.difference(right.index), right.index.difference(left.index)
        if len(only_a) or len(only_b):
            problems.append(f"split {k}: {len(only_a)} test pairs only in {a.name}, {len(only_b)} only in {b.name}")
            continue
        relabelled = int((left != right.loc[left.index]).any(axis=1).sum())
        if relabelled:
            problems.append(f"split {k}: {relabelled} test pairs with other gold labels")
    if not problems:
        return None
    differing = [f"{key} ({a.params.get(key)!r} vs {b.params.get(key)!r})" for key in sorted(set(a.params) | set(b.params))
                 if key.startswith(PAIR_PARAMS) and a.params.get(key) != b.params.get(key)]
    cause = f"; the runs differ in {', '.join(differing)}" if differing else "; the data itself differs"
    return "; ".join(problems[:3]) + (f" (and {len(problems) - 3} more)" if len(problems) > 3 else "") + cause


def paired_rows(a: Run, b: Run) -> tuple[list[list[str]], dict[str, Any]]:
    """Differences A - B per label and metric with paired-bootstrap intervals, and McNemar's exact test
    on the multimodal label's right/wrong answers, pooled over splits. `a` and `b` on the same pairs."""
    aligned = {k: (a.splits[k].set_index("id"), b.splits[k].set_index("id").loc[a.splits[k]["id"]]) for k in a.splits}
    rows = [["label", "metric", a.name, b.name, "A - B [95 % CI]"]]
    for task in TASKS:
        columns = [(label_codes(x[f"{task}_label"]), label_codes(x[f"pred_{task}"]), label_codes(y[f"pred_{task}"]))
                   for x, y in aligned.values()]
        for name, function in METRICS.items():
            mean_a = float(np.mean([function(gold, pa) for gold, pa, _ in columns]))
            mean_b = float(np.mean([function(gold, pb) for gold, _, pb in columns]))
            low, high = paired_difference_interval(columns, function)
            rows.append([task, name, f"{mean_a:.1f}", f"{mean_b:.1f}", f"{mean_a - mean_b:+.1f} [{low:+.1f}, {high:+.1f}]"])
    right_a, right_b = [], []
    for x, y in aligned.values():
        truth = label_codes(x["multimodal_label"])
        right_a.append(label_codes(x["pred_multimodal"]) == truth)
        right_b.append(label_codes(y["pred_multimodal"]) == truth)
    return rows, mcnemar_exact(np.concatenate(right_a), np.concatenate(right_b))


def compare_paired(name_a: str, name_b: str, repo: Path = Path(".")) -> str:
    """`llavac compare --paired A B`: the two runs on the same test pairs, or a ValueError saying why not."""
    a, b = (read_run(name, resolve_revision(name, repo), repo) for name in (name_a, name_b))
    reason = pairs_differ(a, b)
    if reason:
        raise ValueError(f"{a.name} and {b.name} were not tested on the same pairs, so they cannot be paired: {reason}")
    rows, test = paired_rows(a, b)
    n_pairs = sum(len(frame) for frame in a.splits.values())
    differing = [f"{key} {a.params.get(key)!r} vs {b.params.get(key)!r}" for key in sorted(set(a.params) | set(b.params))
                 if a.params.get(key) != b.params.get(key)]
    return "\n".join([
        f"A = {a.name}, B = {b.name}: the same {n_pairs} test pairs in {len(a.splits)} split(s); "
        f"they differ in {', '.join(differing) or 'no param'}.",
        "",
        render(rows),
        "",
        "Scores in %, mean over splits; A - B with its 95 % paired-bootstrap interval (the same test pairs resampled "
        "for both, within each split).",
        f"McNemar's exact test, multimodal label: {test['a_right_b_wrong']} pairs right in A only, "
        f"{test['a_wrong_b_right']} right in B only; p = {test['p_value']:.3g}.",
    ])
