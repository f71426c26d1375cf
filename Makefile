# Two entry points: `make demo` and `make test`. Everything else is cargo.
CARGO ?= cargo

.PHONY: all build test demo bench clean lint

all: build

build:
	$(CARGO) build --release --workspace

test:
	$(CARGO) test --release --workspace

demo: build
	bash examples/demo.sh

lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings

clean:
	$(CARGO) clean
