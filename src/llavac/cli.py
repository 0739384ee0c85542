"""`llavac`: the commands a researcher runs outside the DVC pipeline.

    llavac fetch-splits [cheema|random|zhang] [--dest data/splits]
    llavac classify --adapter artifacts/adapters/1 INPUT --out predictions.jsonl
    llavac paper-tags
    llavac import-llava LLAVA_CHECKPOINT OUT [--base LLAVA_HF_BASE]
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


def classify(adapter: Path, source: Path, out: Path, batch_size: int, max_new_tokens: int, precision: str | None) -> int:
    """Label every pair of `source` with a trained adapter; write one JSON line per pair to `out`.

    The prompt's image position and the base model come from the adapter's card, so the inputs are
    built exactly as in training. The LoRA is merged as in LLaVA's evaluation; the precision is
    LLaVA's fp16 on a GPU and fp32 on a CPU unless `precision` says otherwise.
    """
    import torch

    from llavac.model.adapter_card import read_card
    from llavac.predict import Evaluation, predict_records, write_jsonl
    from llavac.prompt import human_turn

    card = read_card(adapter)
    evaluation = Evaluation(precision or ("fp16" if torch.cuda.is_available() else "fp32"), merge_lora=True)
    rows, image_folder = read_inputs(source)
    records = [
        {"id": row["id"], "image": row["image"], "conversations": [{"from": "human", "value": human_turn(row["text"], card.image_position)}]}
        for row in rows
    ]
    write_jsonl(predict_records(adapter, records, image_folder, batch_size, max_new_tokens, evaluation), out)
    return len(records)


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
    commands.add_parser("paper-tags", help="tag paper-<protocol> commits holding the paper's numbers")
    port = commands.add_parser("import-llava", help="convert a LLaVA-repository LoRA run or model into this project's format")
    port.add_argument("source", type=Path, help="LLaVA's output folder (LoRA: adapter_config.json + non_lora_trainables.bin) or a LLaVA model folder")
    port.add_argument("out", type=Path)
    port.add_argument("--base", help="for a LoRA: the llava-hf conversion of the model it was trained on (hub id or folder)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        if args.command == "fetch-splits":
            for path in fetch_splits(args.protocol, args.dest):
                print(path)
        elif args.command == "classify":
            n = classify(args.adapter, args.input, args.out, args.batch_size, args.max_new_tokens, args.precision)
            print(f"classified {n} pairs -> {args.out}")
        elif args.command == "import-llava":
            print(f"{import_llava(args.source, args.out, args.base)} -> {args.out}")
        else:
            from llavac.paper import load_paper, make_paper_tags

            for tag in make_paper_tags(Path.cwd(), load_paper(Path("reference/paper.yaml"))):
                print(tag)
    except (ValueError, FileNotFoundError, RuntimeError) as error:  # FetchError is a RuntimeError
        sys.exit(f"error: {error}")


if __name__ == "__main__":
    main()
