"""Stage `compare`: our scores against the paper's tables for the active dataset and protocol.

    python stages/compare.py metrics/scores.json reference/paper.yaml metrics/paper.json \
        metrics/vs_paper.json reports/results.md metrics/data.json

Writes the paper's LLaVAC numbers in the schema of scores.json, ours minus the paper's, and a
Markdown report, each saying what the run was: dataset, pairs, split source and seed, number of
splits, invalid answers. Whether the data is the synthetic sample comes from the data itself, through
metrics/data.json; on it no difference from the paper is written. Where reference/paper.yaml has no
row for the dataset and protocol, paper.json holds nothing, vs_paper.json only the run's facts, and the
report says so. Reads params `dataset`, `protocol`, `model`, `data.raw_dir`, `seed`, `splits.source`,
`splits.seed`, `train.method` and `prompt.modalities` (named in the report).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from common import load_params, run, stage_logger  # first: it checks the interpreter
import yaml

from llavac.files import write_json, write_text
from llavac.paper import SAMPLE_KEY, RunInfo, load_paper, paper_scores, results_markdown, vs_paper_json


def data_facts(data_json: Path) -> tuple[int, bool]:
    """`valid_pairs` and `synthetic_sample` of the preprocess stage's metrics/data.json."""
    if not data_json.exists():
        sys.exit(f"error: {data_json} not found: run `dvc repro preprocess` first")
    data = json.loads(data_json.read_text(encoding="utf-8"))
    missing = [key for key in ("valid_pairs", "synthetic_sample") if key not in data]
    if missing:
        sys.exit(f"error: {data_json} lacks {missing}; re-run `dvc repro preprocess`")
    return int(data["valid_pairs"]), bool(data["synthetic_sample"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("scores", type=Path, help="metrics/scores.json of the score stage")
    parser.add_argument("paper", type=Path, help="reference/paper.yaml, the published tables")
    parser.add_argument("paper_json", type=Path, help="the paper's numbers in our schema (written)")
    parser.add_argument("vs_paper", type=Path, help="ours, paper and delta per metric (written)")
    parser.add_argument("report", type=Path, help="Markdown results table (written)")
    parser.add_argument("data_json", type=Path, help="preprocess counts: valid pairs, whether the data is synthetic")
    args = parser.parse_args()
    log = stage_logger("compare")
    params = load_params()

    if not args.scores.exists():
        sys.exit(f"error: {args.scores} not found: run `dvc repro score` first")
    ours = json.loads(args.scores.read_text(encoding="utf-8"))
    try:
        paper = load_paper(args.paper)
    except (OSError, ValueError, yaml.YAMLError) as e:
        sys.exit(f"error: {e}")
    protocol, raw_dir = params.protocol, params.data.raw_dir
    if protocol not in paper.protocols:
        sys.exit(f"error: {args.paper} has no table for protocol {protocol!r}; it has: {', '.join(paper.protocols)}")
    valid_pairs, synthetic_sample = data_facts(args.data_json)
    run = RunInfo(model=params.model, raw_dir=raw_dir, synthetic_sample=synthetic_sample, valid_pairs=valid_pairs,
                  split_source=params.splits.source, split_seed=params.splits.seed, seed=params.seed,
                  method=params.train.method, modalities=params.prompt.modalities,
                  dataset_id=params.dataset)
    log.info(
        "loaded %s (%d split(s), %d test pairs) and %d published rows from %s; protocol %s, model %s, data %s (%s), "
        "splits %s",
        args.scores, ours["n_splits"], ours["n_test_pairs"], len(paper.rows), args.paper,
        protocol, run.model, raw_dir, run.dataset, run.split_description,
    )

    dataset = params.dataset
    published = paper_scores(paper, protocol, dataset) if paper.rows_for(protocol, dataset) else {}
    compared = vs_paper_json(ours, published, run)
    write_json(args.paper_json, published)
    write_json(args.vs_paper, compared)
    write_text(args.report, results_markdown(paper, protocol, ours, run))
    for metric, d in compared.get("multimodal", {}).items():
        if "delta" in d:
            log.info("multimodal %s: ours %.2f, published %.2f, delta %+.2f", metric, d["ours"], d["paper"], d["delta"])
        else:
            log.info("multimodal %s: published %.2f; the synthetic sample's %.2f is not comparable", metric, d["paper"],
                     d[SAMPLE_KEY])
    log.info("wrote %s, %s and %s", args.paper_json, args.vs_paper, args.report)


if __name__ == "__main__":
    run(main)
