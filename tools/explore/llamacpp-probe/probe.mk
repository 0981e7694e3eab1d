# probe.mk — build and run the llama.cpp groundwork probe.
#   scripts/fetch-deps.sh                       # once: libs, headers, models, text -> .cache
#   make -f tools/explore/llamacpp-probe/probe.mk run  # from the repo root
# Equivalent plain command (after `set -a; . .cache/deps.env; set +a`):
#   g++ -O2 -std=c++17 $LLAMA_CFLAGS tools/explore/llamacpp-probe/probe.cpp -o .cache/bin/probe \
#       $LLAMA_LDFLAGS -DPROBE_LIB_DIR="\"$LLAMA_LIB_DIR\""

HASHEVICT_CACHE ?= $(CURDIR)/.cache
include $(HASHEVICT_CACHE)/deps.mk

PROBE_BIN := $(HASHEVICT_CACHE)/bin/probe
PROBE_SRC := tools/explore/llamacpp-probe/probe.cpp
PROBE_OUT ?= $(HASHEVICT_CACHE)/probe-out
CXX ?= g++

$(PROBE_BIN): $(PROBE_SRC) $(HASHEVICT_CACHE)/deps.mk
	mkdir -p $(dir $@)
	$(CXX) -O2 -std=c++17 -Wall -Wextra $(LLAMA_CFLAGS) $(PROBE_SRC) -o $@ $(LLAMA_LDFLAGS) \
		-DPROBE_LIB_DIR='"$(LLAMA_LIB_DIR)"'

.PHONY: probe run
probe: $(PROBE_BIN)

run: $(PROBE_BIN)
	mkdir -p $(PROBE_OUT)
	$(PROBE_BIN) $(SMOLLM_GGUF) $(TEXT_FILE) 1024 256 2 > $(PROBE_OUT)/smollm2.txt 2> $(PROBE_OUT)/smollm2.log
	$(PROBE_BIN) $(GEMMA_GGUF) $(TEXT_FILE) 1024 256 2 > $(PROBE_OUT)/gemma3.txt 2> $(PROBE_OUT)/gemma3.log
	$(PROBE_BIN) $(GEMMA_GGUF) $(TEXT_FILE) 1024 256 2 auto 0 > $(PROBE_OUT)/gemma3-swa_full0.txt 2> $(PROBE_OUT)/gemma3-swa_full0.log
	$(PROBE_BIN) $(SMOLLM_GGUF) $(TEXT_FILE) 1024 256 2 off > $(PROBE_OUT)/smollm2-fa_off.txt 2> $(PROBE_OUT)/smollm2-fa_off.log
