# Signet - one non-recursive GNU Makefile (see ../shared/STYLE.md).
#
#   make            build bin/signet and bin/signetctl
#   make deps       install the Debian packages the build and tests need
#   make run        deps, build, then run bin/signet on its embedded default
#   make test       deps, build, unit tests, then integration tests
#   make test SAN=1 the same with ASan+UBSan
#   make fuzz       run every libFuzzer target for FUZZ_SECONDS each
#   make bench      run the perf/ benchmarks (prints figures, not a test)
#   make bench-dkim only the DKIM engine benchmark

CC      ?= cc
SAN     ?=
WERROR  ?= $(if $(CI),-Werror,)
BUILD   ?= build$(if $(SAN),-san,)
BIN     ?= bin

WARN    := -Wall -Wextra -Wshadow -Wpointer-arith -Wcast-qual \
	   -Wstrict-prototypes -Wmissing-prototypes -Wmissing-declarations \
	   -Wformat=2 -Wsign-compare -Wno-unused-parameter $(WERROR)
SANFLAGS := -fsanitize=address,undefined -fno-sanitize-recover=all
OPT     := $(if $(SAN),-O1 -g -fno-omit-frame-pointer $(SANFLAGS),-O2 -g)
CFLAGS  ?=
CFLAGS  += -std=gnu11 $(OPT) $(WARN) -D_GNU_SOURCE -I.
LDFLAGS += $(if $(SAN),$(SANFLAGS),)
PKGS    := libuv liburing libssl libcrypto libcares hiredis
CFLAGS  += $(shell pkg-config --cflags $(PKGS) 2>/dev/null)
LIBS    := $(shell pkg-config --libs $(PKGS) 2>/dev/null) -lcrypt -lresolv -lpthread

# ---- modules -------------------------------------------------------------
# Each module's sources are every .c in its directory (dependencies point one
# way: relay -> smtp -> dkim, queue).  relay/main.c and relay/ctl.c are the
# two programs; the rest of relay/ is shared by both.
DKIM_SRCS  := $(sort $(wildcard dkim/*.c))
QUEUE_SRCS := $(sort $(wildcard queue/*.c))
SMTP_SRCS  := $(sort $(wildcard smtp/*.c))
RELAY_SRCS := $(filter-out relay/main.c relay/ctl.c,$(sort $(wildcard relay/*.c)))

SIGNET_SRCS    := relay/main.c
SIGNETCTL_SRCS := relay/ctl.c

UNIT_SRCS := $(sort $(wildcard tests/unit/*.c))

obj = $(patsubst %.c,$(BUILD)/%.o,$(1))

DKIM_OBJS  := $(call obj,$(DKIM_SRCS))
QUEUE_OBJS := $(call obj,$(QUEUE_SRCS))
SMTP_OBJS  := $(call obj,$(SMTP_SRCS))
RELAY_OBJS := $(call obj,$(RELAY_SRCS))
MOD_OBJS   := $(RELAY_OBJS) $(SMTP_OBJS) $(QUEUE_OBJS) $(DKIM_OBJS)

.PHONY: all deps run test unit integ fuzz bench bench-dkim bench-keys clean
all: $(BIN)/signet $(BIN)/signetctl

$(BIN)/signet: $(call obj,$(SIGNET_SRCS)) $(MOD_OBJS)
	@mkdir -p $(BIN)
	$(CC) $(LDFLAGS) -o $@ $^ $(LIBS)

$(BIN)/signetctl: $(call obj,$(SIGNETCTL_SRCS)) $(MOD_OBJS)
	@mkdir -p $(BIN)
	$(CC) $(LDFLAGS) -o $@ $^ $(LIBS)

$(BUILD)/unit-tests: $(call obj,$(UNIT_SRCS)) $(MOD_OBJS)
	$(CC) $(LDFLAGS) -o $@ $^ $(LIBS)

$(BUILD)/%.o: %.c
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -MMD -MP -c -o $@ $<

-include $(shell find $(BUILD) -name '*.d' 2>/dev/null)

deps:
	@scripts/deps.sh

# run the relay in the foreground on its embedded default configuration
run: deps
	$(MAKE) all
	$(BIN)/signet

unit: $(BUILD)/unit-tests
	$(BUILD)/unit-tests

integ: all
	@tests/integ/run.sh

test: deps
	$(MAKE) all unit
	$(MAKE) SAN=1 unit
	$(MAKE) integ
	$(MAKE) fuzz FUZZ_SECONDS=$(FUZZ_SHORT)

# ---- fuzzing (clang libFuzzer) --------------------------------------------
FUZZ_SECONDS ?= 60
FUZZ_SHORT   ?= 10
FUZZ_TARGETS := fuzz_canon fuzz_header fuzz_proxy fuzz_dnsd
FUZZ_CFLAGS  := -std=gnu11 -g -O1 -D_GNU_SOURCE -I. -fsanitize=fuzzer,address,undefined

build-fuzz/%: tests/fuzz/%.c $(DKIM_SRCS) dkim/dkim.h dkim/dkim_int.h
	@mkdir -p build-fuzz
	clang $(FUZZ_CFLAGS) -o $@ $< $(DKIM_SRCS) $(LIBS)

build-fuzz/fuzz_proxy: tests/fuzz/fuzz_proxy.c smtp/proxy.c smtp/smtp.h smtp/smtp_int.h
	@mkdir -p build-fuzz
	clang $(FUZZ_CFLAGS) -o $@ $< smtp/proxy.c $(LIBS)

build-fuzz/fuzz_dnsd: tests/fuzz/fuzz_dnsd.c relay/dnsd.c relay/keys.h relay/relay.h
	@mkdir -p build-fuzz
	clang $(FUZZ_CFLAGS) -o $@ $< relay/dnsd.c $(LIBS)

fuzz: $(addprefix build-fuzz/,$(FUZZ_TARGETS))
	@tests/fuzz/run.sh $(FUZZ_SECONDS) $(FUZZ_TARGETS)

# ---- benchmarks -------------------------------------------------------------
$(BUILD)/bench_dkim: $(call obj,perf/bench_dkim.c) $(DKIM_OBJS)
	$(CC) $(LDFLAGS) -o $@ $^ $(LIBS)

$(BUILD)/bench_keys: $(call obj,perf/bench_keys.c) $(MOD_OBJS)
	$(CC) $(LDFLAGS) -o $@ $^ $(LIBS)

bench: deps $(BUILD)/bench_dkim all
	@perf/run.sh $(BUILD)
	@perf/bench_smtp.sh $(BIN)
	@perf/bench_delivery.sh $(BIN)
	@perf/bench_keys.sh $(BUILD)

# managed-key signing with 1, 10,000 and 100,000 domains (about 3 minutes)
bench-keys: deps all $(BUILD)/bench_keys
	@perf/bench_keys.sh $(BUILD)

# the DKIM engine part alone (about 30 s)
bench-dkim: deps $(BUILD)/bench_dkim
	@perf/run.sh $(BUILD)

clean:
	rm -rf build build-san build-fuzz bin
