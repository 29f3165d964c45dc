/**
 * SIP race paths, each against real UDP on loopback: our user agent on one side, a bare UDP
 * socket playing the far end by hand on the other, so every message and its timing is the test's.
 *
 * - A PRACK (RFC 3262) challenged 401/407 while the 200 to the INVITE arrives: the call is
 *   answered, every 200 ACKed once, the PRACK retried with credentials or dropped, its CSeq never
 *   one the dialog uses again, nothing left running after the call.
 * - The ACK of a 2xx carries the INVITE's credentials (RFC 3261 §13.2.2.4).
 * - A 491 to our re-INVITE (RFC 3261 §14.1): tried again after 2.1–4 s when we own the Call-ID,
 *   0–2 s when we do not; a newer change asked for meanwhile goes instead (the one it replaced is
 *   settled), never two re-INVITEs of ours outstanding at once.
 * - A delayed-offer call (INVITE without SDP) whose caller re-INVITEs before its ACK brings the
 *   answer to the offer in our 200: 491 (our offer is outstanding: RFC 3264 §4; RFC 3311 §5.2
 *   says 491 for an UPDATE so, and 500 only for an offer of the peer's not yet answered), the
 *   call stays up and the ACK's answer is taken; the same for a re-INVITE without SDP we
 *   answered with an offer. The 2xx given up without an ACK (64·T1) frees the dialog again.
 * - The far end's re-INVITE or UPDATE with an offer while our re-INVITE is in flight: 491
 *   (RFC 3261 §14.2, RFC 3311 §5.2); a second INVITE before we answered its first: 500 with a
 *   Retry-After (RFC 3261 §14.2).
 *
 * Ports: 127.0.0.1 26700-26749 only, two per test (the UA, the raw peer).
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import dgram from 'node:dgram';
import pino from 'pino';
import { SipUserAgent, type Dialog, type ServerInvite } from '../../src/sip';
import type { Clock } from '../../src/sip/transactions';
import { until } from '../support/tabs';

const logger = pino({ level: 'silent' });
const SDP = 'v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 4000 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n';
const HOLD = `${SDP}a=sendonly\r\n`;
const RESUME = `${SDP}a=sendrecv\r\n`;
const ANSWER = SDP.replace('m=audio 4000', 'm=audio 4100');
/** Small timers: 64·T1 (Timers B, F, H, L, M, the 2xx retransmissions) is 1.28 s. */
const TIMERS = { T1: 20, T2: 80, T4: 100 };

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** A header's value in a raw SIP message (first of its name), '' when absent. */
function hdr(text: string, name: string): string {
  return text.match(new RegExp(`^${name}: *(.*)$`, 'mi'))?.[1].trim() ?? '';
}
const cseqNo = (text: string) => Number(hdr(text, 'CSeq').split(' ')[0]);
const isRequest = (text: string, method: string) => text.startsWith(`${method} `);
const isResponse = (text: string, status: number, method: string) => text.startsWith(`SIP/2.0 ${status} `) && hdr(text, 'CSeq').endsWith(` ${method}`);
/** One copy per transaction (UDP retransmissions dropped): the first message of each Via branch. */
function firstPerBranch(list: string[]): string[] {
  const seen = new Set<string>();
  return list.filter((t) => { const b = /branch=([^;\s]+)/.exec(hdr(t, 'Via'))?.[1] ?? t; if (seen.has(b)) return false; seen.add(b); return true; });
}

/** The real clock, keeping the timers set through it that have neither fired nor been cleared. */
function trackedClock(): Clock & { live: Set<unknown> } {
  const live = new Set<unknown>();
  return {
    live,
    setTimeout(fn, ms) {
      const t: NodeJS.Timeout = setTimeout(() => { live.delete(t); fn(); }, ms);
      t.unref();
      live.add(t);
      return t;
    },
    clearTimeout(h) { clearTimeout(h as NodeJS.Timeout); live.delete(h); },
  };
}

async function startUa(port: number, clock?: Clock): Promise<SipUserAgent> {
  const ua = new SipUserAgent({ transports: [{ protocol: 'udp', host: '127.0.0.1', port }], logger, timers: TIMERS, clock });
  await ua.start();
  return ua;
}

/**
 * A bare UDP socket on `port` playing the far end: every message it gets is kept in `got` (and
 * handed to `on` handlers), `send` writes to the UA on `uaPort`.
 */
async function rawPeer(port: number, uaPort: number) {
  const sock = dgram.createSocket('udp4');
  await new Promise<void>((r) => sock.bind(port, '127.0.0.1', () => r()));
  const got: string[] = [];
  const handlers: Array<(text: string) => void> = [];
  sock.on('message', (m) => { const text = m.toString(); got.push(text); for (const h of handlers) h(text); });
  return {
    got,
    port,
    on: (h: (text: string) => void) => handlers.push(h),
    send: (text: string) => sock.send(text, uaPort, '127.0.0.1'),
    close: () => new Promise<void>((r) => sock.close(() => r())),
  };
}

/** A response to `req`: its Via, From, To (with `toTag` added when it has none), Call-ID and CSeq. */
function response(req: string, status: string, opts: { toTag?: string; contact?: string; extra?: string[]; body?: string } = {}): string {
  const to = hdr(req, 'To');
  return [
    `SIP/2.0 ${status}`, ...req.split('\r\n').filter((l) => /^Via:/i.test(l)), `From: ${hdr(req, 'From')}`,
    `To: ${to}${opts.toTag && !/;tag=/.test(to) ? `;tag=${opts.toTag}` : ''}`, `Call-ID: ${hdr(req, 'Call-ID')}`, `CSeq: ${hdr(req, 'CSeq')}`,
    ...(opts.contact ? [`Contact: ${opts.contact}`] : []), ...(opts.extra ?? []),
    ...(opts.body ? ['Content-Type: application/sdp'] : []), `Content-Length: ${Buffer.byteLength(opts.body ?? '')}`, '', opts.body ?? '',
  ].join('\r\n');
}

