"""`llavac`: the commands a researcher runs outside the DVC pipeline.

    llavac fetch-splits [cheema|random|zhang] [--dest data/splits]
    llavac classify [--adapter artifacts/adapters/1] INPUT [--out predictions.jsonl] [--min-confidence 0.8]
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
from typing import Any, get_args

from llavac.params import Precision, PredictMode, Protocol

PROTOCOLS = get_args(Protocol)


class HelpWithDefaults(argparse.ArgumentDefaultsHelpFormatter):
    """Shows an option's default unless it has none."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        return action.help if action.default is None else super()._get_help_string(action)


def classify(
    adapter: Path, pairs: tuple[list[dict[str, Any]], Path], out: Path, batch_size: int, max_new_tokens: int,
    precision: str | None, mode: str, min_confidence: float,
) -> tuple[int, int]:
    """Label every usable pair with a trained adapter; write one JSON line per input pair to `out`.

    Every pair is checked before the model loads; one that cannot be classified is written with its
    `error` instead of labels. The prompt's image position and the base model come from the adapter's
    card, so the inputs are built exactly as in training. The LoRA is merged as in LLaVA's
    evaluation; the precision is LLaVA's fp16 on a GPU and fp32 on a CPU unless `precision` says
    otherwise. Each line carries the label probabilities; a label whose probability is below
    `min_confidence` is withheld. Returns (classified, skipped).
    """
    from llavac.model.adapter_card import read_card
    from llavac.new_pairs import InputError, problem

    card = read_card(adapter)
    card.base_for(adapter)  # a missing base folder is reported before any work
    rows, image_folder = pairs
    if not rows:
        raise InputError("the input holds no pairs")
    problems = {row["row"]: problem(row, image_folder) for row in rows}
    for number, reason in problems.items():
        if reason:
            logging.warning("row %d skipped: %s", number, reason)
    usable = [row for row in rows if not problems[row["row"]]]
    if not usable:
        raise InputError(f"none of the {len(rows)} pairs can be classified (see the reasons above)")

    import torch

    from llavac.params import Evaluation
    from llavac.predict import abstain_below, load_classifier, predict_records, write_jsonl
    from llavac.prompt import question_record

    evaluation = Evaluation(precision or ("fp16" if torch.cuda.is_available() else "fp32"), merge_lora=True)
    records = [question_record(row["id"], row["image"], row["text"], card.image_position) for row in usable]
    model, inputs = load_classifier(adapter, evaluation)
    predicted = iter(predict_records(model, inputs, records, image_folder, batch_size, max_new_tokens, mode))
    labelled = (abstain_below(next(predicted), min_confidence) if not problems[row["row"]] else {"error": problems[row["row"]]}
                for row in rows)
    write_jsonl([{**row, **result} for row, result in zip(rows, labelled, strict=True)], out)
    return len(usable), len(rows) - len(usable)


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


def main(argv: list[str] | None = None) -> None:
    defaults = HelpWithDefaults
    parser = argparse.ArgumentParser(prog="llavac", description="LLaVAC: LLaVA-1.5 + LoRA multimodal sentiment")
    commands = parser.add_subparsers(dest="command", required=True)
    fetch = commands.add_parser("fetch-splits", formatter_class=defaults,
                                help="download the official split files and verify their SHA-256")
    fetch.add_argument("protocol", nargs="?", choices=PROTOCOLS, help="one protocol (default: all three)")
    fetch.add_argument("--dest", type=Path, default=Path("data/splits"), help="folder for <protocol>/ subfolders")
    run = commands.add_parser("classify", formatter_class=defaults,
                              help="label new (image, text) pairs with a trained adapter",
                              description="Label (image, text) pairs: a file or folder of pairs, or one pair with --image and --text.")
    run.add_argument("input", type=Path, nargs="?",
                     help="a folder of <name>.jpg + <name>.txt, or a .csv/.jsonl/.json file with image,text[,id] "
                          "(image paths relative to the file's folder, or absolute)")
    run.add_argument("--image", type=Path, help="one image to classify (with --text, instead of INPUT)")
    run.add_argument("--text", help="the text that goes with --image")
    run.add_argument("--adapter", type=Path, default=Path("artifacts/adapters/1"), help="a trained adapter folder")
    run.add_argument("--out", type=Path, default=Path("predictions.jsonl"),
                     help="one JSON line per input pair: row, id, image, text, the labels (or an error)")
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
    compare = commands.add_parser("compare", help="the workspace and each DVC experiment, one row each, with 95 %% intervals")
    compare.add_argument("--paired", nargs=2, metavar=("A", "B"),
                         help="compare two runs on the same test pairs (names as `dvc exp show` gives them, a commit, "
                              "or `workspace`): A - B per label with paired-bootstrap intervals, McNemar's exact test")
    compare.add_argument("--num", type=positive, default=1,
                         help="list the experiments of the last N commits, as `dvc exp show -n N`")
    commands.add_parser("paper-tags", help="tag paper-<protocol> commits holding the paper's numbers")
    port = commands.add_parser("import-llava", help="convert a LLaVA-repository LoRA run or model into this project's format")
    port.add_argument("source", type=Path, help="LLaVA's output folder (LoRA: adapter_config.json + non_lora_trainables.bin) or a LLaVA model folder")
    port.add_argument("out", type=Path)
    port.add_argument("--base", help="for a LoRA: the llava-hf conversion of the model it was trained on (hub id or folder)")
    args = parser.parse_args(argv)
    if args.command == "classify" and (args.input is None) == (args.image is None or args.text is None):
        parser.error("classify takes INPUT, or --image and --text (not both)")
    if args.command == "fetch-splits" and args.dest.exists() and not args.dest.is_dir():
        parser.error(f"--dest {args.dest} is a file; give a folder")
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        if args.command == "fetch-splits":
            from llavac.data.fetch import fetch_splits

            for path in fetch_splits(args.protocol, args.dest):
                print(path)
        elif args.command == "classify":
            from llavac.new_pairs import one_pair, read_pairs

            pairs = read_pairs(args.input) if args.input else one_pair(args.image, args.text)
            done, skipped = classify(args.adapter, pairs, args.out, args.batch_size, args.max_new_tokens, args.precision,
                                     args.mode, args.min_confidence)
            print(f"classified {done} pairs, skipped {skipped} -> {args.out}")
        elif args.command == "compare":
            from llavac.experiments import compare_experiments, compare_paired

            print(compare_paired(*args.paired) if args.paired else compare_experiments(num=args.num))
        elif args.command == "import-llava":
            print(f"{import_llava(args.source, args.out, args.base)} -> {args.out}")
        else:
            from llavac.paper import load_paper, make_paper_tags

            for tag in make_paper_tags(Path.cwd(), load_paper(Path("reference/paper.yaml"))):
                print(tag)
    except (ValueError, OSError, RuntimeError) as error:  # FetchError is a RuntimeError; InputError a ValueError
        sys.exit(f"error: {error}")


def positive(value: str) -> int:
    """argparse type: an integer of at least 1."""
    if not value.isdigit() or int(value) < 1:
        raise argparse.ArgumentTypeError(f"{value!r} is not a positive integer")
    return int(value)


if __name__ == "__main__":
    main()
