# graylane — thin wrapper around CMake + ctest. See README.md.
BUILD      ?= build
ASAN_BUILD ?= build-asan
FUZZ_BUILD ?= build-fuzz
TSAN_BUILD ?= build-tsan
JOBS       ?= $(shell nproc 2>/dev/null || echo 2)
FUZZ_SECONDS ?= 60
CMAKE_FLAGS ?=

.PHONY: all deps check check-unit check-asan check-tsan check-slow bench fuzz fuzz-build demo demo-stop install clean

all: $(BUILD)/CMakeCache.txt
	cmake --build $(BUILD) -j$(JOBS)

$(BUILD)/CMakeCache.txt:
	cmake -S . -B $(BUILD) -DCMAKE_BUILD_TYPE=RelWithDebInfo $(CMAKE_FLAGS)

$(ASAN_BUILD)/CMakeCache.txt:
	cmake -S . -B $(ASAN_BUILD) -DCMAKE_BUILD_TYPE=Debug -DGRAY_SANITIZE=ON -DGRAY_BENCH=OFF $(CMAKE_FLAGS)

$(TSAN_BUILD)/CMakeCache.txt:
	cmake -S . -B $(TSAN_BUILD) -DCMAKE_BUILD_TYPE=Debug -DGRAY_TSAN=ON -DGRAY_BENCH=OFF $(CMAKE_FLAGS)

# Installs what is missing (Debian packages), builds, and runs every test:
# the normal build first, then the unit and data tests again under
# AddressSanitizer + UndefinedBehaviorSanitizer (with the fuzz corpus
# replay, the end-to-end lane test and the Nginx tests, whose nginx loads
# an instrumented module with the sanitizer runtimes preloaded), then the
# client SDK's tests under ThreadSanitizer.
check: deps
	$(MAKE) all
	cd $(BUILD) && ctest --output-on-failure -j$(JOBS) -LE slow
	$(MAKE) check-asan
	$(MAKE) check-tsan

check-asan: $(ASAN_BUILD)/CMakeCache.txt
	cmake --build $(ASAN_BUILD) -j$(JOBS)
	cd $(ASAN_BUILD) && ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 \
	  UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
	  ctest --output-on-failure -j$(JOBS) -L "unit|data|fuzz|integration|e2e|nginx"

# The SDK's tests (label "client": unit, stress, integration against a real
# grayd) in a ThreadSanitizer build.
check-tsan: $(TSAN_BUILD)/CMakeCache.txt
	cmake --build $(TSAN_BUILD) -j$(JOBS) --target client-tests
	cd $(TSAN_BUILD) && TSAN_OPTIONS=halt_on_error=1:second_deadlock_stack=1 \
	  ctest --output-on-failure -j$(JOBS) -L client

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
	cmake --build $(FUZZ_BUILD) -j$(JOBS) --target fuzz_policy fuzz_http fuzz_xff fuzz_regex

fuzz: deps fuzz-build
	scripts/fuzz.sh $(FUZZ_BUILD) $(FUZZ_SECONDS)

# The main job: grayd and the example call chain (gateway -> order ->
# order-dal v1|v2) in the background with the sample policies, and curl
# commands to try. State, logs and PIDs live in a temporary directory named
# by $(BUILD)/demo.state; make demo-stop stops exactly those processes.
demo: $(BUILD)/CMakeCache.txt
	@echo "demo: building grayd, grayctl, gray-agent, the nginx module and the example services (log: $(BUILD)/demo-build.log)"
	@cmake --build $(BUILD) -j$(JOBS) --target grayd grayctl gray-agent ngx_http_gray_module \
	  example-gateway example-order example-order-dal >$(BUILD)/demo-build.log 2>&1 || { tail -n 30 $(BUILD)/demo-build.log; exit 1; }
	@scripts/demo.sh $(BUILD)

demo-stop:
	@scripts/demo-stop.sh $(BUILD)

# The Nginx module into Debian's module directory (load it with
# `load_module modules/ngx_http_gray_module.so;`, docs/nginx.md).
NGINX_MODULES_DIR ?= /usr/lib/nginx/modules
install: all
	@test -f $(BUILD)/nginx/ngx_http_gray_module.so || \
	  { echo "install: $(BUILD)/nginx/ngx_http_gray_module.so was not built (is nginx-dev installed?)"; exit 1; }
	install -d $(DESTDIR)$(NGINX_MODULES_DIR)
	install -m 0644 $(BUILD)/nginx/ngx_http_gray_module.so $(DESTDIR)$(NGINX_MODULES_DIR)/

clean:
	rm -rf $(BUILD) $(ASAN_BUILD) $(FUZZ_BUILD) $(TSAN_BUILD)
