import { test } from 'node:test';
import assert from 'node:assert/strict';
import dgram from 'node:dgram';
import net from 'node:net';
import pino from 'pino';
import { SipUserAgent, type Dialog, type ServerInvite } from '../../src/sip';
import { until } from '../support/tabs';
import { addOutboundRoute } from '../../src/sip/userAgent';
import { SipRequest, parseSipMessage } from '../../src/sip/message';

const logger = pino({ level: 'silent' });
const SDP = 'v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 4000 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n';

async function pair(): Promise<[SipUserAgent, SipUserAgent, number]> {
  const a = new SipUserAgent({ transports: [{ protocol: 'udp', host: '127.0.0.1', port: 0 }], logger });
  const b = new SipUserAgent({ transports: [{ protocol: 'udp', host: '127.0.0.1', port: 0 }], logger });
  await a.start(); await b.start();
  return [a, b, b.boundAddresses[0].port];
}

/** A bare UDP socket that sends hand-written SIP to `port` and keeps every reply. */
async function rawPeer(port: number) {
  const raw = dgram.createSocket('udp4');
  await new Promise<void>((r) => raw.bind(0, '127.0.0.1', () => r()));
  const replies: string[] = [];
  raw.on('message', (m) => replies.push(m.toString()));
  return { raw, replies, rport: raw.address().port, send: (s: string) => raw.send(s, port, '127.0.0.1') };
}

/** A header's value in a raw SIP message (first of its name), '' when absent. */
function hdr(text: string, name: string): string {
  return text.match(new RegExp(`^${name}: *(.*)$`, 'mi'))?.[1].trim() ?? '';
}

/**
 * A bare UDP socket playing a UAS by hand: every message it gets is kept in `got`, and
 * `reply` writes a response to one of them (its Via, From, To + `toTag`, Call-ID, CSeq).
 */
