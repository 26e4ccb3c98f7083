# Everything a fresh machine needs, then the two things people run: `make demo` and `make test`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
TORCH  := torch==2.13.0   # pinned: the CPU build installs from a local file; a bare `torch` pulls GBs of CUDA wheels

.PHONY: install system-deps demo test bench clean

install: system-deps $(STAMP)

# sshd and iproute2 serve the tests' real SSH hosts; rsync is what the sync benchmark compares against;
# strace shows the tests that a sync syncs each file before its rename (tests/test_durable.py).
system-deps:
	@missing=""; \
	[ -x /usr/sbin/sshd ] || missing="$$missing openssh-server"; \
	command -v ssh-keygen >/dev/null || missing="$$missing openssh-client"; \
	command -v rsync >/dev/null || missing="$$missing rsync"; \
	command -v ip >/dev/null || missing="$$missing iproute2"; \
	command -v strace >/dev/null || missing="$$missing strace"; \
	if [ -n "$$missing" ]; then \
	  sudo=""; [ "$$(id -u)" = 0 ] || sudo=sudo; \
	  echo "installing:$$missing"; \
	  $$sudo apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$sudo apt-get install -y -qq $$missing >/dev/null; \
	fi

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q $(TORCH) numpy
	$(BIN)/pip install -q -e '.[test]'
	touch $(STAMP)

# The bundled example, on the default registered host, or locally on the CPU when there is none.
demo: install
	cd examples/chargpt && ../../$(BIN)/offload run train.py

# The import contracts first (.importlinter: offload's layers, remote_agent alone), then the tests.
test: install
	$(BIN)/lint-imports
	$(BIN)/python -m pytest

bench: install
	$(BIN)/python bench/bench_sync.py

clean:
	rm -rf $(VENV) *.egg-info .pytest_cache
