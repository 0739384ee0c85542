# The two commands of the README: `make repro` and `make test`. Both create .venv on first use.
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp
export PATH := $(abspath $(BIN)):$(PATH)

.PHONY: repro test compare java paper-tags benchmark gpu-carry clean-venv llava-env

# The LLaVA repository's own training code (train.backend: llava-repo) needs its own transformers 4.37:
# a second venv, installed from a whole-environment pin file without the resolver. The train stage
# runs `make llava-env` itself when that backend is selected.
LLAVA_VENV  ?= .venv-llava
LLAVA_STAMP := $(LLAVA_VENV)/.installed-stamp

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || python3 -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[test]'
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

repro: $(STAMP) java
	dvc repro
	llavac compare

test: $(STAMP) $(LLAVA_STAMP) java
	pytest

# The workspace and every DVC experiment against the paper, one short row each.
compare: $(STAMP)
	llavac compare

paper-tags: $(STAMP)
	python -m llavac.cli paper-tags

benchmark: $(STAMP) java
	python benchmarks/preprocess_throughput.py

# What the one GPU run (benchmarks/gpu_run.sh, docs/gpu.md) carries to a GPU machine without network.
gpu-carry: $(STAMP) java
	benchmarks/gpu_carry.sh .gpu-carry

clean-venv:
	rm -rf $(VENV) $(LLAVA_VENV)