/** A request the raw peer sends (Via on its own port, a branch of its own). */
function request(method: string, o: { uri: string; peerPort: number; branch: string; from: string; to: string; callId: string; cseq: number; body?: string; extra?: string[] }): string {
  return [
    `${method} ${o.uri} SIP/2.0`, `Via: SIP/2.0/UDP 127.0.0.1:${o.peerPort};branch=z9hG4bK${o.branch};rport`, 'Max-Forwards: 70',
    `From: ${o.from}`, `To: ${o.to}`, `Call-ID: ${o.callId}`, `CSeq: ${o.cseq} ${method}`, `Contact: <sip:peer@127.0.0.1:${o.peerPort}>`,
    ...(o.extra ?? []), ...(o.body ? ['Content-Type: application/sdp'] : []), `Content-Length: ${Buffer.byteLength(o.body ?? '')}`, '', o.body ?? '',
  ].join('\r\n');
}

function once<T extends unknown[]>(em: { once(ev: string, fn: (...a: T) => void): unknown }, ev: string): Promise<T> {
  return new Promise((r) => em.once(ev, (...a: T) => r(a)));
}

/** Unhandled promise rejections while `fn` runs (and shortly after). */
async function noUnhandledRejections(fn: () => Promise<void>): Promise<void> {
  const seen: unknown[] = [];
  const onRejection = (err: unknown) => seen.push(err);
  process.on('unhandledRejection', onRejection);
  try {
    await fn();
    await sleep(50);
  } finally {
    process.off('unhandledRejection', onRejection);
  }
  assert.deepEqual(seen, [], 'no unhandled rejection');
}

// ------------------------------------------------------------------ 1. PRACK challenged as the 200 arrives

/**
 * We call the raw peer (a UAS that sends a reliable 183, then answers PRACKs and BYE as `script`
 * says). Resolves once the INVITE has reached it.
 */
async function callRawUas(uaPort: number, peerPort: number, opts: { credentials?: boolean; contactHost?: string } = {}) {
  const clock = trackedClock();
  const ua = await startUa(uaPort, clock);
  const peer = await rawPeer(peerPort, uaPort);
  const contact = `<sip:uas@${opts.contactHost ?? '127.0.0.1'}:${peerPort}>`;
  peer.on((t) => { if (isRequest(t, 'BYE')) peer.send(response(t, '200 OK')); });
  const inv = ua.invite({
    requestUri: `sip:uas@127.0.0.1:${peerPort}`, from: { uri: 'sip:gw@127.0.0.1' }, sdp: SDP, sessionExpires: 0,
    credentials: opts.credentials ? { username: 'gw', password: 'secret-pw' } : undefined,
  });
  await until(() => peer.got.some((t) => isRequest(t, 'INVITE')), 'the INVITE');
  const invite = peer.got.find((t) => isRequest(t, 'INVITE'))!;
  const ok = () => response(invite, '200 OK', { toTag: 'uas', contact, body: ANSWER });
  const pracks = () => firstPerBranch(peer.got.filter((t) => isRequest(t, 'PRACK')));
  const acks = () => peer.got.filter((t) => isRequest(t, 'ACK'));
  return { ua, clock, peer, inv, invite, ok, contact, pracks, acks };
}

/**
 * After the call: every transaction ended in its time (64·T1), no timer of the UA left. An INVITE
 * of ours refused 491 keeps its transaction for Timer D (32 s over UDP, whatever T1: §17.1.1.2),
 * absorbing the 491 sent again: that one timer per such transaction is all that may remain.
 */
async function nothingLeft(ua: SipUserAgent, clock: { live: Set<unknown> }): Promise<void> {
  const txs = () => [...(ua['clientTx'] as Map<string, { state: string; request: { method: string } }>).values()];
  const inTimerD = () => txs().filter((tx) => tx.request.method === 'INVITE' && tx.state === 'completed').length;
  await until(() => ua.counts.clientTx === inTimerD() && ua.counts.serverTx === 0, 'every transaction over', 64 * TIMERS.T1 + 3000);
  assert.deepEqual(ua.counts, { clientTx: inTimerD(), serverTx: 0, dialogs: 0, serverInvites: 0 });
  await until(() => clock.live.size === inTimerD(), `no timer left but Timer D (${clock.live.size} set, ${inTimerD()} in Timer D)`, 2000);
}

test('PRACK challenged (407) and the 200 to the INVITE right behind: the call is answered, the PRACK goes again with credentials, each 200 is ACKed once, and the dialog numbers above both PRACKs', async () => {
  await noUnhandledRejections(async () => {
    const { ua, clock, peer, inv, invite, ok, contact, pracks, acks } = await callRawUas(26700, 26701, { credentials: true });
    try {
      const ended: string[] = [];
      peer.send(response(invite, '183 Session Progress', { toTag: 'uas', contact, extra: ['Require: 100rel', 'RSeq: 1'] }));
      await until(() => pracks().length === 1, 'the PRACK');
      // The challenge to the PRACK and the 200 to the INVITE leave together.
      peer.send(response(pracks()[0], '407 Proxy Authentication Required', { extra: ['Proxy-Authenticate: Digest realm="trunk", nonce="n1", qop="auth"'] }));
      peer.send(ok());
      const [, dialog, answer] = await once<[unknown, Dialog, string]>(inv, 'accepted');
      dialog.on('terminated', (r) => ended.push(r));
      assert.equal(answer, ANSWER);
      await until(() => pracks().length === 2, 'the PRACK again, with credentials');
      const [first, second] = pracks();
      assert.equal(hdr(first, 'Proxy-Authorization'), '');
      assert.match(hdr(second, 'Proxy-Authorization'), /^Digest .*username="gw"/);
      assert.equal(hdr(second, 'RAck'), '1 1 INVITE');
      peer.send(response(second, '200 OK'));
      // The 200 sent twice more (its ACK crossed them, or was lost): one ACK each.
      await until(() => acks().length === 1, 'the ACK');
      peer.send(ok());
      await until(() => acks().length === 2, 'the second ACK');
      peer.send(ok());
      await until(() => acks().length === 3, 'the third ACK');
      await sleep(100);
      assert.equal(acks().length, 3, 'one ACK per 200');
      assert.ok(acks().every((a) => hdr(a, 'CSeq') === '1 ACK' && /tag=uas/.test(hdr(a, 'To'))));
      assert.equal(dialog.state, 'confirmed');
      assert.deepEqual(ended, [], 'the call is up');
      await dialog.bye();
      const bye = peer.got.find((t) => isRequest(t, 'BYE'))!;
      assert.ok(cseqNo(bye) > Math.max(...pracks().map(cseqNo)), `BYE ${hdr(bye, 'CSeq')} above the PRACKs ${pracks().map((p) => hdr(p, 'CSeq'))}`);
      assert.deepEqual(ended, ['local-bye']);
      await nothingLeft(ua, clock);
      assert.equal(pracks().length, 2, 'no PRACK after the call');
    } finally {
      await peer.close();
      await ua.stop();
    }
  });
});

