# Two entry points for a fresh machine with Python 3.11, git and make:
#   make demo   set up, build everything on generated data, and serve on 127.0.0.1
#   make test   set up and run the test suite
PYTHON ?= python3.11
UV := .tools/bin/uv
VENV := .venv
export UV_PYTHON_DOWNLOADS := never

.PHONY: setup demo test lint bench clean

$(UV):
	$(PYTHON) -m venv .tools
	.tools/bin/pip install --quiet "uv==0.13.9"

$(VENV)/.synced: $(UV) pyproject.toml uv.lock
	$(UV) sync --frozen --compile-bytecode --python $(PYTHON)
	touch $@

setup: $(VENV)/.synced

demo: setup
	$(VENV)/bin/precision demo $(ARGS)

test: setup
	$(VENV)/bin/pytest $(ARGS)

lint: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

bench: setup
	$(VENV)/bin/python -m benchmarks.run_all $(ARGS)

clean:
	rm -rf data
