import { test } from 'node:test';
import assert from 'node:assert/strict';
import dgram from 'node:dgram';
import pino from 'pino';
import { SipUserAgent, type Dialog, type ServerInvite } from '../../src/sip';

const logger = pino({ level: 'silent' });
const SDP = 'v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 4000 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n';

async function pair(): Promise<[SipUserAgent, SipUserAgent, number]> {
  const a = new SipUserAgent({ transports: [{ protocol: 'udp', host: '127.0.0.1', port: 0 }], logger });
  const b = new SipUserAgent({ transports: [{ protocol: 'udp', host: '127.0.0.1', port: 0 }], logger });
  await a.start(); await b.start();
  return [a, b, b.boundAddresses[0].port];
}

function once<T extends unknown[]>(em: { once(ev: string, fn: (...a: T) => void): unknown }, ev: string): Promise<T> {
  return new Promise((r) => em.once(ev, (...a: T) => r(a)));
}

test('INVITE → 180 → 200 → ACK, re-INVITE, BYE between two user agents over UDP', async () => {
  const [a, b, port] = await pair();
  try {
    const serverDialog = new Promise<Dialog>((resolve) => b.on('invite', (inv: ServerInvite) => {
      assert.equal(inv.request.body, SDP);
      inv.progress(180);
      setTimeout(() => resolve(inv.accept(SDP)), 20);
    }));
    const inv = a.invite({ requestUri: `sip:1000@127.0.0.1:${port}`, from: { uri: 'sip:alice@127.0.0.1', displayName: 'Alice "A"' }, sdp: SDP });
    const [progress] = await once<[any]>(inv, 'progress');
    assert.equal(progress.status, 180);
    const [res, dialog] = await once<[any, Dialog]>(inv, 'accepted');
    assert.equal(res.status, 200);
    const bDialog = await serverDialog;
    await once(bDialog, 'confirmed');
    assert.equal(bDialog.state, 'confirmed');

    bDialog.on('reinvite', (req, reply) => { assert.match(req.body, /m=audio/); reply(200, SDP); });
    const re = await dialog.reinvite(SDP);
    assert.equal(re.status, 200);

    const ended = once<[string]>(bDialog, 'terminated');
    await dialog.bye();
    assert.equal((await ended)[0], 'bye');
    await new Promise((r) => setTimeout(r, 50));
    assert.equal(a.counts.dialogs, 0);
    assert.equal(b.counts.dialogs, 0);
  } finally {
    await a.stop(); await b.stop();
  }
});

test('CANCEL while ringing: the caller gets 487 and the callee sees cancelled', async () => {
  const [a, b, port] = await pair();
  try {
    const cancelled = new Promise<void>((resolve) => b.on('invite', (inv) => { inv.progress(180); inv.on('cancelled', () => resolve()); }));
    const inv = a.invite({ requestUri: `sip:1000@127.0.0.1:${port}`, from: { uri: 'sip:alice@127.0.0.1' }, sdp: SDP });
    await once(inv, 'progress');
    inv.cancel();
    const [res] = await once<[any]>(inv, 'rejected');
    assert.equal(res.status, 487);
    await cancelled;
  } finally {
    await a.stop(); await b.stop();
  }
});

test('rejection, 481 for an unknown dialog and OPTIONS are answered; garbage does not stop the UA', async () => {
  const [a, b, port] = await pair();
  try {
    b.on('invite', (inv) => inv.reject(486, 'Busy Here'));
    const inv = a.invite({ requestUri: `sip:1002@127.0.0.1:${port}`, from: { uri: 'sip:alice@127.0.0.1' }, sdp: SDP });
    const [res] = await once<[any]>(inv, 'rejected');
    assert.equal(res.status, 486);

    const raw = dgram.createSocket('udp4');
    await new Promise<void>((r) => raw.bind(0, '127.0.0.1', () => r()));
    const replies: string[] = [];
    raw.on('message', (m) => replies.push(m.toString()));
    const rport = raw.address().port;
    const send = (s: string) => raw.send(s, port, '127.0.0.1');
    send('garbage\r\n\r\n');
    send(`BYE sip:x@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:${rport};branch=z9hG4bKbye1\r\nFrom: <sip:a@x>;tag=1\r\nTo: <sip:b@y>;tag=2\r\nCall-ID: nope\r\nCSeq: 1 BYE\r\nContent-Length: 0\r\n\r\n`);
    send(`INVITE sip:x@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:${rport};branch=z9hG4bKbad1\r\nFrom: <sip:a@x>;tag=1\r\nTo: <sip:b@y>\r\nCall-ID: bad\r\nCSeq: 1 BYE\r\nContent-Length: 0\r\n\r\n`);
    send(`FOO sip:x@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:${rport};branch=z9hG4bKfoo1\r\nFrom: <sip:a@x>;tag=1\r\nTo: <sip:b@y>\r\nCall-ID: foo\r\nCSeq: 1 FOO\r\nContent-Length: 0\r\n\r\n`);
    send(`OPTIONS sip:x@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:${rport};branch=z9hG4bKopt1\r\nFrom: <sip:a@x>;tag=1\r\nTo: <sip:b@y>\r\nCall-ID: opt\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n`);
    await new Promise((r) => setTimeout(r, 200));
    raw.close();
    assert.ok(replies.some((r) => r.startsWith('SIP/2.0 481')), 'BYE outside a dialog → 481');
    assert.ok(replies.some((r) => r.startsWith('SIP/2.0 400 CSeq method does not match')), 'bad CSeq → 400 naming the problem');
    assert.ok(replies.some((r) => r.startsWith('SIP/2.0 501')), 'unknown method → 501');
    const opt = replies.find((r) => r.startsWith('SIP/2.0 200'));
    assert.ok(opt && /Allow: .*INVITE/.test(opt), 'OPTIONS → 200 with Allow');
  } finally {
    await a.stop(); await b.stop();
  }
});
