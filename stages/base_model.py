"""base_model stage: build the selected model from its architecture, or point at a pretrained one."""

from __future__ import annotations

import argparse
from pathlib import Path

from common import load_params, run, stage_logger  # first: it checks the interpreter
import pandas as pd

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
    block = params.selected
    if block.build is not None:
        texts = pd.read_parquet(args.pairs, columns=["text"])["text"].tolist()
        log.info("building %s from its architecture; tokenizer trained on %d texts", params.model, len(texts))
        hf_dir = build_llava(args.out_dir, texts, block.build.model_dump(exclude_none=True), params.seed)
        llava_dir = args.out_dir / LLAVA_DIR
        write_pointer(args.out_dir, str(hf_dir), str(llava_dir), read_llava_config(llava_dir)["mm_vision_tower"])
    else:
        log.info("using the pretrained %s (LLaVA's format: %s)", block.pretrained, block.pretrained_llava)
        write_pointer(args.out_dir, block.pretrained, block.pretrained_llava, block.vision_tower)
    log.info("wrote %s", args.out_dir)


if __name__ == "__main__":
    run(main, ValueError, VocabularyError)  # a bad build.tokenizer; an unreachable package index