test('the 200 to the INVITE and then the challenge (401) to its PRACK: the call is answered and stays up, the PRACK is dropped (not retried in the confirmed dialog), nothing left after the call', async () => {
  await noUnhandledRejections(async () => {
    const { ua, clock, peer, inv, invite, ok, contact, pracks, acks } = await callRawUas(26702, 26703, { credentials: true });
    try {
      const ended: string[] = [];
      peer.send(response(invite, '183 Session Progress', { toTag: 'uas', contact, extra: ['Require: 100rel', 'RSeq: 1'] }));
      await until(() => pracks().length === 1, 'the PRACK');
      peer.send(ok());
      peer.send(response(pracks()[0], '401 Unauthorized', { extra: ['WWW-Authenticate: Digest realm="trunk", nonce="n1"'] }));
      const [, dialog] = await once<[unknown, Dialog]>(inv, 'accepted');
      dialog.on('terminated', (r) => ended.push(r));
      await until(() => acks().length === 1, 'the ACK');
      // The 183 again (a UAS still sending it): neither PRACKed nor a new early dialog.
      peer.send(response(invite, '183 Session Progress', { toTag: 'uas', contact, extra: ['Require: 100rel', 'RSeq: 1'] }));
      peer.send(ok());
      await until(() => acks().length === 2, 'the second ACK');
      await sleep(150);
      assert.equal(pracks().length, 1, 'the challenged PRACK is not sent again once the call is answered');
      assert.equal(acks().length, 2);
      assert.equal(dialog.state, 'confirmed');
      assert.deepEqual(ended, []);
      await dialog.bye();
      const bye = peer.got.find((t) => isRequest(t, 'BYE'))!;
      assert.ok(cseqNo(bye) > cseqNo(pracks()[0]), `BYE ${hdr(bye, 'CSeq')} above the PRACK ${hdr(pracks()[0], 'CSeq')}`);
      await nothingLeft(ua, clock);
    } finally {
      await peer.close();
      await ua.stop();
    }
  });
});

test('a PRACK challenged on a call without credentials, the 200 arriving meanwhile: answered, the refused PRACK abandoned, the call ends cleanly', async () => {
  await noUnhandledRejections(async () => {
    const { ua, clock, peer, inv, invite, ok, contact, pracks, acks } = await callRawUas(26704, 26705);
    try {
      peer.send(response(invite, '183 Session Progress', { toTag: 'uas', contact, extra: ['Require: 100rel', 'RSeq: 1'] }));
      await until(() => pracks().length === 1, 'the PRACK');
      peer.send(response(pracks()[0], '401 Unauthorized', { extra: ['WWW-Authenticate: Digest realm="trunk", nonce="n1"'] }));
      peer.send(ok());
      const [, dialog] = await once<[unknown, Dialog]>(inv, 'accepted');
      await until(() => acks().length === 1, 'the ACK');
      await sleep(100);
      assert.equal(pracks().length, 1);
      assert.equal(dialog.state, 'confirmed');
      await dialog.bye();
      await nothingLeft(ua, clock);
    } finally {
      await peer.close();
      await ua.stop();
    }
  });
});

test('a reliable 183 and the 200 back to back, the PRACK\'s destination a host name (resolved meanwhile): the PRACK that goes after the 200 takes a CSeq of the dialog\'s, never one the dialog uses again', async () => {
  await noUnhandledRejections(async () => {
    // Contact "localhost": the PRACK (and the dialog's requests) wait for a DNS lookup, in which the 200 is taken.
    const { ua, clock, peer, inv, invite, ok, contact, pracks, acks } = await callRawUas(26706, 26707, { contactHost: 'localhost' });
    try {
      peer.on((t) => { if (isRequest(t, 'PRACK') || isRequest(t, 'INFO')) peer.send(response(t, '200 OK')); });
      peer.send(response(invite, '183 Session Progress', { toTag: 'uas', contact, extra: ['Require: 100rel', 'RSeq: 1'] }));
      peer.send(ok());
      const [, dialog] = await once<[unknown, Dialog]>(inv, 'accepted');
      await until(() => acks().length === 1, 'the ACK');
      await sleep(100);
      const info = await dialog.request('INFO', 'Signal=5\r\nDuration=160\r\n', 'application/dtmf-relay').catch(() => null);
      await dialog.bye();
      await until(() => peer.got.some((t) => isRequest(t, 'BYE')), 'the BYE');
      const inDialog = firstPerBranch(peer.got.filter((t) => /^(PRACK|INFO|BYE) /.test(t)));
      const seqs = inDialog.map((t) => `${hdr(t, 'CSeq')}`);
      assert.ok(info, 'the INFO went');
      assert.equal(new Set(inDialog.map(cseqNo)).size, inDialog.length, `every request of ours in the dialog has a CSeq of its own: ${seqs.join(', ')}`);
      const order = inDialog.map(cseqNo);
      assert.deepEqual(order, [...order].sort((a, b) => a - b), `CSeq rising in the order sent: ${seqs.join(', ')}`);
      assert.ok(pracks().length <= 1);
      await nothingLeft(ua, clock);
    } finally {
      await peer.close();
      await ua.stop();
    }
  });
});

