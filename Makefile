# Two entry points: `make demo` and `make test`. Everything else is cargo.
CARGO ?= cargo

.PHONY: all build test test-rust test-python demo bench clean lint check-targets header check-header

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

# include/mptunnel.h is generated from mptunnel-ffi by cbindgen (pinned version) and committed.
CBINDGEN ?= cbindgen
CBINDGEN_VERSION := 0.29.2
CBINDGEN_ARGS = --quiet --config mptunnel-ffi/cbindgen.toml --crate mptunnel-ffi mptunnel-ffi

header:
	$(CBINDGEN) $(CBINDGEN_ARGS) --output include/mptunnel.h

# Fails when the committed header is not what the sources generate.
check-header:
	@$(CBINDGEN) --version | grep -qx 'cbindgen $(CBINDGEN_VERSION)' \
		|| { echo "need cbindgen $(CBINDGEN_VERSION): cargo install cbindgen --version $(CBINDGEN_VERSION) --locked"; exit 1; }
	$(CBINDGEN) $(CBINDGEN_ARGS) --output target/mptunnel.h.check
	@diff -u include/mptunnel.h target/mptunnel.h.check \
		|| { echo "include/mptunnel.h is out of date: run 'make header' and commit it"; exit 1; }
	@echo "include/mptunnel.h is up to date"

clean:
	$(CARGO) clean
