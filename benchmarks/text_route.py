"""Does the classifier read the tweet? Its text label set against the image label, and where its answer looks.

    python benchmarks/text_route.py --adapter artifacts/adapters/1 --llava-dir artifacts/llava/1 \\
        --images artifacts/sample/MVSA_Single [--train-pairs 96] [--out benchmarks/results/text-route-cpu.json]

On the synthetic sample the text label is carried by a small lexicon (`src/llavac/data/sample.py`)
and agrees with the image label in most pairs, so a model can score well above chance on the text
label by answering the image's. Per part (the first `--train-pairs` training pairs, every test
pair) this counts the text label's accuracy where the text and image labels agree and where they
differ, and how often, where they differ, the predicted text label is the image's. Then, for the
base model and for the adapter, the attention of the last prompt position (where the first answer
token, the text label, is predicted) per layer and head, over pairs whose tweet has sentiment words:
its share on those words, its share on the image positions, and its largest single weight.
"""

from __future__ import annotations

import argparse
import json
import string
import sys
from pathlib import Path
from typing import Any

from llavac.cpu_numerics import pin_cpu_numerics

pin_cpu_numerics()  # the stages' CPU numerics, before torch and numpy load (they read them once)

import pandas as pd  # noqa: E402
import torch  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from provenance import Provenance, write_result  # noqa: E402

from llavac.data.sample import SENTIMENT_WORDS  # noqa: E402
from llavac.labels import TASKS  # noqa: E402
from llavac.metrics import rounded, where_labels_differ  # noqa: E402
from llavac.model.adapter_card import read_card  # noqa: E402
from llavac.model.inputs import LlavaInputs, prompt_batch  # noqa: E402
from llavac.model.loading import load_base  # noqa: E402
from llavac.params import Evaluation  # noqa: E402
from llavac.predict import load_classifier, predict_records  # noqa: E402

LEXICON = {word for words in SENTIMENT_WORDS.values() for word in words}
"""The sample's sentiment words: a tweet's text label is positive or negative exactly when it has them."""


def read_split_records(llava_dir: Path, parts: tuple[str, ...]) -> dict[str, list[dict[str, Any]]]:
    """`{part: records}` of `llava_dir/<part>.json` (the format stage's output); a missing file ends the
    script in one line naming the stage that writes it."""
    files = {part: llava_dir / f"{part}.json" for part in parts}
    missing = [str(file) for file in files.values() if not file.exists()]
    if missing:
        sys.exit(f"error: {', '.join(missing)} missing: run `dvc repro format` (it writes artifacts/llava/<split>/)")
    return {part: json.loads(file.read_text(encoding="utf-8")) for part, file in files.items()}


def label_agreement(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Accuracy in % per task; the text label's where text and image labels agree; and, where they differ,
    each side's accuracy and how often it is the other side's label (`metrics.where_labels_differ`, as the
    score stage computes it for `metrics/scores.json`)."""
    frame = pd.DataFrame(rows)
    agree = frame[frame["text_label"] == frame["image_label"]]
    return rounded({
        "pairs": len(frame),
        "accuracy": {task: 100 * (frame[f"pred_{task}"] == frame[f"{task}_label"]).mean() for task in TASKS},
        "pairs_where_labels_agree": len(agree),
        "text_accuracy_where_labels_agree": 100 * (agree["pred_text"] == agree["text_label"]).mean() if len(agree) else None,
        "where_labels_differ": where_labels_differ({1: frame}),
    }, digits=1)


def sentiment_pieces(pieces: list[str]) -> list[bool]:
    """Per SentencePiece piece: whether it is part of a lexicon word. A word starts at a piece marked `▁` and
    runs to the next; it matches without case, punctuation around it or a hashtag's `#` ("Sad...", "#awful")."""
    words: list[list[int]] = []
    for k, piece in enumerate(pieces):
        if piece.startswith("▁") or not words:
            words.append([])
        words[-1].append(k)
    marked = [False] * len(pieces)
    for word in words:
        text = "".join(pieces[k] for k in word).lstrip("▁").strip(string.punctuation + "?…").lower()
        if text in LEXICON:
            for k in word:
                marked[k] = True
    return marked


def answer_attention(model: torch.nn.Module, inputs: LlavaInputs, records: list[dict[str, Any]], images: Path) -> list[dict[str, Any]]:
    """Per language-model layer, per head (lists): the last prompt position's attention share on the
    tweet's sentiment-word tokens and on the image positions, and its largest weight, averaged over `records`."""
    model.set_attn_implementation("eager")  # the fused kernels return no attention weights
    batch = prompt_batch(inputs, records, images)
    with torch.no_grad():
        attentions = model(**batch, output_attentions=True).attentions  # per layer: (batch, heads, query, key)
    pieces = [inputs.processor.tokenizer.convert_ids_to_tokens(row) for row in batch["input_ids"].tolist()]
    sentiment = torch.tensor([sentiment_pieces(row) for row in pieces])
    image = batch["input_ids"] == inputs.image_token_id
    def per_head(values: torch.Tensor) -> list[float]:  # (batch, heads) -> the mean over pairs, per head
        return [round(value, 4) for value in values.mean(0).tolist()]

    layers = []
    for weights in attentions:
        last = weights[:, :, -1, :].float()  # (batch, heads, key): left padding puts every prompt's end last
        layers.append({
            "share_on_sentiment_words": per_head((last * sentiment[:, None]).sum(-1)),
            "share_on_image": per_head((last * image[:, None]).sum(-1)),
            "largest_weight": per_head(last.max(-1).values),
        })
    return layers


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--adapter", type=Path, required=True)
    parser.add_argument("--llava-dir", type=Path, required=True, help="one split's formatted records: train.json, test.json")
    parser.add_argument("--images", type=Path, required=True, help="the folder the records' image paths are relative to")
    parser.add_argument("--train-pairs", type=int, default=96, help="training pairs to predict (the first ones)")
    parser.add_argument("--attention-pairs", type=int, default=16, help="training pairs with sentiment words to look at")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/text-route-cpu.json"))
    parser.add_argument("--note", help="which run the adapter comes from")
    args = parser.parse_args()
    run = Provenance()
    parts = read_split_records(args.llava_dir, ("train", "test"))
    parts["train"] = parts["train"][: args.train_pairs]
    model, inputs = load_classifier(args.adapter, Evaluation("fp32", merge_lora=True))
    agreement = {part: label_agreement(predict_records(model, inputs, records, args.images, args.batch, 16, "score"))
                 for part, records in parts.items()}
    looked_at = [record for record in parts["train"] if record["text_label"] != "neutral"][: args.attention_pairs]
    base = load_base(read_card(args.adapter).base_for(args.adapter), "fp32")
    results = {
        "adapter": str(args.adapter),
        "note": args.note,
        "records": str(args.llava_dir),
        "predict_mode": "score",  # the most probable of the 27 answers: never unparsed, so every pair counts
        "labels": agreement,
        "attention_pairs": len(looked_at),
        "attention_of_the_last_prompt_position": {
            "base": answer_attention(base, inputs, looked_at, args.images),
            "adapter": answer_attention(model, inputs, looked_at, args.images),
        },
    }
    write_result(args.out, results, run)
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