test('the ACK of a 2xx carries the credentials of the INVITE it acknowledges (RFC 3261 §13.2.2.4): the call\'s INVITE after a 401, a re-INVITE after a 407', async () => {
  await noUnhandledRejections(async () => {
    const { ua, clock, peer, inv, invite, contact, acks } = await callRawUas(26708, 26709, { credentials: true });
    try {
      peer.send(response(invite, '401 Unauthorized', { toTag: 'uas', extra: ['WWW-Authenticate: Digest realm="trunk", nonce="n1", qop="auth"'] }));
      const invites = () => firstPerBranch(peer.got.filter((t) => isRequest(t, 'INVITE')));
      await until(() => invites().length === 2, 'the INVITE again with credentials');
      const authorized = invites()[1];
      assert.match(hdr(authorized, 'Authorization'), /^Digest /);
      peer.send(response(authorized, '200 OK', { toTag: 'uas', contact, body: ANSWER }));
      const [, dialog] = await once<[unknown, Dialog]>(inv, 'accepted');
      await until(() => acks().some((a) => hdr(a, 'CSeq') === `${cseqNo(authorized)} ACK`), 'the ACK of the 200');
      const ack = acks().find((a) => hdr(a, 'CSeq') === `${cseqNo(authorized)} ACK`)!;
      assert.equal(hdr(ack, 'Authorization'), hdr(authorized, 'Authorization'), 'the INVITE\'s credentials');
      // A re-INVITE challenged by a proxy: its ACK carries what the re-INVITE that got the 200 did.
      const hold = dialog.reinvite(HOLD);
      const reinvites = () => firstPerBranch(peer.got.filter((t) => isRequest(t, 'INVITE') && /tag=uas/.test(hdr(t, 'To'))));
      await until(() => reinvites().length === 1, 'the re-INVITE');
      peer.send(response(reinvites()[0], '407 Proxy Authentication Required', { extra: ['Proxy-Authenticate: Digest realm="proxy", nonce="p1", qop="auth"'] }));
      await until(() => reinvites().length === 2, 'the re-INVITE again with credentials');
      const second = reinvites()[1];
      assert.match(hdr(second, 'Proxy-Authorization'), /^Digest .*realm="proxy"/);
      peer.send(response(second, '200 OK', { body: ANSWER }));
      assert.equal((await hold).status, 200);
      await until(() => acks().some((a) => hdr(a, 'CSeq') === `${cseqNo(second)} ACK`), 'the ACK of the re-INVITE\'s 200');
      const reAck = acks().find((a) => hdr(a, 'CSeq') === `${cseqNo(second)} ACK`)!;
      assert.equal(hdr(reAck, 'Proxy-Authorization'), hdr(second, 'Proxy-Authorization'));
      assert.equal(hdr(reAck, 'Authorization'), hdr(second, 'Authorization'));
      await dialog.bye();
      await nothingLeft(ua, clock);
    } finally {
      await peer.close();
      await ua.stop();
    }
  });
});

// ------------------------------------------------------------------ 2. a 491 retry and a newer change

/** We call the raw peer and it answers 200: a dialog whose Call-ID is ours. */
async function outboundDialog(uaPort: number, peerPort: number) {
  const clock = trackedClock();
  const ua = await startUa(uaPort, clock);
  const peer = await rawPeer(peerPort, uaPort);
  peer.on((t) => { if (isRequest(t, 'BYE')) peer.send(response(t, '200 OK')); });
  const inv = ua.invite({ requestUri: `sip:uas@127.0.0.1:${peerPort}`, from: { uri: 'sip:gw@127.0.0.1' }, sdp: SDP, sessionExpires: 0 });
  await until(() => peer.got.some((t) => isRequest(t, 'INVITE')), 'the INVITE');
  const invite = peer.got.find((t) => isRequest(t, 'INVITE'))!;
  peer.send(response(invite, '200 OK', { toTag: 'uas', contact: `<sip:uas@127.0.0.1:${peerPort}>`, body: ANSWER }));
  const [, dialog] = await once<[unknown, Dialog]>(inv, 'accepted');
  return { ua, clock, peer, dialog };
}

/** The raw peer calls us and we answer 200 (its ACK sent): a dialog whose Call-ID is the peer's. */
async function inboundDialog(uaPort: number, peerPort: number, opts: { offer?: string; ack?: boolean } = {}) {
  const clock = trackedClock();
  const ua = await startUa(uaPort, clock);
  const peer = await rawPeer(peerPort, uaPort);
  peer.on((t) => { if (isRequest(t, 'BYE')) peer.send(response(t, '200 OK')); });
  let dialog: Dialog | null = null;
  ua.on('invite', (inv: ServerInvite) => { dialog = inv.accept(opts.offer === '' ? RESUME : ANSWER); });
  const callId = `in-${uaPort}`;
  const d = { uri: `sip:gw@127.0.0.1:${uaPort}`, peerPort, from: '<sip:peer@127.0.0.1>;tag=peer', callId };
  peer.send(request('INVITE', { ...d, branch: `inv-${uaPort}`, to: '<sip:gw@127.0.0.1>', cseq: 1, body: opts.offer ?? SDP }));
  await until(() => peer.got.some((t) => isResponse(t, 200, 'INVITE')), 'our 200');
  const ok = peer.got.find((t) => isResponse(t, 200, 'INVITE'))!;
  const to = hdr(ok, 'To');
  const inDialog = { ...d, to };
  if (opts.ack !== false) peer.send(request('ACK', { ...inDialog, branch: `ack-${uaPort}`, cseq: 1 }));
  await until(() => dialog !== null, 'the dialog');
  return { ua, clock, peer, dialog: dialog as unknown as Dialog, ok, inDialog };
}

