# pact — see README.md. The two commands that matter:
#   make run    a one-node journal and an agent booting from it
#   make test   everything CI checks (installs what it needs first)

CARGO      ?= cargo
FUZZ_TIME  ?= 15
MANPAGES   := $(wildcard man/*.[1-8])
FUZZ_TARGETS = $(shell sed -n 's/^name = "\(fz_[a-z_0-9]*\)"/\1/p' fuzz/Cargo.toml)

.PHONY: all build run test unit lint man fuzz fuzz-smoke bench image deps-run deps-test clean

all: build

deps-run:
	@.ci/deps run

deps-test:
	@.ci/deps test

build: deps-run
	$(CARGO) build --release --bins

run: build
	examples/run-local.sh

# Everything CI runs, in order of speed.
test: deps-test lint image unit man fuzz-smoke

# The qemu boot tests must run in CI: a missing image or qemu is a failure.
unit:
	$(CARGO) build --bins
	PACT_REQUIRE_QEMU=1 $(CARGO) test

# Bootable artefacts for the qemu tests: target/qemu/{vmlinux,initrd,root.sqfs}.
image: deps-test
	tests/qemu/build-image.sh

lint:
	$(CARGO) fmt --check
	$(CARGO) clippy --all-targets -- -D warnings

# Render every man page and lint it with mandoc (Debian's mandoc).
man:
	@mkdir -p target/man
	@for m in $(MANPAGES); do \
	  mandoc -T lint -W warning $$m || exit 1; \
	  mandoc -T utf8 $$m > target/man/$$(basename $$m).txt || exit 1; \
	done
	@echo "man: $(words $(MANPAGES)) pages rendered to target/man, mandoc lint clean"

# A short run of every fuzz target (CI), and the kept regression inputs.
fuzz-smoke:
	@mkdir -p target
	@for t in $(FUZZ_TARGETS); do \
	  mkdir -p fuzz/corpus/$$t; \
	  echo "fuzz: $$t for $(FUZZ_TIME)s"; \
	  if ! (cd fuzz && RUSTC_BOOTSTRAP=1 $(CARGO) fuzz run $$t corpus/$$t regressions/$$t -- \
	       -max_total_time=$(FUZZ_TIME)) > target/fuzz-$$t.log 2>&1; then \
	    tail -n 40 target/fuzz-$$t.log; \
	    echo "fuzz: $$t FAILED: keep the input from fuzz/artifacts/$$t in fuzz/regressions/$$t"; exit 1; \
	  fi; \
	  grep -E '^Done [0-9]+ runs' target/fuzz-$$t.log || true; \
	done

# Longer fuzzing: make fuzz FUZZ_TIME=600
fuzz: deps-test
	$(MAKE) fuzz-smoke FUZZ_TIME=$(FUZZ_TIME)

# Benchmarks with the figures the issues name (not timed tests).
bench: deps-test image
	$(CARGO) build --release --bins
	$(CARGO) bench

clean:
	$(CARGO) clean
	rm -rf run fuzz/target
