"""`llavac`: the commands a researcher runs outside the DVC pipeline.

    llavac fetch-splits [cheema|random|zhang] [--dest data/splits]
    llavac classify --adapter artifacts/adapters/1 INPUT --out predictions.jsonl [--min-confidence 0.8]
    llavac paper-tags
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
import sys
from pathlib import Path
from typing import Any

from llavac.data.fetch import fetch_splits
from llavac.data.splits import PROTOCOLS

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp")


def read_inputs(source: Path) -> tuple[list[dict[str, Any]], Path]:
    """Pairs to classify, as records with `id`, `text`, `image`, and the folder images are relative to.

    A CSV or JSONL file has `image` and `text` columns (`id` optional); a folder holds MVSA-style
    `<name>.txt` + `<name>.<image>` files (texts decoded as MVSA's GBK, or UTF-8).
    """
    from llavac.data.mvsa import decode_text

    if source.is_dir():
        rows = []
        for image in sorted(p for p in source.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES):
            text_file = image.with_suffix(".txt")
            if not text_file.exists():
                logging.warning("skipping %s: no %s beside it", image.name, text_file.name)
                continue
            rows.append({"id": image.stem, "image": image.name, "text": decode_text(text_file.read_bytes())[0]})
        return rows, source
    if source.suffix == ".csv":
        with open(source, newline="", encoding="utf-8") as f:
            rows = list(csv.DictReader(f))
    elif source.suffix == ".jsonl":
        rows = [json.loads(line) for line in source.read_text(encoding="utf-8").splitlines() if line.strip()]
    elif source.suffix == ".json":
        rows = json.loads(source.read_text(encoding="utf-8"))
    else:
        raise ValueError(f"{source}: give a folder, a .csv, a .jsonl or a .json (array) file")
    missing = [i for i, row in enumerate(rows, 1) if not row.get("image") or row.get("text") is None]
    if missing:
        raise ValueError(f"{source}: rows {missing[:10]} lack an `image` or `text` value")
    return [{"id": row.get("id", i), **row} for i, row in enumerate(rows, 1)], source.parent


def classify(
    adapter: Path, source: Path, out: Path, batch_size: int, max_new_tokens: int, precision: str | None, mode: str,
    min_confidence: float,
) -> int:
    """Label every pair of `source` with a trained adapter; write one JSON line per pair to `out`.

    The prompt's image position and the base model come from the adapter's card, so the inputs are
    built exactly as in training. The LoRA is merged as in LLaVA's evaluation; the precision is
    LLaVA's fp16 on a GPU and fp32 on a CPU unless `precision` says otherwise. Each line carries the
    label probabilities; a label whose probability is below `min_confidence` is withheld.
    """
    import torch

    from llavac.model.adapter_card import read_card
    from llavac.predict import Evaluation, abstain_below, load_classifier, predict_records, write_jsonl
    from llavac.prompt import human_turn

    card = read_card(adapter)
    evaluation = Evaluation(precision or ("fp16" if torch.cuda.is_available() else "fp32"), merge_lora=True)
    rows, image_folder = read_inputs(source)
    records = [
        {"id": row["id"], "image": row["image"], "conversations": [{"from": "human", "value": human_turn(row["text"], card.image_position)}]}
        for row in rows
    ]
    model, inputs = load_classifier(adapter, evaluation)
    rows = predict_records(model, inputs, records, image_folder, batch_size, max_new_tokens, mode)
    write_jsonl([abstain_below(row, min_confidence) for row in rows], out)
    return len(records)


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
    parser = argparse.ArgumentParser(prog="llavac", description="LLaVAC: LLaVA-1.5 + LoRA multimodal sentiment")
    commands = parser.add_subparsers(dest="command", required=True)
    fetch = commands.add_parser("fetch-splits", help="download the official split files and verify their SHA-256")
    fetch.add_argument("protocol", nargs="?", choices=PROTOCOLS, help="one protocol (default: all three)")
    fetch.add_argument("--dest", type=Path, default=Path("data/splits"))
    run = commands.add_parser("classify", help="label new (image, text) pairs with a trained adapter")
    run.add_argument("input", type=Path, help="a folder of <name>.jpg + <name>.txt, or a CSV/JSONL with image,text")
    run.add_argument("--adapter", type=Path, default=Path("artifacts/adapters/1"))
    run.add_argument("--out", type=Path, default=Path("predictions.jsonl"))
    run.add_argument("--batch-size", type=int, default=32)
    run.add_argument("--max-new-tokens", type=int, default=16)
    run.add_argument("--precision", choices=("fp32", "bf16", "fp16"), default=None,
                     help="compute precision (default: fp16 on a GPU, as LLaVA evaluates; fp32 on a CPU)")
    run.add_argument("--mode", choices=("score", "generate"), default="score",
                     help="score (default): the most probable of the 27 valid answers, never unreadable; "
                          "generate: the free greedy answer, parsed, as in the paper's evaluation")
    run.add_argument("--min-confidence", type=probability, default=0.0, metavar="P",
                     help="withhold (write null for) each label whose probability is below P, and list it under "
                          "`abstained` (default 0: always answer). The probabilities are the model's own, "
                          "not temperature-calibrated")
    commands.add_parser("paper-tags", help="tag paper-<protocol> commits holding the paper's numbers")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        if args.command == "fetch-splits":
            for path in fetch_splits(args.protocol, args.dest):
                print(path)
        elif args.command == "classify":
            n = classify(args.adapter, args.input, args.out, args.batch_size, args.max_new_tokens, args.precision,
                         args.mode, args.min_confidence)
            print(f"classified {n} pairs -> {args.out}")
        else:
            from llavac.paper import load_paper, make_paper_tags

            for tag in make_paper_tags(Path.cwd(), load_paper(Path("reference/paper.yaml"))):
                print(tag)
    except (ValueError, FileNotFoundError, RuntimeError) as error:  # FetchError is a RuntimeError
        sys.exit(f"error: {error}")


if __name__ == "__main__":
    main()
