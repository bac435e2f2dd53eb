# vllm-proxy build. Every module under src/<module>/ is compiled into $(BUILD)/libvp.a; the
# programs, the tools and the unit tests link against it. Object files live under
# $(BUILD)/obj/<source path>.o next to a .d file (-MMD -MP) naming the headers they include, so
# a header change rebuilds exactly what includes it (src/, tools/, tests/ alike).
#
#   make                  build/vllm-proxy, mock-vllm, fake-dstack-agent, vllm-proxy-verify
#   make SAN=1            the same into build-san/ with AddressSanitizer + UBSan
#   make SAN=thread       the same into build-tsan/ with ThreadSanitizer
#   make test             scripts/run-tests: unit (plain, ASan/UBSan), fuzz corpus replay, integration
#   make unit [T=sse]     builds and runs the unit tests (or only build/tests/test_sse)
#   make tsan             unit tests and integration suite against build-tsan/
#   make fuzz-build       the libFuzzer targets into build-fuzz/ (clang-14, ASan + UBSan)
#   make fuzz-replay      runs every target once over its corpus tests/fuzz/corpus/<target>/
#   make bench-e2ee       bench/e2ee-run: encrypted streams per E2EE format (docs/PERFORMANCE.md)
#   make bench-local-proxy  bench/local-proxy.mjs: the local verifying proxy's overhead
#   make bench-lp-e2ee    bench/lp_e2ee_bench.c: the local proxy's E2EE codec per event
#   make fuzz             scripts/run-fuzz: fuzzes each target for FUZZ_SECONDS (default 30)
#   make soak             tests/soak/soak.mjs: chaos and load for SOAK_SECONDS (default 300)
#   make format-check     clang-format check of the files listed in FORMAT_FILES

CC ?= cc
PKGS := libuv json-c libcrypto libsecp256k1 libsodium nettle hiredis
PKG_CFLAGS := $(shell pkg-config --cflags $(PKGS) 2>/dev/null)
PKG_LIBS := $(shell pkg-config --libs $(PKGS) 2>/dev/null)
LLHTTP_DIR ?= /usr/share/llhttp
LLHTTP_INC ?= /usr/share/include/llhttp

# Hardening. _FORTIFY_SOURCE needs optimisation and is left out of the sanitizer builds (the
# sanitizers intercept the same libc calls and report more precisely).
HARDEN_CFLAGS := -fstack-protector-strong -fPIE
HARDEN_LDFLAGS := -pie -Wl,-z,relro,-z,now
FORTIFY := -U_FORTIFY_SOURCE -D_FORTIFY_SOURCE=2

ifeq ($(SAN),1)
BUILD ?= build-san
OPT := -O1 -fno-omit-frame-pointer -fsanitize=address,undefined -fno-sanitize-recover=undefined
LDSAN := -fsanitize=address,undefined
else ifeq ($(SAN),thread)
BUILD ?= build-tsan
OPT := -O1 -fno-omit-frame-pointer -fsanitize=thread
LDSAN := -fsanitize=thread
else
BUILD ?= build
OPT := -O2 $(FORTIFY)
LDSAN :=
endif

# Warnings are errors, the stricter ones included (shadowing, implicit conversions, format
# strings that are not literals, functions without a prototype).
WEXTRA := -Wshadow -Wconversion -Wsign-conversion -Wformat=2 -Wmissing-prototypes \
          -Wstrict-prototypes
WARN := -Wall -Wextra -Werror $(WEXTRA)

CFLAGS_COMMON := -std=c11 -D_GNU_SOURCE -g $(OPT) -pthread $(HARDEN_CFLAGS) -Isrc -I$(LLHTTP_INC) \
                 $(PKG_CFLAGS)
CFLAGS_VP := $(CFLAGS_COMMON) $(WARN)
DEPFLAGS = -MMD -MP -MF $(@:.o=).d -MT $@
LDFLAGS_VP := $(LDSAN) $(HARDEN_LDFLAGS)
LDLIBS := $(PKG_LIBS) -pthread -lm

obj = $(patsubst %.c,$(BUILD)/obj/%.o,$(1))

