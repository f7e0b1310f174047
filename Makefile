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
	maintain stats replay capture readonly limits many_topics reap_bad_row reinstall ordered
REGRESS_OPTS = --temp-instance=./tmp_check --temp-config=./test/outbox-test.conf
# Isolation specs, on their own private instance.
ISOLATION = inflight claim_race dedupe_race ack_reap stale_token tenant_part \
	redrive_claim drop_offer nack_expiry settle_claim maintain_twice \
	slot_handover scan_commit alter_visible reap_open_claim capture_order \
	ordered_two_consumers ordered_nack ordered_expiry ordered_ack_order \
	ordered_dead_letter ordered_redrive ordered_inflight
ISOLATION_OPTS = --temp-instance=./tmp_check_iso --temp-config=./test/outbox-test.conf

# Perl TAP tests (t/): the background worker and crash recovery.
TAP_TESTS = 1

ENCODING = UTF8
NO_LOCALE = 1

EXTRA_CLEAN = tmp_check tmp_check_iso output_iso results log regression.diffs regression.out

PGXS := $(shell $(PG_CONFIG) --pgxs)
include $(PGXS)

# Rebuild the sources when any of the project's headers changes.
$(OBJS): $(wildcard include/*.h)

.PHONY: test demo
# Every test suite, on a fresh machine too (installs what is missing).
# PG=17 or PG=18 runs them against that PostgreSQL in a Debian chroot
# (scripts/pgchroot.sh); SUITES="regress tap" runs only those.
test:
	bash scripts/test.sh$(if $(PG), --pg=$(PG))$(if $(SUITES), $(SUITES))

# A local demo cluster with a producer and a consumer; PG=17 or PG=18 runs
# it in that version's Debian chroot.
demo:
	bash scripts/demo.sh$(if $(PG), --pg=$(PG)) $(ARGS)

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

.PHONY: dist
# outbox-<version>.tar.gz of the committed tree (HEAD), for PGXN and for
# packagers, in DIST_DIR (default: here).  <version> is META.json's, which
# must be outbox.control's default_version in major.minor.patch form, as
# must the version META.json gives the extension.  scripts/dist-check.sh
# builds and tests the tarball.
dist:
	@set -e; \
	for f in META.json outbox.control; do \
		git cat-file -e "HEAD:$$f" 2>/dev/null || \
			{ echo "dist: $$f is not committed" >&2; exit 1; }; \
	done; \
	control=$$(git show HEAD:outbox.control | \
		sed -n "s/^[[:space:]]*default_version[[:space:]]*=[[:space:]]*'\([^']*\)'.*/\1/p"); \
	case "$$control" in \
		[0-9]*.[0-9]*.[0-9]*) want=$$control ;; \
		[0-9]*.[0-9]*) want=$$control.0 ;; \
		*) echo "dist: no default_version in outbox.control" >&2; exit 1 ;; \
	esac; \
	versions=$$(git show HEAD:META.json | perl -MJSON::PP -e 'my $$m = decode_json(join "", <STDIN>); print join(" ", $$m->{version} // "-", $$m->{provides}{outbox}{version} // "-")'); \
	set -- $$versions; \
	if [ "$$1" != "$$want" ] || [ "$$2" != "$$want" ]; then \
		echo "dist: META.json says version $$1 (extension $$2), outbox.control's default_version is $$control: they must agree ($$want)" >&2; \
		exit 1; \
	fi; \
	out="$(or $(DIST_DIR),.)/outbox-$$want.tar.gz"; \
	git archive --format=tar.gz --prefix="outbox-$$want/" -o "$$out" HEAD -- . \
		':(exclude).ci' ':(exclude).gitignore'; \
	if [ -n "$$(GIT_OPTIONAL_LOCKS=0 git status --porcelain --untracked-files=no)" ]; then \
		echo "dist: note: uncommitted changes are not in the tarball" >&2; \
	fi; \
	echo "$$out"