async function rawUas() {
  const peer = dgram.createSocket('udp4');
  await new Promise<void>((r) => peer.bind(0, '127.0.0.1', () => r()));
  const got: string[] = [];
  peer.on('message', (m) => got.push(m.toString()));
  const reply = (req: string, status: string, toTag: string, extra: string[] = []) => [
    `SIP/2.0 ${status}`, `Via: ${hdr(req, 'Via')}`, `From: ${hdr(req, 'From')}`, `To: ${hdr(req, 'To')}${toTag && !/tag=/.test(hdr(req, 'To')) ? `;tag=${toTag}` : ''}`,
    `Call-ID: ${hdr(req, 'Call-ID')}`, `CSeq: ${hdr(req, 'CSeq')}`, `Contact: <sip:uas@127.0.0.1:${peer.address().port}>`, ...extra, 'Content-Length: 0', '', '',
  ].join('\r\n');
  return { peer, got, reply, port: peer.address().port };
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

    const { raw, replies, rport, send } = await rawPeer(port);
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

test('a Via we cannot answer to (port 0 or past 65535) gets 400, leaves nothing behind, and stop() still works; a TLS-SCTP Via is answered', async () => {
  const [a, b, port] = await pair();
  let invites = 0;
  b.on('invite', () => invites++);
  const { raw, replies, rport, send } = await rawPeer(port);
  try {
    for (const [i, p] of [[1, 99999], [2, 0]]) {
      send(`INVITE sip:x@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:${p};branch=z9hG4bKbadport${i}\r\nFrom: <sip:a@x>;tag=1\r\nTo: <sip:b@y>\r\nCall-ID: badport${i}\r\nCSeq: 1 INVITE\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n`);
    }
    send(`OPTIONS sip:x@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/TLS-SCTP 127.0.0.1:${rport};branch=z9hG4bKsctp1;rport\r\nFrom: <sip:a@x>;tag=1\r\nTo: <sip:b@y>\r\nCall-ID: sctp\r\nCSeq: 1 OPTIONS\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n`);
    await new Promise((r) => setTimeout(r, 200));
    assert.equal(replies.filter((r) => r.startsWith('SIP/2.0 400')).length, 2, `each bad Via refused: ${replies.map((r) => r.split('\r\n')[0]).join(' | ')}`);
    assert.ok(replies.some((r) => r.startsWith('SIP/2.0 200') && r.includes('Call-ID: sctp')), 'the TLS-SCTP Via request answered');
    assert.equal(invites, 0);
    assert.deepEqual(b.counts, { clientTx: 0, serverTx: 1, dialogs: 0, serverInvites: 0 }, 'only the OPTIONS transaction (Timer J) remains');
  } finally {
    raw.close();
    await a.stop();
    await b.stop(); // threw ERR_SOCKET_BAD_PORT from the leaked transaction before
  }
});

test('RFC 2543 peers (no z9hG4bK branch, or none): two calls are two transactions, and a retransmission is still one', async () => {
  const [a, b, port] = await pair();
  const calls: string[] = [];
  b.on('invite', (inv: ServerInvite) => { calls.push(inv.request.header('call-id')!); inv.reject(486, 'Busy Here'); });
  const { raw, replies, rport, send } = await rawPeer(port);
  try {
    const invite = (callId: string, via: string) => `INVITE sip:x@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:${rport}${via}\r\nFrom: <sip:a@x>;tag=f-${callId}\r\nTo: <sip:b@y>\r\nCall-ID: ${callId}\r\nCSeq: 1 INVITE\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n`;
    send(invite('old-a', ''));
    send(invite('old-b', ''));
    send(invite('old-c', ';branch=1234'));
    send(invite('old-d', ';branch=1234'));
    await new Promise((r) => setTimeout(r, 150));
    send(invite('old-a', '')); // a retransmission: answered again, not a new call
    await new Promise((r) => setTimeout(r, 150));
    assert.deepEqual(calls.sort(), ['old-a', 'old-b', 'old-c', 'old-d']);
    for (const id of ['old-a', 'old-b', 'old-c', 'old-d']) assert.ok(replies.some((r) => r.startsWith('SIP/2.0 486') && r.includes(`Call-ID: ${id}`)), `486 for ${id}`);
    assert.ok(replies.filter((r) => r.startsWith('SIP/2.0 486') && r.includes('Call-ID: old-a')).length >= 2, 'the retransmission got the final response again');
  } finally {
    raw.close();
    await a.stop(); await b.stop();
  }
});

test('a re-INVITE answered while the first 2xx still waits for its lost ACK: the ACK of the re-INVITE ends both waits, and the call stays up', async () => {
  const b = new SipUserAgent({ transports: [{ protocol: 'udp', host: '127.0.0.1', port: 0 }], logger, timers: { T1: 20, T2: 80 } });
  await b.start();
  const port = b.boundAddresses[0].port;
  let dialog: Dialog | null = null;
  b.on('invite', (inv: ServerInvite) => {
    dialog = inv.accept(SDP);
    dialog.on('reinvite', (_req, reply) => reply(200, SDP));
  });
  const { raw, replies, rport, send } = await rawPeer(port);
  try {
    const req = (method: string, cseq: number, toTag: string, body = '') => `${method} sip:x@127.0.0.1:${port} SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:${rport};branch=z9hG4bK-${method}-${cseq}\r\nFrom: <sip:a@127.0.0.1>;tag=caller\r\nTo: <sip:b@127.0.0.1>${toTag ? `;tag=${toTag}` : ''}\r\nCall-ID: lost-ack\r\nCSeq: ${cseq} ${method}\r\nContact: <sip:a@127.0.0.1:${rport}>\r\nMax-Forwards: 70\r\n${body ? 'Content-Type: application/sdp\r\n' : ''}Content-Length: ${Buffer.byteLength(body)}\r\n\r\n${body}`;
    send(req('INVITE', 1, '', SDP));
    await until(() => replies.some((r) => r.startsWith('SIP/2.0 200') && r.includes('CSeq: 1 INVITE')), 'the 200 to the INVITE');
    const toTag = /To: [^\r]*;tag=([^;\r]+)/.exec(replies.find((r) => r.startsWith('SIP/2.0 200'))!)![1];
    // Its ACK is lost. The caller re-INVITEs (it had the 200), and ACKs that one.
    send(req('INVITE', 2, toTag, SDP));
    await until(() => replies.some((r) => r.startsWith('SIP/2.0 200') && r.includes('CSeq: 2 INVITE')), 'the 200 to the re-INVITE');
    send(req('ACK', 2, toTag));
    await new Promise((r) => setTimeout(r, 64 * 20 + 500)); // past the 64*T1 an unACKed 2xx is given up after
    const requests = replies.filter((r) => !r.startsWith('SIP/2.0'));
    assert.deepEqual(requests.map((r) => r.split(' ')[0]), [], 'no BYE (the wait for the first ACK was not left running)');
    assert.equal(dialog!.state, 'confirmed');
    const retransmitsAfter = replies.filter((r) => r.includes('CSeq: 1 INVITE')).length;
    await new Promise((r) => setTimeout(r, 200));
    assert.equal(replies.filter((r) => r.includes('CSeq: 1 INVITE')).length, retransmitsAfter, 'the first 2xx is no longer retransmitted');
  } finally {
    raw.close();
    await b.stop();
  }
});

test('a hang-up before the caller\'s ACK: the 200 is sent again until the ACK comes, and only then the BYE (RFC 3261 §15); without an ACK the BYE goes when the 200 is given up (64·T1)', async () => {
  const b = new SipUserAgent({ transports: [{ protocol: 'udp', host: '127.0.0.1', port: 0 }], logger, timers: { T1: 20, T2: 80 } });
  await b.start();
  const port = b.boundAddresses[0].port;
  const ended: string[] = [];
  // Answered and hung up at once, as a tab that accepts and closes.
  b.on('invite', (inv: ServerInvite) => {
    const d = inv.accept(SDP);
    d.on('terminated', (reason) => ended.push(reason));
    void d.bye();
  });
  const { raw, replies, rport, send } = await rawPeer(port);
  try {
    const req = (method: string, callId: string, toTag: string, body = '') => `${method} sip:x@127.0.0.1:${port} SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:${rport};branch=z9hG4bK-${callId}-${method}\r\nFrom: <sip:a@127.0.0.1>;tag=caller\r\nTo: <sip:b@127.0.0.1>${toTag ? `;tag=${toTag}` : ''}\r\nCall-ID: ${callId}\r\nCSeq: 1 ${method}\r\nContact: <sip:a@127.0.0.1:${rport}>\r\nMax-Forwards: 70\r\n${body ? 'Content-Type: application/sdp\r\n' : ''}Content-Length: ${Buffer.byteLength(body)}\r\n\r\n${body}`;
    const of = (callId: string) => replies.filter((r) => r.includes(`Call-ID: ${callId}`));
    const byes = (callId: string) => of(callId).filter((r) => r.startsWith('BYE '));

    send(req('INVITE', 'early-hangup', '', SDP));
    await until(() => of('early-hangup').filter((r) => r.startsWith('SIP/2.0 200')).length >= 3, 'the 200 sent again while no ACK comes');
    assert.equal(byes('early-hangup').length, 0, 'no BYE before the ACK');
    assert.deepEqual(ended, []);
    const toTag = /To: [^\r]*;tag=([^;\r]+)/.exec(of('early-hangup').find((r) => r.startsWith('SIP/2.0 200'))!)![1];
    send(req('ACK', 'early-hangup', toTag));
    await until(() => byes('early-hangup').length === 1, 'the BYE once the ACK came');
    assert.deepEqual(ended, ['local-bye']);
    const okCount = of('early-hangup').filter((r) => r.startsWith('SIP/2.0 200')).length;
    await new Promise((r) => setTimeout(r, 200));
    assert.equal(of('early-hangup').filter((r) => r.startsWith('SIP/2.0 200')).length, okCount, 'no 200 after the ACK');

    // The caller never ACKs: the 200 is given up after 64·T1 (1.28 s here), and the BYE goes then.
    const t0 = Date.now();
    send(req('INVITE', 'never-acked', '', SDP));
    await until(() => byes('never-acked').length === 1, 'the BYE once the 200 was given up', 15_000); // generous: a loaded machine (seen once at 5 s)
    assert.ok(Date.now() - t0 >= 64 * 20 - 50, `BYE after ${Date.now() - t0} ms`);
    assert.deepEqual(ended, ['local-bye', 'local-bye']);
    await new Promise((r) => setTimeout(r, 100));
    assert.equal(b.counts.dialogs, 0);
  } finally {
    raw.close();
    await b.stop();
  }
});

test('a BYE on the early dialog (after our 180) ends the ringing call like a CANCEL: 200 to the BYE, 487 to the INVITE', async () => {
  const [a, b, port] = await pair();
  let cancelled = false;
  b.on('invite', (inv: ServerInvite) => { inv.progress(180); inv.on('cancelled', () => { cancelled = true; }); });
  const { raw, replies, rport, send } = await rawPeer(port);
  try {
    const req = (method: string, toTag: string) => `${method} sip:x@127.0.0.1:${port} SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:${rport};branch=z9hG4bK-early-${method}\r\nFrom: <sip:a@127.0.0.1>;tag=caller\r\nTo: <sip:b@127.0.0.1>${toTag ? `;tag=${toTag}` : ''}\r\nCall-ID: early-bye\r\nCSeq: ${method === 'BYE' ? 2 : 1} ${method}\r\nContact: <sip:a@127.0.0.1:${rport}>\r\nMax-Forwards: 70\r\n${method === 'INVITE' ? 'Content-Type: application/sdp\r\n' : ''}Content-Length: ${method === 'INVITE' ? Buffer.byteLength(SDP) : 0}\r\n\r\n${method === 'INVITE' ? SDP : ''}`;
    send(req('INVITE', ''));
    await until(() => replies.some((r) => r.startsWith('SIP/2.0 180')), 'the 180');
    const toTag = /To: [^\r]*;tag=([^;\r]+)/.exec(replies.find((r) => r.startsWith('SIP/2.0 180'))!)![1];
    send(req('BYE', toTag));
    await until(() => replies.some((r) => r.startsWith('SIP/2.0 487')), 'the 487 to the INVITE');
    assert.ok(replies.some((r) => r.startsWith('SIP/2.0 200') && r.includes('CSeq: 2 BYE')), 'the BYE answered 200');
    assert.ok(!replies.some((r) => r.startsWith('SIP/2.0 481')));
    assert.ok(cancelled, 'the call heard it was cancelled');
  } finally {
    raw.close();
    await a.stop(); await b.stop();
  }
});

test('an ACK with a body hands the dialog its SDP (the answer to an offer we made in a 2xx)', async () => {
  const [a, b, port] = await pair();
  let dialog: Dialog | null = null;
  b.on('invite', (inv: ServerInvite) => { dialog = inv.accept(SDP); });
  const { raw, replies, rport, send } = await rawPeer(port);
  try {
    const req = (method: string, cseq: number, toTag: string, body: string) => `${method} sip:x@127.0.0.1:${port} SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:${rport};branch=z9hG4bK-ackbody-${method}\r\nFrom: <sip:a@127.0.0.1>;tag=caller\r\nTo: <sip:b@127.0.0.1>${toTag ? `;tag=${toTag}` : ''}\r\nCall-ID: ack-body\r\nCSeq: ${cseq} ${method}\r\nContact: <sip:a@127.0.0.1:${rport}>\r\nMax-Forwards: 70\r\n${body ? 'Content-Type: application/sdp\r\n' : ''}Content-Length: ${Buffer.byteLength(body)}\r\n\r\n${body}`;
    send(req('INVITE', 1, '', ''));
    await until(() => replies.some((r) => r.startsWith('SIP/2.0 200')), 'the 200');
    const toTag = /To: [^\r]*;tag=([^;\r]+)/.exec(replies.find((r) => r.startsWith('SIP/2.0 200'))!)![1];
    const got: string[] = [];
    dialog!.on('ackAnswer', (sdp) => got.push(sdp));
    send(req('ACK', 1, toTag, SDP));
    await until(() => got.length === 1, 'the answer from the ACK');
    assert.equal(got[0], SDP);
    assert.equal(dialog!.state, 'confirmed');
  } finally {
    raw.close();
    await a.stop(); await b.stop();
  }
});

test('Require of an extension we lack gets 420 naming it (100rel tolerated); Contact "*" outside REGISTER gets 400; a lowercase method is unknown (501)', async () => {
  const [a, b, port] = await pair();
  let invites = 0;
  b.on('invite', (inv: ServerInvite) => { invites++; inv.reject(486); });
  const { raw, replies, rport, send } = await rawPeer(port);
  try {
    const req = (method: string, id: string, extra: string) => `${method} sip:x@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:${rport};branch=z9hG4bK-${id}\r\nFrom: <sip:a@x>;tag=1\r\nTo: <sip:b@y>\r\nCall-ID: ${id}\r\nCSeq: 1 ${method}\r\nMax-Forwards: 70\r\n${extra}Content-Length: 0\r\n\r\n`;
    send(req('INVITE', 'req100rel', 'Require: precondition, 100rel, timer\r\nContact: <sip:a@127.0.0.1>\r\n'));
    send(req('INVITE', 'star', 'Contact: *\r\n'));
    send(req('invite', 'lower', 'Contact: <sip:a@127.0.0.1>\r\n'));
    await new Promise((r) => setTimeout(r, 200));
    const first = (id: string) => replies.find((r) => r.includes(`Call-ID: ${id}`))?.split('\r\n');
    assert.equal(first('req100rel')?.[0], 'SIP/2.0 420 Bad Extension');
    assert.ok(first('req100rel')?.includes('Unsupported: precondition'), 'names only what we refuse (timer we do, 100rel we tolerate)');
    assert.ok(first('req100rel')?.some((l) => /^To: .*;tag=/.test(l)), 'the 420 has a To tag');
    assert.match(first('star')?.[0] ?? '', /^SIP\/2\.0 400/);
    assert.equal(first('lower')?.[0], 'SIP/2.0 501 Not Implemented');
    assert.equal(invites, 0);
  } finally {
    raw.close();
    await a.stop(); await b.stop();
  }
});

test('an unsupported SIP version gets 505; a CANCEL after the final response gets 200 and changes nothing', async () => {
  const [a, b, port] = await pair();
  try {
    let answered: Dialog | undefined;
    b.on('invite', (inv: ServerInvite) => { answered = inv.accept(SDP); });
    const { raw, replies, rport, send } = await rawPeer(port);
    send(`OPTIONS sip:x@127.0.0.1 SIP/3.0\r\nVia: SIP/2.0/UDP 127.0.0.1:${rport};branch=z9hG4bKv3\r\nFrom: <sip:a@x>;tag=1\r\nTo: <sip:b@y>\r\nCall-ID: v3\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n`);
    const invite = (method: string) => `${method} sip:x@127.0.0.1:${port} SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:${rport};branch=z9hG4bKinv9\r\nMax-Forwards: 70\r\nFrom: <sip:a@x>;tag=1\r\nTo: <sip:b@y>\r\nCall-ID: c9\r\nCSeq: 1 ${method}\r\nContact: <sip:a@127.0.0.1:${rport}>\r\n`;
    send(`${invite('INVITE')}Content-Type: application/sdp\r\nContent-Length: ${SDP.length}\r\n\r\n${SDP}`);
    await new Promise((r) => setTimeout(r, 100));
    send(`${invite('CANCEL')}Content-Length: 0\r\n\r\n`);
    await new Promise((r) => setTimeout(r, 150));
    raw.close();
    assert.ok(replies.some((r) => r.startsWith('SIP/2.0 505')), `SIP/3.0 → 505: ${replies.map((r) => r.split('\r\n')[0]).join(' | ')}`);
    assert.ok(replies.some((r) => r.startsWith('SIP/2.0 200') && /CSeq: 1 CANCEL/.test(r)), 'CANCEL after 200 → 200');
    assert.ok(!replies.some((r) => r.startsWith('SIP/2.0 487')), 'no 487 after the 2xx');
    assert.ok(answered && answered.state !== 'terminated');
  } finally {
    await a.stop(); await b.stop();
  }
});

test('a CANCEL the peer never answers does not keep the INVITE transaction alive', async () => {
  const a = new SipUserAgent({ transports: [{ protocol: 'udp', host: '127.0.0.1', port: 0 }], logger, timers: { T1: 20 } });
  await a.start();
  // A peer that rings and then ignores everything.
  const peer = dgram.createSocket('udp4');
  await new Promise<void>((r) => peer.bind(0, '127.0.0.1', () => r()));
  peer.on('message', (m, rinfo) => {
    const text = m.toString();
    if (!text.startsWith('INVITE')) return;
    const hdr = (n: string) => new RegExp(`^${n}: (.*)$`, 'mi').exec(text)?.[1] ?? '';
    peer.send(`SIP/2.0 180 Ringing\r\nVia: ${hdr('Via')}\r\nFrom: ${hdr('From')}\r\nTo: ${hdr('To')};tag=p1\r\nCall-ID: ${hdr('Call-ID')}\r\nCSeq: ${hdr('CSeq')}\r\nContent-Length: 0\r\n\r\n`, rinfo.port, rinfo.address);
  });
  try {
    const inv = a.invite({ requestUri: `sip:x@127.0.0.1:${peer.address().port}`, from: { uri: 'sip:a@127.0.0.1' }, sdp: SDP });
    await once(inv, 'progress');
    inv.cancel();
    await new Promise((r) => setTimeout(r, 64 * 20 + 400));
    assert.equal(a.counts.clientTx, 0, 'INVITE and CANCEL transactions are gone');
  } finally {
    peer.close();
    await a.stop();
  }
});

test('reliable provisionals (100rel): PRACKed in order per early dialog, one skipping ahead ignored, a fork numbered on its own, a bad RSeq taken as unreliable; the dialog\'s CSeq continues above the PRACKs', async () => {
  const ua = new SipUserAgent({ transports: [{ protocol: 'udp', host: '127.0.0.1', port: 0 }], logger });
  await ua.start();
  const { peer, got, reply } = await rawUas();
  const uaPort = ua.boundAddresses[0].port;
  peer.on('message', (m) => {
    const text = m.toString();
    // PRACKs (and the BYE) are answered 200 at once, with their own headers.
    if (/^(PRACK|BYE) /.test(text)) peer.send(reply(text, '200 OK', ''), uaPort, '127.0.0.1');
  });
  try {
    const inv = ua.invite({ requestUri: `sip:uas@127.0.0.1:${peer.address().port}`, from: { uri: 'sip:gw@127.0.0.1' }, sdp: SDP });
    const progress: string[] = [];
    inv.on('progress', (res) => progress.push(`${res.status} ${res.header('rseq') ?? '-'}`));
    await until(() => got.some((t) => t.startsWith('INVITE ')), 'the INVITE');
    const invite = got.find((t) => t.startsWith('INVITE '))!;
    assert.match(hdr(invite, 'Supported'), /\b100rel\b/);
    const send = (status: string, tag: string, extra: string) => peer.send(reply(invite, status, tag, extra.split('\r\n')), uaPort, '127.0.0.1');
    const pracks = () => got.filter((t) => t.startsWith('PRACK '));
    send('183 Session Progress', 't1', 'Require: 100rel\r\nRSeq: 5');
    await until(() => pracks().length === 1, 'the first PRACK');
    send('183 Session Progress', 't1', 'Require: 100rel\r\nRSeq: 5'); // retransmission
    send('180 Ringing', 't1', 'Require: 100rel\r\nRSeq: 7'); // skips 6
    send('180 Ringing', 't2', 'Require: 100rel\r\nRSeq: 1'); // another fork
    await until(() => pracks().length === 2, 'the fork\'s PRACK');
    send('180 Ringing', 't1', 'Require: 100rel\r\nRSeq: x1');
    await until(() => progress.length === 3, 'three provisionals passed on');
    await new Promise((r) => setTimeout(r, 100));
    assert.deepEqual(progress, ['183 5', '180 1', '180 x1'], 'neither the retransmission nor the one skipping ahead passed on');
    assert.deepEqual(pracks().map((p) => [hdr(p, 'RAck'), hdr(p, 'CSeq'), hdr(p, 'To').match(/tag=(\w+)/)?.[1], p.split(' ')[1]]), [
      ['5 1 INVITE', '2 PRACK', 't1', `sip:uas@127.0.0.1:${peer.address().port}`],
      ['1 1 INVITE', '3 PRACK', 't2', `sip:uas@127.0.0.1:${peer.address().port}`],
    ]);
    peer.send(reply(invite, '200 OK', 't1', ['Content-Type: application/sdp']).replace('Content-Length: 0\r\n\r\n', `Content-Length: ${SDP.length}\r\n\r\n${SDP}`), uaPort, '127.0.0.1');
    const [, dialog] = await once<[unknown, Dialog]>(inv, 'accepted');
    await dialog.bye();
    const bye = got.find((t) => t.startsWith('BYE '));
    assert.equal(hdr(bye ?? '', 'CSeq'), '4 BYE', 'the dialog\'s next request goes above the PRACKs\' CSeq');
  } finally {
    peer.close();
    await ua.stop();
  }
});

test('a caller that requires 100rel: our 180 goes reliably (RSeq) and is sent again until PRACK; a wrong RAck gets 481; without any PRACK the INVITE is refused 500 after 64·T1', async () => {
  const T1 = 20;
  const ua = new SipUserAgent({ transports: [{ protocol: 'udp', host: '127.0.0.1', port: 0 }], logger, timers: { T1 } });
  await ua.start();
  const { raw, replies, rport, send } = await rawPeer(ua.boundAddresses[0].port);
  const invites: ServerInvite[] = [];
  ua.on('invite', (inv: ServerInvite) => { invites.push(inv); inv.progress(180); });
  const invite = (callId: string) => send(`INVITE sip:u@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:${rport};branch=z9hG4bK${callId}\r\nFrom: <sip:a@x>;tag=ft${callId}\r\nTo: <sip:u@127.0.0.1>\r\nCall-ID: ${callId}\r\nCSeq: 7 INVITE\r\nContact: <sip:a@127.0.0.1:${rport}>\r\nRecord-Route: <sip:proxy.example;lr>\r\nRequire: 100rel\r\nMax-Forwards: 70\r\nContent-Type: application/sdp\r\nContent-Length: ${SDP.length}\r\n\r\n${SDP}`);
  const ringing = (callId: string) => replies.filter((r) => r.startsWith('SIP/2.0 180') && r.includes(`Call-ID: ${callId}`));
  const prack = (callId: string, rack: string, branch: string) => {
    const r = ringing(callId)[0];
    send(`PRACK sip:u@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:${rport};branch=z9hG4bK${branch}\r\nFrom: <sip:a@x>;tag=ft${callId}\r\nTo: ${hdr(r, 'To')}\r\nCall-ID: ${callId}\r\nCSeq: 8 PRACK\r\nRAck: ${rack}\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n`);
  };
  try {
    // PRACKed: 481 for a wrong RAck, 200 for the right one, and the 180 is not sent again.
    invite('ok');
    await until(() => ringing('ok').length >= 2, 'the 180 sent again');
    const first = ringing('ok')[0];
    assert.equal(hdr(first, 'Require'), '100rel');
    assert.equal(hdr(first, 'Record-Route'), '<sip:proxy.example;lr>', 'the early dialog\'s route set: the PRACK goes through the proxy');
    const rseq = Number(hdr(first, 'RSeq'));
    assert.ok(rseq >= 1 && rseq < 2 ** 31, `RSeq ${rseq}`);
    assert.ok(ringing('ok').every((r) => hdr(r, 'RSeq') === String(rseq)), 'the same RSeq on every copy');
    prack('ok', `${rseq + 1} 7 INVITE`, 'pr1');
    prack('ok', `${rseq} 7 INVITE`, 'pr2');
    await until(() => replies.some((r) => r.includes('branch=z9hG4bKpr2') && r.startsWith('SIP/2.0 200')), 'the PRACK answered');
    assert.ok(replies.some((r) => r.includes('branch=z9hG4bKpr1') && r.startsWith('SIP/2.0 481')), 'a RAck naming another RSeq: 481');
    const sent = ringing('ok').length;
    await new Promise((r) => setTimeout(r, 64 * T1 + 100)); // past every retransmission there could be
    assert.equal(ringing('ok').length, sent, 'no more 180 after its PRACK');
    invites[0].accept(SDP);
    await until(() => replies.some((r) => r.startsWith('SIP/2.0 200') && r.includes('CSeq: 7 INVITE')), 'the 200 OK');
    assert.match(hdr(replies.find((r) => r.startsWith('SIP/2.0 200') && r.includes('CSeq: 7 INVITE'))!, 'Supported'), /100rel/);
    // PRACKs that cross the 200 reach the dialog: one for this INVITE's 18x is fine, another is not.
    const late = (rack: string, branch: string, cseq: number) => {
      const r = ringing('ok')[0];
      send(`PRACK sip:u@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:${rport};branch=z9hG4bK${branch}\r\nFrom: <sip:a@x>;tag=ftok\r\nTo: ${hdr(r, 'To')}\r\nCall-ID: ok\r\nCSeq: ${cseq} PRACK\r\nRAck: ${rack}\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n`);
    };
    late(`${rseq} 7 INVITE`, 'late1', 9);
    late(`${rseq} 99 INVITE`, 'late2', 10);
    await until(() => replies.some((r) => r.includes('branch=z9hG4bKlate2')), 'both late PRACKs answered');
    assert.ok(replies.some((r) => r.includes('branch=z9hG4bKlate1') && r.startsWith('SIP/2.0 200')), 'a late PRACK of this INVITE: 200');
    assert.ok(replies.some((r) => r.includes('branch=z9hG4bKlate2') && r.startsWith('SIP/2.0 481')), 'one of no INVITE of this dialog: 481');
    // Never PRACKed: 500 after 64·T1, the owner told.
    invite('never');
    await until(() => invites.length === 2, 'the second INVITE');
    let told = false;
    invites[1].on('unacknowledged', () => { told = true; });
    await until(() => replies.some((r) => r.startsWith('SIP/2.0 500') && r.includes('Call-ID: never')), 'the 500', 64 * T1 + 3000);
    assert.ok(told, 'unacknowledged emitted');
    assert.ok(ringing('never').length >= 5 && ringing('never').length <= 8, `the 180 sent at T1, 2·T1, 4·T1 …: ${ringing('never').length} copies`);
  } finally {
    raw.close();
    await ua.stop();
  }
});

test('a PRACK that is challenged is sent again with credentials; one refused is sent again when its 18x comes again; a retried INVITE numbers above the PRACKs', async () => {
  const ua = new SipUserAgent({ transports: [{ protocol: 'udp', host: '127.0.0.1', port: 0 }], logger });
  await ua.start();
  const { peer, got, reply } = await rawUas();
  const uaPort = ua.boundAddresses[0].port;
  let prackCount = 0;
  peer.on('message', (m) => {
    const text = m.toString();
    if (!text.startsWith('PRACK ')) return;
    prackCount++;
    // 1st: challenged; 2nd (with credentials): refused; 3rd (after the 18x came again): 200.
    const status = prackCount === 1 ? '407 Proxy Authentication Required' : prackCount === 2 ? '500 Server Internal Error' : '200 OK';
    peer.send(reply(text, status, '', prackCount === 1 ? ['Proxy-Authenticate: Digest realm="trunk", nonce="n1", qop="auth"'] : []), uaPort, '127.0.0.1');
  });
  try {
    const inv = ua.invite({ requestUri: `sip:uas@127.0.0.1:${peer.address().port}`, from: { uri: 'sip:gw@127.0.0.1' }, sdp: SDP, credentials: { username: 'gw', password: 'secret-pw' } });
    await until(() => got.some((t) => t.startsWith('INVITE ')), 'the INVITE');
    const invite = got.find((t) => t.startsWith('INVITE '))!;
    const ringing = reply(invite, '180 Ringing', 't1', ['Require: 100rel', 'RSeq: 1']);
    peer.send(ringing, uaPort, '127.0.0.1');
    await until(() => prackCount === 2, 'the PRACK sent again with credentials');
    const pracks = got.filter((t) => t.startsWith('PRACK '));
    assert.equal(hdr(pracks[0], 'Proxy-Authorization'), '');
    assert.match(hdr(pracks[1], 'Proxy-Authorization'), /^Digest .*username="gw"/);
    assert.deepEqual(pracks.map((p) => hdr(p, 'CSeq')), ['2 PRACK', '3 PRACK']);
    await new Promise((r) => setTimeout(r, 700)); // past T1 (500 ms), when a timer-driven retry would go
    assert.equal(prackCount, 2, 'a refused PRACK is not retried on its own');
    peer.send(ringing, uaPort, '127.0.0.1'); // the UAS sends its 180 again: PRACK again
    await until(() => prackCount === 3, 'a new PRACK for the retransmitted 180');
    assert.equal(hdr(got.filter((t) => t.startsWith('PRACK '))[2], 'RAck'), '1 1 INVITE');
    peer.send(ringing, uaPort, '127.0.0.1'); // acknowledged now: no more PRACK
    await new Promise((r) => setTimeout(r, 100));
    assert.equal(prackCount, 3);
    // The INVITE is challenged: its retry takes a CSeq above the PRACKs' (2-4), not 2.
    peer.send(reply(invite, '401 Unauthorized', 't1', ['WWW-Authenticate: Digest realm="trunk", nonce="n2"']), uaPort, '127.0.0.1');
    await until(() => got.filter((t) => t.startsWith('INVITE ')).length === 2, 'the INVITE again with credentials');
    assert.equal(hdr(got.filter((t) => t.startsWith('INVITE ')).at(-1)!, 'CSeq'), '5 INVITE');
    inv.cancel();
  } finally {
    peer.close();
    await ua.stop();
  }
});

test('a client transaction with no final response in time is reported (for the transaction-timeout metric): an OPTIONS and an INVITE to a peer that never answers', async () => {
  const timedOut: string[] = [];
  const ua = new SipUserAgent({ transports: [{ protocol: 'udp', host: '127.0.0.1', port: 0 }], logger, timers: { T1: 5, T2: 20 }, onTransactionTimeout: (m) => timedOut.push(m) });
  await ua.start();
  const silent = dgram.createSocket('udp4');
  await new Promise<void>((r) => silent.bind(0, '127.0.0.1', () => r()));
  try {
    const port = silent.address().port;
    const res = await ua.options(`sip:peer@127.0.0.1:${port}`);
    assert.equal(res.status, 408);
    const inv = ua.invite({ requestUri: `sip:peer@127.0.0.1:${port}`, from: { uri: 'sip:gw@127.0.0.1' }, sdp: SDP });
    await new Promise<void>((resolve) => { inv.once('failed', () => resolve()); inv.once('rejected', () => resolve()); });
    assert.deepEqual(timedOut, ['OPTIONS', 'INVITE']);
  } finally {
    silent.close();
    await ua.stop();
  }
});

/** Our UA INVITEs a raw UAS (which answers BYE 200 itself); resolves once the INVITE has reached it. */
async function inviteToRawUas(timers?: { T1: number; T2: number }) {
  const ua = new SipUserAgent({ transports: [{ protocol: 'udp', host: '127.0.0.1', port: 0 }], logger, timers });
  await ua.start();
  const { peer, got, reply } = await rawUas();
  const uaPort = ua.boundAddresses[0].port;
  peer.on('message', (m) => { const text = m.toString(); if (/^BYE /.test(text)) peer.send(reply(text, '200 OK', ''), uaPort, '127.0.0.1'); });
  const inv = ua.invite({ requestUri: `sip:uas@127.0.0.1:${peer.address().port}`, from: { uri: 'sip:gw@127.0.0.1' }, sdp: SDP });
  await until(() => got.some((t) => t.startsWith('INVITE ')), 'the INVITE');
  return { ua, peer, got, reply, uaPort, inv, invite: got.find((t) => t.startsWith('INVITE '))! };
}

test('a forked INVITE answered 200 by two branches: the first is the call; the second is ACKed and at once BYE\'d (RFC 3261 §13.2.2.4), its retransmission ACKed again', async () => {
  const { ua, peer, got, reply, uaPort, inv, invite } = await inviteToRawUas();
  try {
    const ok = (tag: string) => reply(invite, '200 OK', tag, ['Content-Type: application/sdp']).replace('Content-Length: 0\r\n\r\n', `Content-Length: ${SDP.length}\r\n\r\n${SDP}`);
    peer.send(ok('first'), uaPort, '127.0.0.1');
    const [, dialog] = await once<[unknown, Dialog]>(inv, 'accepted');
    peer.send(ok('second'), uaPort, '127.0.0.1');
    await until(() => got.some((t) => t.startsWith('BYE ') && /tag=second/.test(hdr(t, 'To'))), 'the second branch BYE\'d');
    peer.send(ok('second'), uaPort, '127.0.0.1'); // its 200 again: ACKed again, no second BYE
    await new Promise((r) => setTimeout(r, 150));
    const to = (t: string) => hdr(t, 'To').match(/tag=(\w+)/)?.[1];
    const acks = got.filter((t) => t.startsWith('ACK '));
    assert.deepEqual(acks.map(to), ['first', 'second', 'second']);
    assert.ok(acks.every((a) => hdr(a, 'CSeq') === `${hdr(invite, 'CSeq').split(' ')[0]} ACK`), 'each ACK for the INVITE\'s 2xx');
    assert.equal(got.filter((t) => t.startsWith('BYE ')).length, 1, 'one BYE, for the second branch only');
    assert.equal(dialog.state, 'confirmed', 'the call stays up with the first');
    await dialog.bye();
  } finally {
    peer.close();
    await ua.stop();
  }
});

test('a 200 without SDP after an unreliable 183 with SDP (a peer that should have repeated it): that 183\'s SDP is taken as the answer, per branch', async () => {
  const { ua, peer, got, reply, uaPort, inv, invite } = await inviteToRawUas();
  try {
    const withSdp = (status: string, tag: string, sdp: string) => reply(invite, status, tag, ['Content-Type: application/sdp']).replace('Content-Length: 0\r\n\r\n', `Content-Length: ${sdp.length}\r\n\r\n${sdp}`);
    const other = SDP.replace('m=audio 4000', 'm=audio 4100');
    peer.send(withSdp('183 Session Progress', 'a', SDP), uaPort, '127.0.0.1');
    peer.send(withSdp('183 Session Progress', 'b', other), uaPort, '127.0.0.1');
    await new Promise((r) => setTimeout(r, 50));
    peer.send(reply(invite, '200 OK', 'b'), uaPort, '127.0.0.1'); // branch b answers, without SDP
    const [, dialog, answer] = await once<[unknown, Dialog, string]>(inv, 'accepted');
    assert.equal(answer, other, 'branch b\'s 183 SDP, not branch a\'s');
    await dialog.bye();
  } finally {
    peer.close();
    await ua.stop();
  }
});

test('addOutboundRoute: the outbound proxy as a loose Route (;lr added once), nothing without one', () => {
  const routeOf = (proxy: string | undefined) => { const r = new SipRequest('INVITE', 'sip:+15551234@trunk.example'); addOutboundRoute(r, proxy); return r.headers('route'); };
  assert.deepEqual(routeOf('sip:sbc.example:5060'), ['<sip:sbc.example:5060;lr>']);
  assert.deepEqual(routeOf('<sip:sbc.example;transport=tcp>'), ['<sip:sbc.example;transport=tcp;lr>']);
  assert.deepEqual(routeOf('sip:sbc.example;lr'), ['<sip:sbc.example;lr>']);
  assert.deepEqual(routeOf('sip:sbc.example;lr=on;transport=tls'), ['<sip:sbc.example;lr=on;transport=tls>']);
  assert.deepEqual(routeOf('sip:lrproxy.example'), ['<sip:lrproxy.example;lr>'], 'lr in the host name is no lr parameter');
  assert.deepEqual(routeOf(undefined), []);
});

test('a re-INVITE the peer answers only provisionally is CANCELled 64·T1 later (the 487 ends it, the call stays up and can offer again)', async () => {
  const T1 = 20;
  const { ua, peer, got, reply, uaPort, inv, invite } = await inviteToRawUas({ T1, T2: 80 });
  try {
    const withSdp = (req: string, status: string, tag: string) => reply(req, status, tag, ['Content-Type: application/sdp']).replace('Content-Length: 0\r\n\r\n', `Content-Length: ${SDP.length}\r\n\r\n${SDP}`);
    peer.send(withSdp(invite, '200 OK', 'uas'), uaPort, '127.0.0.1');
    const [, dialog] = await once<[unknown, Dialog]>(inv, 'accepted');
    // One per CSeq (a re-INVITE is sent again every T1 until its 100).
    const reinvites = () => got.filter((t, i) => t.startsWith('INVITE ') && hdr(t, 'To').includes('tag=uas') && got.findIndex((o) => o.startsWith('INVITE ') && hdr(o, 'CSeq') === hdr(t, 'CSeq')) === i);

    const t0 = Date.now();
    const first = dialog.reinvite(SDP);
    await until(() => reinvites().length === 1, 'the re-INVITE');
    const reinvite = reinvites()[0];
    peer.send(reply(reinvite, '100 Trying', ''), uaPort, '127.0.0.1'); // and then nothing
    await until(() => got.some((t) => t.startsWith('CANCEL ')), 'the CANCEL', 5000);
    const cancel = got.find((t) => t.startsWith('CANCEL '))!;
    assert.ok(Date.now() - t0 >= 64 * T1 - 50, `CANCEL after ${Date.now() - t0} ms`);
    assert.equal(hdr(cancel, 'Via'), hdr(reinvite, 'Via'), 'the re-INVITE\'s branch');
    assert.equal(hdr(cancel, 'CSeq'), `${hdr(reinvite, 'CSeq').split(' ')[0]} CANCEL`);
    assert.equal(cancel.split(' ')[1], reinvite.split(' ')[1], 'the re-INVITE\'s Request-URI');
    peer.send(reply(cancel, '200 OK', 'uas'), uaPort, '127.0.0.1');
    peer.send(reply(reinvite, '487 Request Terminated', 'uas'), uaPort, '127.0.0.1');
    assert.equal((await first).status, 487);
    assert.equal(dialog.state, 'confirmed', 'a refused re-INVITE leaves the call up');

    // The dialog can offer again (it was not left with a re-INVITE in flight).
    const second = dialog.reinvite(SDP);
    await until(() => reinvites().length === 2, 'the second re-INVITE');
    peer.send(withSdp(reinvites()[1], '200 OK', 'uas'), uaPort, '127.0.0.1');
    assert.equal((await second).status, 200);
    await dialog.bye();
  } finally {
    peer.close();
    await ua.stop();
  }
});

test('the same INVITE by a second path (a merged request: same Request-URI, Call-ID, From tag and CSeq, another branch) gets 482, and one call rings; a fork to another user does not', async () => {
  const ua = new SipUserAgent({ transports: [{ protocol: 'udp', host: '127.0.0.1', port: 0 }], logger });
  await ua.start();
  const port = ua.boundAddresses[0].port;
  const calls: ServerInvite[] = [];
  ua.on('invite', (inv: ServerInvite) => { calls.push(inv); inv.progress(180); });
  const { raw, replies, rport, send } = await rawPeer(port);
  try {
    const invite = (branch: string, callId = 'merged', user = 'x') => `INVITE sip:${user}@127.0.0.1:${port} SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:${rport};branch=z9hG4bK-${branch}\r\nFrom: <sip:a@127.0.0.1>;tag=caller\r\nTo: <sip:b@127.0.0.1>\r\nCall-ID: ${callId}\r\nCSeq: 1 INVITE\r\nContact: <sip:a@127.0.0.1:${rport}>\r\nMax-Forwards: 70\r\nContent-Type: application/sdp\r\nContent-Length: ${SDP.length}\r\n\r\n${SDP}`;
    send(invite('path-one'));
    await until(() => replies.some((r) => r.startsWith('SIP/2.0 180')), 'the first rings');
    send(invite('path-two'));
    await until(() => replies.some((r) => r.startsWith('SIP/2.0 482')), '482 for the second path');
    assert.match(hdr(replies.find((r) => r.startsWith('SIP/2.0 482'))!, 'Via'), /branch=z9hG4bK-path-two/);
    send(invite('path-three', 'another-call')); // another Call-ID is another call
    await until(() => calls.length === 2, 'the other call rings');
    // A parallel fork to another user whose contact is also us is not a merge: it rings too.
    send(invite('path-four', 'merged', 'y'));
    await until(() => calls.length === 3, 'the fork to another user rings');
    assert.deepEqual(calls.map((c) => c.request.callId), ['merged', 'another-call', 'merged']);
  } finally {
    raw.close();
    await ua.stop();
  }
});

test('over IPv6 (::1): our Via and Contact bracket the address, so a call between two user agents sets up and ends', async () => {
  const a = new SipUserAgent({ transports: [{ protocol: 'udp', host: '::1', port: 0 }], logger });
  const b = new SipUserAgent({ transports: [{ protocol: 'udp', host: '::1', port: 0 }], logger });
  await a.start(); await b.start();
  try {
    const seen: string[] = [];
    const ended = new Promise<string>((resolve) => b.on('invite', (inv: ServerInvite) => {
      seen.push(inv.request.header('via')!, inv.request.header('contact')!);
      inv.accept(SDP).once('terminated', (reason) => resolve(reason));
    }));
    const inv = a.invite({ requestUri: `sip:bob@[::1]:${b.boundAddresses[0].port}`, from: { uri: 'sip:alice@[::1]' }, sdp: SDP });
    // Unbracketed, the peer's parser refused our Via and the INVITE went unanswered.
    const [res, dialog] = await Promise.race([
      once<[{ status: number }, Dialog]>(inv, 'accepted'),
      new Promise<never>((_, reject) => setTimeout(() => reject(new Error('no answer within 5 s')), 5000).unref()),
    ]);
    assert.equal(res.status, 200);
    assert.match(seen[0], /^SIP\/2\.0\/UDP \[::1\]:\d+;/);
    assert.match(seen[1], /^<sip:gw@\[::1\]:\d+>$/);
    await dialog.bye();
    assert.equal(await ended, 'bye');
  } finally {
    await a.stop(); await b.stop();
  }
});

test('over TCP, a response whose request\'s connection has closed goes to the Via\'s address on a new connection (RFC 3261 §18.2.2)', async () => {
  const ua = new SipUserAgent({ transports: [{ protocol: 'tcp', host: '127.0.0.1', port: 0 }], logger });
  await ua.start();
  // The caller's listening port, as its Via says; a response reaching it arrives here.
  const atVia: string[] = [];
  const listener = net.createServer((s) => s.on('data', (d) => atVia.push(d.toString())));
  await new Promise<void>((r) => listener.listen(0, '127.0.0.1', () => r()));
  const viaPort = (listener.address() as { port: number }).port;
  try {
    let inv: ServerInvite | null = null;
    ua.on('invite', (i: ServerInvite) => { inv = i; });
    const client = net.connect(ua.boundAddresses[0].port, '127.0.0.1');
    await new Promise<void>((r) => client.once('connect', () => r()));
    const got: string[] = [];
    client.on('data', (d) => got.push(d.toString()));
    client.write(`INVITE sip:bob@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/TCP 127.0.0.1:${viaPort};branch=z9hG4bK-tcp-gone\r\nFrom: <sip:a@127.0.0.1>;tag=a1\r\nTo: <sip:bob@127.0.0.1>\r\nCall-ID: tcp-gone\r\nCSeq: 1 INVITE\r\nContact: <sip:a@127.0.0.1:${viaPort};transport=tcp>\r\nMax-Forwards: 70\r\nContent-Type: application/sdp\r\nContent-Length: ${SDP.length}\r\n\r\n${SDP}`);
    await until(() => inv !== null && got.join('').includes('SIP/2.0 100'), 'the INVITE taken, 100 on its connection');
    client.destroy();
    await new Promise((r) => setTimeout(r, 100));
    inv!.reject(486, 'Busy Here');
    await until(() => atVia.join('').includes('SIP/2.0 486'), 'the 486 at the Via\'s address', 5000);
  } finally {
    await ua.stop();
    await new Promise<void>((r) => listener.close(() => r()));
  }
});

test('a CANCELled re-INVITE the peer never answers (its CANCEL answered, no 487) ends the call with BYE, not silently', async () => {
  const T1 = 20;
  const { ua, peer, got, reply, uaPort, inv, invite } = await inviteToRawUas({ T1, T2: 80 });
  try {
    const withSdp = (req: string, status: string, tag: string) => reply(req, status, tag, ['Content-Type: application/sdp']).replace('Content-Length: 0\r\n\r\n', `Content-Length: ${SDP.length}\r\n\r\n${SDP}`);
    peer.send(withSdp(invite, '200 OK', 'uas'), uaPort, '127.0.0.1');
    const [, dialog] = await once<[unknown, Dialog]>(inv, 'accepted');
    const ended = once<[string]>(dialog, 'terminated');
    const res = dialog.reinvite(SDP);
    await until(() => got.some((t) => t.startsWith('INVITE ') && hdr(t, 'To').includes('tag=uas')), 'the re-INVITE');
    const reinvite = got.find((t) => t.startsWith('INVITE ') && hdr(t, 'To').includes('tag=uas'))!;
    peer.send(reply(reinvite, '100 Trying', ''), uaPort, '127.0.0.1');
    await until(() => got.some((t) => t.startsWith('CANCEL ')), 'the CANCEL', 5000);
    peer.send(reply(got.find((t) => t.startsWith('CANCEL '))!, '200 OK', 'uas'), uaPort, '127.0.0.1'); // and no 487, ever
    assert.equal((await res).status, 408);
    assert.equal((await ended)[0], 'request-timeout');
    await until(() => got.some((t) => t.startsWith('BYE ')), 'the BYE');
  } finally {
    peer.close();
    await ua.stop();
  }
});

test('stopping while a BYE waits for the caller\'s ACK sends that BYE before the transports close', async () => {
  const b = new SipUserAgent({ transports: [{ protocol: 'udp', host: '127.0.0.1', port: 0 }], logger, timers: { T1: 500, T2: 4000 } });
  await b.start();
  const port = b.boundAddresses[0].port;
  b.on('invite', (inv: ServerInvite) => { void inv.accept(SDP).bye(); });
  const { raw, replies, rport, send } = await rawPeer(port);
  try {
    send(`INVITE sip:x@127.0.0.1:${port} SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:${rport};branch=z9hG4bK-stopping\r\nFrom: <sip:a@127.0.0.1>;tag=caller\r\nTo: <sip:b@127.0.0.1>\r\nCall-ID: stopping\r\nCSeq: 1 INVITE\r\nContact: <sip:a@127.0.0.1:${rport}>\r\nMax-Forwards: 70\r\nContent-Type: application/sdp\r\nContent-Length: ${SDP.length}\r\n\r\n${SDP}`);
    await until(() => replies.some((r) => r.startsWith('SIP/2.0 200')), 'the 200');
    assert.equal(replies.filter((r) => r.startsWith('BYE ')).length, 0, 'held back for the ACK');
    await b.stop();
    await until(() => replies.some((r) => r.startsWith('BYE ')), 'the BYE sent as the UA stopped', 2000);
  } finally {
    raw.close();
    await b.stop();
  }
});

test('the callee\'s UPDATE while our INVITE rings (RFC 3311; Asterisk sends them for connected-line updates): 200 with a Contact without SDP, 488 with an offer; the call then answers as usual (it was 481)', async () => {
  const ua = new SipUserAgent({ transports: [{ protocol: 'udp', host: '127.0.0.1', port: 0 }], logger });
  await ua.start();
  const { peer, got, reply } = await rawUas();
  const uaPort = ua.boundAddresses[0].port;
  const answers: string[] = [];
  const updateFromCallee = (invite: string, cseq: number, body: string) => [
    `UPDATE sip:gw@127.0.0.1:${uaPort} SIP/2.0`, `Via: SIP/2.0/UDP 127.0.0.1:${peer.address().port};branch=z9hG4bK-upd-${cseq}`,
    `From: ${hdr(invite, 'To')};tag=callee`, `To: ${hdr(invite, 'From')}`, `Call-ID: ${hdr(invite, 'Call-ID')}`, `CSeq: ${cseq} UPDATE`,
    `Contact: <sip:uas@127.0.0.1:${peer.address().port}>`, 'Max-Forwards: 70', ...(body ? ['Content-Type: application/sdp'] : []), `Content-Length: ${body.length}`, '', body,
  ].join('\r\n');
  peer.on('message', (m) => { const t = m.toString(); if (t.startsWith('SIP/2.0 ') && / UPDATE$/m.test(hdr(t, 'CSeq'))) answers.push(`${t.split(' ')[1]} ${hdr(t, 'Contact') ? 'contact' : '-'}`); if (t.startsWith('BYE ')) peer.send(reply(t, '200 OK', ''), uaPort, '127.0.0.1'); });
  try {
    const inv = ua.invite({ requestUri: `sip:uas@127.0.0.1:${peer.address().port}`, from: { uri: 'sip:gw@127.0.0.1' }, sdp: SDP });
    await until(() => got.some((t) => t.startsWith('INVITE ')), 'the INVITE');
    const invite = got.find((t) => t.startsWith('INVITE '))!;
    peer.send(reply(invite, '180 Ringing', 'callee'), uaPort, '127.0.0.1');
    await once(inv, 'progress');
    peer.send(updateFromCallee(invite, 1, ''), uaPort, '127.0.0.1');
    await until(() => answers.length === 1, 'the answer to the UPDATE');
    peer.send(updateFromCallee(invite, 2, SDP), uaPort, '127.0.0.1');
    await until(() => answers.length === 2, 'the answer to the UPDATE with an offer');
    assert.deepEqual(answers, ['200 contact', '488 -']);
    peer.send(reply(invite, '200 OK', 'callee', ['Content-Type: application/sdp']).replace('Content-Length: 0\r\n\r\n', `Content-Length: ${SDP.length}\r\n\r\n${SDP}`), uaPort, '127.0.0.1');
    const [, dialog] = await once<[unknown, Dialog]>(inv, 'accepted');
    await dialog.bye();
  } finally {
    peer.close();
    await ua.stop();
  }
});

test('a sips: URI (or transport=tls) is never sent over another transport: without TLS running the request fails instead of going in the clear; transport=tcp without TCP goes over UDP', async () => {
  const ua = new SipUserAgent({ transports: [{ protocol: 'udp', host: '127.0.0.1', port: 0 }], logger });
  await ua.start();
  const { peer, got } = await rawUas();
  try {
    await assert.rejects(ua.options(`sips:127.0.0.1:${peer.address().port}`), /needs TLS, and sip.transports has no tls/);
    await assert.rejects(ua.options(`sip:127.0.0.1:${peer.address().port};transport=tls`), /needs TLS/);
    void ua.options(`sip:127.0.0.1:${peer.address().port};transport=tcp`);
    await until(() => got.some((t) => t.startsWith('OPTIONS ')), 'the OPTIONS over UDP');
    assert.ok(got.every((t) => !/^OPTIONS (sips:|\S*transport=tls)/.test(t)), 'nothing of the refused ones was sent');
  } finally {
    peer.close();
    await ua.stop();
  }
});

test('a target refresh takes effect with our 2xx only (RFC 6141 §4): a re-INVITE we refuse leaves our requests going where they went', async () => {
  const [a, b, port] = await pair();
  try {
    const serverDialog = new Promise<Dialog>((resolve) => b.on('invite', (inv: ServerInvite) => resolve(inv.accept(SDP))));
    a.invite({ requestUri: `sip:1000@127.0.0.1:${port}`, from: { uri: 'sip:alice@127.0.0.1' }, sdp: SDP });
    const bDialog = await serverDialog;
    await once(bDialog, 'confirmed');
    const before = bDialog.remoteTarget;
    let seq = 100;
    const reinvite = (contact: string) => {
      const text = [`INVITE ${bDialog.localAddr.match(/<([^>]+)>/)![1]} SIP/2.0`, `Via: SIP/2.0/UDP 127.0.0.1:9;branch=z9hG4bK-tr${seq}`, `From: ${bDialog.remoteAddr}`, `To: ${bDialog.localAddr}`,
        `Call-ID: ${bDialog.callId}`, `CSeq: ${++seq} INVITE`, `Contact: ${contact}`, 'Content-Type: application/sdp', `Content-Length: ${SDP.length}`, '', SDP].join('\r\n');
      const req = parseSipMessage(text);
      assert.ok(req instanceof SipRequest, String((req as { error?: string }).error));
      return new Promise<number>((resolve) => bDialog.receive(req, (status) => resolve(status)));
    };
    // No one takes re-INVITEs here: 488, and the target stays.
    assert.equal(await reinvite('<sip:moved@127.0.0.1:9>'), 488);
    assert.equal(bDialog.remoteTarget, before);
    bDialog.on('reinvite', (_req, reply) => reply(200, SDP));
    assert.equal(await reinvite('<sip:moved@127.0.0.1:9>'), 200);
    assert.equal(bDialog.remoteTarget, 'sip:moved@127.0.0.1:9');
  } finally {
    await a.stop(); await b.stop();
  }
});