/**
 * Our re-INVITEs as the peer got them (one per transaction), and whether two were ever
 * outstanding at once: one arriving before the peer answered the one before finally.
 */
function reinviteLog(peer: Awaited<ReturnType<typeof rawPeer>>, answered: Set<string>) {
  let overlap = false;
  const reinvites: Array<{ text: string; at: number }> = [];
  peer.on((t) => {
    if (!isRequest(t, 'INVITE') || !/;tag=/.test(hdr(t, 'To'))) return;
    if (reinvites.some((r) => hdr(r.text, 'Via') === hdr(t, 'Via'))) return; // a retransmission
    if (reinvites.some((r) => !answered.has(hdr(r.text, 'CSeq')))) overlap = true;
    reinvites.push({ text: t, at: Date.now() });
  });
  return { reinvites, overlapped: () => overlap };
}

test('a 491 to our hold, and a resume asked for before the retry (we own the Call-ID): the resume goes instead, 2.1-4 s after the 491; the hold\'s waiter is settled; never two re-INVITEs outstanding', async () => {
  await noUnhandledRejections(async () => {
    const { ua, clock, peer, dialog } = await outboundDialog(26710, 26711);
    try {
      const answered = new Set<string>();
      const log = reinviteLog(peer, answered);
      const answer = (req: string, status: string, body?: string) => { answered.add(hdr(req, 'CSeq')); peer.send(response(req, status, { body })); };
      const hold = dialog.reinvite(() => HOLD);
      const holdSettled = hold.then((r) => `resolved ${r.status}`, (e: Error) => `rejected ${e.name}`);
      await until(() => log.reinvites.length === 1, 'the hold re-INVITE');
      answer(log.reinvites[0].text, '491 Request Pending');
      const t491 = Date.now();
      await sleep(300);
      const resume = dialog.reinvite(() => RESUME);
      assert.equal(await Promise.race([holdSettled, sleep(200).then(() => 'still pending')]), 'rejected ReinviteSupersededError', 'the hold\'s waiter is settled once the resume replaced it');
      await until(() => log.reinvites.length === 2, 'the next re-INVITE', 6000);
      const next = log.reinvites[1];
      assert.equal(next.text.slice(next.text.indexOf('\r\n\r\n') + 4), RESUME, 'the latest change asked for goes, not the hold');
      const waited = next.at - t491;
      assert.ok(waited >= 2100 - 30 && waited <= 4000 + 300, `sent ${waited} ms after the 491 (2.1-4 s: we own the Call-ID)`);
      answer(next.text, '200 OK', ANSWER);
      assert.equal((await resume).status, 200);
      await sleep(4200); // past any retry of the hold there could still be
      assert.equal(log.reinvites.length, 2, 'the hold is not sent again after the resume');
      assert.equal(log.overlapped(), false, 'never two re-INVITEs outstanding');
      assert.equal(dialog.localSdp, RESUME, 'the SDP a refresh would send is the resume\'s');
      await dialog.bye();
      await nothingLeft(ua, clock);
    } finally {
      await peer.close();
      await ua.stop();
    }
  });
});

test('a change asked for while our hold re-INVITE is unanswered waits for it; the next, crossed by the far end\'s re-INVITE (491 to both), goes again 0-2 s later when the far end owns the Call-ID', async () => {
  await noUnhandledRejections(async () => {
    const { ua, clock, peer, dialog, inDialog } = await inboundDialog(26712, 26713);
    try {
      const answered = new Set<string>();
      const log = reinviteLog(peer, answered);
      const answer = (req: string, status: string, body?: string) => { answered.add(hdr(req, 'CSeq')); peer.send(response(req, status, { body })); };
      const offered: string[] = [];
      dialog.on('reinvite', (req, reply) => { offered.push(req.body); reply(200, SDP); });
      // Hold, answered only later; the resume asked for meanwhile waits its turn.
      const hold = dialog.reinvite(HOLD);
      await until(() => log.reinvites.length === 1, 'the hold re-INVITE');
      const resume = dialog.reinvite(() => RESUME);
      await sleep(200);
      assert.equal(log.reinvites.length, 1, 'the resume waits for the hold\'s answer');
      answer(log.reinvites[0].text, '200 OK', ANSWER);
      assert.equal((await hold).status, 200);
      await until(() => log.reinvites.length === 2, 'the resume re-INVITE');
      assert.ok(log.reinvites[1].text.endsWith(RESUME));
      // Glare: the far end's re-INVITE crosses the resume (491 from us), and it answers ours 491.
      peer.send(request('INVITE', { ...inDialog, branch: 'crossing-2', cseq: 2, body: HOLD }));
      await until(() => peer.got.some((t) => isResponse(t, 491, 'INVITE') && hdr(t, 'CSeq') === '2 INVITE'), 'our 491 to the far end\'s re-INVITE');
      peer.send(request('ACK', { ...inDialog, branch: 'crossing-2', cseq: 2 }));
      answer(log.reinvites[1].text, '491 Request Pending');
      const t491 = Date.now();
      await until(() => log.reinvites.length === 3, 'the resume again', 4000);
      const waited = log.reinvites[2].at - t491;
      assert.ok(waited <= 2000 + 300, `sent again ${waited} ms after the 491 (0-2 s: the far end owns the Call-ID)`);
      assert.ok(log.reinvites[2].text.endsWith(RESUME));
      answer(log.reinvites[2].text, '200 OK', ANSWER);
      assert.equal((await resume).status, 200);
      assert.deepEqual(offered, [], 'the crossing offer never reached the application');
      assert.equal(log.overlapped(), false, 'never two re-INVITEs outstanding');
      await dialog.bye();
      await nothingLeft(ua, clock);
    } finally {
      await peer.close();
      await ua.stop();
    }
  });
});

