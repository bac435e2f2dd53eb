# vllm-proxy build. Every module under src/<module>/ is compiled into build/libvp.a; the
# programs and the unit tests link against it. `make SAN=1` builds into build-san/ with
# AddressSanitizer and UndefinedBehaviorSanitizer.

CC ?= cc
PKGS := libuv json-c libcrypto libsecp256k1 libsodium nettle hiredis
PKG_CFLAGS := $(shell pkg-config --cflags $(PKGS) 2>/dev/null)
PKG_LIBS := $(shell pkg-config --libs $(PKGS) 2>/dev/null)
LLHTTP_DIR ?= /usr/share/llhttp
LLHTTP_INC ?= /usr/share/include/llhttp

ifeq ($(SAN),1)
BUILD ?= build-san
OPT := -O1 -fno-omit-frame-pointer -fsanitize=address,undefined -fno-sanitize-recover=undefined
LDSAN := -fsanitize=address,undefined
else
BUILD ?= build
OPT := -O2
LDSAN :=
endif

CFLAGS_COMMON := -std=c11 -D_GNU_SOURCE -g $(OPT) -pthread -Isrc -I$(LLHTTP_INC) $(PKG_CFLAGS)
CFLAGS_VP := $(CFLAGS_COMMON) -Wall -Wextra -Werror
LDLIBS := $(PKG_LIBS) -pthread -lm

LIB_SRCS := $(filter-out src/verify/%,$(wildcard src/*/*.c))
LIB_OBJS := $(patsubst src/%.c,$(BUILD)/obj/%.o,$(LIB_SRCS))
LLHTTP_OBJS := $(BUILD)/obj/llhttp/api.o $(BUILD)/obj/llhttp/http.o $(BUILD)/obj/llhttp/llhttp.o
MOCK_SRCS := $(wildcard tools/mock-vllm/*.c)
FAKE_AGENT_SRCS := $(wildcard tools/fake-dstack-agent/*.c)
VERIFY_SRCS := $(wildcard src/verify/*.c)
UNIT_SRCS := $(wildcard tests/unit/test_*.c)
UNIT_BINS := $(patsubst tests/unit/%.c,$(BUILD)/tests/%,$(UNIT_SRCS))
PROGRAMS := $(BUILD)/vllm-proxy $(BUILD)/mock-vllm $(BUILD)/fake-dstack-agent $(if $(wildcard src/verify/main.c),$(BUILD)/vllm-proxy-verify)

.PHONY: all clean test unit unit-san integration demo fuzz bench deps
all: $(PROGRAMS)

deps:
	scripts/install-deps

$(BUILD)/obj/llhttp/%.o: $(LLHTTP_DIR)/%.c
	@mkdir -p $(dir $@)
	$(CC) -O2 -g -w -I$(LLHTTP_INC) $(filter -fsanitize%,$(OPT)) -c $< -o $@

$(BUILD)/obj/%.o: src/%.c $(wildcard src/*/*.h)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS_VP) -c $< -o $@

$(BUILD)/libvp.a: $(LIB_OBJS) $(LLHTTP_OBJS)
	rm -f $@ && ar rcs $@ $^

$(BUILD)/vllm-proxy: src/vllm-proxy.c $(BUILD)/libvp.a
	$(CC) $(CFLAGS_VP) $< $(BUILD)/libvp.a $(LDSAN) $(LDLIBS) -o $@

$(BUILD)/mock-vllm: $(MOCK_SRCS) $(BUILD)/libvp.a
	$(CC) $(CFLAGS_VP) $(MOCK_SRCS) $(BUILD)/libvp.a $(LDSAN) $(LDLIBS) -o $@

# A SIMULATED dstack guest agent for the integration tests and bench/attest.mjs.
$(BUILD)/fake-dstack-agent: $(FAKE_AGENT_SRCS) $(BUILD)/libvp.a
	$(CC) $(CFLAGS_VP) $(FAKE_AGENT_SRCS) $(BUILD)/libvp.a $(LDSAN) $(LDLIBS) -o $@

$(BUILD)/vllm-proxy-verify: $(VERIFY_SRCS) $(BUILD)/libvp.a
	$(CC) $(CFLAGS_VP) $(VERIFY_SRCS) $(BUILD)/libvp.a $(LDSAN) $(LDLIBS) -lcurl -o $@

$(BUILD)/tests/%: tests/unit/%.c $(BUILD)/libvp.a
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS_VP) -Itests/unit $< $(BUILD)/libvp.a $(LDSAN) $(LDLIBS) -lcmocka -o $@

# Fake libnvidia-ml.so.1 that tests/unit/test_gpu.c loads with dlopen (tests/fakes/fake_nvml.c).
FAKE_NVML := $(BUILD)/fakes/libnvidia-ml.so.1
$(FAKE_NVML): tests/fakes/fake_nvml.c src/nvidia/nvml.h
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS_VP) -fPIC -shared $< $(LDSAN) -ljson-c -o $@
$(BUILD)/tests/test_gpu: $(FAKE_NVML)

# The collateral test also exercises the PCS fetcher, which lives with the verifier (libcurl).
$(BUILD)/tests/test_collateral: tests/unit/test_collateral.c src/verify/pcs.c $(BUILD)/libvp.a
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS_VP) -Itests/unit $< src/verify/pcs.c $(BUILD)/libvp.a $(LDSAN) $(LDLIBS) -lcurl -lcmocka -o $@

unit: $(UNIT_BINS)
	@fail=0; for t in $(UNIT_BINS); do $$t || fail=1; done; exit $$fail

unit-san:
	$(MAKE) SAN=1 unit

integration: all
	cd tests/integration && node --test --test-concurrency=1 *.test.mjs

test: all
	scripts/run-tests

demo:
	scripts/install-deps
	$(MAKE) all
	node scripts/demo.mjs

fuzz:
	scripts/run-fuzz

bench: all
	bench/run

clean:
	rm -rf build build-san build-fuzz
