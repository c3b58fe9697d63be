# iocd - one non-recursive Makefile.
#   make          install missing Debian packages, then build build/iocd (release)
#   make test     sanitizer build (ASan+UBSan), then every unit, fuzz-replay and integration test
#   make run      build and start the daemon with the demo defaults
#   make check    clang-format, module dependency edges, a clang build, cppcheck
#   make bench    the benchmarks under bench/ (not part of test)
#   make fuzz     libFuzzer targets with clang (FUZZ_SECONDS per target)
#   make clean
.DEFAULT_GOAL := all
.SUFFIXES:
SHELL := /bin/bash

CC ?= cc
MODULES := common sim storage query alerts rules collector api
PKGS := libevent lmdb rdkafka libmicrohttpd lua5.4 zlib libzstd snappy libprotobuf-c libpcre2-8 libcurl

# Lazy (=) so pkg-config runs after `make deps` has installed it.
PKG_CFLAGS = $(shell pkg-config --cflags $(PKGS))
PKG_LIBS = $(shell pkg-config --libs $(PKGS)) -lpthread -lm

# V=1 shows each compiler command.
Q = $(if $(filter 1,$(V)),,@echo "  CC $<";)
IS_CLANG := $(findstring clang,$(shell $(CC) --version 2>/dev/null))
CSTD = -std=c11 -D_POSIX_C_SOURCE=200809L
WARN = -Wall -Wextra -Wshadow -Wstrict-prototypes -Wmissing-prototypes -Wold-style-definition \
       -Wformat=2 -Wundef -Wwrite-strings -Wpointer-arith -Wvla -Wimplicit-fallthrough \
       -Wnull-dereference
ifeq ($(IS_CLANG),)
WARN += -Wjump-misses-init
endif
WERROR ?= 1
ifeq ($(WERROR),1)
WARN += -Werror
endif
SAN ?= address,undefined
REVISION := $(shell git rev-parse --short HEAD 2>/dev/null || echo unknown)
DEFS = -DIOCD_REVISION='"$(REVISION)"'
INC = -I.

# Link-time optimisation inlines the small helpers called across files on the ingest path
# (buffers, hashing, the codec): +4 % samples per CPU-second at 100k series (three A/B pairs).
# gcc only: clang would need its own linker plugin for it.
LTO = $(if $(IS_CLANG),,-flto=auto)
REL_CFLAGS = -O2 -g $(LTO) $(CSTD) $(WARN) $(INC) $(DEFS) $(PKG_CFLAGS) -MMD -MP
TEST_CFLAGS = -O1 -g -fno-omit-frame-pointer -fsanitize=$(SAN) -fno-sanitize-recover=all \
              -DIOCD_DEBUG -DIOCD_TEST $(CSTD) $(WARN) $(INC) $(DEFS) $(PKG_CFLAGS) -MMD -MP
TEST_LDFLAGS = -fsanitize=$(SAN)