test('glare when we own the Call-ID: the far end\'s retry (0-2 s) is taken during our 2.1-4 s wait, and our offer, given as a function, is built anew after it (the far end holds us now)', async () => {
  await noUnhandledRejections(async () => {
    const { ua, clock, peer, dialog } = await outboundDialog(26716, 26717);
    try {
      const answered = new Set<string>();
      const log = reinviteLog(peer, answered);
      const answer = (req: string, status: string, body?: string) => { answered.add(hdr(req, 'CSeq')); peer.send(response(req, status, { body })); };
      let heldByPeer = false;
      dialog.on('reinvite', (req, reply) => { heldByPeer = /a=sendonly/.test(req.body); reply(200, `${SDP}a=${heldByPeer ? 'recvonly' : 'sendrecv'}\r\n`); });
      const ourOffer = () => `${SDP}a=${heldByPeer ? 'recvonly' : 'sendrecv'}\r\n`;
      const change = dialog.reinvite(ourOffer);
      await until(() => log.reinvites.length === 1, 'our re-INVITE');
      const ours = log.reinvites[0].text;
      assert.ok(ours.endsWith(RESUME));
      // The far end's re-INVITE (it holds us) crosses ours: 491 each way.
      const inDialog = { uri: `sip:gw@127.0.0.1:26716`, peerPort: 26717, from: hdr(ours, 'To'), to: hdr(ours, 'From'), callId: hdr(ours, 'Call-ID') };
      peer.send(request('INVITE', { ...inDialog, branch: 'theirs-1', cseq: 1, body: HOLD }));
      await until(() => peer.got.some((t) => isResponse(t, 491, 'INVITE') && hdr(t, 'CSeq') === '1 INVITE'), 'our 491 to theirs');
      peer.send(request('ACK', { ...inDialog, branch: 'theirs-1', cseq: 1 }));
      answer(ours, '491 Request Pending');
      const t491 = Date.now();
      // The far end does not own the Call-ID: its retry comes first, and is taken.
      await sleep(300);
      peer.send(request('INVITE', { ...inDialog, branch: 'theirs-2', cseq: 2, body: HOLD }));
      await until(() => peer.got.some((t) => isResponse(t, 200, 'INVITE') && hdr(t, 'CSeq') === '2 INVITE'), 'their retry answered');
      peer.send(request('ACK', { ...inDialog, branch: 'ack-2', cseq: 2 }));
      assert.equal(heldByPeer, true);
      await until(() => log.reinvites.length === 2, 'our re-INVITE again', 6000);
      const waited = log.reinvites[1].at - t491;
      assert.ok(waited >= 2100 - 30 && waited <= 4000 + 300, `sent again ${waited} ms after the 491 (2.1-4 s: we own the Call-ID)`);
      assert.ok(log.reinvites[1].text.endsWith(`${SDP}a=recvonly\r\n`), 'built anew: the far end holds us now, so we only receive');
      answer(log.reinvites[1].text, '200 OK', `${SDP}a=sendonly\r\n`);
      assert.equal((await change).status, 200);
      assert.equal(log.overlapped(), false);
      await dialog.bye();
      await nothingLeft(ua, clock);
    } finally {
      await peer.close();
      await ua.stop();
    }
  });
});

test('an offer given as a string refused 491 is the answer at once (the caller decides); its next re-INVITE waits out the §14.1 wait; a change waiting when the call ends is refused, and no timer is left', async () => {
  await noUnhandledRejections(async () => {
    const { ua, clock, peer, dialog } = await outboundDialog(26714, 26715);
    try {
      const answered = new Set<string>();
      const log = reinviteLog(peer, answered);
      const answer = (req: string, status: string, body?: string) => { answered.add(hdr(req, 'CSeq')); peer.send(response(req, status, { body })); };
      const first = dialog.reinvite(HOLD);
      await until(() => log.reinvites.length === 1, 'the hold re-INVITE');
      answer(log.reinvites[0].text, '491 Request Pending');
      const t491 = Date.now();
      assert.equal((await first).status, 491, 'a string offer: the 491 is the answer');
      const again = dialog.reinvite(HOLD);
      await until(() => log.reinvites.length === 2, 'the hold again', 6000);
      const waited = log.reinvites[1].at - t491;
      assert.ok(waited >= 2100 - 30 && waited <= 4000 + 300, `sent ${waited} ms after the 491 (2.1-4 s: we own the Call-ID)`);
      answer(log.reinvites[1].text, '491 Request Pending');
      assert.equal((await again).status, 491);
      // Asked again during the wait, and the call ends before it is over.
      const third = dialog.reinvite(() => HOLD).then((r) => `resolved ${r.status}`, (e: Error) => `rejected ${e.message}`);
      await sleep(200);
      await dialog.bye();
      assert.equal(await Promise.race([third, sleep(1000).then(() => 'pending')]), 'rejected dialog terminated', 'the waiting hold is refused when the call ends');
      await assert.rejects(dialog.reinvite(HOLD), /dialog terminated/);
      assert.equal(log.reinvites.length, 2, 'nothing sent after the BYE');
      await nothingLeft(ua, clock);
      await sleep(4200);
      assert.equal(log.reinvites.length, 2, 'and no retry later either');
      assert.equal(log.overlapped(), false);
    } finally {
      await peer.close();
      await ua.stop();
    }
  });
});

// ------------------------------------------------------------------ 3. delayed offer: re-INVITE before the ACK

