"""`llavac`: the commands a researcher runs outside the DVC pipeline.

    llavac fetch-splits [cheema|random|zhang] [--dataset mvsa-single|mvsa-multiple] [--dest data/splits]
    llavac classify [--adapter artifacts/adapters/1] INPUT [--out predictions.jsonl] [--min-confidence 0.8]
    llavac classify INPUT --spark MASTER [--out predictions.parquet] [--conf KEY=VALUE ...]
    llavac classify --image tweet.jpg --text "what a day" [--adapter ...]
    llavac compare [--num N] [--paired A B]
    llavac paper-tags
    llavac import-llava LLAVA_CHECKPOINT OUT [--base LLAVA_HF_BASE]
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import get_args

from llavac.params import Dataset, Precision, PredictMode, Protocol

PROTOCOLS = get_args(Protocol)
DATASETS = get_args(Dataset)


class HelpWithDefaults(argparse.ArgumentDefaultsHelpFormatter):
    """Shows an option's default unless it has none."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        return action.help if action.default is None else super()._get_help_string(action)


def import_llava(source: Path, out: Path, base: str | None) -> str:
    """Bring a LLaVA-repository checkpoint into this project's formats; say what was written.

    A LoRA run (`adapter_config.json` + `non_lora_trainables.bin`) becomes an adapter on the llava-hf
    `base` (what `classify` and `predict` take), with ``<image>`` at the front of the prompt, where LLaVA's
    training always moves it; a full (merged) LLaVA model becomes a llava-hf model
    folder (what `models.<m>.pretrained` takes).
    """
    if (source / "adapter_config.json").is_file():
        from llavac.llava_repo import import_llava_lora

        if base is None:
            raise ValueError("a LoRA checkpoint needs --base: the llava-hf model it was trained on (e.g. llava-hf/llava-1.5-7b-hf)")
        import_llava_lora(source, base, out, "front", {"source": str(source)})
        return f"adapter on {base}"
    from llavac.model.llava_format import convert_llava_model

    if not (source / "config.json").is_file():
        raise FileNotFoundError(f"{source} holds no LLaVA checkpoint: give a folder with config.json (a model) or adapter_config.json (a LoRA run)")
    convert_llava_model(source, out)
    return "llava-hf model"


def probability(text: str) -> float:
    """An argparse type: a number in [0, 1]."""
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"{text!r} is not a probability between 0 and 1")
    return value


def main(argv: list[str] | None = None, spark_submit: bool = False) -> None:
    """The `llavac` command; with `spark_submit`, `classify` runs on the Spark master `spark-submit` set."""
    defaults = HelpWithDefaults
    parser = argparse.ArgumentParser(prog="llavac", description="LLaVAC: LLaVA-1.5 + LoRA multimodal sentiment")
    commands = parser.add_subparsers(dest="command", required=True)
    fetch = commands.add_parser("fetch-splits", formatter_class=defaults,
                                help="download the official split files and verify their SHA-256")
    fetch.add_argument("protocol", nargs="?", choices=PROTOCOLS, help="one protocol (default: all the dataset's)")
    fetch.add_argument("--dataset", choices=DATASETS, default=DATASETS[0], help="whose split files")
    fetch.add_argument("--dest", type=Path, default=None,
                       help="folder for <protocol>/ subfolders (default: data/splits for mvsa-single, "
                            "data/splits-mvsa-multiple for mvsa-multiple)")
    run = commands.add_parser("classify", formatter_class=defaults,
                              help="label new (image, text) pairs with a trained adapter",
                              description="Label (image, text) pairs: a file or folder of pairs, or one pair with --image "
                                          "and --text; in this process, or on a Spark cluster with --spark (docs/classify.md).")
    add_classify_arguments(run)
    compare = commands.add_parser("compare", help="the workspace and each DVC experiment, one row each, with 95 %% intervals")
    compare.add_argument("--paired", nargs=2, metavar=("A", "B"),
                         help="compare two runs on the same test pairs (names as `dvc exp show` gives them, a commit, "
                              "or `workspace`): A - B per label with paired-bootstrap intervals, McNemar's exact test")
    compare.add_argument("--num", type=positive, default=1,
                         help="list the experiments of the last N commits, as `dvc exp show -n N`")
    commands.add_parser("paper-tags", help="tag paper-<protocol> commits holding the paper's numbers")
    commands.add_parser("plots-template", help="write .dvc/offline-plots.html: `dvc plots show` pages that draw offline")
    port = commands.add_parser("import-llava", help="convert a LLaVA-repository LoRA run or model into this project's format")
    port.add_argument("source", type=Path, help="LLaVA's output folder (LoRA: adapter_config.json + non_lora_trainables.bin) or a LLaVA model folder")
    port.add_argument("out", type=Path)
    port.add_argument("--base", help="for a LoRA: the llava-hf conversion of the model it was trained on (hub id or folder)")
    args = parser.parse_args(argv)
    if args.command == "classify" and (args.input is None) == (args.image is None or args.text is None):
        parser.error("classify takes INPUT, or --image and --text (not both)")
    if args.command == "classify" and args.conf and args.spark is None and not spark_submit:
        parser.error("--conf sets Spark options: give it with --spark MASTER")
    if args.command == "fetch-splits":
        from llavac.data.fetch import DEFAULT_DEST

        args.dest = args.dest or Path(DEFAULT_DEST[args.dataset])
        if args.dest.exists() and not args.dest.is_dir():
            parser.error(f"--dest {args.dest} is a file; give a folder")
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        if args.command == "fetch-splits":
            from llavac.data.fetch import fetch_splits

            for path in fetch_splits(args.protocol, args.dest, dataset=args.dataset):
                print(path)
        elif args.command == "classify":
            run_classify(args, spark_submit)
        elif args.command == "compare":
            from llavac.experiments import compare_experiments, compare_paired

            print(compare_paired(*args.paired) if args.paired else compare_experiments(num=args.num))
        elif args.command == "plots-template":
            from llavac.offline_plots import write_offline_template

            print(write_offline_template(Path.cwd() / ".dvc"))
        elif args.command == "import-llava":
            print(f"{import_llava(args.source, args.out, args.base)} -> {args.out}")
        else:
            from llavac.paper import load_paper, make_paper_tags

            for tag in make_paper_tags(Path.cwd(), load_paper(Path("reference/paper.yaml"))):
                print(tag)
    except (ValueError, OSError, RuntimeError) as error:  # FetchError is a RuntimeError; InputError a ValueError
        sys.exit(f"error: {error}")


