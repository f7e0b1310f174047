# outbox: PGXS build.  `make && make install` builds and installs the
# extension; `make test` and `make demo` are the README's two commands.

EXTENSION = outbox
MODULE_big = outbox
OBJS = $(patsubst %.c,%.o,$(sort $(wildcard src/*.c)))
DATA = $(wildcard outbox--*.sql)
PGFILEDESC = "outbox - transactional outbox for PostgreSQL"

PG_CONFIG ?= $(shell test -x /usr/lib/postgresql/15/bin/pg_config && echo /usr/lib/postgresql/15/bin/pg_config || echo pg_config)
PG_CPPFLAGS = -Iinclude -Wall -Wextra -Wno-unused-parameter \
	-Wno-missing-field-initializers -Wno-sign-compare

# Regression tests run on a private instance that preloads the library.
REGRESS = setup topics alter_topic metrics offer log_insert claim_ack nack_dead redrive dedupe errors \
	maintain stats replay readonly limits many_topics reap_bad_row reinstall
REGRESS_OPTS = --temp-instance=./tmp_check --temp-config=./test/outbox-test.conf
# Isolation specs, on their own private instance.
ISOLATION = inflight claim_race dedupe_race ack_reap stale_token tenant_part \
	redrive_claim drop_offer nack_expiry settle_claim maintain_twice \
	slot_handover scan_commit alter_visible
ISOLATION_OPTS = --temp-instance=./tmp_check_iso --temp-config=./test/outbox-test.conf

# Perl TAP tests (t/): the background worker and crash recovery.
TAP_TESTS = 1

ENCODING = UTF8
NO_LOCALE = 1

EXTRA_CLEAN = tmp_check tmp_check_iso output_iso results log regression.diffs regression.out

PGXS := $(shell $(PG_CONFIG) --pgxs)
include $(PGXS)

# Every source includes the shared header: rebuild them all when it changes.
$(OBJS): include/outbox.h include/compat.h

.PHONY: test demo
# Every test suite, on a fresh machine too (installs what is missing).
# PG=17 or PG=18 runs them against that PostgreSQL in a Debian chroot
# (scripts/pgchroot.sh); SUITES="regress tap" runs only those.
test:
	bash scripts/test.sh$(if $(PG), --pg=$(PG))$(if $(SUITES), $(SUITES))

# A local demo cluster with a producer and a consumer.
demo:
	bash scripts/demo.sh $(ARGS)

.PHONY: bench bench-quick
# Benchmarks against the baselines (bench/README.md); not part of `make test`.
bench:
	bash bench/run.sh $(ARGS)

bench-quick:
	bash bench/run.sh --quick $(ARGS)

.PHONY: sanitize
# The regression and isolation suites under AddressSanitizer and UBSan.
sanitize:
	bash scripts/sanitize.sh
