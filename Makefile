# Two commands do all the set-up on a fresh machine: `make demo` and `make test`.
# On an accelerator host: `make env ACCEL=cuda` (CUDA 12 jaxlib; cuda13 for CUDA 13 drivers) or
# `make env ACCEL=tpu` (TPU VM); the default installs the CPU jaxlib. TensorFlow (the `tf` extra,
# the tf.data input pipeline) is always installed here; a host without it: docs/TRAINING.md, section 1.
PYTHON ?= python3
ACCEL ?=
VENV := .venv
BIN := $(VENV)/bin
# One stamp per accelerator choice: `make env ACCEL=cuda` after a CPU install installs again.
STAMP := $(VENV)/.installed$(if $(ACCEL),-$(ACCEL))
comma := ,
EXTRAS := test,tf$(if $(ACCEL),$(comma)$(ACCEL))
# The installer. uv (installed into .venv by pip, range below) resolves the same setup.py ranges to
# the same versions as pip and installs them in parallel: a fresh .venv took 18 s instead of 66 s
# on the 2-core development machine (2026-12-07, uv's download cache empty, pip's full). uv does
# not read pip's configuration (an index or find-links set there): `make env INSTALLER=pip` then.
INSTALLER ?= uv

.PHONY: env test demo clean

$(STAMP): setup.py
	@case "$(ACCEL)" in ""|cuda|cuda13|tpu) ;; *) echo "ACCEL=$(ACCEL): expected cuda, cuda13 or tpu (or nothing: CPU)" >&2; exit 2;; esac
	test -d $(VENV) || $(PYTHON) -m venv $(VENV)
	@case "$(INSTALLER)" in uv|pip) ;; *) echo "INSTALLER=$(INSTALLER): expected uv or pip" >&2; exit 2;; esac
ifeq ($(INSTALLER),uv)
	$(BIN)/pip install -q 'uv>=0.5,<0.14'
	$(BIN)/uv pip install -q --python $(BIN)/python -e '.[$(EXTRAS)]'
else
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[$(EXTRAS)]'
endif
	touch $(STAMP)

env: $(STAMP)

# Test files run on TEST_WORKERS processes (pytest-xdist, whole files per worker, slowest first in
# the order tests/conftest.py collects them); 1 = serial.
TEST_WORKERS ?= 2

test: $(STAMP)
	$(BIN)/python -m pytest -q $(if $(filter 1,$(TEST_WORKERS)),,-n $(TEST_WORKERS) --dist loadfile --no-loadscope-reorder) tests

demo: $(STAMP)
	$(BIN)/satracker demo --workdir demo_workdir

clean:
	rm -rf $(VENV) demo_workdir .pytest_cache
