# Two entry points: `make demo` and `make test`. Everything else is cargo.
CARGO ?= cargo

.PHONY: all build test demo bench clean lint check-targets

all: build

build:
	$(CARGO) build --release --workspace

test:
	$(CARGO) test --release --workspace

demo: build
	bash examples/demo.sh

bench: build
	bash examples/bench.sh

lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings

# The core and the tools must build for macOS and Windows (GNU) too.
check-targets:
	rustup target add x86_64-apple-darwin x86_64-pc-windows-gnu
	$(CARGO) check --workspace --target x86_64-apple-darwin
	$(CARGO) check --workspace --target x86_64-pc-windows-gnu

clean:
	$(CARGO) clean