LIB_SRCS := $(filter-out src/verify/%,$(wildcard src/*/*.c))
LIB_OBJS := $(call obj,$(LIB_SRCS))
LLHTTP_OBJS := $(BUILD)/obj/llhttp/api.o $(BUILD)/obj/llhttp/http.o $(BUILD)/obj/llhttp/llhttp.o
MOCK_OBJS := $(call obj,$(wildcard tools/mock-vllm/*.c))
FAKE_AGENT_OBJS := $(call obj,$(wildcard tools/fake-dstack-agent/*.c))
E2EE_TOOL_OBJS := $(call obj,$(wildcard tools/e2ee-tool/*.c))
VERIFY_OBJS := $(call obj,$(wildcard src/verify/*.c))
UNIT_SRCS := $(wildcard tests/unit/test_*.c)
UNIT_BINS := $(patsubst tests/unit/%.c,$(BUILD)/tests/%,$(UNIT_SRCS))
PROGRAMS := $(BUILD)/vllm-proxy $(BUILD)/mock-vllm $(BUILD)/fake-dstack-agent $(BUILD)/e2ee-tool \
            $(if $(wildcard src/verify/main.c),$(BUILD)/vllm-proxy-verify)

.PHONY: all clean test unit unit-san tsan integration demo fuzz fuzz-build fuzz-replay bench bench-e2ee bench-local-proxy bench-lp-e2ee deps \
        format-check soak
all: $(PROGRAMS)

# Keep the object files of the unit tests and the tools (intermediate files of chained rules).
.SECONDARY:

deps:
	scripts/install-deps

# llhttp's generated C is compiled without our warning flags, in its strict mode: chunk data
# must end with CRLF, CR must be followed by LF, no spaces in header names, no control bytes in
# the URL, no data after `Connection: close` (the loose default, which Debian's libllhttp uses,
# accepts all of these; a front proxy must not read a request otherwise than the engine would).
LLHTTP_DEFS := -DLLHTTP_STRICT_MODE=1
$(BUILD)/obj/llhttp/%.o: $(LLHTTP_DIR)/%.c Makefile
	@mkdir -p $(dir $@)
	$(CC) -O2 -g -w -fPIE $(LLHTTP_DEFS) -I$(LLHTTP_INC) $(filter -fsanitize%,$(OPT)) -c $< -o $@

$(BUILD)/obj/tests/unit/%.o: tests/unit/%.c
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS_VP) -Itests/unit $(DEPFLAGS) -c $< -o $@

$(BUILD)/obj/%.o: %.c
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS_VP) $(DEPFLAGS) -c $< -o $@

$(BUILD)/libvp.a: $(LIB_OBJS) $(LLHTTP_OBJS)
	rm -f $@ && ar rcs $@ $^

$(BUILD)/vllm-proxy: $(call obj,src/vllm-proxy.c) $(BUILD)/libvp.a
	$(CC) $(filter %.o %.a,$^) $(LDFLAGS_VP) $(LDLIBS) -o $@

$(BUILD)/mock-vllm: $(MOCK_OBJS) $(BUILD)/libvp.a
	$(CC) $(filter %.o %.a,$^) $(LDFLAGS_VP) $(LDLIBS) -o $@

# A SIMULATED dstack guest agent for the integration tests and bench/attest.mjs.
$(BUILD)/fake-dstack-agent: $(FAKE_AGENT_OBJS) $(BUILD)/libvp.a
	$(CC) $(filter %.o %.a,$^) $(LDFLAGS_VP) $(LDLIBS) -o $@

# The E2EE primitives on the command line, for tests/integration/e2ee-crypto.test.mjs.
$(BUILD)/e2ee-tool: $(E2EE_TOOL_OBJS) $(BUILD)/libvp.a
	$(CC) $(filter %.o %.a,$^) $(LDFLAGS_VP) $(LDLIBS) -o $@

$(BUILD)/vllm-proxy-verify: $(VERIFY_OBJS) $(BUILD)/libvp.a
	$(CC) $(filter %.o %.a,$^) $(LDFLAGS_VP) $(LDLIBS) -lcurl -o $@

$(BUILD)/tests/%: $(BUILD)/obj/tests/unit/%.o $(BUILD)/libvp.a
	@mkdir -p $(dir $@)
	$(CC) $(filter %.o %.a,$^) $(LDFLAGS_VP) $(LDLIBS) -lcmocka -o $@

# Fake libnvidia-ml.so.1 that tests/unit/test_gpu.c loads with dlopen (tests/fakes/fake_nvml.c).
FAKE_NVML := $(BUILD)/fakes/libnvidia-ml.so.1
$(FAKE_NVML): tests/fakes/fake_nvml.c
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS_VP) -fPIC -shared -MMD -MP -MF $@.d -MT $@ $< $(LDSAN) -Wl,-z,relro,-z,now \
	    -ljson-c -o $@
# Fake libnvidia-nscq.so.2 (NVSwitch evidence; tests/fakes/fake_nscq.c), loaded the same way.
FAKE_NSCQ := $(BUILD)/fakes/libnvidia-nscq.so.2
$(FAKE_NSCQ): tests/fakes/fake_nscq.c
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS_VP) -fPIC -shared -MMD -MP -MF $@.d -MT $@ $< $(LDSAN) -Wl,-z,relro,-z,now \
	    -ljson-c -o $@
$(BUILD)/tests/test_gpu: $(FAKE_NVML) $(FAKE_NSCQ)

# The collateral test also exercises the PCS fetcher, which lives with the verifier (libcurl).
$(BUILD)/tests/test_collateral: $(BUILD)/obj/tests/unit/test_collateral.o \
                                $(call obj,src/verify/pcs.c) $(BUILD)/libvp.a
	@mkdir -p $(dir $@)
	$(CC) $(filter %.o %.a,$^) $(LDFLAGS_VP) $(LDLIBS) -lcurl -lcmocka -o $@

# Unit tests of the verifier's own modules (test_lp_status) link every verifier object; main.o's
# main() is renamed (objcopy) so that the test's main() is the program's.
VERIFY_TEST_OBJS := $(filter-out $(call obj,src/verify/main.c),$(VERIFY_OBJS)) \
                    $(BUILD)/obj/src/verify/main-nomain.o
$(BUILD)/obj/src/verify/main-nomain.o: $(call obj,src/verify/main.c)
	objcopy --redefine-sym main=vx_main_unused $< $@
$(BUILD)/tests/test_lp_status: $(BUILD)/obj/tests/unit/test_lp_status.o $(VERIFY_TEST_OBJS) \
                               $(BUILD)/libvp.a
	@mkdir -p $(dir $@)
	$(CC) $(filter %.o %.a,$^) $(LDFLAGS_VP) $(LDLIBS) -lcurl -lcmocka -o $@
# The local proxy's E2EE codec lives with the verifier (not in libvp.a); its test links that one
# object, against the server's own E2EE code in libvp.a.
$(BUILD)/tests/test_lp_e2ee: $(BUILD)/obj/tests/unit/test_lp_e2ee.o $(call obj,src/verify/lp_e2ee.c) \
                             $(BUILD)/libvp.a
	@mkdir -p $(dir $@)
	$(CC) $(filter %.o %.a,$^) $(LDFLAGS_VP) $(LDLIBS) -lcmocka -o $@

# `make unit` runs every unit test program; `make unit T=sse` only $(BUILD)/tests/test_sse.
UNIT_RUN := $(if $(T),$(foreach t,$(T),$(BUILD)/tests/test_$(t:test_%=%)),$(UNIT_BINS))
unit: $(UNIT_RUN)
	@fail=0; for t in $(UNIT_RUN); do $$t || fail=1; done; exit $$fail

unit-san:
	$(MAKE) SAN=1 unit

integration: all
	cd tests/integration && node --test --test-concurrency=1 *.test.mjs

test: all
	scripts/run-tests

# The README's first command: installs what is missing, builds, runs the whole flow.
demo:
	scripts/install-deps
	$(MAKE) all
	node scripts/demo.mjs

# ThreadSanitizer: the unit tests and the integration suite against build-tsan/. Reports go to
# build-tsan/tsan.<pid> files (the suites capture the programs' stderr), and any such file fails
# the target. tests/tsan.supp says what is suppressed and why. deploy.test.mjs is left out: it
# checks the release binaries against the Dockerfile's runtime packages (no libtsan there).
# Every other suite runs, the local verifying proxy's (local-proxy*.test.mjs, lp-status) and
# local-proxy-race.test.mjs's concurrency included (docs/RELIABILITY.md "Local verifying
# proxy"); the integration phase gets 2400 s instead of 480 (VP_INTEGRATION_TIMEOUT_S).
TSAN_LOG := $(CURDIR)/build-tsan/tsan
TSAN_SUITES := $(filter-out deploy.test.mjs,$(notdir $(wildcard tests/integration/*.test.mjs)))
tsan:
	$(MAKE) SAN=thread all
	rm -f $(TSAN_LOG).*
	TSAN_OPTIONS="suppressions=$(CURDIR)/tests/tsan.supp log_path=$(TSAN_LOG) second_deadlock_stack=1 $(TSAN_OPTIONS)" \
	VP_UNIT_BUILD_DIR=build-tsan VP_UNIT_SAN=thread VP_BUILD_DIR=build-tsan \
	VP_INTEGRATION_TIMEOUT_S=$${VP_INTEGRATION_TIMEOUT_S:-2400} \
	VP_SKIP_SAN=1 VP_SKIP_FUZZ=1 scripts/run-tests $(TSAN_SUITES)
	@if ls $(TSAN_LOG).* >/dev/null 2>&1; then \
	    echo "ThreadSanitizer reports:"; cat $(TSAN_LOG).*; exit 1; \
	else echo "tsan: no ThreadSanitizer report"; fi

# ---- libFuzzer targets (tests/fuzz/<target>.c), built with clang into build-fuzz/ -------------
# Every target links against build-fuzz/libvp.a, the same sources as libvp.a instrumented for
# coverage and ASan + UBSan, so the linker picks whatever each target needs.
FUZZ_CC ?= clang-14
FUZZ_BUILD := build-fuzz
FUZZ_SAN := -fsanitize=address,undefined -fno-sanitize-recover=undefined
FUZZ_CFLAGS := -std=c11 -D_GNU_SOURCE -g -O1 -fno-omit-frame-pointer -pthread -Isrc -I$(LLHTTP_INC) \
               $(PKG_CFLAGS) -Wall -Wextra -Werror $(WEXTRA) -fsanitize=fuzzer-no-link $(FUZZ_SAN)
FUZZ_TARGETS ?= $(patsubst tests/fuzz/%.c,%,$(wildcard tests/fuzz/fuzz_*.c))
FUZZ_BINS := $(addprefix $(FUZZ_BUILD)/,$(FUZZ_TARGETS))
FUZZ_LIB_OBJS := $(patsubst %.c,$(FUZZ_BUILD)/obj/%.o,$(LIB_SRCS))
FUZZ_LLHTTP_OBJS := $(patsubst $(BUILD)/%,$(FUZZ_BUILD)/%,$(LLHTTP_OBJS))

$(FUZZ_BUILD)/obj/llhttp/%.o: $(LLHTTP_DIR)/%.c Makefile
	@mkdir -p $(dir $@)
	$(FUZZ_CC) -O1 -g -w $(LLHTTP_DEFS) -I$(LLHTTP_INC) -fsanitize=fuzzer-no-link $(FUZZ_SAN) -c $< -o $@

$(FUZZ_BUILD)/obj/%.o: %.c
	@mkdir -p $(dir $@)
	$(FUZZ_CC) $(FUZZ_CFLAGS) $(DEPFLAGS) -c $< -o $@

$(FUZZ_BUILD)/libvp.a: $(FUZZ_LIB_OBJS) $(FUZZ_LLHTTP_OBJS)
	rm -f $@ && ar rcs $@ $^

$(FUZZ_BINS): $(FUZZ_BUILD)/%: $(FUZZ_BUILD)/obj/tests/fuzz/%.o $(FUZZ_BUILD)/libvp.a
	$(FUZZ_CC) -fsanitize=fuzzer $(FUZZ_SAN) $(FUZZ_LDEXTRA) $(filter %.o,$^) $(filter %.a,$^) $(PKG_LIBS) -pthread -lm -o $@

# The local proxy's E2EE codec lives with the verifier (not in libvp.a): its target links that
# one object too (tests/fuzz/fuzz_lp_e2ee.c).
$(FUZZ_BUILD)/fuzz_lp_e2ee: $(FUZZ_BUILD)/obj/src/verify/lp_e2ee.o

# The E2EE request target runs on the harness's clocks (Dstack v2's timestamp window, the
# replay cache's expiry): see tests/fuzz/fuzz_e2ee_req.c.
$(FUZZ_BUILD)/fuzz_e2ee_req: FUZZ_LDEXTRA := -Wl,--wrap=clock_wall_s -Wl,--wrap=clock_mono_s

fuzz-build: $(FUZZ_BINS)

# Replays each seed corpus once (inputs given as files: nothing is written back to the corpus).
fuzz-replay: fuzz-build
	@fail=0; for t in $(FUZZ_TARGETS); do \
	    set -- tests/fuzz/corpus/$$t/*; [ -e "$$1" ] || { echo "$$t: empty corpus"; continue; }; \
	    if $(FUZZ_BUILD)/$$t -timeout=10 -rss_limit_mb=2048 "$$@" >$(FUZZ_BUILD)/$$t.replay.log 2>&1; \
	    then echo "$$t: $$# inputs ok"; \
	    else echo "!! $$t: FAILED (see $(FUZZ_BUILD)/$$t.replay.log)"; \
	         tail -n 40 $(FUZZ_BUILD)/$$t.replay.log; fail=1; fi; \
	done; exit $$fail

fuzz:
	scripts/run-fuzz

bench: all
	bench/run

bench-e2ee: all
	bench/e2ee-run

bench-local-proxy: all
	node bench/local-proxy.mjs

# The local proxy's E2EE codec per streamed event against a bare AES-GCM open and a memcpy
# (bench/lp_e2ee_bench.c; docs/PERFORMANCE.md "The local proxy's E2EE").
$(BUILD)/bench/lp_e2ee_bench: $(call obj,bench/lp_e2ee_bench.c) $(call obj,src/verify/lp_e2ee.c) \
                              $(BUILD)/libvp.a
	@mkdir -p $(dir $@)
	$(CC) $(filter %.o %.a,$^) $(LDFLAGS_VP) $(LDLIBS) -o $@

bench-lp-e2ee: $(BUILD)/bench/lp_e2ee_bench
	$(BUILD)/bench/lp_e2ee_bench $(BENCH_LP_E2EE_ARGS)

# Soak and chaos (docs/RELIABILITY.md): mixed load while the engine, Redis and the dstack agent
# are killed and stalled, clients drop mid-stream and the proxy is pushed to its descriptor
# limit. scripts/run-tests runs it for 60 s (VP_SKIP_SOAK=1 skips that).
SOAK_SECONDS ?= 300
soak: all
	@[ -d tests/integration/node_modules ] || (cd tests/integration && npm ci --no-audit --no-fund --loglevel=error)
	SOAK_SECONDS=$(SOAK_SECONDS) node tests/soak/soak.mjs

# ---- formatting ------------------------------------------------------------------------------
# .clang-format describes the house style, but the tree is not mass-reformatted: several people
# edit it at once, and clang-format cannot keep the hand-widened alignment of trailing comments
# that many files use. So the check covers only FORMAT_FILES, files that conform today and are
# not being reworked elsewhere; add a file to the list once it has been formatted.
# `make format-check FORMAT_FILES="a.c b.h"` checks any other set (it only reports, never edits).
CLANG_FORMAT ?= clang-format-14
FORMAT_FILES ?= src/core/check.c src/core/hex.h src/core/json.c src/core/json.h src/core/sha.c \
                src/nvidia/nvml_loader.h src/tdx/pck.h src/tdx/roots.h src/verify/pcs.h \
                src/verify/vout.c src/verify/vout.h \
                tests/unit/at.h tests/unit/checks.h tests/unit/loop_thread.h tests/unit/vectors.h \
                tests/unit/worker_port.h src/core/addr.c src/core/addr.h src/proxy/ratelimit.c \
                src/proxy/ratelimit.h src/e2ee/client.c src/e2ee/client.h src/verify/lp_e2ee.c \
                src/verify/lp_e2ee.h tests/unit/test_lp_e2ee.c src/verify/lp_att.c src/verify/lp_att.h src/verify/lp_bench.c src/verify/lp_bench.h \
                src/verify/lp_status.c tests/unit/test_lp_status.c src/proxy/inband.c src/proxy/inband.h \
                tests/unit/test_inband.c tests/fuzz/fuzz_lp_e2ee.c bench/lp_e2ee_bench.c
format-check:
	@bad=0; for f in $(FORMAT_FILES); do \
	    $(CLANG_FORMAT) --dry-run --Werror $$f || bad=1; \
	done; [ $$bad = 0 ] && echo "format-check: $(words $(FORMAT_FILES)) files conform"; exit $$bad

clean:
	rm -rf build build-san build-tsan build-fuzz

-include $(shell find $(BUILD)/obj $(BUILD)/fakes $(FUZZ_BUILD)/obj -name '*.d' 2>/dev/null)
