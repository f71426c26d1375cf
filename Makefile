# Two entry points: `make demo` and `make test`. Everything else is cargo.
CARGO ?= cargo

.PHONY: all build setup test test-rust test-c test-python demo bench clean lint check-targets header check-header

all: build

build:
	$(CARGO) build --release --workspace

PYTHON ?= python3
VENV ?= .venv
# The test targets find what tests/setup.sh installed (cmake, cbindgen) in the virtualenv.
TEST_ENV = PATH="$(abspath $(VENV))/bin:$$PATH"

test: test-rust test-c test-python

# Gets what the tests need on a fresh machine (see tests/setup.sh); under CI=true, anything
# it cannot get is an error.
setup:
	PYTHON=$(PYTHON) VENV=$(VENV) CARGO=$(CARGO) bash tests/setup.sh

# Every Rust test; the ones that need socat, IPv6 or network namespaces run where they can
# and are named as skipped where they cannot (under CI=true they must run).
test-rust: setup
	$(TEST_ENV) CARGO=$(CARGO) bash tests/run-rust.sh

# The C library as C programs use it: header checks, tests/c/test_api.c (plain and under
# AddressSanitizer), the examples end to end over lossy relays, install + pkg-config + CMake.
test-c: build setup
	$(TEST_ENV) bash tests/c/run.sh

# The Python package is tested as installed (a wheel built by pip in the virtualenv), and its
# type stubs are checked against the real module.
test-python: setup
	$(VENV)/bin/pip install -q ./bindings/python
	$(VENV)/bin/python -m pytest -q -rs -p no:cacheprovider bindings/python/tests
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

# The C library, its headers (C and C++17), a pkg-config file and a CMake package:
#   make install [PREFIX=/usr/local] [DESTDIR=staging]    and    make uninstall (same PREFIX)
# Layout: lib/libmptunnel.{so,a}, include/mptunnel.{h,hpp}, lib/pkgconfig/mptunnel.pc,
# lib/cmake/mptunnel/mptunnelConfig{,Version}.cmake.
.PHONY: install uninstall
PREFIX ?= /usr/local
MPT_TARGET_DIR = $(or $(CARGO_TARGET_DIR),target)
MPT_VERSION = $(shell sed -n '/^\[workspace\.package\]/,/^\[/s/^version *= *"\([^"]*\)".*/\1/p' Cargo.toml)
MPT_LIBDIR = $(DESTDIR)$(PREFIX)/lib
MPT_INCDIR = $(DESTDIR)$(PREFIX)/include
MPT_CMAKEDIR = $(MPT_LIBDIR)/cmake/mptunnel
MPT_INSTALLED = $(MPT_LIBDIR)/libmptunnel.so $(MPT_LIBDIR)/libmptunnel.a \
	$(MPT_INCDIR)/mptunnel.h $(MPT_INCDIR)/mptunnel.hpp $(MPT_LIBDIR)/pkgconfig/mptunnel.pc \
	$(MPT_CMAKEDIR)/mptunnelConfig.cmake $(MPT_CMAKEDIR)/mptunnelConfigVersion.cmake

install:
	$(CARGO) build --release -p mptunnel-ffi
	@test -n "$(MPT_VERSION)" || { echo "no version in Cargo.toml [workspace.package]"; exit 1; }
	install -d $(MPT_LIBDIR)/pkgconfig $(MPT_INCDIR) $(MPT_CMAKEDIR)
	install -m 755 $(MPT_TARGET_DIR)/release/libmptunnel.so $(MPT_LIBDIR)/libmptunnel.so
	install -m 644 $(MPT_TARGET_DIR)/release/libmptunnel.a $(MPT_LIBDIR)/libmptunnel.a
	install -m 644 include/mptunnel.h bindings/c/mptunnel.hpp $(MPT_INCDIR)/
	sed -e 's|@PREFIX@|$(PREFIX)|g' -e 's|@VERSION@|$(MPT_VERSION)|g' \
		bindings/c/mptunnel.pc.in > $(MPT_TARGET_DIR)/mptunnel.pc
	install -m 644 $(MPT_TARGET_DIR)/mptunnel.pc $(MPT_LIBDIR)/pkgconfig/mptunnel.pc
	sed -e 's|@VERSION@|$(MPT_VERSION)|g' \
		bindings/c/mptunnelConfigVersion.cmake.in > $(MPT_TARGET_DIR)/mptunnelConfigVersion.cmake
	install -m 644 bindings/c/mptunnelConfig.cmake $(MPT_TARGET_DIR)/mptunnelConfigVersion.cmake \
		$(MPT_CMAKEDIR)/

uninstall:
	rm -f $(MPT_INSTALLED)
	rmdir $(MPT_CMAKEDIR) 2>/dev/null || true
