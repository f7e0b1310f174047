#!/usr/bin/env node
// An outbox relay: claims events of one topic, publishes each as one JSON line
// to a file (or stdout), acks what was published and nacks what failed.
// SIGTERM or SIGINT stops it: the events of the current batch that were
// published are acked, the others handed back (nack with retry_after 0),
// and it exits 0.
//
//   node relay.js TOPIC [OUTPUT]     OUTPUT: file to append to; stdout if "-" or missing
//
// Connects with DATABASE_URL if set, otherwise with the PG* variables
// (PGHOST, PGPORT, PGDATABASE, PGUSER, PGPASSWORD). See ../README.md for the
// RELAY_* settings.
'use strict';

const fs = require('node:fs');
const { Client } = require('pg');

const env = process.env;
const settings = {
  batchSize: Number(env.RELAY_BATCH_SIZE || 100),
  lease: env.RELAY_LEASE || '30 seconds',
  wait: env.RELAY_WAIT || '1 second',
  retryAfter: env.RELAY_RETRY_AFTER || null, // null: the topic's backoff
  // Test knobs: fail the first attempt of events whose payload has this
  // field set to true; sleep before each publish.
  failField: env.RELAY_TEST_FAIL_FIELD || null,
  publishDelayMs: Number(env.RELAY_TEST_PUBLISH_DELAY_MS || 0),
};

const CLAIM = `
  SELECT c.id, c.lease_token, to_jsonb(c) - 'lease_token' - 'lease_expires_at' AS event
    FROM outbox.claim($1, batch_size => $2::int, lease => $3::interval, wait => $4::interval) c`;

let stopping = false;

const log = (message) => console.error(`relay: ${message}`);
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

function openOutput(path) {
  if (!path || path === '-') return process.stdout;
  return fs.createWriteStream(null, { fd: fs.openSync(path, 'a') });
}

async function publish(out, event) {
  if (settings.publishDelayMs > 0) await sleep(settings.publishDelayMs);
  if (settings.failField && event.payload?.[settings.failField] === true && event.attempt === 1) {
    throw new Error(`simulated failure (payload.${settings.failField})`);
  }
  await new Promise((resolve, reject) => {
    out.write(`${JSON.stringify(event)}\n`, (err) => (err ? reject(err) : resolve()));
  });
}

async function nack(db, id, token, error, retryAfter) {
  const { rows } = await db.query(
    'SELECT outbox.nack($1, $2, $3, $4::interval) AS verdict',
    [id, token, error, retryAfter],
  );
  return rows[0].verdict ?? 'lease lost';
}

// Claims one batch and relays it; returns the number of events published.
async function relayBatch(db, out, topic) {
  const { rows } = await db.query(CLAIM, [topic, settings.batchSize, settings.lease, settings.wait]);
  if (rows.length === 0) return 0;

  const token = rows[0].lease_token;
  const published = [];
  const unpublished = [];
  for (const { id, event } of rows) {
    if (stopping) {
      unpublished.push(id);
      continue;
    }
    try {
      await publish(out, event);
      published.push(id);
    } catch (err) {
      const verdict = await nack(db, id, token, err.message, settings.retryAfter);
      log(`event ${id} failed (${verdict}): ${err.message}`);
    }
  }

  if (published.length > 0) {
    const { rows: [{ acked }] } = await db.query(
      'SELECT outbox.ack($1::bigint[], $2) AS acked',
      [published, token],
    );
    if (acked < published.length) {
      log(`${published.length - acked} events lost their lease before the ack and will come again`);
    }
  }
  for (const id of unpublished) await nack(db, id, token, 'relay stopping', '0');
  if (unpublished.length > 0) log(`handed back ${unpublished.length} unpublished events`);
  return published.length;
}

async function main() {
  const [topic, output] = process.argv.slice(2);
  if (!topic) {
    console.error('usage: node relay.js TOPIC [OUTPUT]');
    process.exit(2);
  }
  for (const signal of ['SIGTERM', 'SIGINT']) {
    process.on(signal, () => {
      if (!stopping) log(`${signal}: stopping`);
      stopping = true;
    });
  }

  const out = openOutput(output);
  const db = new Client({ connectionString: env.DATABASE_URL });
  db.on('error', (err) => {
    log(`fatal: ${err.message}`);
    process.exit(1);
  });
  await db.connect();
  log(`relaying topic ${topic} to ${out === process.stdout ? 'stdout' : output}`);

  let total = 0;
  while (!stopping) total += await relayBatch(db, out, topic);

  await db.end();
  if (out !== process.stdout) out.end();
  log(`stopped after publishing ${total} events`);
}

main().catch((err) => {
  log(`fatal: ${err.message}`);
  process.exit(1);
});
