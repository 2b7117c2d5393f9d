# Two commands on a fresh Debian 12 machine: `make run` and `make test`.
# Each installs what is missing, configures and builds.

JOBS ?= 2
BUILD := build/default
ASAN := build/asan
FUZZ := build/fuzz

.PHONY: all deps build asan run test test-unit test-integration test-asan fuzz bench \
	bench-deps bench-frontend bench-relay bench-content bench-capacity clean format

all: build

deps:
	@scripts/install-deps

$(BUILD)/CMakeCache.txt: | deps
	cmake --preset default >/dev/null

build: deps $(BUILD)/CMakeCache.txt
	cmake --build $(BUILD) -j$(JOBS)

$(ASAN)/CMakeCache.txt: | deps
	cmake --preset asan >/dev/null

asan: deps $(ASAN)/CMakeCache.txt
	cmake --build $(ASAN) -j$(JOBS)

# A local gateway on the embedded default setup (development PKI, loopback ports).
run: build
	scripts/run-local

# Unit and integration suites on the normal build, then again under ASan+UBSan.
test: build asan
	cd $(BUILD) && ctest --output-on-failure --timeout 300
	cd $(ASAN) && ctest --output-on-failure --timeout 300

test-unit: build
	cd $(BUILD) && ctest --output-on-failure -L unit

test-integration: build
	cd $(BUILD) && ctest --output-on-failure -L integration

test-asan: asan
	cd $(ASAN) && ctest --output-on-failure --timeout 300

# libFuzzer targets, each run for FUZZ_SECONDS on its seed corpus.
FUZZ_SECONDS ?= 30
fuzz:
	CMG_FUZZ_DEPS=1 scripts/install-deps
	cmake --preset fuzz >/dev/null
	cmake --build $(FUZZ) -j$(JOBS)
	scripts/run-fuzzers $(FUZZ) $(FUZZ_SECONDS)

# Benchmarks against nginx and HAProxy (bench/README.md): the front end, the relay through
# the connection point, and cached content. Each runs even if one before failed;
# BENCH_SMOKE=1 for the quick check.
bench: build bench-deps
	@rc=0; bench/run-frontend.sh || rc=1; bench/run-relay.sh || rc=1; \
	bench/run-content.sh || rc=1; exit $$rc

bench-frontend: build bench-deps
	bench/run-frontend.sh

bench-relay: build bench-deps
	bench/run-relay.sh

bench-content: build bench-deps
	bench/run-content.sh

# Clients per VM size with cmg-bench, several instances together, handshakes and idle memory
# against nginx, and the relay benchmark into the same results folder (about 25 minutes).
bench-capacity: build bench-deps
	bench/run-capacity.sh

bench-deps:
	CMG_BENCH_DEPS=1 scripts/install-deps

format:
	clang-format -i $$(git ls-files '*.c' '*.h')

clean:
	rm -rf build
