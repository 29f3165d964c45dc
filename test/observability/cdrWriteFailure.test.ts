/**
 * A CDR line that cannot be written (a full disk) is not lost: the record goes to the log,
 * whole, with the error. The call itself ends normally.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import type WebSocket from 'ws';
import { CdrWriter } from '../../src/observability/cdr';
import { startGateway } from '../support/gateway';
import { browserPeers, openTab, until } from '../support/tabs';

const BASE = 24300; // 24300-24599
const SECRET = 'cdr-write-failure-secret-0123456789abcd';
const browsers = browserPeers();

test('CdrWriter on a full disk throws (the caller keeps the record); the gateway logs the whole record instead', { skip: existsSync('/dev/full') ? false : 'no /dev/full here' }, async () => {
  const full = new CdrWriter('/dev/full');
  assert.throws(() => full.write({ callId: 'x' }), /ENOSPC/);
  full.close();

  const gw = await startGateway(BASE, { auth: { mode: 'token', hs256Secret: SECRET }, demo: { enabled: true, sipPort: BASE + 2 }, cdr: { path: '/dev/full' } }, { captureLogs: true });
  const sockets: WebSocket[] = [];
  try {
    const tab = await openTab(BASE, 'dora', SECRET, sockets);
    tab.ws.send(JSON.stringify({ type: 'call', to: '1002', ref: 'busy', sdp: await browsers.offer() }));
    await until(() => tab.messages.some((m) => m.type === 'ended'), 'the call ended busy');
    await until(() => gw.logs.some((l) => l.msg === 'CDR write failed: the record is in this log line'), 'the failed CDR in the log');
    const line = gw.logs.find((l) => l.msg === 'CDR write failed: the record is in this log line')!;
    const cdr = line.cdr as { to: string; cause: string; callId: string };
    assert.equal(cdr.to, '1002');
    assert.ok(cdr.callId && cdr.cause, JSON.stringify(cdr));
  } finally {
    for (const ws of sockets) ws.terminate();
    await gw.stop();
  }
});
