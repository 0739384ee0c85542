"""Does a recipe make the model read the tweet? One split trained in one fp32 process, its labels scored where text and image differ.

    python benchmarks/recipe_probe.py --adapter-dir /tmp/probe --llava-dir artifacts/llava/1 \\
        --images artifacts/sample/MVSA_Single [--set learning_rate=1e-3 ...] [--blank-images] \\
        [--out benchmarks/results/recipe-probe-cpu.json]

A quick stand-in for the 2-rank bf16 ZeRO-3 run of `benchmarks/tiny_llama_zero3.py` (half an hour on
two cores): the same base model (`artifacts/base_model`), split and recipe, trained in one process in
fp32 (the same global batch and steps; docs/deepspeed.md measures how close the two are), in minutes.
`--set KEY=VALUE` overrides a field of the selected model's recipe (params.yaml, `models.<model>.recipe`).
`--blank-images` trains and scores with every image replaced by the blank one (`prompt.modalities:
text`), so the image cannot stand in for the tweet: what is left is whether the text route can be
learnt at all. Per part (the first `--train-pairs` training pairs, validation, test) it records
`text_route.label_agreement`: accuracies, and the text label where text and image labels differ.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from dataclasses import asdict
from pathlib import Path

from llavac.cpu_numerics import pin_cpu_numerics

pin_cpu_numerics()  # the stages' CPU numerics, before torch and numpy load (they read them once)

from pydantic import TypeAdapter, ValidationError  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from provenance import Provenance, write_result  # noqa: E402
from text_route import label_agreement, read_split_records  # noqa: E402

from llavac.model.loading import read_pointer  # noqa: E402
from llavac.params import Evaluation, Recipe, load_params  # noqa: E402
from llavac.predict import load_classifier, predict_records  # noqa: E402
from llavac.train import train_split  # noqa: E402

PARTS = ("train", "val", "test")


def probe_recipe(recipe: Recipe, settings: list[str]) -> Recipe:
    """`recipe` in fp32 with the `KEY=VALUE` settings, validated as params.yaml's are.

    Raises ValueError for an unknown key (naming the known ones) or a value the field does not take.
    """
    changes = {}
    for setting in settings:
        key, _, value = setting.partition("=")
        if key not in Recipe.__dataclass_fields__:
            raise ValueError(f"--set {setting!r}: {key!r} is not a recipe field; the fields are: {', '.join(Recipe.__dataclass_fields__)}")
        changes[key] = value
    try:
        return TypeAdapter(Recipe).validate_python({**asdict(recipe), "precision": "fp32", **changes})
    except ValidationError as error:
        raise ValueError(f"--set: {error}") from None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--adapter-dir", type=Path, required=True,
                        help="where the adapter and its checkpoints go; emptied first, so the probe always trains")
    parser.add_argument("--llava-dir", type=Path, required=True, help="one split's formatted records: train.json, val.json, test.json")
    parser.add_argument("--images", type=Path, required=True, help="the folder the records' image paths are relative to")
    parser.add_argument("--base-dir", type=Path, default=Path("artifacts/base_model"), help="the base_model stage's output")
    parser.add_argument("--set", dest="settings", action="append", default=[], metavar="KEY=VALUE", help="a recipe field to override")
    parser.add_argument("--blank-images", action="store_true", help="every image replaced by the blank one, in training and scoring")
    parser.add_argument("--train-pairs", type=int, default=96, help="training pairs to score (the first ones)")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/recipe-probe-cpu.json"))
    parser.add_argument("--note", help="what the probe asks")
    args = parser.parse_args()
    run = Provenance()
    params = load_params()
    try:
        recipe = probe_recipe(params.selected.recipe, args.settings)
    except ValueError as error:
        sys.exit(f"error: {error}")
    records = read_split_records(args.llava_dir, PARTS)
    try:
        base_model = read_pointer(args.base_dir)
    except FileNotFoundError as error:
        sys.exit(f"error: {error}")
    if args.blank_images:
        records = {part: [{**record, "image": None} for record in rows] for part, rows in records.items()}
    # train_split resumes a run of the same fingerprint from its last checkpoint: a finished one would be
    # restored, not trained, and wall_seconds would time nothing.
    shutil.rmtree(args.adapter_dir, ignore_errors=True)
    started = time.perf_counter()
    trained = train_split(base_model, records["train"], args.images, args.adapter_dir / "adapter",
                          args.adapter_dir / "checkpoints", args.adapter_dir / "live", recipe, params.seed, params.prompt.image_position)
    wall_seconds = time.perf_counter() - started
    model, inputs = load_classifier(args.adapter_dir / "adapter", Evaluation("fp32", merge_lora=True))
    scored = {**records, "train": records["train"][: args.train_pairs]}
    results = {
        "model": params.model,
        "seed": params.seed,
        "settings": args.settings,
        "blank_images": args.blank_images,
        "note": args.note,
        "records": str(args.llava_dir),
        "recipe": asdict(recipe),
        "wall_seconds": round(wall_seconds, 1),
        "mean_training_loss": round(trained["train_loss"], 4),
        "labels": {part: label_agreement(predict_records(model, inputs, rows, args.images, 32, 16, "score"))
                   for part, rows in scored.items()},
    }
    write_result(args.out, results, run)
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
