# tako — one plain Makefile. See docs/development.md.

PREFIX  ?= /usr/local
DESTDIR ?=
CC      ?= cc
PYTHON  ?= /usr/bin/python3

VERSION := 0.1.0
CSTD    := -std=gnu11
WARN    := -Wall -Wextra -Wshadow -Wformat=2 -Wstrict-prototypes
OPT     ?= -O2 -g
CPPFLAGS += -D_GNU_SOURCE -DTAKO_VERSION='"$(VERSION)"' -Isrc
CFLAGS  += $(CSTD) $(OPT) $(WARN) -pthread
LDLIBS  += -lyaml -ljansson -lsqlite3 -lssl -lcrypto -lcurl -lm -pthread

ifeq ($(WERROR),1)
CFLAGS += -Werror
endif

# SANITIZE=1 builds everything into build/san with ASan + UBSan.
ifeq ($(SANITIZE),1)
BUILD   := build/san
CFLAGS  += -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined
LDFLAGS += -fsanitize=address,undefined
TAKO    := $(BUILD)/tako
WHOAMI  := $(BUILD)/whoami
else
BUILD   := build/rel
TAKO    := tako
WHOAMI  := examples/whoami/whoami
endif

SRC_ALL  := $(shell find src -name '*.c' | sort)
SRC_LIB  := $(filter-out src/main.c,$(SRC_ALL))
OBJ_LIB  := $(SRC_LIB:%.c=$(BUILD)/%.o)
OBJ_MAIN := $(BUILD)/src/main.o
UNIT_SRC := $(sort $(wildcard tests/unit/test_*.c))
UNIT_BIN := $(UNIT_SRC:tests/unit/%.c=$(BUILD)/tests/%)
LIBTAKO  := $(BUILD)/libtako.a

.PHONY: all clean test unit e2e demo install deps fuzz bench bench-lb check-format
all: $(TAKO) $(WHOAMI) $(UNIT_BIN)

$(BUILD)/%.o: %.c
	@mkdir -p $(dir $@)
	$(CC) $(CPPFLAGS) $(CFLAGS) -MMD -MP -c $< -o $@

$(LIBTAKO): $(OBJ_LIB)
	@rm -f $@
	$(AR) rcs $@ $^

$(TAKO): $(OBJ_MAIN) $(LIBTAKO)
	$(CC) $(LDFLAGS) -o $@ $(OBJ_MAIN) $(LIBTAKO) $(LDLIBS)

$(WHOAMI): $(BUILD)/examples/whoami/whoami.o $(LIBTAKO)
	$(CC) $(LDFLAGS) -o $@ $^ $(LDLIBS)

$(BUILD)/tests/%: $(BUILD)/tests/unit/%.o $(BUILD)/tests/unit/unit.o $(LIBTAKO)
	@mkdir -p $(dir $@)
	$(CC) $(LDFLAGS) -o $@ $^ $(LDLIBS)

deps:
	@scripts/deps.sh build

# `make test`: unit + e2e, then the same again under ASan/UBSan; the last
# line is "N passed, N failed".
test:
	@scripts/deps.sh test
	@scripts/test.sh

unit: all
	@scripts/test.sh unit

e2e: all
	@scripts/test.sh e2e

demo:
	@scripts/deps.sh build
	@$(MAKE) --no-print-directory all
	@scripts/demo.sh

fuzz:
	@scripts/fuzz.sh

# `make bench-lb`: the cost of one balancing decision at 3/100/10,000
# backends, appended to bench/RESULTS_LB.md.
LB_COST := $(BUILD)/bench/lb_cost
$(LB_COST): bench/lb_cost.c $(LIBTAKO)
	@mkdir -p $(dir $@)
	$(CC) $(CPPFLAGS) $(CFLAGS) -o $@ $< $(LIBTAKO) $(LDLIBS)

bench-lb: $(LB_COST)
	@$(LB_COST) | tee -a bench/RESULTS_LB.md

bench: all
	@bench/run.sh

install: $(TAKO)
	install -d $(DESTDIR)$(PREFIX)/bin $(DESTDIR)$(PREFIX)/share/man/man1
	install -m 0755 $(TAKO) $(DESTDIR)$(PREFIX)/bin/tako
	install -m 0644 man/tako.1 $(DESTDIR)$(PREFIX)/share/man/man1/tako.1

clean:
	rm -rf build tako examples/whoami/whoami

-include $(shell find build -name '*.d' 2>/dev/null)

# ---- runtime test driver ----------------------------------------------------
# tests/drivers/rt_driver.c links libtako and drives the process runtime
# (src/runtime/rt.h) from stdin, so tests/e2e/test_runtime*.py can exercise it
# on its own. Built as part of `all`.
RT_DRIVER := $(BUILD)/tests/rt_driver
all: $(RT_DRIVER)
$(RT_DRIVER): $(BUILD)/tests/drivers/rt_driver.o $(LIBTAKO)
	@mkdir -p $(dir $@)
	$(CC) $(LDFLAGS) -o $@ $^ $(LDLIBS)

# ---- Docker client test tool ------------------------------------------------
# tests/drivers/dk_tool.c runs one Docker Engine API call of
# src/runtime/docker_api.h per invocation, for tests/e2e/test_docker_api.py.
DK_TOOL := $(BUILD)/tests/dk_tool
all: $(DK_TOOL)
$(DK_TOOL): $(BUILD)/tests/drivers/dk_tool.o $(LIBTAKO)
	@mkdir -p $(dir $@)
	$(CC) $(LDFLAGS) -o $@ $^ $(LDLIBS)

# ---- ACME test driver -------------------------------------------------------
# tests/drivers/acme_driver.c runs one ACME order (src/acme) against the
# Pebble CA that tests/e2e/test_acme.py starts. Built as part of `all`.
ACME_DRIVER := $(BUILD)/tests/acme_driver
all: $(ACME_DRIVER)
$(ACME_DRIVER): $(BUILD)/tests/drivers/acme_driver.o $(LIBTAKO)
	@mkdir -p $(dir $@)
	$(CC) $(LDFLAGS) -o $@ $^ $(LDLIBS)
