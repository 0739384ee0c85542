#!/usr/bin/env bash
# The ablations of docs/statistics.md on the embedded default, through DVC's own queue:
# zero-shot (train.method=none), text-only and image-only (prompt.modalities), two seeds, and a zhang run.
# Run from the repository root with the environment active, after `dvc repro` of the default.
# Each experiment runs in its own temporary copy (.dvc/tmp/exps), one after the other (one worker).
# Then `python benchmarks/ablation_results.py` writes benchmarks/results/ablations-cpu.json.
set -euo pipefail

dvc exp run --queue -n zero-shot -S train.method=none
dvc exp run --queue -n text-only -S prompt.modalities=text
dvc exp run --queue -n zhang -S protocol=zhang    # another protocol: `llavac compare --paired` must refuse it
dvc exp run --queue -n image-only -S prompt.modalities=image
# Two seeds under protocol random (one split) first: a 10-split cheema training took 10-35 minutes on the
# shared machine. `-S seed=1,2` queues the same grid unnamed.
dvc exp run --queue -n random-seed-1 -S protocol=random -S seed=1
dvc exp run --queue -n random-seed-2 -S protocol=random -S seed=2
dvc exp run --queue -n zero-shot-score -S train.method=none -S predict.mode=score
dvc exp run --queue -n default-seed42             # the default itself, named, so that it joins a seed group
dvc exp run --queue -n seed-1 -S seed=1           # two more seeds of the default (cheema, 10 splits)
dvc exp run --queue -n seed-2 -S seed=2
dvc exp run --queue -n image-only-seed-1 -S prompt.modalities=image -S seed=1   # seed 42 does not read tweets
dvc queue start                          # one worker: the experiments run one at a time
while dvc queue status | grep -E "Queued|Running" > /dev/null; do sleep 30; done
dvc queue status
