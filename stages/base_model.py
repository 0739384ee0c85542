"""base_model stage: build the selected model from its architecture, or point at a pretrained one."""

from __future__ import annotations

import argparse
from pathlib import Path

from common import load_params, run, stage_logger  # first: it checks the interpreter
import pandas as pd

from llavac.model.build import build_llava
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
        build_llava(args.out_dir, texts, block.build.model_dump(), params.seed)
        write_pointer(args.out_dir, str(args.out_dir))
    else:
        log.info("using the pretrained %s", block.pretrained)
        write_pointer(args.out_dir, block.pretrained)
    log.info("wrote %s", args.out_dir)


if __name__ == "__main__":
    run(main, ValueError, VocabularyError)  # a bad build.tokenizer; an unreachable package index
