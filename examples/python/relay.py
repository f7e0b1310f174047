#!/usr/bin/python3
"""An outbox relay: claims events of one topic, publishes each as one JSON
line to a file (or stdout), acks what was published and nacks what failed.
SIGTERM or SIGINT stops it: the events of the current batch that were
published are acked, the others handed back (nack with retry_after 0), and
it exits 0.

    python3 relay.py TOPIC [OUTPUT]    OUTPUT: file to append to; stdout if "-" or missing

Connects with DATABASE_URL if set, otherwise with the PG* variables (PGHOST,
PGPORT, PGDATABASE, PGUSER, PGPASSWORD). See ../README.md for the RELAY_*
settings.
"""

import contextlib
import json
import os
import signal
import sys
import threading

import psycopg

BATCH_SIZE = int(os.environ.get("RELAY_BATCH_SIZE") or 100)
LEASE = os.environ.get("RELAY_LEASE") or "30 seconds"
WAIT = os.environ.get("RELAY_WAIT") or "1 second"
RETRY_AFTER = os.environ.get("RELAY_RETRY_AFTER") or None  # None: the topic's backoff
# Test knobs: fail the first attempt of events whose payload has this field
# set to true; sleep before each publish.
FAIL_FIELD = os.environ.get("RELAY_TEST_FAIL_FIELD") or None
PUBLISH_DELAY = int(os.environ.get("RELAY_TEST_PUBLISH_DELAY_MS") or 0) / 1000

CLAIM = """
    SELECT c.id, c.lease_token, to_jsonb(c) - 'lease_token' - 'lease_expires_at' AS event
      FROM outbox.claim(%s, batch_size => %s::int, lease => %s::interval, wait => %s::interval) c
"""

stopping = threading.Event()


def log(message):
    print(f"relay: {message}", file=sys.stderr, flush=True)


class PublishError(Exception):
    pass


def open_output(path):
    if path == "-":
        return contextlib.nullcontext(sys.stdout)
    return open(path, "a", encoding="utf-8")


def publish(out, event):
    if PUBLISH_DELAY:
        stopping.wait(PUBLISH_DELAY)
    payload = event["payload"]
    if FAIL_FIELD and isinstance(payload, dict) and payload.get(FAIL_FIELD) is True \
            and event["attempt"] == 1:
        raise PublishError(f"simulated failure (payload.{FAIL_FIELD})")
    try:
        out.write(json.dumps(event) + "\n")
        out.flush()
    except OSError as err:
        raise PublishError(str(err)) from err


def nack(conn, event_id, token, error, retry_after):
    verdict = conn.execute(
        "SELECT outbox.nack(%s, %s, %s, %s::interval)",
        (event_id, token, error, retry_after),
    ).fetchone()[0]
    return verdict or "lease lost"


def relay_batch(conn, out, topic):
    """Claims one batch and relays it; returns the number of events published."""
    rows = conn.execute(CLAIM, (topic, BATCH_SIZE, LEASE, WAIT)).fetchall()
    if not rows:
        return 0

    token = rows[0][1]
    published, unpublished = [], []
    for event_id, _, event in rows:
        if stopping.is_set():
            unpublished.append(event_id)
            continue
        try:
            publish(out, event)
            published.append(event_id)
        except PublishError as err:
            verdict = nack(conn, event_id, token, str(err), RETRY_AFTER)
            log(f"event {event_id} failed ({verdict}): {err}")

    if published:
        acked = conn.execute(
            "SELECT outbox.ack(%s::bigint[], %s)", (published, token)
        ).fetchone()[0]
        if acked < len(published):
            log(f"{len(published) - acked} events lost their lease before the ack and will come again")
    for event_id in unpublished:
        nack(conn, event_id, token, "relay stopping", "0")
    if unpublished:
        log(f"handed back {len(unpublished)} unpublished events")
    return len(published)


def main():
    if len(sys.argv) not in (2, 3):
        print("usage: relay.py TOPIC [OUTPUT]", file=sys.stderr)
        return 2
    topic = sys.argv[1]
    output = sys.argv[2] if len(sys.argv) == 3 else "-"

    def stop(signum, _frame):
        if not stopping.is_set():
            log(f"{signal.Signals(signum).name}: stopping")
        stopping.set()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)

    total = 0
    try:
        with open_output(output) as out, \
                psycopg.connect(os.environ.get("DATABASE_URL", ""), autocommit=True) as conn:
            log(f"relaying topic {topic} to {'stdout' if output == '-' else output}")
            while not stopping.is_set():
                total += relay_batch(conn, out, topic)
    except (OSError, psycopg.Error) as err:
        log(f"fatal: {err}")
        return 1
    log(f"stopped after publishing {total} events")
    return 0


if __name__ == "__main__":
    sys.exit(main())
