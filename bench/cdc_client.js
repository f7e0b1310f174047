// The reader of the cdc case's decoding point (bench/run.sh): a pgoutput
// client of the npm package pg-logical-replication (2.5.x) that streams a
// logical replication slot with messages on and counts the messages of
// prefix "outbox", the events of a topic delivered through the WAL.
//
//   node cdc_client.js SLOT PUBLICATION FIRST_FILE
//
// Connects as PGUSER to PGDATABASE through PGHOST/PGPORT (libpq's
// variables).  Prints "start" once streaming, then every 100 ms a line
// "<unix time> <events> <transactions> <last commit end LSN>".  It confirms
// the end LSN of the last commit it has read every 200 ms (acknowledge
// auto: false: the package would otherwise send a status update for every
// message).  The first event's content goes to FIRST_FILE, so the harness
// can check it is the JSON the topic's offers wrote.  SIGTERM: one last line
// and confirmation, then it exits.
'use strict';
const fs = require('fs');
const { LogicalReplicationService, PgoutputPlugin } = require('pg-logical-replication');

const [slot, publication, firstFile] = process.argv.slice(2);
if (!slot || !publication || !firstFile) {
	console.error('usage: node cdc_client.js SLOT PUBLICATION FIRST_FILE');
	process.exit(2);
}

let events = 0;
let xacts = 0;
let lastEnd = null;
let acked = null;

const service = new LogicalReplicationService(
	{
		host: process.env.PGHOST,
		port: Number(process.env.PGPORT),
		user: process.env.PGUSER || 'postgres',
		database: process.env.PGDATABASE,
	},
	{ acknowledge: { auto: false, timeoutSeconds: 0 } },
);

service.on('data', (lsn, msg) => {
	if (msg.tag === 'message') {
		if (msg.prefix === 'outbox') {
			if (events === 0)
				fs.writeFileSync(firstFile, Buffer.from(msg.content).toString('utf8'));
			events++;
		}
	} else if (msg.tag === 'commit') {
		xacts++;
		lastEnd = msg.commitEndLsn;
	}
});
service.on('heartbeat', (lsn, timestamp, shouldRespond) => {
	if (shouldRespond && lastEnd)
		service.acknowledge(lastEnd);
});
service.on('error', (e) => {
	console.error(`cdc_client: ${e && e.message ? e.message : e}`);
	process.exit(1);
});
service.on('start', () => process.stdout.write('start\n'));

function line() {
	process.stdout.write(`${(Date.now() / 1000).toFixed(3)} ${events} ${xacts} ${lastEnd || '0/0'}\n`);
}
function confirm() {
	if (lastEnd && lastEnd !== acked) {
		acked = lastEnd;
		service.acknowledge(lastEnd);
	}
}
setInterval(line, 100);
setInterval(confirm, 200);

process.on('SIGTERM', async () => {
	confirm();
	line();
	setTimeout(() => process.exit(0), 300);
});

service.subscribe(
	new PgoutputPlugin({ protoVersion: 1, publicationNames: [publication], messages: true }),
	slot,
).catch((e) => {
	console.error(`cdc_client: ${e && e.message ? e.message : e}`);
	process.exit(1);
});