def add_classify_arguments(run: argparse.ArgumentParser) -> None:
    """The arguments of `llavac classify` (and of its `spark-submit` entry point)."""
    from llavac.classify_spark import ROWS_PER_TASK

    run.add_argument("input", type=Path, nargs="?",
                     help="a folder of <name>.jpg + <name>.txt, an MVSA-layout folder (labelResultAll.txt + data/), or a "
                          ".csv/.jsonl/.json/.parquet file (or Parquet folder) with image,text[,id] (image paths relative to "
                          "the file's folder, or absolute)")
    run.add_argument("--image", type=Path, help="one image to classify (with --text, instead of INPUT)")
    run.add_argument("--text", help="the text that goes with --image")
    run.add_argument("--adapter", type=Path, default=None,
                     help="a trained adapter folder (default: artifacts/adapters/1 of this checkout, from any folder)")
    run.add_argument("--out", type=Path, default=None,
                     help="one JSON line per input pair: row, id, image, text, the labels (or an error) "
                          "(default predictions.jsonl); with --spark a Parquet folder (default predictions.parquet)")
    run.add_argument("--batch-size", type=positive, default=32, help="pairs per forward pass")
    run.add_argument("--max-new-tokens", type=positive, default=16, help="generation budget per answer")
    run.add_argument("--precision", choices=get_args(Precision), default=None,
                     help="compute precision (default: fp16 on a GPU, as LLaVA evaluates; fp32 on a CPU)")
    run.add_argument("--mode", choices=get_args(PredictMode), default="score",
                     help="score (default): the most probable of the 27 valid answers, never unreadable; "
                          "generate: the free greedy answer, parsed, as in the paper's evaluation")
    run.add_argument("--min-confidence", type=probability, default=0.0, metavar="P",
                     help="withhold (write null for) each label whose probability is below P, and list it under "
                          "`abstained` (default 0: always answer). The probabilities are the model's own, "
                          "not temperature-calibrated")
    run.add_argument("--spark", metavar="MASTER",
                     help="run on Spark: local[N], spark://HOST:PORT, yarn, ...; resumable (a rerun skips the rows "
                          "already in --out)")
    run.add_argument("--conf", metavar="KEY=VALUE", action="append", type=spark_conf, default=[],
                     help="a Spark option for --spark (repeatable), e.g. spark.task.resource.gpu.amount=1")
    run.add_argument("--rows-per-task", type=positive, default=ROWS_PER_TASK,
                     help="with --spark: rows per Spark task, the unit of progress and of what a killed job loses")


def run_classify(args: argparse.Namespace, spark_submit: bool) -> None:
    """`llavac classify` with parsed arguments: read the pairs, classify them, print the summary line."""
    from llavac.classify import ClassifySettings, classify_to_jsonl, default_adapter, report
    from llavac.new_pairs import one_pair, read_pairs

    settings = ClassifySettings(args.adapter or default_adapter(), args.batch_size, args.max_new_tokens, args.precision,
                                args.mode, args.min_confidence)
    pairs = read_pairs(args.input) if args.input else one_pair(args.image, args.text)
    if args.spark is None and not spark_submit:
        out = args.out or Path("predictions.jsonl")
        result = classify_to_jsonl(settings, pairs, out)
    else:
        from llavac.classify_spark import run

        out = args.out or Path("predictions.parquet")
        result = run(args.spark, settings, args.input or args.image, pairs, out, dict(args.conf), args.rows_per_task)
    print(report(result, out))


def spark_conf(text: str) -> tuple[str, str]:
    """argparse type: ``KEY=VALUE`` as a pair."""
    key, equals, value = text.partition("=")
    if not equals or not key.strip():
        raise argparse.ArgumentTypeError(f"{text!r} is not KEY=VALUE (e.g. spark.executor.memory=8g)")
    return key.strip(), value


def positive(value: str) -> int:
    """argparse type: an integer of at least 1."""
    if not value.isdigit() or int(value) < 1:
        raise argparse.ArgumentTypeError(f"{value!r} is not a positive integer")
    return int(value)


if __name__ == "__main__":
    main()
