# graylane — thin wrapper around CMake + ctest. See README.md.
BUILD      ?= build
ASAN_BUILD ?= build-asan
FUZZ_BUILD ?= build-fuzz
JOBS       ?= $(shell nproc 2>/dev/null || echo 2)
FUZZ_SECONDS ?= 60
CMAKE_FLAGS ?=

.PHONY: all deps check check-unit check-asan check-slow bench fuzz fuzz-build demo demo-stop clean

all: $(BUILD)/CMakeCache.txt
	cmake --build $(BUILD) -j$(JOBS)

$(BUILD)/CMakeCache.txt:
	cmake -S . -B $(BUILD) -DCMAKE_BUILD_TYPE=RelWithDebInfo $(CMAKE_FLAGS)

$(ASAN_BUILD)/CMakeCache.txt:
	cmake -S . -B $(ASAN_BUILD) -DCMAKE_BUILD_TYPE=Debug -DGRAY_SANITIZE=ON -DGRAY_BENCH=OFF $(CMAKE_FLAGS)

# Installs what is missing (Debian packages), builds, and runs every test:
# the normal build first, then the unit and data tests again under
# AddressSanitizer + UndefinedBehaviorSanitizer, then the fuzz corpus replay.
check: deps
	$(MAKE) all
	cd $(BUILD) && ctest --output-on-failure -j$(JOBS) -LE slow
	$(MAKE) check-asan

check-asan: $(ASAN_BUILD)/CMakeCache.txt
	cmake --build $(ASAN_BUILD) -j$(JOBS)
	cd $(ASAN_BUILD) && ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 \
	  UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
	  ctest --output-on-failure -j$(JOBS) -L "unit|data|fuzz|integration"

check-slow: deps all
	cd $(BUILD) && ctest --output-on-failure -L slow

deps:
	scripts/deps.sh

bench: deps all
	scripts/bench.sh

# libFuzzer targets (clang). FUZZ_SECONDS per target; the corpus grows in
# build-fuzz/corpus/, seeds stay in tests/fuzz/corpus/.
fuzz-build:
	CC=clang cmake -S . -B $(FUZZ_BUILD) -DCMAKE_BUILD_TYPE=RelWithDebInfo -DGRAY_FUZZ=ON -DGRAY_BENCH=OFF $(CMAKE_FLAGS)
	cmake --build $(FUZZ_BUILD) -j$(JOBS) --target fuzz_policy fuzz_http

fuzz: deps fuzz-build
	scripts/fuzz.sh $(FUZZ_BUILD) $(FUZZ_SECONDS)

demo:
	@echo "make demo arrives with the grayd and SDK issues (grayd, the example call chain)."
	@echo "Until then try the offline evaluator:"
	@echo "  make && build/bin/grayctl eval --policies examples/policies.json --service order --header 'X-Gray: 1'"
	@exit 1

demo-stop:
	@echo "nothing to stop: make demo is not built yet"

clean:
	rm -rf $(BUILD) $(ASAN_BUILD) $(FUZZ_BUILD)