test('delayed offer: a re-INVITE (with SDP) before the ACK that answers the offer in our 200 gets 491; the call stays up, the ACK\'s answer is taken, the re-INVITE sent again later is answered', async () => {
  await noUnhandledRejections(async () => {
    // An application that would accept any re-offer: the dialog itself must refuse the crossing one.
    const { ua, clock, peer, dialog, ok, inDialog } = await inboundDialog(26720, 26721, { offer: '', ack: false });
    try {
      assert.match(ok, /m=audio/, 'our 200 carries the offer');
      const offered: string[] = [];
      const answers: string[] = [];
      const ended: string[] = [];
      dialog.on('reinvite', (req, reply) => { offered.push(req.body); reply(200, SDP); });
      dialog.on('ackAnswer', (sdp) => answers.push(sdp));
      dialog.on('terminated', (r) => ended.push(r));
      peer.send(request('INVITE', { ...inDialog, branch: 'reinv-2', cseq: 2, body: HOLD }));
      await until(() => peer.got.some((t) => /^SIP\/2\.0 [2-6]\d\d /.test(t) && hdr(t, 'CSeq') === '2 INVITE'), 'the answer to the re-INVITE');
      const res = peer.got.find((t) => hdr(t, 'CSeq') === '2 INVITE' && /^SIP\/2\.0 [2-6]/.test(t))!;
      assert.match(res, /^SIP\/2\.0 491 /, 'our offer is outstanding: 491');
      assert.deepEqual(offered, [], 'the application never saw the crossing offer');
      peer.send(request('ACK', { ...inDialog, branch: 'reinv-2', cseq: 2 })); // the 491's ACK (its transaction's branch)
      peer.send(request('ACK', { ...inDialog, branch: 'ack-1', cseq: 1, body: ANSWER }));
      await until(() => answers.length === 1, 'the answer in the ACK');
      assert.equal(answers[0], ANSWER);
      assert.equal(dialog.state, 'confirmed');
      const oks = () => peer.got.filter((t) => isResponse(t, 200, 'INVITE') && hdr(t, 'CSeq') === '1 INVITE').length;
      const okCount = oks();
      const rejections = peer.got.filter((t) => t.startsWith('SIP/2.0 491')).length;
      await sleep(64 * TIMERS.T1 + 300);
      assert.equal(oks(), okCount, 'no 200 after its ACK');
      assert.equal(peer.got.filter((t) => t.startsWith('SIP/2.0 491')).length, rejections, 'no 491 after its ACK');
      // The far end tries its re-INVITE again: answered now.
      peer.send(request('INVITE', { ...inDialog, branch: 'reinv-3', cseq: 3, body: HOLD }));
      await until(() => peer.got.some((t) => isResponse(t, 200, 'INVITE') && hdr(t, 'CSeq') === '3 INVITE'), 'the 200 to the re-INVITE');
      peer.send(request('ACK', { ...inDialog, branch: 'ack-3', cseq: 3 }));
      assert.deepEqual(offered, [HOLD]);
      assert.deepEqual(ended, [], 'the call stayed up');
      assert.ok(!peer.got.some((t) => isRequest(t, 'BYE')));
      await dialog.bye();
      await nothingLeft(ua, clock);
    } finally {
      await peer.close();
      await ua.stop();
    }
  });
});

test('a re-INVITE without SDP answered with our offer: a re-INVITE or an UPDATE with an offer before its ACK gets 491, an UPDATE without one 200; the ACK\'s answer is taken; with no ACK at all the dialog takes offers again once the 200 is given up', async () => {
  await noUnhandledRejections(async () => {
    const { ua, clock, peer, dialog, inDialog } = await inboundDialog(26722, 26723);
    try {
      const offered: string[] = [];
      const answers: string[] = [];
      dialog.on('reinvite', (req, reply) => { offered.push(req.body); reply(200, req.body ? SDP : RESUME); });
      dialog.on('ackAnswer', (sdp) => answers.push(sdp));
      const statusOf = (cseq: string) => peer.got.find((t) => t.startsWith('SIP/2.0 ') && !t.startsWith('SIP/2.0 100') && hdr(t, 'CSeq') === cseq)?.split(' ')[1];
      // A re-INVITE without SDP: our 200 offers; its answer comes in the ACK.
      peer.send(request('INVITE', { ...inDialog, branch: 'noSdp-2', cseq: 2 }));
      await until(() => statusOf('2 INVITE') === '200', 'our 200 with an offer');
      peer.send(request('INVITE', { ...inDialog, branch: 'cross-3', cseq: 3, body: HOLD }));
      peer.send(request('UPDATE', { ...inDialog, branch: 'cross-4', cseq: 4, body: HOLD }));
      peer.send(request('UPDATE', { ...inDialog, branch: 'refresh-5', cseq: 5 }));
      await until(() => statusOf('3 INVITE') !== undefined && statusOf('4 UPDATE') !== undefined && statusOf('5 UPDATE') !== undefined, 'the three answered');
      assert.deepEqual([statusOf('3 INVITE'), statusOf('4 UPDATE'), statusOf('5 UPDATE')], ['491', '491', '200']);
      assert.deepEqual(offered, [''], 'only the re-INVITE without SDP reached the application');
      peer.send(request('ACK', { ...inDialog, branch: 'cross-3', cseq: 3 }));
      peer.send(request('ACK', { ...inDialog, branch: 'ack-2', cseq: 2, body: ANSWER }));
      await until(() => answers.length === 1, 'the answer in the ACK');
      // Again without SDP, and this time no ACK ever comes: after 64·T1 our offer is given up, and offers are taken again.
      peer.send(request('INVITE', { ...inDialog, branch: 'noSdp-6', cseq: 6 }));
      await until(() => statusOf('6 INVITE') === '200', 'our 200 with an offer');
      await sleep(64 * TIMERS.T1 + 300);
      peer.send(request('INVITE', { ...inDialog, branch: 'later-7', cseq: 7, body: HOLD }));
      await until(() => statusOf('7 INVITE') !== undefined, 'the later re-INVITE answered');
      assert.equal(statusOf('7 INVITE'), '200');
      peer.send(request('ACK', { ...inDialog, branch: 'ack-7', cseq: 7 }));
      assert.deepEqual(offered, ['', '', HOLD]);
      assert.equal(dialog.state, 'confirmed');
      await dialog.bye();
      await nothingLeft(ua, clock);
    } finally {
      await peer.close();
      await ua.stop();
    }
  });
});

