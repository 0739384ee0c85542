# The two commands of the README: `make repro` and `make test`. Both create .venv on first use.
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp
export PATH := $(abspath $(BIN)):$(PATH)

.PHONY: repro test compare java paper-tags benchmark clean-venv

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || python3 -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[test]'
	@touch $(STAMP)

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

test: $(STAMP) java
	pytest

# The workspace and every DVC experiment against the paper, one short row each.
compare: $(STAMP)
	llavac compare

paper-tags: $(STAMP)
	python -m llavac.cli paper-tags

benchmark: $(STAMP) java
	python benchmarks/preprocess_throughput.py

clean-venv:
	rm -rf $(VENV)
