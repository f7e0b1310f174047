'use strict';
// The reading end of t/019_wal_delivery: a real logical replication client
// (the npm package pg-logical-replication with its pgoutput plugin, messages
// on) that streams a slot over a replication connection, as Debezium does.
//
//   node client.js --host=SOCKDIR --port=N --dbname=DB --slot=S \
//       --publication=P --out=FILE [--count=N] [--ack[=commits]] [--stay] \
//       [--timeout=SECONDS] [--proto=1|2]
//
// For each transaction that holds messages with the prefix "outbox", it
// writes, once the transaction's commit has arrived, each message's content
// as it came (one JSON object a line), then the line
// {"commit":"<end LSN of the commit>","xid":XID,"messages":N}.  A
// transaction is written whole or not at all.
//
// --ack confirms to the server what it has received: the end of each
// transaction, the position of each non-transactional message and, while no
// transaction is open, the position of every keepalive (so that the slot
// follows the WAL while the client waits).  --ack=commits confirms only the
// first two, as Debezium does: the slot then moves only when something is
// sent (outbox's messages, or the messages of its heartbeat.action.query).
// Without --ack it confirms nothing: the slot stays where it was and the
// next run gets the same transactions again.
//
// It stops after the commit that brings it to --count messages (0: at
// once), or, with --stay, at SIGTERM or SIGINT.  Exit status: 0 done, 3 the
// timeout passed before --count messages came, 4 an error (on stderr).
// "streaming" on stderr tells that the server has started to stream.
const fs = require('fs');
const { LogicalReplicationService, PgoutputPlugin } = require('pg-logical-replication');

const args = {};
for (const a of process.argv.slice(2)) {
  const m = /^--([a-z]+)(?:=(.*))?$/.exec(a);
  if (!m) {
    console.error(`client: unknown argument ${a}`);
    process.exit(4);
  }
  args[m[1]] = m[2] === undefined ? true : m[2];
}
for (const k of ['host', 'port', 'dbname', 'slot', 'publication', 'out']) {
  if (!args[k]) {
    console.error(`client: --${k} is required`);
    process.exit(4);
  }
}
const want = Number(args.count ?? 0);
const ack = Boolean(args.ack);
const ackKeepalives = ack && args.ack !== 'commits';
const stay = Boolean(args.stay);
const timeout = Number(args.timeout ?? 60);
const proto = Number(args.proto ?? 1);

const out = fs.openSync(args.out, 'w');
const service = new LogicalReplicationService(
  {
    host: args.host,
    port: Number(args.port),
    user: args.user || 'postgres',
    database: args.dbname,
    application_name: 'outbox_wal_client',
  },
  // Every confirmation is this client's own: no automatic ones, no
  // periodic status that would confirm whatever arrived last.
  { acknowledge: { auto: false, timeoutSeconds: 0 } },
);
const plugin = new PgoutputPlugin({
  protoVersion: proto,
  publicationNames: [args.publication],
  messages: true,
});

let seen = 0;
let txn = null;            // the open transaction's messages, or null
let xid = null;
let stopping = false;

// pg-logical-replication's acknowledge(lsn) reports lsn + 1 as written,
// flushed and applied.  The server is to be told the position itself, as
// Debezium (through pgjdbc) tells it: the end of a commit, the start of a
// message, the position of a keepalive.  Told one byte more, it would skip
// a transaction whose commit record starts right there when the slot is
// read again.  So one is taken off first.
function confirm(lsn) {
  const [hi, lo] = lsn.split('/').map((h) => BigInt(`0x${h}`));
  const pos = (hi << 32n) + lo;
  if (pos === 0n)
    return;
  const p = pos - 1n;
  service.acknowledge(`${(p >> 32n).toString(16).toUpperCase()}/${(p & 0xffffffffn).toString(16).toUpperCase()}`);
}

async function finish(code) {
  if (stopping)
    return;
  stopping = true;
  try {
    await service.stop();
  } catch (e) {
    // the connection ends either way
  }
  fs.closeSync(out);
  process.exit(code);
}

service.on('start', () => {
  process.stderr.write('streaming\n');
  if (want === 0 && !stay)
    finish(0);
});

service.on('data', (lsn, msg) => {
  if (stopping)
    return;
  switch (msg.tag) {
    case 'begin':
      txn = [];
      xid = msg.xid;
      break;
    case 'message':
      if (!msg.transactional) {
        // a message of its own (a connector's heartbeat): confirmed at once
        if (msg.prefix === 'outbox') {
          console.error(`client: a non-transactional outbox message at ${msg.messageLsn}`);
          finish(4);
          return;
        }
        if (ack && txn === null)
          confirm(lsn);
        break;
      }
      if (msg.prefix !== 'outbox')
        break;
      if (txn === null) {
        console.error(`client: an outbox message outside a transaction at ${msg.messageLsn}`);
        finish(4);
        return;
      }
      txn.push(Buffer.from(msg.content));
      break;
    case 'commit': {
      const msgs = txn || [];
      txn = null;
      if (msgs.length > 0) {
        const lines = [];
        for (const c of msgs)
          lines.push(c, Buffer.from('\n'));
        lines.push(Buffer.from(`${JSON.stringify({ commit: msg.commitEndLsn, xid, messages: msgs.length })}\n`));
        fs.writeSync(out, Buffer.concat(lines));
        seen += msgs.length;
      }
      if (ack)
        confirm(msg.commitEndLsn);
      if (!stay && seen >= want)
        finish(0);
      break;
    }
    default:
      break;
  }
});

service.on('heartbeat', (lsn) => {
  if (ackKeepalives && txn === null && !stopping)
    confirm(lsn);
});

service.on('error', (e) => {
  if (stopping)
    return;
  console.error(`client: ${e && e.stack ? e.stack : e}`);
  finish(4);
});

process.on('SIGTERM', () => finish(seen >= want ? 0 : 3));
process.on('SIGINT', () => finish(seen >= want ? 0 : 3));
setTimeout(() => {
  console.error(`client: ${seen} of ${want} messages after ${timeout} s`);
  finish(3);
}, timeout * 1000).unref();

service.subscribe(plugin, args.slot).catch((e) => {
  if (stopping)
    return;
  console.error(`client: ${e && e.stack ? e.stack : e}`);
  finish(4);
});