LIB_SRC := $(foreach m,$(MODULES),$(wildcard $(m)/*.c))
CMD_SRC := $(wildcard cmd/*.c)
UNIT_SRC := $(wildcard tests/unit/test_*.c)
FUZZ_SRC := $(wildcard tests/fuzz/fuzz_*.c)
BENCH_SRC := $(wildcard bench/*.c)

REL_LIB_OBJ := $(LIB_SRC:%.c=build/rel/%.o)
REL_CMD_OBJ := $(CMD_SRC:%.c=build/rel/%.o)
TEST_LIB_OBJ := $(LIB_SRC:%.c=build/asan/%.o)
TEST_CMD_OBJ := $(CMD_SRC:%.c=build/asan/%.o)
UNIT_BIN := $(UNIT_SRC:tests/unit/%.c=build/asan/tests/%)
FUZZ_REPLAY_BIN := $(FUZZ_SRC:tests/fuzz/%.c=build/asan/tests/replay_%)
BENCH_BIN := $(BENCH_SRC:bench/%.c=build/bench/%)

.PHONY: all deps test-deps build build-test test unit integration check format run bench bench-rules bench-incidents bench-query bench-rollup compare compat fuzz clean

all: deps
	@$(MAKE) --no-print-directory build

deps:
	@tools/deps.sh

test-deps:
	@tools/deps.sh test

build: build/iocd

build/iocd: $(REL_LIB_OBJ) $(REL_CMD_OBJ)
	@echo "  LD $@"; $(CC) -O2 -g $(LTO) -o $@ $^ $(PKG_LIBS)

# The files that print the revision are rebuilt when it changes: an incremental build kept
# an old revision in `iocd --version` and /api/v1/status/buildinfo.
REV_OBJ := $(foreach d,rel asan clang,$(addprefix build/$(d)/,api/ops.o api/alertmanager.o \
           common/metrics.o cmd/serve.o cmd/main.o))
build/revision: FORCE
	@mkdir -p build; [ "$$(cat $@ 2> /dev/null)" = "$(REVISION)" ] || echo "$(REVISION)" > $@
$(REV_OBJ): build/revision
.PHONY: FORCE
FORCE:

build/rel/%.o: %.c
	@mkdir -p $(@D)
	$(Q)$(CC) $(REL_CFLAGS) -c -o $@ $<

build/asan/%.o: %.c
	@mkdir -p $(@D)
	$(Q)$(CC) $(TEST_CFLAGS) -c -o $@ $<

# The console page is assembled into api/console.o (.incbin): rebuild it when the page changes.
build/rel/api/console.o build/asan/api/console.o build/clang/api/console.o: api/console.html

build/asan/iocd: $(TEST_LIB_OBJ) $(TEST_CMD_OBJ)
	@echo "  LD $@"; $(CC) $(TEST_LDFLAGS) -o $@ $^ $(PKG_LIBS)

# A unit test links only its module and the modules to its right (the dependency order), so
# tests/unit/test_<module>[_topic].c never depends on code its module may not use.
upto = $(if $(filter $(1),$(firstword $(2))),$(firstword $(2)),$(firstword $(2)) $(call upto,$(1),$(wordlist 2,99,$(2))))
mod_objs = $(foreach m,$(call upto,$(1),$(MODULES)),$(filter build/asan/$(m)/%,$(TEST_LIB_OBJ)))
test_module = $(firstword $(subst _, ,$(patsubst test_%,%,$(1))))
define unit_rule
build/asan/tests/$(1): build/asan/tests/unit/$(1).o build/asan/tests/unit/harness.o \
                       $$(call mod_objs,$$(call test_module,$(1)))
	@mkdir -p $$(@D)
	@echo "  LD $$@"; $$(CC) $$(TEST_LDFLAGS) -o $$@ $$^ $$(PKG_LIBS)
endef
$(foreach t,$(UNIT_SRC:tests/unit/%.c=%),$(eval $(call unit_rule,$(t))))

build/asan/tests/replay_%: build/asan/tests/fuzz/%.o build/asan/tests/fuzz/replay.o \
                           $(TEST_LIB_OBJ)
	@mkdir -p $(@D)
	@echo "  LD $@"; $(CC) $(TEST_LDFLAGS) -o $@ $^ $(PKG_LIBS)

# Test tools (tests/tools/*.c): small programs the integration tests drive, e.g. a Kafka mock
# cluster and consumer; they link only third-party libraries.
TOOL_SRC := $(wildcard tests/tools/*.c)
TOOL_BIN := $(TOOL_SRC:tests/tools/%.c=build/tools/%)
build/tools/%: tests/tools/%.c
	@mkdir -p $(@D)
	@echo "  CC $@"; $(CC) $(REL_CFLAGS) -o $@ $< $(PKG_LIBS)

build-test: build/asan/iocd $(UNIT_BIN) $(FUZZ_REPLAY_BIN) $(TOOL_BIN)

# The whole suite: its last line is "N passed, N failed"; non-zero exit on any failure.
test: test-deps
	@$(MAKE) --no-print-directory build build-test
	@tests/run.sh

unit: deps
	@$(MAKE) --no-print-directory build-test
	@TESTS_ONLY=unit tests/run.sh

integration: test-deps
	@$(MAKE) --no-print-directory build-test
	@TESTS_ONLY=integration tests/run.sh

# ---- Checks ------------------------------------------------------------------------------
SOURCES = $(shell git ls-files '*.c' '*.h' 2>/dev/null || find . -name '*.[ch]' -not -path './build/*')

check: deps
	@echo "check: clang-format"; clang-format --dry-run -Werror $(SOURCES)
	@echo "check: module edges"; tools/check_deps.sh
	@echo "check: clang build"; $(MAKE) --no-print-directory build/clang/iocd
	@echo "check: cppcheck"; if command -v cppcheck >/dev/null; then cppcheck --quiet \
	    --error-exitcode=1 --std=c11 --enable=warning,portability --inline-suppr \
	    -I. $(MODULES) cmd; fi
	@echo "check: ok"

CLANG_OBJ := $(LIB_SRC:%.c=build/clang/%.o) $(CMD_SRC:%.c=build/clang/%.o)
build/clang/%.o: %.c
	@mkdir -p $(@D)
	$(Q)clang $(filter-out -Wjump-misses-init $(LTO),$(REL_CFLAGS)) -c -o $@ $<
build/clang/iocd: $(CLANG_OBJ)
	clang -o $@ $^ $(PKG_LIBS)

format:
	clang-format -i $(SOURCES)

# ---- Run, bench, fuzz --------------------------------------------------------------------
# The demo: iocd (example rules, Kafka mock) fed by a live city; tools/run.sh says where to look.
run: all
	@tools/run.sh

build/bench/%: bench/%.c $(REL_LIB_OBJ)
	@mkdir -p $(@D)
	$(CC) $(REL_CFLAGS) -o $@ $(filter %.c %.o,$^) $(PKG_LIBS)

bench: all
	@$(MAKE) --no-print-directory $(BENCH_BIN)
	@bench/run.sh

# Query latency beside VictoriaMetrics, and ingest under 50 concurrent queries (bench/query.py).
bench-query: all
	@$(MAKE) --no-print-directory build/bench/loadgen build/bench/qclient
	@command -v victoria-metrics > /dev/null || tools/install_peer.sh victoria-metrics
	/usr/bin/python3 bench/query.py

# Long-range *_over_time with rollups on and off, on hours of sealed data (bench/query_rollup.py).
bench-rollup: all
	@$(MAKE) --no-print-directory build/bench/loadgen
	/usr/bin/python3 bench/query_rollup.py

# Side by side: iocd, VictoriaMetrics, Prometheus (+ Alertmanager) and InfluxDB on the same
# workload; writes bench/results/<date>.md and plots (bench/compare.py, bench/README.md).
compare: all
	@$(MAKE) --no-print-directory build/bench/loadgen build/bench/qclient build/tools/kafkatool
	@missing=; for p in victoria-metrics influxdb prometheus prometheus-alertmanager \
	    python3-matplotlib; do dpkg-query -W -f '$${Status}' $$p 2> /dev/null | \
	    grep -q 'ok installed' || missing="$$missing $$p"; done; \
	    [ -z "$$missing" ] || tools/install_peer.sh $$missing
	/usr/bin/python3 bench/compare.py

# PromQL against Prometheus 2.42 on one data set, and promtool against iocd (bench/compat.sh).
compat: all
	@bench/compat.sh

# Incidents: sample -> Kafka latency under background ingest, and a burst (bench/incidents.py).
bench-incidents: all
	@$(MAKE) --no-print-directory build/bench/loadgen build/tools/kafkatool
	/usr/bin/python3 bench/incidents.py

# The rules benchmark: 1,000 rules over 100k series at 1 M samples/s (docs: bench/README.md).
bench-rules: all
	@$(MAKE) --no-print-directory build/bench/rulebench
	build/bench/rulebench $(RULEBENCH_ARGS)

FUZZ_SECONDS ?= 60
FUZZ_CFLAGS = -O1 -g -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined -DIOCD_TEST $(CSTD) $(INC) \
              $(PKG_CFLAGS)
build/fuzz/%: tests/fuzz/%.c $(LIB_SRC)
	@mkdir -p $(@D)
	clang $(FUZZ_CFLAGS) -o $@ $^ $(PKG_LIBS)

fuzz: deps
	@$(MAKE) --no-print-directory $(FUZZ_SRC:tests/fuzz/%.c=build/fuzz/%)
	@for t in $(FUZZ_SRC:tests/fuzz/%.c=%); do \
	    mkdir -p build/fuzz/corpus-$$t; \
	    build/fuzz/$$t -max_total_time=$(FUZZ_SECONDS) -artifact_prefix=build/fuzz/$$t- \
	        build/fuzz/corpus-$$t \
	        tests/fuzz/corpus/$${t#fuzz_} || exit 1; done

clean:
	rm -rf build

-include $(shell find build -name '*.d' 2>/dev/null)
