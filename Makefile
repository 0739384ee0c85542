# The two commands of the README: `make repro` and `make test`. Both create .venv on first use.
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp
export PATH := $(abspath $(BIN)):$(PATH)

.PHONY: repro test compare experiments java paper-tags benchmark gpu-carry clean-venv llava-env

# The LLaVA repository's own training code (train.backend: llava-repo) needs its own transformers 4.37:
# a second venv, installed from a whole-environment pin file without the resolver. The train stage
# runs `make llava-env` itself when that backend is selected.
LLAVA_VENV  ?= .venv-llava
LLAVA_STAMP := $(LLAVA_VENV)/.installed-stamp

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || python3 -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[test]'
	$(BIN)/llavac plots-template
	@touch $(STAMP)

$(LLAVA_STAMP): envs/llava-repo.txt
	@test -x $(LLAVA_VENV)/bin/python || python3 -m venv $(LLAVA_VENV)
	$(LLAVA_VENV)/bin/python -m pip install --quiet --disable-pip-version-check --no-deps -r envs/llava-repo.txt
	@touch $(LLAVA_STAMP)

llava-env: $(LLAVA_STAMP)

# Spark needs a Java runtime; say so once, plainly, instead of a py4j traceback later.
java:
	@v=$$(java -version 2>&1 | sed -n 's/.*version "\([0-9]*\).*/\1/p' | head -n1); \
	if [ -z "$$v" ] || [ "$$v" -lt 17 ]; then \
	  echo "error: Apache Spark needs Java >= 17 (found: $${v:-none}). Install it, e.g. 'apt-get install openjdk-17-jre-headless', and run make again." >&2; \
	  exit 1; \
	fi

# paper-tags after the run, so `dvc metrics diff paper-<protocol>` works as soon as repro ends.
repro: $(STAMP) java
	dvc repro
	llavac paper-tags
	llavac compare

test: $(STAMP) $(LLAVA_STAMP) java
	pytest

# The workspace and every DVC experiment against the paper, one short row each.
compare: $(STAMP)
	llavac compare

# Every experiment in a dozen columns: what it ran on (data, protocol, model, backend, seed) and its
# headline scores. `dvc exp show` alone prints every metric of every split and class: hundreds of
# columns. DVC matches these patterns at the start of a column's name.
EXPERIMENT_COLUMNS := Experiment$$|Created$$|synthetic_sample$$|n_splits$$|protocol$$|model$$|data.raw_dir$$|splits.source$$|train.backend$$|predict.mode$$|seed$$|metrics/scores.json:multimodal.(accuracy|weighted_f1)$$|multimodal.accuracy_std$$|text.accuracy$$|image.accuracy$$
experiments: $(STAMP)
	dvc exp show --drop '.*' --keep '$(EXPERIMENT_COLUMNS)' --md

# Commits tagged paper-<protocol> whose metrics/scores.json holds the paper's numbers; `make repro`
# runs it, run it again after a new commit (the tags point at a child of HEAD).
paper-tags: $(STAMP)
	llavac paper-tags

benchmark: $(STAMP) java
	python benchmarks/preprocess_throughput.py

# What the one GPU run (benchmarks/gpu_run.sh, docs/gpu.md) carries to a GPU machine without network.
gpu-carry: $(STAMP) java
	benchmarks/gpu_carry.sh .gpu-carry

clean-venv:
	rm -rf $(VENV) $(LLAVA_VENV)