// ------------------------------------------------------------------ 4. the far end's request while ours is in flight

test('while our re-INVITE is in flight the far end\'s re-INVITE and its UPDATE with an offer get 491, an UPDATE without one 200; ours completes and the far end\'s next re-INVITE is taken', async () => {
  await noUnhandledRejections(async () => {
    const { ua, clock, peer, dialog, inDialog } = await inboundDialog(26730, 26731);
    try {
      const offered: string[] = [];
      dialog.on('reinvite', (req, reply) => { offered.push(req.body); reply(200, SDP); });
      const statusOf = (cseq: string) => peer.got.find((t) => t.startsWith('SIP/2.0 ') && !t.startsWith('SIP/2.0 100') && hdr(t, 'CSeq') === cseq)?.split(' ')[1];
      const hold = dialog.reinvite(HOLD);
      await until(() => peer.got.some((t) => isRequest(t, 'INVITE')), 'our re-INVITE');
      const ours = peer.got.find((t) => isRequest(t, 'INVITE'))!;
      peer.send(request('INVITE', { ...inDialog, branch: 'glare-2', cseq: 2, body: HOLD }));
      peer.send(request('UPDATE', { ...inDialog, branch: 'glare-3', cseq: 3, body: HOLD }));
      peer.send(request('UPDATE', { ...inDialog, branch: 'refresh-4', cseq: 4 }));
      await until(() => ['2 INVITE', '3 UPDATE', '4 UPDATE'].every((c) => statusOf(c) !== undefined), 'the three answered');
      assert.deepEqual([statusOf('2 INVITE'), statusOf('3 UPDATE'), statusOf('4 UPDATE')], ['491', '491', '200']);
      peer.send(request('ACK', { ...inDialog, branch: 'glare-2', cseq: 2 }));
      assert.deepEqual(offered, []);
      peer.send(response(ours, '200 OK', { body: ANSWER }));
      assert.equal((await hold).status, 200);
      await until(() => peer.got.some((t) => isRequest(t, 'ACK')), 'our ACK');
      peer.send(request('INVITE', { ...inDialog, branch: 'after-5', cseq: 5, body: RESUME }));
      await until(() => statusOf('5 INVITE') === '200', 'the far end\'s re-INVITE taken');
      peer.send(request('ACK', { ...inDialog, branch: 'ack-5', cseq: 5 }));
      assert.deepEqual(offered, [RESUME]);
      await dialog.bye();
      await nothingLeft(ua, clock);
    } finally {
      await peer.close();
      await ua.stop();
    }
  });
});

test('a second re-INVITE (or an UPDATE with an offer) from the far end before we answered its first gets 500 with a Retry-After of 0-10 s (RFC 3261 §14.2, RFC 3311 §5.2); the first is answered as the application decides', async () => {
  await noUnhandledRejections(async () => {
    const { ua, clock, peer, dialog, inDialog } = await inboundDialog(26732, 26733);
    try {
      const pending: Array<(status: number, sdp?: string) => void> = [];
      dialog.on('reinvite', (_req, reply) => pending.push(reply)); // answered later, as an application that asks someone
      const statusOf = (cseq: string) => peer.got.find((t) => t.startsWith('SIP/2.0 ') && !t.startsWith('SIP/2.0 100') && hdr(t, 'CSeq') === cseq);
      peer.send(request('INVITE', { ...inDialog, branch: 'first-2', cseq: 2, body: HOLD }));
      await until(() => pending.length === 1, 'the first re-INVITE with the application');
      peer.send(request('INVITE', { ...inDialog, branch: 'second-3', cseq: 3, body: RESUME }));
      peer.send(request('UPDATE', { ...inDialog, branch: 'update-4', cseq: 4, body: RESUME }));
      await until(() => statusOf('3 INVITE') !== undefined && statusOf('4 UPDATE') !== undefined, 'the second and the UPDATE answered');
      for (const c of ['3 INVITE', '4 UPDATE']) {
        const r = statusOf(c)!;
        assert.match(r, /^SIP\/2\.0 500 /, c);
        const retryAfter = Number(hdr(r, 'Retry-After'));
        assert.ok(hdr(r, 'Retry-After') !== '' && retryAfter >= 0 && retryAfter <= 10, `${c}: Retry-After ${hdr(r, 'Retry-After')}`);
      }
      assert.equal(pending.length, 1, 'neither reached the application');
      peer.send(request('ACK', { ...inDialog, branch: 'second-3', cseq: 3 }));
      pending[0](200, SDP);
      await until(() => statusOf('2 INVITE')?.startsWith('SIP/2.0 200') === true, 'the first answered 200');
      peer.send(request('ACK', { ...inDialog, branch: 'ack-2', cseq: 2 }));
      // Answered: the next offer is taken again.
      peer.send(request('INVITE', { ...inDialog, branch: 'third-5', cseq: 5, body: RESUME }));
      await until(() => pending.length === 2, 'the next re-INVITE with the application');
      pending[1](200, SDP);
      await until(() => statusOf('5 INVITE')?.startsWith('SIP/2.0 200') === true, 'answered 200');
      peer.send(request('ACK', { ...inDialog, branch: 'ack-5', cseq: 5 }));
      await dialog.bye();
      await nothingLeft(ua, clock);
    } finally {
      await peer.close();
      await ua.stop();
    }
  });
});
