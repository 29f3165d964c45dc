import { test } from 'node:test';
import assert from 'node:assert/strict';
import dgram from 'node:dgram';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pino from 'pino';
import { MediaEngine, type BrowserMediaPort } from '../../src/media';
import { buildRtp, type RtpPacketView } from '../../src/media/rtp';
import { CdrWriter } from '../../src/observability/cdr';

const logger = pino({ level: 'silent' });
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** A browser side that negotiated PCMU, so the bridge passes trunk audio through unchanged. */
function fakeBrowser(): BrowserMediaPort & { got: RtpPacketView[] } {
  const got: RtpPacketView[] = [];
  return {
    got,
    opusPayloadType: null,
    pcmuPayloadType: 0,
    telephoneEventPayloadType: null,
    sendCodec: 'pcmu',
    onRtp: () => () => {},
    sendRtp: (pkt) => got.push({ ...pkt, payload: Buffer.from(pkt.payload) }),
  };
}

test('trunk packets out of order, duplicated and missing: the browser gets them in order, stats() and the CDR line count them', async () => {
  const engine = new MediaEngine({ bindHost: '127.0.0.1', advertisedHost: '127.0.0.1', portRange: [19780, 19799], logger });
  const leg = await engine.createSipLeg({ callId: 'r1' });
  const trunk = dgram.createSocket('udp4');
  await new Promise<void>((r) => trunk.bind(0, '127.0.0.1', () => r()));
  const browser = fakeBrowser();
  const dir = mkdtempSync(join(tmpdir(), 'cdr-'));
  try {
    leg.setRemote({ address: '127.0.0.1', port: trunk.address().port, codec: 'PCMU', payloadType: 0 });
    const bridge = engine.createBridge(browser, leg, { callId: 'r1' });
    assert.equal(bridge.isTranscoding, false);
    // 3 overtaken by 4, then a duplicate 3; 6 missing while 7..10 arrive (more than the reorder
    // depth of 3, so the gap is given up), then 6 comes too late; 12 overtaken by 13.
    const order = [1, 2, 4, 3, 3, 5, 7, 8, 9, 10, 6, 11, 13, 12];
    for (const seq of order) trunk.send(buildRtp(0, seq, seq * 160, 0x1234, Buffer.alloc(160, seq)), leg.localPort, '127.0.0.1');
    for (let i = 0; i < 50 && browser.got.length < 12; i++) await sleep(10);
    await sleep(60); // anything wrongly still held would be given up by now

    // Payload byte = trunk sequence number: in order, each once, 6 absent.
    assert.deepEqual(browser.got.map((p) => p.payload[0]), [1, 2, 3, 4, 5, 7, 8, 9, 10, 11, 12, 13]);
    // The given-up packet leaves a hole in the browser-bound numbering for its jitter buffer to conceal.
    const steps = browser.got.slice(1).map((p, i) => (p.sequenceNumber - browser.got[i].sequenceNumber) & 0xffff);
    assert.deepEqual(steps, [1, 1, 1, 1, 2, 1, 1, 1, 1, 1, 1]);

    const sip = bridge.stats().sip;
    assert.deepEqual(sip.reorder, { reordered: 2, duplicateOrLate: 2, givenUp: 1 });
    // Socket-level counters are unchanged in meaning: every well-formed datagram was received.
    assert.equal(sip.packetsReceived, order.length);
    assert.equal(sip.dropped, 0);
    assert.equal(bridge.stats().browser.reorder, undefined, 'the browser leg has no reorder stage');

    // The CDR carries bridge.stats() as `quality` (CallBase.record()): the counters reach the JSON line.
    const path = join(dir, 'cdr.jsonl');
    const cdr = new CdrWriter(path);
    cdr.write({ callId: 'r1', quality: bridge.stats() });
    cdr.close();
    const line = JSON.parse(readFileSync(path, 'utf8').trim());
    assert.deepEqual(line.quality.sip.reorder, { reordered: 2, duplicateOrLate: 2, givenUp: 1 });
    bridge.close();
  } finally {
    leg.close();
    trunk.close();
    rmSync(dir, { recursive: true, force: true });
    await engine.close();
  }
});
