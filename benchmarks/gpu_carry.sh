#!/usr/bin/env bash
# Build what the one GPU run carries to a machine without network (docs/gpu.md):
#   DIR/wheels/   the Python packages the device image lacks, or has at other versions, as wheels for its
#                 Python 3.12 on x86-64 (deepspeed and its pure-Python needs, the DVC/DVCLive packages the train
#                 stage imports, transformers/peft/tokenizers at the project's pins, the project itself);
#   DIR/cache/    the real LLaMA vocabulary (LLAVAC_CACHE), which the 7B build needs and fetches with pip;
#   DIR/sample/   a small formatted synthetic sample made by the pipeline's own stages (sample, preprocess,
#                 split, format) under the random protocol: llava/1/{train,val,test}.json and MVSA_Single/;
#   DIR/COMMIT    the code version the results will name.
# Usage: benchmarks/gpu_carry.sh [DIR=.gpu-carry] [PAIRS=120]   (make gpu-carry; needs the package index and Java)
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
out=$(mkdir -p "${1:-$repo/.gpu-carry}" && cd "${1:-$repo/.gpu-carry}" && pwd)
pairs=${2:-120}
python=${PYTHON:-python}
rm -rf "$out/wheels" "$out/cache" "$out/sample"
mkdir -p "$out/wheels" "$out/cache"

# Found by importing the train, predict and score stages and the benchmark scripts here and mapping the modules
# to their distributions, minus the device image's own list (.library/device/KINDS.md, read 2026-11-17). The
# versions are the project's pins or, for the packages pyproject.toml does not pin, those its lock resolved.
# Not carried: pyspark (hundreds of MB; no stage of this run imports it; gpu_run.sh registers its name).
pure=(dvc==3.67.1 dvclive==3.49.1 dvc-render==1.0.2 dvc-studio-client==0.23.0 funcy==2.1 flatten-dict==0.5.0
      ruamel.yaml==0.19.1 voluptuous==0.16.0 pydot==4.0.1 wcwidth==0.9.4 truststore==0.10.5
      hjson==3.1.0 pydantic==2.14.4 annotated-types==0.8.0 typing-inspection==0.4.5 typing_extensions==4.16.0
      transformers==5.24.0 peft==0.21.2 huggingface_hub==2.4.0 httpx2==2.16.2 httpcore2==2.16.2 gguf==0.19.0)
binary=(pydantic_core==2.50.5 tokenizers==0.23.3 sentencepiece==0.2.3)
platforms=()
for p in manylinux_2_28_x86_64 manylinux_2_27_x86_64 manylinux_2_17_x86_64 manylinux2014_x86_64 manylinux1_x86_64; do
  platforms+=(--platform "$p")
done
"$python" -m pip download --quiet --disable-pip-version-check --no-deps --only-binary=:all: --python-version 3.12 \
  --implementation cp "${platforms[@]}" -d "$out/wheels" "${pure[@]}" "${binary[@]}"
# DeepSpeed publishes a source distribution only; its wheel is pure Python (kernels are compiled just in time).
"$python" -m pip wheel --quiet --disable-pip-version-check --no-deps --no-build-isolation -w "$out/wheels" deepspeed==0.19.8
# The project itself: its metadata is what stages/common.py's interpreter check reads.
"$python" -m pip wheel --quiet --disable-pip-version-check --no-deps -w "$out/wheels" "$repo"

"$python" -c "from llavac.model.llama_vocab import llama_tokenizer_model; print(llama_tokenizer_model())" >/dev/null
vocab=$("$python" -c "from llavac.model.llama_vocab import cache_root; print(cache_root())")
cp -a "$vocab/llama-spm" "$out/cache/"

work=$(mktemp -d /tmp/llavac-gpu-sample-XXXX)
"$python" - "$work" "$pairs" "$repo/params.yaml" <<'EOF'
import sys
from pathlib import Path

import yaml

work, pairs, repo_params = Path(sys.argv[1]), int(sys.argv[2]), Path(sys.argv[3])
params = yaml.safe_load(repo_params.read_text())
params["protocol"], params["sample"]["n_pairs"] = "random", pairs
(work / "params.yaml").write_text(yaml.safe_dump(params))
EOF
(
  cd "$work"
  "$python" "$repo/stages/sample.py" artifacts/sample
  "$python" "$repo/stages/preprocess.py" artifacts/sample/MVSA_Single artifacts/pairs.parquet metrics/data.json
  "$python" "$repo/stages/split.py" artifacts/pairs.parquet artifacts/sample/splits artifacts/splits
  "$python" "$repo/stages/format.py" artifacts/splits artifacts/llava
) >"$work/stages.log" 2>&1 || { tail -n 30 "$work/stages.log" >&2; exit 1; }
mkdir -p "$out/sample/llava"
cp -a "$work/artifacts/llava/1" "$out/sample/llava/"
cp -a "$work/artifacts/sample/MVSA_Single" "$out/sample/"
rm -rf "$work"

git -C "$repo" rev-parse HEAD >"$out/COMMIT"
du -sh "$out" "$out"/*
