"""base_model stage: build the selected model from its architecture, or point at a pretrained one."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pandas as pd

from common import load_params, model_block, stage_logger
from llavac.model.build import LLAVA_DIR, build_llava
from llavac.model.llava_format import read_llava_config
from llavac.model.llama_vocab import VocabularyError
from llavac.model.loading import write_pointer


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("pairs", type=Path, help="preprocessed pairs; a built tokenizer learns from their texts")
    parser.add_argument("out_dir", type=Path)
    args = parser.parse_args()
    log = stage_logger("base_model")
    params = load_params()
    block = model_block(params)
    if "build" in block:
        texts = pd.read_parquet(args.pairs, columns=["text"])["text"].tolist()
        log.info("building %s from its architecture; tokenizer trained on %d texts", params["model"], len(texts))
        hf_dir = build_llava(args.out_dir, texts, block["build"], params["seed"])
        llava_dir = args.out_dir / LLAVA_DIR
        write_pointer(args.out_dir, str(hf_dir), str(llava_dir), read_llava_config(llava_dir)["mm_vision_tower"])
    elif "pretrained" in block:
        log.info("using the pretrained %s (LLaVA's format: %s)", block["pretrained"], block.get("pretrained_llava"))
        write_pointer(args.out_dir, block["pretrained"], block.get("pretrained_llava"), block.get("vision_tower"))
    else:
        raise SystemExit(f"error: models.{params['model']} needs either `build:` or `pretrained:`")
    log.info("wrote %s", args.out_dir)


if __name__ == "__main__":
    try:
        main()
    except (ValueError, VocabularyError) as error:  # a bad build.tokenizer; an unreachable package index
        sys.exit(f"error: {error}")
