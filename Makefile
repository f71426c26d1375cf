# Two entry points: `make demo` and `make test`. Everything else is cargo.
CARGO ?= cargo

.PHONY: all build test test-rust test-python demo bench clean lint check-targets

all: build

build:
	$(CARGO) build --release --workspace

PYTHON ?= python3
VENV ?= .venv

test: test-rust test-python

test-rust:
	$(CARGO) test --release --workspace

# The Python package is tested as installed (a wheel built by pip in a fresh venv), and its
# type stubs are checked against the real module.
test-python:
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install -q --upgrade pip maturin pytest mypy
	$(VENV)/bin/pip install -q ./bindings/python
	$(VENV)/bin/python -m pytest -q -p no:cacheprovider bindings/python/tests
	$(VENV)/bin/python -m mypy.stubtest mptunnel
	$(VENV)/bin/python -m mypy --strict --cache-dir=/dev/null bindings/python/tests

demo: build
	bash examples/demo.sh

bench: build
	bash examples/bench.sh

lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings
	$(CARGO) fmt --manifest-path bindings/python/Cargo.toml -- --check
	$(CARGO) clippy --manifest-path bindings/python/Cargo.toml -- -D warnings

# The core and the tools must build for macOS and Windows (GNU) too.
check-targets:
	rustup target add x86_64-apple-darwin x86_64-pc-windows-gnu
	$(CARGO) check --workspace --target x86_64-apple-darwin
	$(CARGO) check --workspace --target x86_64-pc-windows-gnu

clean:
	$(CARGO) clean
