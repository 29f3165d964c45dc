/**
 * Bad input from the SIP side inside real calls, generated. One gateway in this process, fake
 * browsers (werift peer connections behind WebSocket tabs, which really connect), and a trunk:
 * our own SipUserAgent on loopback UDP, which answers the calls the tabs place and places calls
 * to a tab, plus a bare UDP socket of the trunk's that speaks in those calls' dialogs by hand
 * (their Call-ID, tags and CSeq) and also places calls of its own, so that every byte, every ACK
 * that does or does not come and every retransmission is the test's.
 *
 * Per seed, six calls at once, each in a state of its own: placed by a tab and answered, or
 * ringing (180), or with early media (183); placed by the trunk's user agent to a tab, ringing or
 * answered; placed by the raw socket (with SDP or a delayed offer, with Require: 100rel or not),
 * ringing or answered, its 200 ACKed or never. Each call then gets a seeded sequence of what a
 * trunk sends, valid and bent: re-INVITEs and UPDATEs (hold by sendonly, inactive, c=0.0.0.0 or
 * at session level; resume; codec changes, dynamic payload types, telephone-event elsewhere than
 * 101, no rtpmap for static types, lower-case names; a move to another RTP port; SRTP keys
 * changed, added and dropped; extra video streams, a refused audio stream first, rtcp-mux, the
 * SDP inside multipart/mixed beside ISUP, SDP of 60 KB; a new Contact (target refresh); SDP
 * that cannot be used: no codec in common, port 0 or 70000, no or a host-name c=, RTP/SAVP
 * without usable keys, garbage), re-INVITEs without SDP (our offer in the 200: answered in the
 * ACK, or by an ACK without an answer, with an unusable one, or by none), re-INVITEs whose 200
 * is never ACKed or that a CANCEL follows, ACKs carrying bodies they should not, stray ACKs,
 * Session-Expires below our Min-SE; INFO (DTMF as dtmf-relay and dtmf, with events 10-15, bent,
 * and other packages), OPTIONS, NOTIFY, REFER, MESSAGE, SUBSCRIBE, PUBLISH, PRACK, unknown
 * methods; BYE with a wrong To or From tag, a wrong Call-ID, no To tag, or a CSeq gone
 * backwards; requests with the last CSeq again or a lower one, or far above; retransmissions;
 * CANCEL after the 200; requests outside the dialog; datagrams with broken headers (CSeq,
 * Content-Length, Via, tags, Max-Forwards 0, Require, line endings, SIP/3.0, 130 headers, a
 * 9 KB line); bursts of requests back to back; and, in early dialogs, what a UAS or a ringing
 * caller may or may not send (UPDATE, INFO, PRACK right and wrong, an early BYE, CANCEL, the
 * INVITE again, a PRACK that never comes), a 183 whose media moves, a 200 without SDP after a
 * 183 (its answer stands, RFC 6337) or after a bare 180 (no answer: the call ends). The trunk
 * answers our own hold offers at once, late, with 488 or with 491 (we try again, §14.1). Raced
 * with the tabs' own hold, resume, DTMF, accept and hangup, and with the trunk answering the
 * call as a tab hangs up.
 *
 * The oracle, written from RFC 3261/3262/3264/3311/4028/4568 and the README (not from the code):
 * - every request gets exactly one final response (one status, one To tag, however often it is
 *   sent again), of the class the request calls for: 200 for what is taken; 481 for a dialog or
 *   transaction that does not exist (wrong tags, wrong Call-ID, no To tag, a request in an early
 *   dialog of ours that has no session yet); 500 for a CSeq not above the last (§12.2.2); 491
 *   for an offer while ours waits for its answer (RFC 3264 §4); 488 for an offer that cannot be
 *   used; 405 with Allow for a method we do not take in a dialog, 501 for one we do not know;
 *   420, 483, 422 (with Min-SE) for what §8.2.2.3, §16.3 and RFC 4028 say; 400, 505 or nothing
 *   for what does not parse, as our parser (fuzzed on its own in messageFuzz) reads it; a
 *   response never to an ACK;
 * - the answer to each usable offer: our RTP port of the call, the codec in use kept when still
 *   offered (else the first we do), the offered payload type, the direction mirrored (RFC 3264
 *   §6.1, with our own hold), the offered crypto tag and suite when keys were offered, the
 *   offered profile and telephone-event, rtcp-mux when offered, one m-line per offered one
 *   (those we refuse with port 0); our offer in a 200 to a re-INVITE without SDP likewise, and
 *   our hold offers (sendonly, or inactive while the trunk holds us); an offer RFC 3264 leaves
 *   to us (RTP/AVP with only keys we cannot use, multipart) may be refused, or taken so;
 * - after a 2xx to a target refresh naming a new Contact, our requests go there (§12.2.2);
 * - the tab hears what happened: `held`/`resumed` by remote exactly when the trunk's offer
 *   started or stopped holding it, `dtmf` once per DTMF INFO, its own hold answered, `ended` once
 *   and only when the call really ended (with the cause) — and nothing else;
 * - the media follows: a digit the tab sends arrives as RTP at the port the trunk's last usable
 *   SDP named, and nowhere while the trunk does not receive (sendonly, inactive, c=0.0.0.0);
 * - the trunk hears what it should: one BYE per call the gateway ended, none after its own BYE;
 * - per seed: every call ended, then the gateway holds nothing (heldResources, activeCalls), every
 *   call it created has exactly one CDR line; our 200s given no ACK stop within 64·T1;
 *   throughout: no uncaughtException or unhandledRejection, no error-level log line.
 *
 * The gateway's SIP timers are shortened (T1 50 ms, T2 400 ms, T4 500 ms: 64·T1 = 3.2 s) by
 * setting them on its user agent after start (no setting exists), so that an ACK or a PRACK that
 * never comes is given up on within a seed.
 *
 * Bugs it found, each pinned at the end of the file by its smallest case (all fixed):
 * - a re-INVITE without SDP while the tab held the call: our offer in the 200 was sendonly, and
 *   the trunk's answer in the ACK (recvonly or inactive, all it may say) was taken for whether
 *   the trunk holds us — the tab was told `resumed` (or `held`) by remote though the trunk's hold
 *   had not changed, and the tab's resume then offered sendrecv to a trunk still holding it;
 * - a request with more header fields than the parser reads (128) before its Call-ID and CSeq
 *   got a 400 without them (and without From and To): its sender could not match it;
 * - an ACK of no 2xx of ours (a stray CSeq) with a body, while our offer in a 200 waited for its
 *   ACK, was taken for the answer: garbage ended the call, an SDP moved its media;
 * - an ACK with a CSeq above that 200's stopped it being sent again (taken as had), but the
 *   dialog went on waiting for its answer for ever: every offer of the trunk's got 491, and the
 *   tab's hold or resume never went out.
 *
 * Ports: listening ones only in 28450-28549: http 28450, SIP 28451, the trunk's user agent
 * 28453, the trunk's raw socket 28454, the trunk's RTP 28456-28479 (two pairs per call slot),
 * the gateway's RTP 28480-28509, WebRTC 28510-28549; the fake browsers' sockets and the STUN
 * responder are ephemeral. Fixed seeds; what a call does next also follows what it was answered,
 * so a failure names the seed, the call, the step and the call's last messages both ways.
 */
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import dgram from 'node:dgram';
import { readFileSync } from 'node:fs';
import { isIP } from 'node:net';
import timersPromises from 'node:timers/promises';
import pino from 'pino';
import WebSocket from 'ws';
import { MediaStreamTrack, RTCPeerConnection, RTCRtpCodecParameters } from 'werift';
import { parseNameAddr, parseSipMessage, SipRequest, SipResponse, SipUserAgent, type ClientInvite, type Dialog, type ServerInvite } from '../../src/sip';
import { parseVia } from '../../src/sip/message';
import { heldResources, recordCallIds, startGateway } from '../support/gateway';
import { browserPeers, openTab, type Msg } from '../support/tabs';
import { explain, prng, type Prng } from '../support/fuzz';

const BASE = 28450;
const SIP_PORT = BASE + 1;
const TRUNK_PORT = BASE + 3;
const RAW_PORT = BASE + 4;
/** The trunk's RTP ports: per call slot, a pair where its media starts and one a re-INVITE may move it to. */
const TRUNK_MEDIA = BASE + 6;
const SLOTS = 6;
const SECRET = 'dialog-fuzz-secret-0123456789abcdef';
const TIMERS = { T1: 50, T2: 400, T4: 500 };
/** How long a 200 is sent again without its ACK, a reliable 18x without its PRACK (64·T1). */
const ACK_WAIT_MS = 64 * TIMERS.T1;
const SEEDS = [0xd1a10001, 0x5eedf00d, 0x00c0ffee, 0x0001e240, 0x0009fbf1, 0x00112a88, 0x00186a00];
const STEPS = 14;
/** How long a final response may take (the gateway answers at once; a hold waits for the trunk). */
const FINAL_MS = 2000;

type Dir = 'sendrecv' | 'sendonly' | 'recvonly' | 'inactive';
type Kind = 'out' | 'in' | 'raw';
type Stage = 'setup' | 'ringing' | 'early' | 'answered' | 'ended';
type Codec = 'PCMU' | 'PCMA';

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
async function waitUntil(cond: () => boolean, ms: number): Promise<boolean> {
  const end = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > end) return false;
    await sleep(10);
  }
  return true;
}

/**
 * werift's DTLS retransmits a flight (timers/promises, up to ~30 s) even after its peer
 * connection closed: those waits must not hold the process once the tests are done (as in
 * signalingFuzz).
 */
const realSleep = timersPromises.setTimeout;
(timersPromises as { setTimeout: typeof realSleep }).setTimeout = ((ms?: number, value?: unknown, options?: { ref?: boolean; signal?: AbortSignal }) =>
  realSleep(ms, value, new Error().stack?.includes('/dtls/') ? { ...options, ref: false } : options)) as typeof realSleep;

const short = (s: unknown, n = 160) => {
  const t = typeof s === 'string' ? s : JSON.stringify(s, (k, v) => (k === 'sdp' && typeof v === 'string' ? `<sdp ${v.length}>` : v));
  return t.length > n ? `${t.slice(0, n)}…(${t.length})` : t;
};
const tagOf = (nameAddr: string) => parseNameAddr(nameAddr)?.params.tag ?? '';
const withTag = (nameAddr: string, tag: string | null) => {
  const bare = nameAddr.replace(/;\s*tag=[^;\s]*/i, '');
  return tag === null ? bare : `${bare};tag=${tag}`;
};

// ---------------------------------------------------------------------------------------------
// SDP: what the trunk offers (as fields, so the oracle reads the fields, not our text), and a
// small reader for what the gateway sends.

interface Crypto { tag: number; suite: string; keyLen: number; param?: string }
interface TrunkSdp {
  label: string;
  port: number | string;
  /** null: no c= line. */
  conn: string | null;
  /** null: no direction attribute (sendrecv). */
  dir: Dir | null;
  codecs: Array<[number, string]>;
  te: boolean;
  /** telephone-event's payload type (101 when not given). */
  tePt?: number;
  /** A direction attribute at session level (a media-level one wins). */
  sessionDir?: Dir;
  /** A refused audio stream (port 0) before ours. */
  refusedFirst?: boolean;
  /** No a=rtpmap for the static payload types. */
  noRtpmap?: boolean;
  /** Encoding names in lower case (they are case-insensitive, RFC 4566 §6). */
  lower?: boolean;
  /** The SDP as one part of a multipart/mixed body, beside an ISUP part (as carriers send it). */
  multipart?: boolean;
  /** RTCP on the RTP port (RFC 5761). */
  rtcpMux?: boolean;
  profile: string;
  crypto: Crypto[];
  video?: 'before' | 'after';
  /** Bytes of padding attributes (a huge SDP). */
  pad?: number;
  /** A body that is no SDP at all. */
  raw?: string;
}

const SUITES_OK = ['AES_CM_128_HMAC_SHA1_80', 'AES_CM_128_HMAC_SHA1_32'];
const cryptoOk = (c: Crypto) => SUITES_OK.includes(c.suite) && c.keyLen === 30 && !/^UNENCRYPTED|^UNAUTHENTICATED|^KDR=[1-9]/.test(c.param ?? '');

const MULTIPART = 'multipart/mixed;boundary=unique-boundary-1';
const contentType = (s: TrunkSdp) => (s.multipart ? MULTIPART : 'application/sdp');

function sdpText(s: TrunkSdp, version: number, keySeed: number): string {
  if (s.raw !== undefined) return s.raw;
  if (s.multipart) {
    return ['--unique-boundary-1', 'Content-Type: application/sdp', '', sdpText({ ...s, multipart: false }, version, keySeed), '--unique-boundary-1',
      'Content-Type: application/isup;version=itu-t92+', 'Content-Disposition: signal;handling=optional', '', '\u0001\u0010\u0020\u0001\u000a\u0003', '--unique-boundary-1--', ''].join('\r\n');
  }
  const key = (c: Crypto) => Buffer.alloc(c.keyLen, (keySeed + c.tag) & 0xff).toString('base64');
  const tePt = s.tePt ?? 101;
  const fmts = [...s.codecs.map(([pt]) => pt), ...(s.te ? [tePt] : [])];
  const audio = [
    `m=audio ${s.port} ${s.profile} ${fmts.join(' ')}`,
    ...s.codecs.filter(([pt]) => !(s.noRtpmap && pt < 96)).map(([pt, name]) => `a=rtpmap:${pt} ${s.lower ? name.toLowerCase() : name}/8000`),
    ...(s.te ? [`a=rtpmap:${tePt} telephone-event/8000`, `a=fmtp:${tePt} 0-15`] : []),
    'a=ptime:20',
    ...(s.rtcpMux ? ['a=rtcp-mux'] : []),
    ...s.crypto.map((c) => `a=crypto:${c.tag} ${c.suite} inline:${key(c)}${c.param ? ` ${c.param}` : ''}`),
    ...(s.dir ? [`a=${s.dir}`] : []),
  ];
  const video = [`m=video ${s.port} RTP/AVP 31`, 'a=rtpmap:31 H261/90000'];
  const pad: string[] = [];
  for (let n = 0; n < (s.pad ?? 0); n += 1000) pad.push(`a=x-pad:${'p'.repeat(990)}`);
  const lines = [
    'v=0', `o=trunk 4711 ${version} IN IP4 127.0.0.1`, 's=-', ...(s.conn === null ? [] : [`c=IN IP4 ${s.conn}`]), 't=0 0',
    ...(s.sessionDir ? [`a=${s.sessionDir}`] : []), ...(s.refusedFirst ? ['m=audio 0 RTP/AVP 18', 'a=rtpmap:18 G729/8000'] : []),
    ...(s.video === 'before' ? video : []), ...audio, ...pad, ...(s.video === 'after' ? video : []),
  ];
  return `${lines.join('\r\n')}\r\n`;
}

/** What RFC 3264 and our README make of an offer: usable (and how), unusable (488), or either. */
interface Verdict { kind: 'usable' | 'unusable' | 'maybe'; codec?: Codec; pt?: number; dir?: Dir; srtp?: Crypto | null; port?: number; conn?: string; why?: string }

function judgeOffer(s: TrunkSdp, keep: Codec): Verdict {
  const no = (why: string): Verdict => ({ kind: 'unusable', why });
  if (s.raw !== undefined) return no('not SDP');
  const port = Number(s.port);
  if (!/^\d+$/.test(String(s.port)) || port < 1 || port > 65535) return no('no usable audio port');
  if (s.conn === null || isIP(s.conn) === 0) return no('no usable connection address');
  const ours = s.codecs.filter(([, n]) => /^PCM[AU]$/i.test(n));
  if (!ours.length) return no('no codec in common');
  const [pt, name] = ours.find(([, n]) => n.toUpperCase() === keep) ?? ours[0];
  let srtp: Crypto | null = null;
  // RFC 5621 lets a multipart body carry the SDP: read, or refused as a type we do not take.
  let maybe = !!s.multipart;
  if (s.crypto.length) {
    srtp = s.crypto.find(cryptoOk) ?? null;
    // RTP/SAVP without a key we can use is refused (RFC 4568 §7.1.2); RTP/AVP with only such
    // keys may be refused or taken as plain RTP.
    if (!srtp && s.profile === 'RTP/SAVP') return no('no usable SRTP key');
    if (!srtp) maybe = true;
  } else if (s.profile === 'RTP/SAVP') return no('RTP/SAVP without keys');
  const raw = s.dir ?? s.sessionDir ?? 'sendrecv';
  // RFC 3264 §8.4: c=0.0.0.0 is the old way to say "do not send to me".
  const dir: Dir = s.conn === '0.0.0.0' ? (raw === 'sendrecv' ? 'sendonly' : raw === 'recvonly' ? 'inactive' : raw) : raw;
  return { kind: maybe ? 'maybe' : 'usable', codec: name.toUpperCase() as Codec, pt, dir, srtp, port, conn: s.conn };
}

/** RFC 3264 §6.1: the answer's direction to an offer of `theirs`, holding the far end ourselves or not. */
function mirror(theirs: Dir, holding: boolean): Dir {
  const weSend = theirs === 'sendrecv' || theirs === 'recvonly';
  const weRecv = (theirs === 'sendrecv' || theirs === 'sendonly') && !holding;
  return weSend && weRecv ? 'sendrecv' : weSend ? 'sendonly' : weRecv ? 'recvonly' : 'inactive';
}
const holdsUs = (d: Dir) => d === 'sendonly' || d === 'inactive';
const receives = (d: Dir) => d === 'sendrecv' || d === 'recvonly';

interface ReadSdp { port: number; conn: string; profile: string; fmts: number[]; names: string[]; dir: Dir; crypto: Array<{ tag: number; suite: string }>; mlines: Array<{ type: string; port: number }>; rtcpMux: boolean }
function readSdp(sdp: string): ReadSdp | null {
  const lines = sdp.split(/\r\n/);
  const mlines = lines.filter((l) => l.startsWith('m=')).map((l) => { const [type, port] = l.slice(2).split(' '); return { type, port: Number(port) }; });
  const at = lines.findIndex((l) => l.startsWith('m=audio') && !l.startsWith('m=audio 0 '));
  if (at < 0) return null;
  const end = lines.findIndex((l, i) => i > at && l.startsWith('m='));
  const media = lines.slice(at, end < 0 ? undefined : end);
  const [, port, profile, ...fmts] = lines[at].split(' ');
  const rtpmap = new Map(media.map((l) => /^a=rtpmap:(\d+) ([^/]+)/.exec(l)).filter((m) => m !== null).map((m) => [Number(m[1]), m[2]]));
  const conn = (media.find((l) => l.startsWith('c=')) ?? lines.find((l) => l.startsWith('c=')) ?? '').split(' ')[2] ?? '';
  const dir = (media.map((l) => /^a=(sendrecv|sendonly|recvonly|inactive)$/.exec(l)?.[1]).find(Boolean) ?? 'sendrecv') as Dir;
  const crypto = media.map((l) => /^a=crypto:(\d+) (\S+)/.exec(l)).filter((m) => m !== null).map((m) => ({ tag: Number(m[1]), suite: m[2] }));
  const pts = fmts.map(Number);
  return { rtcpMux: media.includes('a=rtcp-mux'), port: Number(port), conn, profile, fmts: pts, names: pts.map((pt) => rtpmap.get(pt) ?? (pt === 0 ? 'PCMU' : pt === 8 ? 'PCMA' : String(pt))), dir, crypto, mlines };
}

// ---------------------------------------------------------------------------------------------
// SIP text the trunk sends by hand.

function sipRequest(method: string, o: { uri: string; from: string; to: string; callId: string; seq: number; branch: string; body?: string; type?: string; extra?: string[]; contact?: string | null; cseqMethod?: string }): string {
  const body = o.body ?? '';
  return [
    `${method} ${o.uri} SIP/2.0`,
    `Via: SIP/2.0/UDP 127.0.0.1:${RAW_PORT};branch=${o.branch};rport`,
    'Max-Forwards: 70',
    `From: ${o.from}`, `To: ${o.to}`, `Call-ID: ${o.callId}`, `CSeq: ${o.seq} ${o.cseqMethod ?? method}`,
    ...(o.contact ? [`Contact: ${o.contact}`] : []),
    ...(o.extra ?? []),
    ...(body ? [`Content-Type: ${o.type ?? 'application/sdp'}`] : []),
    `Content-Length: ${Buffer.byteLength(body)}`, '', body,
  ].join('\r\n');
}

/** A response to a request the gateway sent the raw socket. */
function responseTo(req: SipRequest, status: number, reason: string, o: { toTag?: string; body?: string } = {}): string {
  const to = req.header('to') ?? '';
  const body = o.body ?? '';
  return [
    `SIP/2.0 ${status} ${reason}`, ...req.headers('via').map((v) => `Via: ${v}`), `From: ${req.header('from')}`,
    `To: ${o.toTag && !tagOf(to) ? `${to};tag=${o.toTag}` : to}`, `Call-ID: ${req.callId}`, `CSeq: ${req.header('cseq')}`,
    `Contact: <sip:trunk@127.0.0.1:${RAW_PORT}>`, ...(body ? ['Content-Type: application/sdp'] : []), `Content-Length: ${Buffer.byteLength(body)}`, '', body,
  ].join('\r\n');
}

/** One request the raw socket sent, and what came back for it (by Via branch and CSeq method). */
interface RawTx {
  key: string;
  branch: string;
  method: string;
  seq: number;
  text: string;
  label: string;
  call: Call;
  sentAt: number;
  responses: Array<{ at: number; status: number; toTag: string; res: SipResponse }>;
  /** INVITE: its 2xx is ACKed (with the body made from the 2xx) unless 'never'. */
  ack?: 'never' | ((res: SipResponse) => string);
  ackText?: string;
  /** Sent again (same branch) at: what comes after may be the first final again, or 500 once the transaction is gone. */
  retransmittedAt?: number;
  /** What the oracle allows as its final status; 'none': no response at all. */
  allowed?: number[] | 'none';
  /** A step waited for its answer and judged it (else the seed's end does). */
  judged?: boolean;
}

class RawSip {
  sock!: dgram.Socket;
  readonly txs = new Map<string, RawTx>();
  /** Calls placed by this socket: the gateway's requests in them come here. */
  readonly calls = new Map<string, Call>();
  readonly stray: string[] = [];
  private branches = 0;

  async start(): Promise<void> {
    this.sock = dgram.createSocket('udp4');
    this.sock.on('message', (m) => this.onMessage(m));
    await new Promise<void>((r) => this.sock.bind(RAW_PORT, '127.0.0.1', () => r()));
  }

  branch(what: string): string {
    return `z9hG4bK${what}x${++this.branches}`;
  }

  send(text: string): void {
    this.sock.send(text, SIP_PORT, '127.0.0.1');
  }

  private onMessage(buf: Buffer): void {
    const msg = parseSipMessage(buf);
    if ('error' in msg) {
      // A response that copies a header of ours we broke on purpose (a To that is no name-addr,
      // §8.2.6.2) does not parse either: taken by its status line, branch and CSeq method.
      const text = buf.toString();
      const status = /^SIP\/2\.0 (\d{3}) /.exec(text)?.[1];
      const tx = this.byBranch(/branch=([^;\s,]+)/.exec(text)?.[1] ?? '');
      if (status && tx) {
        tx.call.note(`< ${status}, which copies what we broke (${msg.error})`);
        tx.responses.push({ at: Date.now(), status: Number(status), toTag: '', res: new SipResponse(Number(status), msg.error) });
        return;
      }
      this.stray.push(`unparseable from the gateway (${msg.error}): ${short(text)}`);
      return;
    }
    if (msg instanceof SipResponse) { this.onResponse(msg); return; }
    const c = this.calls.get(msg.callId);
    if (!c) { this.stray.push(`a request for no call of ours: ${short(msg.toString())}`); return; }
    c.onRawRequest(msg);
  }

  /** The one request of ours with this branch (a response copying a CSeq we bent names another method). */
  private byBranch(branch: string): RawTx | undefined {
    const txs = [...this.txs.values()].filter((tx) => tx.branch === branch);
    return txs.length === 1 ? txs[0] : undefined;
  }

  private onResponse(res: SipResponse): void {
    const branch = res.topVia?.params.branch ?? '';
    const tx = this.txs.get(`${branch}|${res.cseq.method}`) ?? this.byBranch(branch);
    if (!tx) { this.stray.push(`a response to nothing we sent: ${short(res.toString())}`); return; }
    tx.responses.push({ at: Date.now(), status: res.status, toTag: tagOf(res.header('to') ?? ''), res });
    tx.call.note(`< ${res.status} ${res.reason} (${res.cseq.seq} ${res.cseq.method}${res.body ? `, ${res.body.length} B` : ''})`);
    if (tx.method === 'INVITE' && res.status >= 200) this.ackFor(tx, res);
    tx.call.onRawResponse(tx, res);
  }

  /** ACK: for a non-2xx the same branch (§17.1.1.3), for a 2xx a new one (§13.2.2.4), sent again for each 2xx. */
  private ackFor(tx: RawTx, res: SipResponse): void {
    const inv = parseSipMessage(tx.text) as SipRequest;
    if (res.status >= 300) {
      this.sock.send([`ACK ${inv.uri} SIP/2.0`, `Via: ${inv.header('via')}`, 'Max-Forwards: 70', `From: ${inv.header('from')}`, `To: ${res.header('to')}`,
        `Call-ID: ${inv.callId}`, `CSeq: ${tx.seq} ACK`, 'Content-Length: 0', '', ''].join('\r\n'), SIP_PORT, '127.0.0.1');
      return;
    }
    if (tx.ack === 'never') return;
    if (tx.ackText === undefined) {
      const body = tx.ack?.(res) ?? '';
      const target = parseNameAddr(res.header('contact') ?? '')?.uri ?? inv.uri;
      tx.ackText = sipRequest('ACK', { uri: target, from: inv.header('from')!, to: res.header('to')!, callId: inv.callId, seq: tx.seq, branch: this.branch('ack'), body, contact: null });
      tx.call.note(`> ACK ${tx.seq}${body ? ` with ${body.length} B` : ''}`);
    }
    this.sock.send(tx.ackText, SIP_PORT, '127.0.0.1');
  }
}

// ---------------------------------------------------------------------------------------------
// Tabs.

class TabConn {
  readonly byRef = new Map<string, Call>();
  readonly byFrom = new Map<string, Call>();
  readonly byCall = new Map<string, Call>();
  readonly unrouted: Msg[] = [];
  private constructor(readonly ws: WebSocket) {}

  static async open(user: string, sockets: WebSocket[]): Promise<TabConn> {
    const t = new TabConn((await openTab(BASE, user, SECRET, sockets)).ws);
    t.ws.on('message', (d) => t.route(JSON.parse(d.toString())));
    return t;
  }

  send(m: object): void {
    this.ws.send(JSON.stringify(m));
  }

  private route(m: Msg): void {
    if (m.type === 'pong' || m.type === 'welcome') return;
    if (m.type === 'calling' && this.byRef.has(m.ref)) { this.byRef.get(m.ref)!.onCalling(m); return; }
    if (m.type === 'incoming' && this.byFrom.has(m.from)) { this.byFrom.get(m.from)!.onIncoming(m); return; }
    const c = (typeof m.callId === 'string' ? this.byCall.get(m.callId) : undefined) ?? (typeof m.ref === 'string' ? this.byRef.get(m.ref) : undefined);
    if (c) c.onTabMsg(m);
    else this.unrouted.push(m);
  }
}

// ---------------------------------------------------------------------------------------------
// The world of one seed.

interface World {
  seed: number;
  raw: RawSip;
  alice: TabConn;
  bob: TabConn;
  calls: Call[];
  violations: string[];
  stats: Record<string, number>;
  /** Calls the trunk's user agent was sent INVITEs for, by X-Fuzz. */
  byXFuzz: Map<string, Call>;
}

const count = (w: World, k: string) => { w.stats[k] = (w.stats[k] ?? 0) + 1; };

let stunPort = 0;
const peers: RTCPeerConnection[] = [];
function newPeer(): RTCPeerConnection {
  const pc = new RTCPeerConnection({
    iceServers: [{ urls: `stun:127.0.0.1:${stunPort}` }], iceUseIpv6: false, iceInterfaceAddresses: { udp4: '127.0.0.1' },
    codecs: { audio: [new RTCRtpCodecParameters({ mimeType: 'audio/opus', clockRate: 48000, channels: 2, payloadType: 111 })] },
  });
  peers.push(pc);
  return pc;
}
async function gathered(pc: RTCPeerConnection): Promise<string> {
  await new Promise<void>((r) => { if (pc.iceGatheringState === 'complete') r(); else pc.iceGatheringStateChange.subscribe((s) => { if (s === 'complete') r(); }); });
  return pc.localDescription!.sdp;
}

/** RTP packets (not RTCP) that reached each of the trunk's media ports. */
const rtpCount = new Map<number, number>();

/** What the tab is expected to hear: a message of `type`, with these fields. */
interface Ev { type: string; by?: string; digit?: string; cause?: string[]; code?: string; request?: string }
const evMatches = (m: Msg, e: Ev) => m.type === e.type && (e.by === undefined || m.by === e.by) && (e.digit === undefined || m.digit === e.digit)
  && (e.cause === undefined || e.cause.includes(m.cause)) && (e.code === undefined || m.code === e.code) && (e.request === undefined || m.request === e.request);
const evText = (e: Ev) => `${e.type}${e.by ? ` by ${e.by}` : ''}${e.digit ? ` ${e.digit}` : ''}${e.cause ? ` (${e.cause.join('|')})` : ''}${e.code ? ` ${e.code}` : ''}`;

interface Plan {
  kind: Kind;
  /** Where set-up leaves the call. */
  start: 'answered' | 'early' | 'ringing';
  srtp: boolean;
  /** The codecs of the trunk's first SDP (its answer, or its offer), in order. */
  codecs: Codec[];
  /** raw: no SDP in the INVITE (our offer goes in the 200, its answer in the ACK). */
  delayed?: boolean;
  /** raw: Require: 100rel, and what the PRACK does. */
  prack?: 'none' | 'ok' | 'bent' | 'never';
  /** raw: how the 200 is ACKed. */
  ack?: 'ok' | 'never' | 'no-answer' | 'bad-answer';
  /** in: the trunk offers RTP/SAVP (else RTP/AVP, with keys when srtp). */
  savp?: boolean;
  /** Ringing (or early) until its end: nobody answers it meanwhile. */
  keepsRinging?: boolean;
}

function planFor(r: Prng, kind: Kind): Plan {
  const codecs = r.pick<Codec[]>([['PCMU'], ['PCMA'], ['PCMU', 'PCMA'], ['PCMA', 'PCMU']]);
  const srtp = r.int(2) === 0;
  const keepsRinging = r.int(2) === 0;
  switch (kind) {
    case 'out': return { kind, start: r.pick(['answered', 'answered', 'answered', 'early', 'ringing']), srtp, codecs, keepsRinging };
    case 'in': return { kind, start: r.pick(['answered', 'answered', 'answered', 'ringing']), srtp, codecs, savp: srtp && r.int(2) === 0, keepsRinging };
    default: {
      const delayed = r.int(4) === 0;
      const start = r.pick<Plan['start']>(['answered', 'answered', 'answered', 'ringing']);
      return {
        kind, start, srtp, codecs, delayed, keepsRinging,
        // A caller that requires 100rel and sends no SDP is refused (README): not this fuzz's subject.
        // (A PRACK that never comes matters while the call rings: an answered one is past it.)
        prack: delayed ? 'none' : r.pick(['none', 'none', 'ok', 'bent', start === 'ringing' ? 'never' : 'ok']),
        ack: r.pick(delayed ? ['ok', 'ok', 'ok', 'never', 'no-answer', 'bad-answer'] : ['ok', 'ok', 'ok', 'ok', 'never']),
      };
    }
  }
}

/** How a request the trunk sends by hand differs from the plain one in its dialog. */
interface SendOpts { contact?: string; body?: string; type?: string; extra?: string[]; seq?: number; cseqMethod?: string; from?: string; to?: string; callId?: string; uri?: string; branch?: string; ack?: RawTx['ack']; text?: (t: string) => string }

// ---------------------------------------------------------------------------------------------
// A call, from both ends at once: the tab's and the trunk's.

class Call {
  readonly recent: string[] = [];
  stage: Stage = 'setup';
  step = 0;
  /** What the step is doing (named in violations). */
  what = 'set-up';
  // The dialog as the trunk sees it.
  sipCallId = '';
  /** Our From (the trunk's side, with its tag) and To (the gateway's side). */
  fromHdr = '';
  toHdr = '';
  /** Where in-dialog requests go (the gateway's Contact). */
  uri = `sip:gw@127.0.0.1:${SIP_PORT}`;
  contact: string;
  seq = 0;
  /** The highest CSeq the gateway's dialog has taken from us (§12.2.2): a request not above it gets 500. */
  gwRemoteSeq = 0;
  /** The initial INVITE of a call we placed (its branch, for CANCEL and retransmissions). */
  inviteTx: RawTx | null = null;
  /** The gateway's tag in the 180 of a call the trunk placed (its early dialog). */
  earlyTag = '';
  rseq = 0;
  // The media, as the gateway should have it.
  gwPort = 0;
  readonly ports: [number, number];
  mediaPort: number;
  codec: Codec = 'PCMU';
  srtp = false;
  te = true;
  heldByTrunk = false;
  heldByTab = false;
  trunkRecv = true;
  /** Our offer in a 200 waits for its ACK until then (RFC 3264 §4): offers from us meanwhile get 491. */
  offerPendingUntil = 0;
  /** The CSeq of that 200. */
  offerPendingSeq = 0;
  sdpVersion = 1;
  // The tab.
  tab: TabConn;
  tabCallId = '';
  ref = '';
  fromNumber = '';
  tabOffer = '';
  pc: RTCPeerConnection | null = null;
  readonly tabMsgs: Msg[] = [];
  // The trunk's user agent's side.
  serverInvite: ServerInvite | null = null;
  clientInvite: ClientInvite | null = null;
  uaDialog: Dialog | null = null;
  inviteFinal = 0;
  gatewayByes = 0;
  gatewayCancels = 0;
  readonly gatewayOffers: Dir[] = [];
  /** The trunk answers the gateway's next offer with this (0: 200), after this long. */
  refuseGwOffer: 0 | 488 | 491 = 0;
  gwAnswerDelay = 0;
  /** The gateway knows where the trunk's media is (an SDP of the trunk's was taken: not a call that only rang). */
  mediaKnown = true;
  /** Where the gateway's requests go is certain (after a 2xx to a target refresh; RFC 3261 §12.2.2). */
  targetSure = true;
  lastTx: RawTx | null = null;
  /** Set when the trunk's side should see a BYE from the gateway (the tab or the gateway ended it). */
  byeExpected: 'yes' | 'no' | 'either' = 'no';
  private readonly handledRaw = new Map<string, string>();
  readonly xfuzz: string;

  constructor(readonly w: World, readonly n: number, readonly r: Prng, readonly plan: Plan) {
    this.ports = [TRUNK_MEDIA + 4 * n, TRUNK_MEDIA + 4 * n + 2];
    this.mediaPort = this.ports[0];
    this.contact = plan.kind === 'raw' ? `<sip:trunk@127.0.0.1:${RAW_PORT}>` : `<sip:gw@127.0.0.1:${TRUNK_PORT}>`;
    this.tab = plan.kind === 'out' ? w.alice : w.bob;
    this.xfuzz = `s${w.seed.toString(16)}c${n}`;
    this.codec = plan.codecs[0];
    this.srtp = plan.srtp;
  }

  get name(): string {
    return `call ${this.n} (${this.plan.kind}, ${this.plan.start}${this.plan.srtp ? ', srtp' : ''}${this.plan.delayed ? ', delayed offer' : ''}${this.plan.prack && this.plan.prack !== 'none' ? `, 100rel ${this.plan.prack}` : ''}${this.plan.ack && this.plan.ack !== 'ok' ? `, ack ${this.plan.ack}` : ''})`;
  }

  note(s: string): void {
    this.recent.push(s.length > 240 ? `${s.slice(0, 240)}…` : s);
    if (this.recent.length > 16) this.recent.shift();
  }

  violation(what: string): void {
    this.w.violations.push(`seed 0x${this.w.seed.toString(16)} ${this.name} step ${this.step} (${this.what}): ${what}\n    recent:\n      ${this.recent.join('\n      ')}`);
  }

  // ------------------------------------------------------------------ the tab's messages

  onCalling(m: Msg): void {
    this.tabCallId = m.callId;
    this.tab.byCall.set(m.callId, this);
    this.onTabMsg(m);
    this.pc?.setRemoteDescription({ type: 'answer', sdp: m.sdp }).catch(() => undefined);
  }

  onIncoming(m: Msg): void {
    if (this.tabCallId) { this.violation(`a second incoming for one call: ${short(m)}`); return; }
    this.tabCallId = m.callId;
    this.tabOffer = m.sdp;
    this.tab.byCall.set(m.callId, this);
    this.onTabMsg(m);
  }

  onTabMsg(m: Msg): void {
    this.note(`tab < ${short(m, 200)}`);
    count(this.w, `tab < ${m.type}${m.type === 'ended' ? ` ${m.cause}` : m.type === 'error' ? ` ${m.code}` : m.type === 'held' || m.type === 'resumed' ? ` ${m.by}` : ''}`);
    // (Only an error for a request of the tab's that crossed the call's end may follow it.)
    if (this.tabMsgs.some((x) => x.type === 'ended') && m.type !== 'error') this.violation(`a message after the call's ended: ${short(m)}`);
    this.tabMsgs.push(m);
  }

  private tabSend(m: Msg): void {
    this.note(`tab > ${short(m)}`);
    count(this.w, `tab > ${m.type}`);
    this.tab.send(m);
  }

  /**
   * Waits until the tab's messages about this call since `from` hold `want` in order, then
   * `quietMs` more: anything else than `want` and (at most once each) `maybe` is a violation.
   */
  async tabExpect(from: number, want: Ev[], maybe: Ev[] = [], ms = 3000, quietMs = 120): Promise<Msg[]> {
    const got = () => this.tabMsgs.slice(from);
    const covered = () => { let i = 0; for (const m of got()) if (i < want.length && evMatches(m, want[i])) i++; return i === want.length; };
    await waitUntil(covered, ms);
    await sleep(quietMs);
    const rest = [...maybe];
    let i = 0;
    const extra: Msg[] = [];
    for (const m of got()) {
      if (i < want.length && evMatches(m, want[i])) { i++; continue; }
      const k = rest.findIndex((e) => evMatches(m, e));
      if (k >= 0) { rest.splice(k, 1); continue; }
      extra.push(m);
    }
    if (i < want.length) this.violation(`the tab was not told ${want.slice(i).map(evText).join(', ')} (it got ${got().map((m) => short(m, 120)).join(' | ') || 'nothing'})`);
    if (extra.length) this.violation(`the tab was told ${extra.map((m) => short(m, 160)).join(' | ')} besides${want.length ? ` ${want.map(evText).join(', ')}` : ''}`);
    return got();
  }

  // ------------------------------------------------------------------ what the trunk sends

  private send(method: string, label: string, o: SendOpts = {}): RawTx {
    const seq = o.seq ?? ++this.seq;
    this.seq = Math.max(this.seq, seq);
    const branch = o.branch ?? this.w.raw.branch(`${this.xfuzz}s${this.step}`);
    let text = sipRequest(method, {
      uri: o.uri ?? this.uri, from: o.from ?? this.fromHdr, to: o.to ?? this.toHdr, callId: o.callId ?? this.sipCallId, seq, branch,
      body: o.body, type: o.type, extra: o.extra, contact: method === 'ACK' ? null : o.contact ?? this.contact, cseqMethod: o.cseqMethod,
    });
    if (o.text) text = o.text(text);
    const tx: RawTx = { key: `${branch}|${o.cseqMethod ?? method}`, branch, method: o.cseqMethod ?? method, seq, text, label, call: this, sentAt: Date.now(), responses: [], ack: o.ack };
    this.w.raw.txs.set(tx.key, tx);
    this.note(`> ${label}: ${method} cseq ${seq}${o.body ? `, ${o.body.length} B` : ''}`);
    count(this.w, `> ${method}`);
    this.w.raw.send(text);
    if (method !== 'ACK') this.lastTx = tx;
    return tx;
  }

  private async finalOf(tx: RawTx, ms = FINAL_MS): Promise<SipResponse | null> {
    await waitUntil(() => tx.responses.some((x) => x.status >= 200), ms);
    return tx.responses.find((x) => x.status >= 200)?.res ?? null;
  }

  /** Waits for `tx`'s final response; a violation unless its status is one of `allowed`. */
  private async expectFinal(tx: RawTx, allowed: number[] | 'none', ms = FINAL_MS): Promise<SipResponse | null> {
    tx.allowed = allowed;
    tx.judged = true;
    if (allowed === 'none') {
      await sleep(250);
      if (tx.responses.length) this.violation(`${tx.label}: answered ${tx.responses.map((x) => x.status).join(', ')}, expected no response at all`);
      return null;
    }
    const res = await this.finalOf(tx, ms);
    if (!res) { this.violation(`${tx.label}: no final response within ${ms} ms (expected ${allowed.join('/')})`); return null; }
    count(this.w, `< ${tx.method} ${res.status}`);
    if (!allowed.includes(res.status)) this.violation(`${tx.label}: answered ${res.status} ${res.reason}, expected ${allowed.join('/')}`);
    if (res.status === 405 && !res.header('allow')) this.violation(`${tx.label}: a 405 without Allow (RFC 3261 §8.2.1)`);
    if (res.status === 422 && !res.header('min-se')) this.violation(`${tx.label}: a 422 without Min-SE (RFC 4028 §6)`);
    return res;
  }

  /** What a request we send makes of the gateway's dialog state: the statuses it allows (generic part). */
  private expectedFor(text: string, o: { offer?: Verdict } = {}): { allowed: number[] | 'none'; reaches: boolean } {
    const p = parseSipMessage(text);
    if ('error' in p) {
      const via = p.partial?.header('via');
      if (!p.partial || p.partial.method === 'ACK' || !via || !parseVia(via)) return { allowed: 'none', reaches: false };
      return { allowed: [p.status ?? (p.error === 'Message Too Large' ? 513 : 400)], reaches: false };
    }
    const req = p as SipRequest;
    const method = req.method;
    if (req.header('max-forwards') !== undefined && Number(req.header('max-forwards')) === 0 && method !== 'OPTIONS') return { allowed: [483], reaches: false };
    if (req.headers('require').some((h) => h.split(',').some((t) => t.trim() && !['timer', '100rel'].includes(t.trim().toLowerCase())))) return { allowed: [420], reaches: false };
    const toTag = tagOf(req.header('to') ?? '');
    const fromTag = tagOf(req.header('from') ?? '');
    if (!toTag) {
      switch (method) {
        case 'OPTIONS': return { allowed: [200], reaches: false };
        case 'BYE': case 'INFO': case 'UPDATE': case 'NOTIFY': case 'PRACK': return { allowed: [481], reaches: false };
        case 'MESSAGE': case 'REFER': case 'SUBSCRIBE': case 'PUBLISH': case 'REGISTER': return { allowed: [405], reaches: false };
        default: return { allowed: [501], reaches: false };
      }
    }
    const ours = req.callId === this.sipCallId && fromTag === tagOf(this.fromHdr);
    if (this.stage !== 'answered') {
      // No dialog at the gateway yet: its early one (RFC 3261 §12.1) takes what the RFCs allow there.
      if (!ours || toTag !== tagOf(this.toHdr)) return { allowed: [481], reaches: false };
      if (this.plan.kind === 'out') {
        // The callee's UPDATE in our INVITE's early dialog (RFC 3311 §5.1): without SDP taken, an
        // offer not (no early session of ours to change); nothing else has a dialog to go to.
        if (method === 'UPDATE') return { allowed: req.body.trim() ? [488, 491, 500] : [200], reaches: false };
        return { allowed: [481], reaches: false };
      }
      // A caller's early dialog (after our 180): BYE ends it (§15), PRACK acknowledges our reliable 180.
      if (method === 'BYE') return { allowed: [200], reaches: false };
      if (method === 'PRACK') return { allowed: [this.prackStatus(req)], reaches: false };
      return { allowed: [481], reaches: false };
    }
    if (!ours || toTag !== tagOf(this.toHdr)) return { allowed: [481], reaches: false };
    if (req.cseq.seq <= this.gwRemoteSeq && this.gwRemoteSeq > 0) return { allowed: [500], reaches: false };
    const se = /^\s*(\d+)/.exec(req.header('session-expires') ?? '')?.[1];
    if ((method === 'INVITE' || method === 'UPDATE') && se !== undefined && Number(se) < 90) return { allowed: [422], reaches: true };
    switch (method) {
      case 'BYE': case 'OPTIONS': case 'INFO': return { allowed: [200], reaches: true };
      case 'NOTIFY': return { allowed: [200, 481, 489], reaches: true };
      // A PRACK in a confirmed dialog acknowledges nothing (RFC 3262 §3); one for the INVITE that
      // set the dialog up may have crossed our 2xx.
      case 'PRACK': return { allowed: [481, 200], reaches: true };
      case 'INVITE': case 'UPDATE': {
        if (method === 'UPDATE' && !req.body) return { allowed: [200], reaches: true };
        const pending = this.offerPendingUntil - Date.now();
        if (pending > 300) return { allowed: [491], reaches: true };
        const base = !req.body ? [200] : o.offer ? (o.offer.kind === 'usable' ? [200] : o.offer.kind === 'unusable' ? [488] : [200, 488]) : [200, 488];
        return { allowed: pending > -300 ? [...base, 491] : base, reaches: true };
      }
      case 'MESSAGE': case 'REFER': case 'SUBSCRIBE': case 'PUBLISH': return { allowed: [405], reaches: true };
      default: return { allowed: [405, 501], reaches: true };
    }
  }

  /** Our PRACK's answer: 200 for the RSeq of the reliable 180 outstanding (or the one acknowledged last), else 481. */
  private prackStatus(req: SipRequest): number {
    const [rseq, cseq, method] = (req.header('rack') ?? '').trim().split(/\s+/);
    return this.rseq > 0 && Number(rseq) === this.rseq && Number(cseq) === 1 && method === 'INVITE' ? 200 : 481;
  }

  /** Sends an in-dialog request and checks its final status by the generic oracle; returns the response. */
  private async request(method: string, label: string, o: SendOpts & { offer?: Verdict } = {}): Promise<{ tx: RawTx; res: SipResponse | null }> {
    const tx = this.send(method, label, o);
    const exp = this.expectedFor(tx.text, { offer: o.offer });
    if (exp.reaches) this.gwRemoteSeq = Math.max(this.gwRemoteSeq, tx.seq);
    return { tx, res: await this.expectFinal(tx, exp.allowed) };
  }

  // ------------------------------------------------------------------ the gateway's requests to the trunk

  /** The gateway offers (its hold or resume): checked, and answered as a trunk would (or refused once, when asked). */
  onGatewayOffer(sdp: string): { status: number; sdp?: string } {
    const o = readSdp(sdp);
    if (!o) { this.violation(`the gateway's re-INVITE offers no audio: ${short(sdp)}`); return { status: 488 }; }
    this.gatewayOffers.push(o.dir);
    this.note(`< the gateway's offer: ${o.dir}, ${o.names.join(' ')}, port ${o.port}`);
    if (o.port !== this.gwPort || o.conn !== '127.0.0.1') this.violation(`the gateway's offer moved its media to ${o.conn}:${o.port} (the call's is 127.0.0.1:${this.gwPort})`);
    if (this.refuseGwOffer) { const status = this.refuseGwOffer; this.refuseGwOffer = 0; return { status }; }
    const listed = o.names.filter((n): n is Codec => n === 'PCMU' || n === 'PCMA');
    const codec = listed.includes(this.codec) ? this.codec : listed[0];
    if (!codec) { this.violation(`the gateway's offer lists no G.711: ${short(sdp)}`); return { status: 488 }; }
    const dir: Dir = o.dir === 'sendonly' ? 'recvonly' : o.dir === 'recvonly' ? 'sendonly' : o.dir;
    const crypto = this.keysFor(o);
    this.codec = codec;
    this.srtp = !!crypto;
    this.trunkRecv = receives(dir);
    this.te = true;
    const answer: TrunkSdp = { label: 'answer', port: this.mediaPort, conn: '127.0.0.1', dir, codecs: [[codec === 'PCMU' ? 0 : 8, codec]], te: true, profile: o.profile, crypto: crypto ? [{ tag: crypto.tag, suite: crypto.suite, keyLen: 30 }] : [] };
    return { status: 200, sdp: sdpText(answer, ++this.sdpVersion, this.n) };
  }

  /** A request from the gateway to a call the raw socket placed: answered as a trunk would. */
  onRawRequest(req: SipRequest): void {
    const key = `${req.topVia?.params.branch}|${req.method}`;
    const done = this.handledRaw.get(key);
    if (done !== undefined) { if (done) this.w.raw.sock.send(done, SIP_PORT, '127.0.0.1'); return; }
    this.note(`< gateway ${req.method} (${req.cseq.seq}) at the raw socket`);
    if (req.method === 'ACK') return;
    this.arrived('raw', req.method);
    let res: string;
    if (req.method === 'BYE') { this.gatewayByes++; res = responseTo(req, 200, 'OK'); }
    else if (req.method === 'INVITE') {
      const a = this.onGatewayOffer(req.body);
      res = responseTo(req, a.status, a.status === 200 ? 'OK' : a.status === 491 ? 'Request Pending' : 'Not Acceptable Here', { body: a.sdp });
      if (this.gwAnswerDelay) {
        // Answered a little later (its retransmissions meanwhile find it in hand).
        this.handledRaw.set(key, '');
        setTimeout(() => { this.handledRaw.set(key, res); this.w.raw.sock.send(res, SIP_PORT, '127.0.0.1'); }, this.gwAnswerDelay);
        return;
      }
    } else res = responseTo(req, 200, 'OK');
    this.handledRaw.set(key, res);
    this.w.raw.sock.send(res, SIP_PORT, '127.0.0.1');
  }

  onRawResponse(tx: RawTx, res: SipResponse): void {
    if (tx !== this.inviteTx || res.status < 100) return;
    if (res.status < 200 && res.status > 100) {
      this.earlyTag ||= tagOf(res.header('to') ?? '');
      if (!this.toHdr && this.earlyTag) this.toHdr = res.header('to')!;
      const rseq = Number(res.header('rseq') ?? 0);
      if (rseq && /100rel/i.test(res.header('require') ?? '')) this.onReliable(res, rseq);
    }
  }

  /** A reliable 180 (RFC 3262): PRACKed as the plan says, once per RSeq. */
  private onReliable(res: SipResponse, rseq: number): void {
    if (this.rseq === rseq) return;
    this.rseq = rseq;
    const prack = this.plan.prack;
    if (prack === 'never' || prack === 'none') return;
    const to = res.header('to')!;
    if (prack === 'bent') {
      // One naming an RSeq never sent first (481, §3), then the right one.
      const bad = this.send('PRACK', 'PRACK with a wrong RSeq', { to, extra: [`RAck: ${rseq + 7} 1 INVITE`] });
      bad.allowed = [481];
    }
    const ok = this.send('PRACK', 'PRACK', { to, extra: [`RAck: ${rseq} 1 INVITE`] });
    ok.allowed = [200];
  }

  // ------------------------------------------------------------------ set-up

  async setup(): Promise<void> {
    if (this.plan.kind === 'out') await this.setupOut();
    else if (this.plan.kind === 'in') await this.setupIn();
    else await this.setupRaw();
  }

  /** The trunk's first SDP: its answer to our INVITE, or its offer. */
  private firstSdp(offerer: boolean): TrunkSdp {
    const crypto: Crypto[] = !this.plan.srtp ? [] : offerer
      ? [{ tag: 1 + this.r.int(9), suite: this.r.pick(SUITES_OK), keyLen: 30 }]
      : [{ tag: this.r.int(2) ? 1 : 2, suite: '', keyLen: 30 }];
    if (!offerer && crypto.length) crypto[0].suite = crypto[0].tag === 1 ? SUITES_OK[0] : SUITES_OK[1]; // the gateway offers tag 1 _80, tag 2 _32
    return {
      label: 'first', port: this.mediaPort, conn: '127.0.0.1', dir: 'sendrecv', codecs: this.plan.codecs.map((c) => [c === 'PCMU' ? 0 : 8, c]),
      te: true, profile: offerer && this.plan.savp ? 'RTP/SAVP' : 'RTP/AVP', crypto,
    };
  }

  private async setupOut(): Promise<void> {
    this.ref = `${this.xfuzz}`;
    this.tab.byRef.set(this.ref, this);
    this.w.byXFuzz.set(this.xfuzz, this);
    const pc = newPeer();
    this.pc = pc;
    pc.addTransceiver(new MediaStreamTrack({ kind: 'audio' }), { direction: 'sendrecv' });
    await pc.setLocalDescription(await pc.createOffer());
    const sdp = await gathered(pc);
    this.tabSend({ type: 'call', to: `+1555000${1000 + this.n}`, sdp, ref: this.ref, headers: { 'X-Fuzz': this.xfuzz } });
    const want: Ev[] = [{ type: 'calling' }, { type: 'progress' }, ...(this.plan.start === 'answered' ? [{ type: 'answered' }] : [])];
    await this.tabExpect(0, want, [{ type: 'progress' }], 8000, 50);
    this.stage = this.plan.start;
    this.mediaKnown = this.plan.start !== 'ringing';
    if (this.plan.start === 'answered') this.gwRemoteSeq = 0;
  }

  /** The gateway's INVITE for a call a tab placed: rung, with early media, or answered. */
  onTrunkInvite(inv: ServerInvite): void {
    this.serverInvite = inv;
    const req = inv.request;
    this.sipCallId = req.callId;
    this.w.raw.calls.set(this.sipCallId, this); // where its requests go once a target refresh names the raw socket
    this.fromHdr = `${req.header('to')};tag=${inv.localTag}`;
    this.toHdr = req.header('from')!;
    this.uri = parseNameAddr(req.header('contact') ?? '')?.uri ?? this.uri;
    this.seq = 100 + this.r.int(1000);
    const offer = readSdp(req.body);
    this.note(`< the gateway's INVITE: ${offer ? `${offer.names.join(' ')} port ${offer.port}, ${offer.crypto.length} keys` : 'no SDP'}`);
    if (!offer) { this.violation('the gateway\'s INVITE has no audio'); inv.reject(488); return; }
    this.gwPort = offer.port;
    inv.on('cancelled', () => { this.gatewayCancels++; this.note('< the gateway\'s CANCEL'); });
    const answer = sdpText(this.firstSdp(false), this.sdpVersion, this.n);
    if (this.plan.start === 'early') inv.progress(183, { sdp: answer });
    else inv.progress(180);
    if (this.plan.start === 'answered') setTimeout(() => this.answerOut(answer), 30);
  }

  private answerOut(sdp: string): void {
    const inv = this.serverInvite!;
    if (inv.finalSent) return;
    const dialog = inv.accept(sdp);
    this.note('> 200 to the gateway\'s INVITE');
    this.watchUaDialog(dialog);
  }

  /** A request of the gateway's in the dialog reached the trunk's user agent or its raw socket: the one its Contact named. */
  private arrived(where: 'ua' | 'raw', method: string): void {
    const target = this.contact.includes(`:${RAW_PORT}>`) ? 'raw' : 'ua';
    if (this.targetSure && where !== target) this.violation(`the gateway's ${method} went to the trunk's ${where === 'ua' ? 'user agent' : 'raw socket'}, though its last target refresh named the ${target === 'ua' ? 'user agent' : 'raw socket'}`);
  }

  private watchUaDialog(dialog: Dialog): void {
    this.uaDialog = dialog;
    dialog.on('reinvite', (req, reply) => {
      this.note(`< gateway re-INVITE (${req.cseq.seq})`);
      this.arrived('ua', 'INVITE');
      const a = this.onGatewayOffer(req.body);
      if (this.gwAnswerDelay) setTimeout(() => reply(a.status, a.sdp), this.gwAnswerDelay);
      else reply(a.status, a.sdp);
    });
    dialog.on('terminated', (reason) => {
      this.note(`trunk dialog over: ${reason}`);
      if (reason === 'bye') { this.gatewayByes++; this.arrived('ua', 'BYE'); }
    });
  }

  private async setupIn(): Promise<void> {
    this.fromNumber = `+1555700${String(this.n).padStart(4, '0')}`;
    this.tab.byFrom.set(this.fromNumber, this);
    const first = this.firstSdp(true);
    const v = judgeOffer(first, this.codec);
    this.codec = v.codec!;
    const inv = trunk.invite({ requestUri: `sip:bob@127.0.0.1:${SIP_PORT}`, from: { uri: `sip:${this.fromNumber}@127.0.0.1` }, sdp: sdpText(first, this.sdpVersion, this.n) });
    this.clientInvite = inv;
    this.sipCallId = inv.callId;
    this.w.raw.calls.set(this.sipCallId, this);
    inv.on('progress', (res) => {
      this.note(`< ${res.status} to the trunk's INVITE`);
      this.earlyTag ||= tagOf(res.header('to') ?? '');
      this.toHdr ||= res.header('to') ?? '';
    });
    inv.on('rejected', (res) => { this.inviteFinal = res.status; this.note(`< ${res.status} to the trunk's INVITE`); });
    inv.on('failed', (err) => this.violation(`the trunk's INVITE failed: ${err.message}`));
    inv.on('accepted', (res, dialog, answer) => {
      this.inviteFinal = 200;
      this.note('< 200 to the trunk\'s INVITE');
      this.toHdr = dialog.remoteAddr;
      this.uri = dialog.remoteTarget;
      this.seq = dialog.localSeq;
      this.gwRemoteSeq = dialog.localSeq;
      this.watchUaDialog(dialog);
      const a = readSdp(answer);
      this.gwPort = a?.port ?? 0;
      const p = checkAnswer(this, answer, v, [mirror(v.dir!, false)], first);
      if (p) this.violation(`the 200 to the trunk's INVITE: ${p}`);
      this.applyOffer(v);
    });
    // The trunk's From (its tag) is known once the INVITE is built (on the next tick).
    await waitUntil(() => !!this.tabCallId && !!this.earlyTag, 8000);
    this.fromHdr = (inv as unknown as { request: SipRequest }).request.header('from')!;
    await this.tabExpect(0, [{ type: 'incoming' }], [], 8000, 30);
    this.stage = 'ringing';
    if (this.plan.start === 'answered') await this.accept();
  }

  private async setupRaw(): Promise<void> {
    this.fromNumber = `+1555800${String(this.n).padStart(4, '0')}`;
    this.tab.byFrom.set(this.fromNumber, this);
    this.sipCallId = `raw-${this.xfuzz}@127.0.0.1`;
    this.w.raw.calls.set(this.sipCallId, this);
    this.fromHdr = `<sip:${this.fromNumber}@127.0.0.1>;tag=t${this.xfuzz}`;
    const to = `<sip:bob@127.0.0.1:${SIP_PORT}>`;
    this.seq = 1;
    const first = this.firstSdp(true);
    const v = judgeOffer(first, this.codec);
    if (!this.plan.delayed) this.codec = v.codec!;
    const extra = ['Allow: INVITE, ACK, CANCEL, BYE, OPTIONS, INFO, UPDATE, PRACK', this.plan.prack !== 'none' ? 'Require: 100rel' : 'Supported: 100rel'];
    const ack = this.plan.ack;
    this.inviteTx = this.send('INVITE', 'the INVITE', {
      seq: 1, uri: `sip:bob@127.0.0.1:${SIP_PORT}`, to, extra, body: this.plan.delayed ? '' : sdpText(first, this.sdpVersion, this.n),
      ack: ack === 'never' ? 'never' : (res) => this.onRawAnswer(res, v, first),
    });
    await waitUntil(() => !!this.tabCallId && !!this.earlyTag, 8000);
    if (!this.earlyTag) this.violation('no 180 with a tag for the INVITE');
    await this.tabExpect(0, [{ type: 'incoming' }], [], 8000, 30);
    this.stage = 'ringing';
    if (this.plan.start === 'answered') await this.accept();
  }

  /** The 200 to our raw INVITE: checked, and the body of its ACK (the answer, for a delayed offer). */
  private onRawAnswer(res: SipResponse, v: Verdict, first: TrunkSdp): string {
    this.toHdr = res.header('to')!;
    this.uri = parseNameAddr(res.header('contact') ?? '')?.uri ?? this.uri;
    this.gwRemoteSeq = 1;
    const o = readSdp(res.body);
    this.gwPort = o?.port ?? 0;
    if (!this.plan.delayed) {
      const p = checkAnswer(this, res.body, v, [mirror(v.dir!, false)], first);
      if (p) this.violation(`the 200 to the INVITE: ${p}`);
      this.applyOffer(v);
      return '';
    }
    // Our offer in the 200 (a delayed offer): every codec and key we have, sendrecv.
    if (!o || o.dir !== 'sendrecv' || !o.names.includes('PCMU')) this.violation(`the offer in the 200 to an INVITE without SDP: ${short(res.body, 300)}`);
    if (this.plan.ack === 'no-answer') return '';
    if (this.plan.ack === 'bad-answer') return 'v=0\r\nthis is no answer\r\n';
    return this.answerToGateway(o!, 'sendrecv');
  }

  /** The trunk's answer to an offer the gateway made in a 200 (the ACK's body); the model follows. */
  private answerToGateway(o: ReadSdp, dir: Dir): string {
    const listed = o.names.filter((n): n is Codec => n === 'PCMU' || n === 'PCMA');
    const codec = listed.includes(this.codec) ? this.codec : listed[0] ?? 'PCMU';
    const crypto = this.keysFor(o);
    const port = this.r.int(3) ? this.mediaPort : this.otherPort();
    this.codec = codec;
    this.srtp = !!crypto;
    this.mediaPort = port;
    this.trunkRecv = receives(dir);
    this.te = true;
    return sdpText({ label: 'ack answer', port, conn: '127.0.0.1', dir, codecs: [[codec === 'PCMU' ? 0 : 8, codec]], te: true, profile: o.profile, crypto: crypto ? [{ tag: crypto.tag, suite: crypto.suite, keyLen: 30 }] : [] }, ++this.sdpVersion, this.n);
  }

  /** The key the trunk answers an offer of the gateway's with: one when it wants SRTP, and always for RTP/SAVP. */
  private keysFor(o: ReadSdp): { tag: number; suite: string } | undefined {
    return this.plan.srtp || this.srtp || o.profile === 'RTP/SAVP' ? o.crypto.find((c) => SUITES_OK.includes(c.suite)) : undefined;
  }

  private otherPort(): number {
    return this.mediaPort === this.ports[0] ? this.ports[1] : this.ports[0];
  }

  /** The tab answers the ringing call with a real answer (its peer connection connects). */
  private async accept(race = false): Promise<void> {
    if (!race) this.what = 'the tab accepts';
    const pc = newPeer();
    this.pc = pc;
    await pc.setRemoteDescription({ type: 'offer', sdp: this.tabOffer });
    await pc.setLocalDescription(await pc.createAnswer());
    const sdp = await gathered(pc);
    const from = this.tabMsgs.length;
    this.tabSend({ type: 'accept', callId: this.tabCallId, sdp });
    if (race) return;
    const ack = this.plan.kind === 'raw' ? this.plan.ack : 'ok';
    if (ack === 'ok') {
      await this.tabExpect(from, [{ type: 'answered' }], [], 8000, 50);
      this.stage = 'answered';
      return;
    }
    // The 200 goes unacknowledged (64·T1: a BYE ends it, as a session never set up), or its ACK
    // brings no usable answer to our offer: the call ends at once.
    this.stage = 'answered';
    this.byeExpected = 'yes';
    await this.tabExpect(from, [{ type: 'answered' }, { type: 'ended', cause: ['failed'] }], [], ack === 'never' ? ACK_WAIT_MS + 3000 : 8000, 50);
    this.stage = 'ended';
  }

  /** The model follows a usable offer of the trunk's that was answered 200. */
  private applyOffer(v: Verdict): void {
    this.codec = v.codec!;
    this.mediaPort = v.port!;
    this.heldByTrunk = holdsUs(v.dir!);
    this.trunkRecv = receives(v.dir!) && v.conn !== '0.0.0.0';
    this.srtp = !!v.srtp;
  }

  // ------------------------------------------------------------------ the steps

  async run(): Promise<void> {
    try {
      await this.setup();
    } catch (err) {
      this.violation(`set-up threw: ${(err as Error).stack}`);
    }
    // A reliable 180 never PRACKed ends the call 64·T1 in: nothing else is sent meanwhile.
    const steps = this.plan.prack === 'never' ? 0 : STEPS;
    for (this.step = 1; this.step <= steps && this.stage !== 'ended' && this.stage !== 'setup'; this.step++) {
      try {
        await this.oneStep();
      } catch (err) {
        this.violation(`threw: ${(err as Error).stack}`);
      }
    }
    this.step = STEPS + 1;
    try {
      await this.end();
    } catch (err) {
      this.violation(`ending threw: ${(err as Error).stack}`);
    }
  }

  private async oneStep(): Promise<void> {
    const r = this.r;
    const pick = (table: Array<[number, string, () => Promise<void>]>) => {
      let x = r.int(table.reduce((n, [wt]) => n + wt, 0));
      const [, what, act] = table.find(([wt]) => (x -= wt) < 0)!;
      this.what = what;
      count(this.w, `step ${what}`);
      return act();
    };
    if (this.stage === 'answered') {
      return pick([
        [12, 're-INVITE', () => this.aOffer('INVITE')],
        [3, 're-INVITE without SDP', () => this.aNoSdp()],
        [4, 'UPDATE', () => (r.int(3) ? this.aOffer('UPDATE') : this.aPlain('UPDATE', 'UPDATE without SDP'))],
        [6, 'INFO', () => this.aInfo()],
        [5, 'another method', () => this.aMisc()],
        [3, 'a bent BYE', () => this.aBentBye()],
        [3, 'CSeq not above the last', () => this.aCseq()],
        [3, 'a retransmission', () => this.aRetransmit()],
        [4, 'a broken datagram', () => this.aBroken()],
        [1, 'CANCEL after the 200', () => this.aCancelAfter200()],
        [1, 'a re-INVITE never ACKed', () => this.aOffer('INVITE', { ack: 'never' })],
        [3, 'the tab holds or resumes', () => this.aTabHold(false)],
        [2, 'the tab holds as the trunk re-INVITEs', () => this.aTabHold(true)],
        [3, 'the tab sends a digit', () => this.aTabDtmf()],
        [2, 'a burst', () => this.aBurst()],
        [1, 'outside the dialog', () => this.aOutside()],
        [2, 'a stray ACK', () => this.aStrayAck()],
        [1, 'a re-INVITE and its CANCEL', () => this.aOffer('INVITE', { cancel: true })],
      ]);
    }
    if (this.stage === 'early' || this.stage === 'ringing') {
      if (this.plan.kind === 'out') {
        return pick([
          [6, 'in the early dialog', () => this.aEarly()],
          [2, 'a retransmission', () => this.aRetransmit()],
          [1, 'outside the dialog', () => this.aOutside()],
          [2, 'the early media moves', () => this.aEarlyMedia()],
          [2, 'the tab sends a digit', () => this.aTabDtmf()],
          [this.plan.keepsRinging ? 0 : 2, 'the trunk answers', () => this.aAnswerOut()],
        ]);
      }
      return pick([
        [6, 'in the early dialog', () => this.aEarly()],
        [2, 'a retransmission', () => this.aRetransmit()],
        [1, 'outside the dialog', () => this.aOutside()],
        ...(this.plan.kind === 'raw' ? [[2, 'the INVITE again', () => this.aInviteAgain()] as [number, string, () => Promise<void>]] : []),
        [this.plan.keepsRinging ? 0 : 2, 'the tab accepts', () => this.accept()],
      ]);
    }
  }

  /** The trunk's 183 again, with its media elsewhere (another port, codec, keys): the gateway's early media follows. */
  private async aEarlyMedia(): Promise<void> {
    const codecs = this.r.pick<Codec[]>([['PCMU'], ['PCMA'], ['PCMU', 'PCMA'], ['PCMA', 'PCMU']]);
    const answer: TrunkSdp = { ...this.firstSdp(false), label: 'early media', port: this.r.int(2) ? this.otherPort() : this.mediaPort, codecs: codecs.map((c) => [c === 'PCMU' ? 0 : 8, c]) };
    // The codec in use is kept while listed (an answer may list several, RFC 3264 §6.1).
    this.codec = this.mediaKnown && codecs.includes(this.codec) ? this.codec : codecs[0];
    this.mediaPort = Number(answer.port);
    this.srtp = answer.crypto.length > 0;
    this.trunkRecv = true;
    this.mediaKnown = true;
    const from = this.tabMsgs.length;
    this.note(`> 183 with SDP (port ${answer.port}, ${codecs.join(' ')})`);
    this.serverInvite!.progress(183, { sdp: sdpText(answer, ++this.sdpVersion, this.n) });
    await this.tabExpect(from, [{ type: 'progress' }]);
  }

  /**
   * The trunk answers a call it rang: with SDP, or (RFC 6337 §3.1.1) without, when its 183's
   * stands — after a bare 180 there is no answer at all, and the call ends (failed, BYE).
   */
  private async aAnswerOut(): Promise<void> {
    const from = this.tabMsgs.length;
    const bare = this.r.int(4) === 0;
    if (bare) {
      this.note('> 200 without SDP');
      this.answerOut('');
      if (this.mediaKnown) { await this.tabExpect(from, [{ type: 'answered' }]); this.stage = 'answered'; this.gwRemoteSeq = 0; return; }
      this.byeExpected = 'yes';
      await this.tabExpect(from, [{ type: 'ended', cause: ['failed'] }]);
      this.stage = 'ended';
      return;
    }
    const answer: TrunkSdp = { ...this.firstSdp(false), codecs: this.mediaKnown ? [[this.codec === 'PCMU' ? 0 : 8, this.codec]] : this.plan.codecs.map((c) => [c === 'PCMU' ? 0 : 8, c]) };
    this.codec = answer.codecs[0][1] as Codec;
    this.srtp = answer.crypto.length > 0;
    this.trunkRecv = true;
    this.mediaKnown = true;
    this.answerOut(sdpText(answer, ++this.sdpVersion, this.n));
    await this.tabExpect(from, [{ type: 'answered' }]);
    this.stage = 'answered';
    this.gwRemoteSeq = 0;
  }

  /** A new offer from the trunk (re-INVITE or UPDATE): judged, answered, followed. */
  async aOffer(method: 'INVITE' | 'UPDATE', o: { ack?: 'never'; s?: TrunkSdp; seq?: number; cancel?: boolean } = {}): Promise<void> {
    const { ack, seq } = o;
    const s = o.s ?? this.genOffer();
    const v = judgeOffer(s, this.codec);
    const extra: string[] = [];
    if (this.r.int(8) === 0) extra.push(`Session-Expires: ${this.r.pick(['60', '89', '1800;refresher=uac', '90', 'abc'])}`, 'Supported: timer');
    // Now and then the ACK carries a body: no answer to anything (the INVITE offered), so ignored.
    const ackBody = method === 'INVITE' && !ack && this.r.int(10) === 0 ? this.r.pick(['v=0\r\ngarbage\r\n', sdpText({ ...s, port: this.otherPort(), dir: 'inactive' }, this.sdpVersion + 50, this.n)]) : undefined;
    const ackWith = ackBody === undefined ? undefined : () => ackBody;
    // Now and then a new Contact (a target refresh, §12.2): the raw socket instead of the user
    // agent or back (the raw socket's own calls: another user there).
    const contact = this.r.int(8) === 0 ? (this.plan.kind === 'raw' ? `<sip:moved${this.step}@127.0.0.1:${RAW_PORT}>` : this.contact.includes(`:${RAW_PORT}>`) ? `<sip:gw@127.0.0.1:${TRUNK_PORT}>` : `<sip:moved@127.0.0.1:${RAW_PORT}>`) : undefined;
    const from = this.tabMsgs.length;
    const label = `${method === 'INVITE' ? 're-INVITE' : 'UPDATE'} (${s.label}, ${v.kind}${v.why ? `: ${v.why}` : ''})${extra.length ? ` ${extra[0]}` : ''}${ack ? ' never ACKed' : ''}${ackBody ? ' ACKed with a body' : ''}${o.cancel ? ', CANCELled' : ''}${contact ? `, Contact ${contact}` : ''}`;
    const heldByTab = this.heldByTab;
    if (o.cancel) {
      // A CANCEL right behind it (same branch, §9.1): answered before it arrives, nothing to cancel.
      const inviteBranch = this.w.raw.branch(`${this.xfuzz}s${this.step}`);
      setImmediate(() => {
        const c = this.send('CANCEL', 'its CANCEL', { branch: inviteBranch, seq: this.seq, cseqMethod: 'CANCEL' });
        c.allowed = [200, 481];
      });
      const { res } = await this.request('INVITE', label, { ...this.offerBody(s), offer: v, extra, branch: inviteBranch });
      await this.afterOffer(res, v, s, heldByTab, from, label);
      return;
    }
    const { res } = await this.request(method, label, { ...this.offerBody(s), offer: v, extra, ack: ackWith ?? ack, seq, contact });
    if (contact) count(this.w, 'target refresh to a new Contact');
    if (contact && res && res.status < 300) {
      // Taken (2xx): the gateway's requests go there now. Refused: they go where they went (RFC 6141 §4).
      this.targetSure = true;
      this.contact = contact;
    }
    await this.afterOffer(res, v, s, heldByTab, from, label);
  }

  /** The answer to an offer of the trunk's checked, the model moved, and what the tab hears of it. */
  private async afterOffer(res: SipResponse | null, v: Verdict, s: TrunkSdp, heldByTab: boolean, from: number, label: string): Promise<void> {
    const events: Ev[] = [];
    if (res?.status === 200) {
      const p = checkAnswer(this, res.body, v, [mirror(v.dir ?? 'sendrecv', heldByTab)], s);
      if (p) this.violation(`${label}: the answer: ${p}`);
      if (v.kind !== 'unusable') {
        const was = this.heldByTrunk;
        this.applyOffer(v);
        this.te = s.te;
        if (was !== this.heldByTrunk) events.push({ type: this.heldByTrunk ? 'held' : 'resumed', by: 'remote' });
      }
    }
    await this.tabExpect(from, events);
  }

  /** What the trunk offers next: mostly usable, some not, some bent in ways either way is right. */
  /** A request's body and Content-Type for an offer of the trunk's. */
  offerBody(s: TrunkSdp): { body: string; type: string } {
    return { body: sdpText(s, ++this.sdpVersion, this.n), type: contentType(s) };
  }

  /** The trunk's SDP as it stands (its codec, port and keys), with `over` changed. */
  offer(over: Partial<TrunkSdp> = {}): TrunkSdp {
    return {
      label: 'sendrecv', port: this.mediaPort, conn: '127.0.0.1', dir: 'sendrecv', codecs: [[this.codec === 'PCMU' ? 0 : 8, this.codec]], te: true, profile: 'RTP/AVP',
      crypto: this.srtp ? [{ tag: 1 + this.r.int(5), suite: this.r.pick(SUITES_OK), keyLen: 30 }] : [], ...over,
    };
  }

  private genOffer(): TrunkSdp {
    const r = this.r;
    const s = this.offer();
    const k = r.int(44);
    switch (k) {
      case 34: return { ...s, label: 'PCMA on a dynamic payload type', codecs: [[96, 'PCMA']], tePt: 97 };
      case 35: return { ...s, label: 'telephone-event on 96', tePt: 96 };
      case 36: return { ...s, label: 'no rtpmap for static types', noRtpmap: true, codecs: [[8, 'PCMA'], [0, 'PCMU']] };
      case 37: return { ...s, label: 'encoding names in lower case', lower: true, codecs: [[0, 'PCMU'], [8, 'PCMA']] };
      case 38: return { ...s, label: 'hold at session level', dir: null, sessionDir: r.pick<Dir>(['sendonly', 'inactive']) };
      case 39: return { ...s, label: 'sendonly at session level, sendrecv in the media', sessionDir: 'sendonly' };
      case 40: return { ...s, label: 'a refused audio stream first', refusedFirst: true };
      case 41: return { ...s, label: 'multipart with ISUP', multipart: true };
      case 42: return {
        ...s, label: 'everything changes', port: this.otherPort(), codecs: this.codec === 'PCMU' ? [[8, 'PCMA'], [0, 'PCMU']] : [[0, 'PCMU'], [8, 'PCMA']],
        crypto: r.int(2) ? [{ tag: 7, suite: r.pick(SUITES_OK), keyLen: 30 }] : [], dir: r.pick<Dir>(['sendrecv', 'sendonly', 'recvonly']),
      };
      case 43: return { ...s, label: 'rtcp-mux', rtcpMux: true };
      case 0: case 1: return { ...s, label: 'hold sendonly', dir: 'sendonly' };
      case 2: return { ...s, label: 'hold inactive', dir: 'inactive' };
      case 3: return { ...s, label: 'hold c=0.0.0.0', conn: '0.0.0.0' };
      case 4: case 5: return { ...s, label: 'resume' };
      case 6: return { ...s, label: 'recvonly', dir: 'recvonly' };
      case 7: return { ...s, label: 'no direction attribute', dir: null };
      case 8: return { ...s, label: 'PCMA only', codecs: [[8, 'PCMA']] };
      case 9: return { ...s, label: 'PCMU only', codecs: [[0, 'PCMU']] };
      case 10: return { ...s, label: 'PCMA, PCMU', codecs: [[8, 'PCMA'], [0, 'PCMU']] };
      case 11: return { ...s, label: 'G722 first', codecs: [[9, 'G722'], [0, 'PCMU'], [8, 'PCMA']] };
      case 12: case 13: return { ...s, label: 'a new port', port: this.otherPort() };
      case 14: return { ...s, label: 'a new port, held', port: this.otherPort(), dir: r.pick<Dir>(['sendonly', 'inactive']) };
      case 15: return { ...s, label: 'new keys', crypto: [{ tag: 1 + r.int(9), suite: r.pick(SUITES_OK), keyLen: 30 }] };
      case 16: return { ...s, label: 'no keys', crypto: [] };
      case 17: return { ...s, label: 'RTP/SAVP with keys', profile: 'RTP/SAVP', crypto: [{ tag: 3, suite: SUITES_OK[0], keyLen: 30 }] };
      case 18: return { ...s, label: 'an unknown suite, then a known one', crypto: [{ tag: 1, suite: 'AES_256_CM_HMAC_SHA1_80', keyLen: 46 }, { tag: 2, suite: SUITES_OK[1], keyLen: 30 }] };
      case 19: return { ...s, label: `video ${r.int(2) ? 'before' : 'after'} audio`, video: r.int(2) ? 'before' : 'after' };
      case 20: return { ...s, label: 'a huge SDP', pad: 20_000 + r.int(40_000) };
      case 21: return { ...s, label: 'G722 only', codecs: [[9, 'G722']] };
      case 22: return { ...s, label: 'port 0', port: 0 };
      case 23: return { ...s, label: 'no c=', conn: null };
      case 24: return { ...s, label: 'a host name in c=', conn: 'trunk.example' };
      case 25: return { ...s, label: 'c=999.1.1.1', conn: '999.1.1.1' };
      case 26: return { ...s, label: 'RTP/SAVP without keys', profile: 'RTP/SAVP', crypto: [] };
      case 27: return { ...s, label: 'RTP/SAVP with a short key', profile: 'RTP/SAVP', crypto: [{ tag: 1, suite: SUITES_OK[0], keyLen: 20 }] };
      case 28: return { ...s, label: 'RTP/SAVP, UNENCRYPTED_SRTP', profile: 'RTP/SAVP', crypto: [{ tag: 1, suite: SUITES_OK[0], keyLen: 30, param: 'UNENCRYPTED_SRTP' }] };
      case 29: return { ...s, label: 'garbage', raw: r.pick(['hello', 'v=0\r\n', `v=0\r\n${'x'.repeat(300)}`, 'm=audio 4000 RTP/AVP 0\r\n', '\u0000\u0001\u0002']) };
      case 30: return { ...s, label: 'port 70000', port: r.pick(['70000', '65536', 'x', '-1']) };
      case 31: return { ...s, label: 'no codec, only telephone-event', codecs: [] };
      case 32: return { ...s, label: 'a huge garbage body', raw: `v=0\r\n${'a=x\r\n'.repeat(10_000 + r.int(2000))}` };
      default: return { ...s, label: 'RTP/AVP with only unusable keys', crypto: [{ tag: 4, suite: 'F8_128_HMAC_SHA1_80', keyLen: 30 }] };
    }
  }

  /** A request that offers nothing (UPDATE without SDP and the like): the generic oracle, no tab event. */
  private async aPlain(method: string, label: string, o: SendOpts = {}): Promise<void> {
    const from = this.tabMsgs.length;
    await this.request(method, label, o);
    await this.tabExpect(from, []);
  }

  /** A re-INVITE without SDP: our offer in the 200, answered (or not) in the ACK. */
  async aNoSdp(kind = this.r.pick(['answer', 'answer', 'answer', 'answer held', 'no answer', 'bad answer', 'never']), answerAs?: Dir): Promise<void> {
    const from = this.tabMsgs.length;
    const heldByTab = this.heldByTab;
    const wasHeld = this.heldByTrunk;
    let answerDir: Dir = 'sendrecv';
    const { res } = await this.request('INVITE', `re-INVITE without SDP (ACK: ${kind})`, {
      ack: kind === 'never' ? 'never' : (r: SipResponse) => {
        const offered = readSdp(r.body);
        if (!offered || kind === 'no answer') return '';
        if (kind === 'bad answer') return this.r.int(2) ? 'v=0\r\nno answer\r\n' : sdpText({ label: 'G722', port: this.mediaPort, conn: '127.0.0.1', dir: 'sendrecv', codecs: [[9, 'G722']], te: false, profile: offered.profile, crypto: [] }, ++this.sdpVersion, this.n);
        // An answer to sendrecv may say anything; to our sendonly (the tab holds), recvonly or inactive.
        answerDir = answerAs ?? (offered.dir === 'sendonly' ? this.r.pick<Dir>(['recvonly', 'inactive']) : kind === 'answer held' ? this.r.pick<Dir>(['sendonly', 'inactive']) : this.r.pick<Dir>(['sendrecv', 'sendrecv', 'recvonly']));
        return this.answerToGateway(offered, answerDir);
      },
    });
    if (res?.status !== 200) { await this.tabExpect(from, []); return; }
    const o = readSdp(res.body);
    const dir = heldByTab ? 'sendonly' : 'sendrecv';
    if (!o) this.violation(`the 200 to a re-INVITE without SDP offers no audio: ${short(res.body)}`);
    else {
      if (o.port !== this.gwPort || o.conn !== '127.0.0.1') this.violation(`our offer in the 200 moved the media to ${o.conn}:${o.port} (the call's is ${this.gwPort})`);
      if (o.dir !== dir) this.violation(`our offer in the 200 is ${o.dir}, the call is ${heldByTab ? 'held by the tab' : 'not held by the tab'}: ${dir} expected`);
      if (!o.names.includes(this.codec)) this.violation(`our offer in the 200 leaves out the codec in use (${this.codec}): ${o.names.join(' ')}`);
    }
    if (kind === 'never') { this.offerPendingUntil = Date.now() + ACK_WAIT_MS; this.offerPendingSeq = this.seq; await this.tabExpect(from, []); return; }
    if (kind === 'bad answer') {
      // An answer we cannot use leaves no media to follow: the call ends (README: as failed).
      this.byeExpected = 'yes';
      await this.tabExpect(from, [{ type: 'ended', cause: ['failed'] }]);
      this.stage = 'ended';
      return;
    }
    if (kind === 'no answer') { await this.tabExpect(from, []); return; }
    // Whether the trunk holds us: said by its answer only when our offer let it (sendrecv); to our
    // sendonly it could not say, and it stays as it was.
    if (o?.dir === 'sendrecv') this.heldByTrunk = holdsUs(answerDir);
    await this.tabExpect(from, this.heldByTrunk !== wasHeld ? [{ type: this.heldByTrunk ? 'held' : 'resumed', by: 'remote' }] : []);
  }

  /** INFO: DTMF (the tab hears the digit, once) or another package (taken, nothing heard). */
  async aInfo(): Promise<void> {
    const [type, body, digit] = this.r.pick<[string, string, string | null]>([
      ['application/dtmf-relay', 'Signal=5\r\nDuration=160\r\n', '5'],
      ['application/dtmf-relay', 'Signal=#\r\nDuration=250\r\n', '#'],
      ['application/dtmf-relay', 'Signal= 11\r\nDuration=100\r\n', '#'],
      ['application/dtmf-relay', 'Signal=10\r\n', '*'],
      ['application/dtmf-relay', 'signal=a\r\nduration=100\r\n', 'A'],
      ['application/dtmf-relay', 'Signal=15\r\nDuration=99999999\r\n', 'D'],
      ['application/dtmf-relay; charset=utf-8', 'Signal=0\r\nDuration=80\r\n', '0'],
      ['application/dtmf', '9', '9'],
      ['application/dtmf', '*\r\n', '*'],
      ['application/dtmf-relay', 'Signal=Z\r\nDuration=100\r\n', null],
      ['application/dtmf-relay', 'Signal=16\r\n', null],
      ['application/dtmf-relay', 'Signal=55\r\n', null],
      ['application/dtmf-relay', 'Duration=100\r\n', null],
      ['application/dtmf', '', null],
      ['application/media_control+xml', '<?xml version="1.0"?><media_control><vc_primitive><to_encoder><picture_fast_update/></to_encoder></vc_primitive></media_control>', null],
      ['text/plain', 'Signal=5', null],
      ['application/broadsoft', 'event flashhook\r\n', null],
    ]);
    const from = this.tabMsgs.length;
    await this.request('INFO', `INFO ${type} ${JSON.stringify(body.slice(0, 30))}`, { body, type, extra: this.r.int(3) ? [] : ['Info-Package: dtmf'] });
    await this.tabExpect(from, digit ? [{ type: 'dtmf', digit }] : []);
  }

  private async aMisc(): Promise<void> {
    const [method, extra, body, type] = this.r.pick<[string, string[], string?, string?]>([
      ['OPTIONS', ['Accept: application/sdp']],
      ['NOTIFY', ['Event: refer;id=1', 'Subscription-State: terminated;reason=noresource'], 'SIP/2.0 200 OK\r\n', 'message/sipfrag'],
      ['NOTIFY', ['Event: talk', 'Subscription-State: active']],
      ['REFER', ['Refer-To: <sip:+15550009999@127.0.0.1>', 'Referred-By: <sip:trunk@127.0.0.1>']],
      ['REFER', [`Refer-To: <sip:+15550009998@127.0.0.1?Replaces=${encodeURIComponent(`${this.sipCallId};to-tag=x;from-tag=y`)}>`]],
      ['MESSAGE', [], 'hello there', 'text/plain'],
      ['SUBSCRIBE', ['Event: dialog', 'Expires: 60']],
      ['PUBLISH', ['Event: presence', 'Expires: 60']],
      ['PRACK', ['RAck: 1 1 INVITE']],
      ['PRACK', ['RAck: 77 5 INVITE']],
      ['FOO', []],
      ['INFO', []],
      ['OPTIONS', []],
    ]);
    await this.aPlain(method, `${method} in the dialog`, { extra, body, type });
  }

  private async aBentBye(): Promise<void> {
    const toTag = tagOf(this.toHdr);
    const variants: Array<[string, SendOpts]> = [
      ['a wrong To tag', { to: withTag(this.toHdr, `${toTag}x`) }],
      ['a wrong From tag', { from: withTag(this.fromHdr, 'not-ours') }],
      ['a wrong Call-ID', { callId: `x${this.sipCallId}` }],
      ['no To tag', { to: withTag(this.toHdr, null) }],
    ];
    if (this.gwRemoteSeq > 1) variants.push(['a CSeq below the last', { seq: this.gwRemoteSeq - 1 - this.r.int(Math.min(3, this.gwRemoteSeq - 1)) }]);
    const [what, o] = this.r.pick(variants);
    await this.aPlain('BYE', `BYE with ${what}`, o);
  }

  private async aCseq(): Promise<void> {
    const method = this.r.pick(['INFO', 'OPTIONS', 'INVITE', 'UPDATE']);
    const mode = this.gwRemoteSeq > 1 ? this.r.pick(['the last', 'a lower', 'far above']) : 'far above';
    const seq = mode === 'the last' ? this.gwRemoteSeq : mode === 'a lower' ? this.r.int(this.gwRemoteSeq) : this.seq + 1000 + this.r.int(100_000);
    if (method === 'INVITE' || method === 'UPDATE') {
      await this.aOffer(method, { s: { ...this.genOffer(), label: `CSeq ${mode} (${seq})` }, seq });
      return;
    }
    await this.aPlain(method, `${method} with the CSeq ${mode} (${seq})`, { seq });
  }

  /** The last request again, as UDP retransmits it (same branch): the same final, nothing more done. */
  private async aRetransmit(): Promise<void> {
    const tx = this.lastTx;
    // An INVITE is sent again only until its final response (then the ACK is), and so is not
    // seen after its transaction (T4 past the ACK of a non-2xx); anything else until 64·T1.
    const window = tx?.method === 'INVITE' ? TIMERS.T4 - 100 : 2500;
    if (!tx || Date.now() - tx.sentAt > window || !tx.responses.some((x) => x.status >= 200)) { await this.aPlain('OPTIONS', 'OPTIONS (nothing to retransmit)'); return; }
    const from = this.tabMsgs.length;
    const before = tx.responses.length;
    tx.retransmittedAt ??= Date.now();
    this.note(`> ${tx.label} again (retransmission)`);
    count(this.w, `> ${tx.method} again`);
    this.w.raw.send(tx.text);
    await sleep(300);
    const first = tx.responses.find((x) => x.status >= 200)!;
    const again = tx.responses.slice(before).filter((x) => x.status >= 200);
    // INVITE: a 2xx transaction absorbs it (RFC 6026), a non-2xx one re-sends its answer until ACKed.
    if (tx.method !== 'INVITE' && !again.length) this.violation(`${tx.label} sent again: not answered again (the transaction lives 64·T1)`);
    if (again.some((x) => x.status !== first.status && x.status !== 500)) this.violation(`${tx.label} sent again: answered ${again.map((x) => x.status).join(', ')}, first ${first.status}`);
    await this.tabExpect(from, []);
  }

  /** A datagram with a broken header: our parser says what it is; the call goes on. */
  private async aBroken(): Promise<void> {
    const method = this.r.pick(['INFO', 'OPTIONS']);
    const bends: Array<[string, (t: string) => string]> = [
      ['CSeq not a number', (t) => t.replace(/^CSeq: \d+/m, 'CSeq: x')],
      ['a negative CSeq', (t) => t.replace(/^CSeq: \d+/m, 'CSeq: -1')],
      ['a CSeq naming BYE', (t) => t.replace(/^CSeq: (\d+) \w+/m, 'CSeq: $1 BYE')],
      ['Content-Length past the body', (t) => t.replace(/^Content-Length: \d+/m, 'Content-Length: 500')],
      ['two Call-IDs', (t) => t.replace(/^(Call-ID: .*)$/m, '$1\r\nCall-ID: other')],
      ['a header line without colon', (t) => t.replace('Max-Forwards: 70', 'Max-Forwards 70')],
      ['a bare CR in a value', (t) => t.replace(/^(Call-ID: [^\r]*)/m, '$1\rX: y')],
      ['no Via', (t) => t.replace(/^Via: .*\r\n/m, '')],
      ['a Via that is none', (t) => t.replace(/^Via: .*$/m, 'Via: garbage')],
      ['no From tag', (t) => t.replace(/^(From: [^\r]*?);tag=[^;\r]*/m, '$1')],
      ['a To that is none', (t) => t.replace(/^To: .*$/m, 'To: <<>>')],
      ['Max-Forwards 0', (t) => t.replace('Max-Forwards: 70', 'Max-Forwards: 0')],
      ['Require: frobnication', (t) => t.replace('Max-Forwards: 70', 'Max-Forwards: 70\r\nRequire: frobnication')],
      ['a NUL in a value', (t) => t.replace('Max-Forwards: 70', 'Max-Forwards: 70\r\nSubject: a\u0000b')],
      ['LF line ends', (t) => t.replace(/\r\n/g, '\n')],
      ['a 9 KB header line', (t) => t.replace('Max-Forwards: 70', `Max-Forwards: 70\r\nX-Long: ${'a'.repeat(9000)}`)],
      ['130 headers', (t) => t.replace('Max-Forwards: 70', `Max-Forwards: 70\r\n${Array.from({ length: 130 }, (_, i) => `X-H${i}: v`).join('\r\n')}`)],
      ['SIP/3.0', (t) => t.replace(' SIP/2.0\r\n', ' SIP/3.0\r\n')],
      ['a folded header', (t) => t.replace('Max-Forwards: 70', 'Max-Forwards:\r\n 70')],
      ['the method in lower case', (t) => t.replace(new RegExp(`^${method} `), `${method.toLowerCase()} `).replace(new RegExp(`^(CSeq: \\d+) ${method}`, 'm'), `$1 ${method.toLowerCase()}`)],
      ['a body without Content-Type', (t) => t.replace(/^Content-Length: 0\r\n\r\n$/m, 'Content-Length: 5\r\n\r\nhello')],
    ];
    const [what, bend] = this.r.pick(bends);
    await this.broken(method, what, bend);
  }

  /** `method` in the dialog with `bend` applied to its text, as our parser reads it. */
  async broken(method: string, what: string, bend: (t: string) => string): Promise<void> {
    const from = this.tabMsgs.length;
    const tx = this.send(method, `${method} with ${what}`, { text: bend });
    const exp = this.expectedFor(tx.text);
    if (exp.reaches) this.gwRemoteSeq = Math.max(this.gwRemoteSeq, tx.seq);
    await this.expectFinal(tx, exp.allowed);
    await this.tabExpect(from, []);
  }

  /** CANCEL of the INVITE that set up a call the trunk placed, after its 200: nothing to cancel (§9.2). */
  private async aCancelAfter200(): Promise<void> {
    if (this.plan.kind !== 'raw' || !this.inviteTx) { await this.aInfo(); return; }
    const inv = parseSipMessage(this.inviteTx.text) as SipRequest;
    const from = this.tabMsgs.length;
    const tx = this.send('CANCEL', 'CANCEL after the 200', { seq: 1, branch: this.inviteTx.branch, to: inv.header('to')!, uri: inv.uri });
    await this.expectFinal(tx, [200, 481]);
    await this.tabExpect(from, []);
  }

  /** The tab holds or resumes (alone, or as the trunk's own re-INVITE crosses its own). */
  async aTabHold(race: boolean, refuse: 0 | 488 | 491 = race ? 0 : this.r.pick<0 | 488 | 491>([0, 0, 0, 0, 0, 0, 0, 488, 491])): Promise<void> {
    const hold = !this.heldByTab;
    this.refuseGwOffer = refuse;
    const from = this.tabMsgs.length;
    const offersBefore = this.gatewayOffers.length;
    const trunkHeldBefore = this.heldByTrunk;
    this.gwAnswerDelay = race ? this.r.int(300) : 0;
    this.tabSend({ type: hold ? 'hold' : 'unhold', callId: this.tabCallId });
    const maybe: Ev[] = [];
    if (race) {
      const s = this.genOffer();
      const v = judgeOffer(s, this.codec);
      const label = `re-INVITE (${s.label}, ${v.kind}) as the tab ${hold ? 'holds' : 'resumes'}`;
      const tx = this.send('INVITE', label, this.offerBody(s));
      const exp = this.expectedFor(tx.text, { offer: v });
      if (exp.reaches) this.gwRemoteSeq = Math.max(this.gwRemoteSeq, tx.seq);
      // Crossing ours (RFC 3261 §14.2): 491, or taken before ours went.
      const res = await this.expectFinal(tx, exp.allowed === 'none' ? 'none' : [...exp.allowed, 491]);
      if (res?.status === 200) {
        const p = checkAnswer(this, res.body, v, [mirror(v.dir ?? 'sendrecv', this.heldByTab), mirror(v.dir ?? 'sendrecv', hold)], s);
        if (p) this.violation(`${label}: the answer: ${p}`);
        if (v.kind !== 'unusable') {
          this.applyOffer(v);
          this.te = s.te;
          if (trunkHeldBefore !== this.heldByTrunk) maybe.push({ type: this.heldByTrunk ? 'held' : 'resumed', by: 'remote' });
        }
      }
    }
    // Refused 488, the tab is told; after a 491 our offer goes again (RFC 3261 §14.1: 2.1-4 s
    // when we made the Call-ID, else up to 2 s), and is taken.
    const refused = refuse === 488;
    const want: Ev[] = refused ? [{ type: 'error', code: 'invalid-state', request: hold ? 'hold' : 'unhold' }] : [{ type: hold ? 'held' : 'resumed', by: 'local' }];
    // Our offer waits for an offer of ours in a 200 to be answered (64·T1 at most).
    await this.tabExpect(from, want, maybe, Math.max(refuse === 491 ? 5000 : 3000, this.offerPendingUntil - Date.now() + 3000));
    if (!refused) this.heldByTab = hold;
    this.gwAnswerDelay = 0;
    const offers = this.gatewayOffers.slice(offersBefore);
    // Our offer: sendonly to hold (inactive while the trunk holds us), sendrecv to resume (recvonly so).
    const ok = (trunkHeld: boolean): Dir => (hold ? (trunkHeld ? 'inactive' : 'sendonly') : trunkHeld ? 'recvonly' : 'sendrecv');
    const n = refuse === 491 ? 2 : 1;
    if (offers.length !== n) this.violation(`the tab's ${hold ? 'hold' : 'resume'}: ${offers.length} offers reached the trunk, expected ${n}`);
    for (const o of offers) if (o !== ok(trunkHeldBefore) && o !== ok(this.heldByTrunk)) this.violation(`the tab's ${hold ? 'hold' : 'resume'} offered ${o}, expected ${ok(trunkHeldBefore)}`);
  }

  /** The tab sends a digit: its RTP events reach the port the trunk named, and only while the trunk receives. */
  private async aTabDtmf(): Promise<void> {
    const [a, b] = [this.mediaPort, this.otherPort()];
    const before = [rtpCount.get(a) ?? 0, rtpCount.get(b) ?? 0];
    const from = this.tabMsgs.length;
    this.tabSend({ type: 'dtmf', callId: this.tabCallId, digits: this.r.pick(['1', '#', '9']) });
    await sleep(450);
    const got = [(rtpCount.get(a) ?? 0) - before[0], (rtpCount.get(b) ?? 0) - before[1]];
    this.note(`rtp: ${got[0]} at ${a} (the trunk's), ${got[1]} at ${b}; the trunk ${this.trunkRecv ? 'receives' : 'does not receive'}`);
    count(this.w, `dtmf ${this.trunkRecv ? 'expected' : 'not expected'} at the trunk`);
    if (got[1] > 0) this.violation(`a digit's RTP went to ${b}, the trunk's media is at ${a}`);
    if (this.mediaKnown && this.trunkRecv && this.te && got[0] === 0) this.violation(`a digit's RTP never reached ${a}, where the trunk's last SDP put its media`);
    if ((!this.trunkRecv || !this.mediaKnown) && got[0] > 0) this.violation(`${got[0]} RTP packets of a digit reached ${a}, though the trunk does not receive`);
    await this.tabExpect(from, [], [], 0);
  }

  /** A few requests back to back, not waiting for answers: each answered, their effects in order. */
  private async aBurst(): Promise<void> {
    const from = this.tabMsgs.length;
    const events: Ev[] = [];
    const maybe: Ev[] = [];
    const sent: Array<{ tx: RawTx; allowed: number[] | 'none'; check?: (res: SipResponse) => void }> = [];
    let offered = false;
    for (let i = 2 + this.r.int(3); i > 0; i--) {
      const kind = this.r.pick(['digit', 'digit', 'OPTIONS', 'UPDATE', offered ? 'digit' : 'offer']);
      if (kind === 'offer') {
        offered = true;
        const s = this.genOffer();
        const v = judgeOffer(s, this.codec);
        const tx = this.send('INVITE', `re-INVITE in a burst (${s.label}, ${v.kind})`, this.offerBody(s));
        const exp = this.expectedFor(tx.text, { offer: v });
        if (exp.reaches) this.gwRemoteSeq = Math.max(this.gwRemoteSeq, tx.seq);
        const heldByTab = this.heldByTab;
        // Judged at once (the model moves in the order sent); its answer is checked when it
        // comes. One that may or may not be taken moves the model then.
        const was = this.heldByTrunk;
        const change: Ev = { type: holdsUs(v.dir ?? 'sendrecv') ? 'held' : 'resumed', by: 'remote' };
        // Taken for sure (200 the only answer allowed: no offer of ours waits), or perhaps.
        const sure = v.kind === 'usable' && Array.isArray(exp.allowed) && exp.allowed.length === 1 && exp.allowed[0] === 200;
        if (sure) {
          this.applyOffer(v);
          this.te = s.te;
          if (was !== this.heldByTrunk) events.push(change);
        } else if (v.kind !== 'unusable' && was !== holdsUs(v.dir!)) maybe.push(change);
        sent.push({
          tx, allowed: exp.allowed, check: (res) => {
            if (res.status !== 200) return;
            const p = checkAnswer(this, res.body, v, [mirror(v.dir ?? 'sendrecv', heldByTab)], s);
            if (p) this.violation(`${tx.label}: the answer: ${p}`);
            if (!sure) { this.applyOffer(v); this.te = s.te; }
          },
        });
        continue;
      }
      const [method, body, type, digit] = kind === 'digit' ? ['INFO', `Signal=${i}\r\nDuration=100\r\n`, 'application/dtmf-relay', String(i)] : [kind, '', undefined, undefined];
      const tx = this.send(method, `${method} in a burst`, { body, type });
      const exp = this.expectedFor(tx.text);
      if (exp.reaches) this.gwRemoteSeq = Math.max(this.gwRemoteSeq, tx.seq);
      if (digit) events.push({ type: 'dtmf', digit });
      sent.push({ tx, allowed: exp.allowed });
    }
    for (const s of sent) {
      const res = await this.expectFinal(s.tx, s.allowed);
      if (res && s.check) s.check(res);
    }
    await this.tabExpect(from, events, maybe);
  }

  /**
   * An ACK that acknowledges no 2xx of ours (a CSeq never sent, or one ACKed already), with or
   * without a body: never answered, and no answer to anything — also while an offer of ours waits
   * for its own ACK.
   */
  async aStrayAck(o: { higher?: boolean; body?: string } = {}): Promise<void> {
    const from = this.tabMsgs.length;
    const pending = this.offerPendingUntil > Date.now() ? this.offerPendingSeq : 0;
    const lower = this.gwRemoteSeq - 1;
    const seq = !(o.higher ?? this.r.int(2)) && lower > 1 && lower !== pending ? lower : this.seq + 500;
    const body = o.body ?? this.r.pick(['', 'v=0\r\ngarbage\r\n', sdpText(this.offer({ label: 'stray', port: this.otherPort(), dir: 'inactive' }), this.sdpVersion + 50, this.n)]);
    const tx = this.send('ACK', `a stray ACK (CSeq ${seq}${body ? `, ${body.length} B` : ''})`, { seq, body });
    // One above the 200 whose offer waits: that 200 counts as had, and its ACK, the answer, will
    // not come now (the UA stops sending it again, §13.3.1.4): offers go again at once.
    if (pending && seq > pending) this.offerPendingUntil = Date.now() + 100;
    await this.expectFinal(tx, 'none');
    await this.tabExpect(from, []);
  }

  /** Requests outside any dialog (a new Call-ID, no To tag): answered as such, the call untouched. */
  private async aOutside(): Promise<void> {
    const method = this.r.pick(['OPTIONS', 'MESSAGE', 'REFER', 'NOTIFY', 'INFO', 'BYE', 'SUBSCRIBE', 'PUBLISH', 'FOO']);
    await this.aPlain(method, `${method} outside any dialog`, { callId: `out-${this.xfuzz}-${this.step}`, to: withTag(this.toHdr, null), from: withTag(this.fromHdr, `o${this.step}`), seq: 1 + this.r.int(100), uri: `sip:bob@127.0.0.1:${SIP_PORT}`, extra: method === 'REFER' ? ['Refer-To: <sip:+15550009999@127.0.0.1>'] : method === 'NOTIFY' || method === 'SUBSCRIBE' ? ['Event: dialog'] : [] });
  }

  /** In an early dialog (the trunk's, while it rings; or ours, after the gateway's 180). */
  private async aEarly(): Promise<void> {
    const method = this.r.pick(['INFO', 'OPTIONS', 'NOTIFY', 'UPDATE', 'UPDATE', 'PRACK', 'INVITE', ...(this.plan.kind === 'out' ? ['BYE'] : [])]);
    const body = method === 'UPDATE' && this.r.int(2) ? sdpText({ ...this.firstSdp(this.plan.kind !== 'out'), label: 'early' }, ++this.sdpVersion, this.n) : method === 'INVITE' ? sdpText(this.firstSdp(true), ++this.sdpVersion, this.n) : '';
    const extra = method === 'PRACK' ? [`RAck: ${this.r.int(2) && this.rseq && this.plan.prack !== 'never' ? this.rseq : this.rseq + 3} 1 INVITE`] : [];
    await this.aPlain(method, `${method} in the early dialog${body ? ' with SDP' : ''}`, { body, extra });
  }

  /** The caller's INVITE again (a retransmission): the last provisional again, no second call. */
  private async aInviteAgain(): Promise<void> {
    const tx = this.inviteTx!;
    const before = tx.responses.length;
    const from = this.tabMsgs.length;
    this.note('> the INVITE again (retransmission)');
    count(this.w, '> INVITE again');
    this.w.raw.send(tx.text);
    await sleep(200);
    const again = tx.responses.slice(before);
    if (again.some((x) => x.status >= 200) && this.stage !== 'answered') this.violation(`the INVITE sent again while ringing got ${again.map((x) => x.status).join(', ')}`);
    if (!again.some((x) => x.status > 100 && x.status < 200)) this.violation('the INVITE sent again: its provisional response not sent again (§17.2.1)');
    await this.tabExpect(from, []);
  }

  // ------------------------------------------------------------------ the end of a call

  async end(): Promise<void> {
    this.what = 'the end';
    if (this.stage === 'setup') return;
    const from = this.tabMsgs.length;
    if (this.stage !== 'ended') {
      if (this.stage === 'answered') await this.endAnswered(from);
      else if (this.plan.kind === 'out') await this.endOutRinging(from);
      else await this.endInRinging(from);
      this.stage = 'ended';
    }
    // The trunk heard one BYE from the gateway when the gateway ended a call that was up, none otherwise.
    await sleep(300);
    if (this.byeExpected === 'yes' && this.gatewayByes !== 1) this.violation(`the trunk got ${this.gatewayByes} BYEs from the gateway, expected one`);
    if (this.byeExpected === 'no' && this.gatewayByes !== 0) this.violation(`the trunk got ${this.gatewayByes} BYEs from the gateway, expected none`);
    if (this.byeExpected === 'either' && this.gatewayByes > 1) this.violation(`the trunk got ${this.gatewayByes} BYEs from the gateway`);
    if (this.tabCallId && managerCalls().has(this.tabCallId)) this.violation('the gateway still holds the call after it ended');
    // The trunk's user agent: its dialog of a call it ended itself by hand is over too.
    this.uaDialog?.terminate('shutdown');
  }

  private async endAnswered(from: number): Promise<void> {
    const how = this.r.pick(['tab', 'tab', 'trunk', 'race bye', 'race request', 'race hold']);
    this.what = `end: ${how}`;
    if (how === 'race hold') {
      // The tab holds (or resumes) as the trunk hangs up: the BYE taken, one `ended`; the hold
      // answered, or refused as the call ended, or finding no call.
      this.gwAnswerDelay = this.r.int(200);
      this.tabSend({ type: this.heldByTab ? 'unhold' : 'hold', callId: this.tabCallId });
      if (this.r.int(2)) await sleep(this.r.int(10));
      const { res } = await this.request('BYE', 'BYE as the tab holds');
      const request = this.heldByTab ? 'unhold' : 'hold';
      await this.tabExpect(from, res?.status === 200 ? [{ type: 'ended', cause: ['remote-hangup'] }] : [], [{ type: this.heldByTab ? 'resumed' : 'held', by: 'local' }, { type: 'error', code: 'invalid-state', request }, { type: 'error', code: 'unknown-call', request }], 3000, 400);
      return;
    }
    if (how === 'tab') {
      this.byeExpected = 'yes';
      this.tabSend({ type: 'hangup', callId: this.tabCallId });
      await this.tabExpect(from, [{ type: 'ended', cause: ['local-hangup'] }]);
      return;
    }
    if (how === 'trunk') {
      const { res } = await this.request('BYE', 'BYE');
      await this.tabExpect(from, res?.status === 200 ? [{ type: 'ended', cause: ['remote-hangup'] }] : []);
      this.stage = 'ended';
      // After its end: the dialog is gone (481), the BYE's own retransmission still answered 200.
      const after = this.r.pick(['INFO', 'INVITE', 'BYE']);
      this.gwRemoteSeq = Number.MAX_SAFE_INTEGER;
      const tx = this.send(after, `${after} after the BYE`, after === 'INVITE' ? this.offerBody(this.genOffer()) : {});
      await this.expectFinal(tx, [481]);
      return;
    }
    // The tab hangs up as the trunk sends something: each side's request answered, one `ended`.
    this.byeExpected = 'either';
    const method = how === 'race bye' ? 'BYE' : this.r.pick(['INVITE', 'INFO', 'OPTIONS', 'UPDATE']);
    this.tabSend({ type: 'hangup', callId: this.tabCallId });
    if (this.r.int(2)) await sleep(this.r.int(5));
    const s = this.genOffer();
    const tx = this.send(method, `${method} as the tab hangs up`, method === 'INVITE' || method === 'UPDATE' ? this.offerBody(s) : method === 'INFO' ? { body: 'Signal=4\r\n', type: 'application/dtmf-relay' } : {});
    await this.expectFinal(tx, method === 'INVITE' || method === 'UPDATE' ? [200, 481, 488, 491] : [200, 481]);
    // The trunk's BYE first: the tab's hangup finds no call any more.
    await this.tabExpect(from, [{ type: 'ended', cause: ['local-hangup', 'remote-hangup'] }], [{ type: 'dtmf' }, { type: 'held' }, { type: 'resumed' }, { type: 'error', code: 'unknown-call', request: 'hangup' }]);
  }

  private async endOutRinging(from: number): Promise<void> {
    const how = this.r.pick(['tab', 'tab', 'reject', 'race answer']);
    this.what = `end: ${how}`;
    const inv = this.serverInvite!;
    if (how === 'reject') {
      const status = this.r.pick([486, 603, 480, 404, 503]);
      inv.reject(status);
      const cause = status === 486 ? 'busy' : status === 603 ? 'rejected' : status === 404 ? 'not-found' : 'unavailable';
      await this.tabExpect(from, [{ type: 'ended', cause: [cause] }]);
      return;
    }
    this.tabSend({ type: 'hangup', callId: this.tabCallId });
    if (how === 'tab') {
      await this.tabExpect(from, [{ type: 'ended', cause: ['local-hangup'] }]);
      await waitUntil(() => this.gatewayCancels > 0, 2000);
      if (this.gatewayCancels !== 1) this.violation(`the trunk got ${this.gatewayCancels} CANCELs for a call the tab hung up while it rang`);
      return;
    }
    // The trunk answers as the CANCEL comes: whichever wins, a call that got answered is BYEd (§9.1).
    await sleep(this.r.int(4));
    if (!inv.finalSent) this.answerOut(sdpText(this.firstSdp(false), ++this.sdpVersion, this.n));
    this.byeExpected = 'either';
    await this.tabExpect(from, [{ type: 'ended', cause: ['local-hangup'] }], [{ type: 'answered' }]);
    await sleep(500);
    if (this.uaDialog && this.uaDialog.state !== 'terminated' && this.gatewayByes === 0) this.violation('the trunk answered as the tab hung up, and its call was never ended (no BYE)');
  }

  private async endInRinging(from: number): Promise<void> {
    const raw = this.plan.kind === 'raw';
    if (raw && this.plan.prack === 'never') {
      // No PRACK for our reliable 180: the INVITE is refused (500) after 64·T1 (README).
      this.what = 'end: the PRACK never comes';
      await this.tabExpect(from, [{ type: 'ended', cause: ['failed'] }], [], ACK_WAIT_MS + 3000);
      if (this.inviteTx!.responses.find((x) => x.status >= 200)?.status !== 500) this.violation(`no 500 to the INVITE whose reliable 180 was never PRACKed (got ${this.inviteTx!.responses.map((x) => x.status).join(', ')})`);
      return;
    }
    const how = this.r.pick(['cancel', 'cancel', 'early bye', 'decline', 'busy', 'race accept']);
    this.what = `end: ${how}`;
    if (how === 'decline' || how === 'busy') {
      this.tabSend({ type: 'reject', callId: this.tabCallId, reason: how === 'busy' ? 'busy' : 'declined' });
      await this.tabExpect(from, [{ type: 'ended', cause: [how === 'busy' ? 'busy' : 'rejected'] }]);
      await this.expectInviteFinal(how === 'busy' ? 486 : 603);
      return;
    }
    if (how === 'race accept') {
      // The tab answers as the trunk cancels: the CANCEL wins while the tab's media connects
      // (the 200 waits for it); should the 200 win, the call is up and the tab hangs it up.
      void this.accept(true).catch((err) => this.violation(`accept threw: ${err}`));
      await sleep(this.r.int(30));
    }
    if (how === 'early bye') {
      await this.request('BYE', 'BYE in the early dialog', { to: this.toHdr });
    } else if (raw) {
      const inv = parseSipMessage(this.inviteTx!.text) as SipRequest;
      const tx = this.send('CANCEL', 'CANCEL', { seq: 1, branch: this.inviteTx!.branch, to: inv.header('to')!, uri: inv.uri });
      await this.expectFinal(tx, [200]);
    } else {
      this.note('> CANCEL (the trunk\'s user agent)');
      this.clientInvite!.cancel();
    }
    await waitUntil(() => this.tabMsgs.slice(from).some((m) => m.type === 'ended' || m.type === 'answered'), 5000);
    if (how === 'race accept' && this.tabMsgs.slice(from).some((m) => m.type === 'answered')) {
      count(this.w, 'the 200 won over the CANCEL');
      this.stage = 'answered';
      this.byeExpected = 'yes';
      this.tabSend({ type: 'hangup', callId: this.tabCallId });
      await this.tabExpect(from, [{ type: 'answered' }, { type: 'ended', cause: ['local-hangup'] }]);
      await this.expectInviteFinal(200);
      return;
    }
    // (The tab's accept, when the CANCEL ended the call before it came, finds no call.)
    await this.tabExpect(from, [{ type: 'ended', cause: ['cancelled'] }], how === 'race accept' ? [{ type: 'error', code: 'unknown-call', request: 'accept' }] : [], 5000);
    await this.expectInviteFinal(487);
  }

  private async expectInviteFinal(status: number): Promise<void> {
    const got = async () => (this.plan.kind === 'raw' ? (await this.finalOf(this.inviteTx!))?.status : (await waitUntil(() => this.inviteFinal > 0, FINAL_MS), this.inviteFinal));
    const s = await got();
    if (s !== status) this.violation(`the INVITE was answered ${s ?? 'nothing'}, expected ${status}`);
    if (this.inviteTx) this.inviteTx.allowed = [status];
  }
}

/** What is wrong with the gateway's answer to a usable offer (null: nothing). */
function checkAnswer(c: Call, sdp: string, v: Verdict, dirs: Dir[], offer: TrunkSdp): string | null {
  if (v.kind === 'unusable') return `an offer that cannot be used (${v.why}) was answered 200`;
  const a = readSdp(sdp);
  if (!a) return `no audio in the answer: ${short(sdp)}`;
  if (a.port !== c.gwPort || a.conn !== '127.0.0.1') return `the answer moves our media to ${a.conn}:${a.port} (the call's is 127.0.0.1:${c.gwPort})`;
  if (a.fmts[0] !== v.pt || a.names[0].toUpperCase() !== v.codec) return `the answer's codec is ${a.names[0]}/${a.fmts[0]}, expected ${v.codec}/${v.pt} (in use: ${c.codec})`;
  if (!dirs.includes(a.dir)) return `the answer is ${a.dir}, expected ${dirs.join(' or ')}`;
  if (a.profile !== offer.profile) return `the answer's profile is ${a.profile}, the offer's ${offer.profile}`;
  const keys = v.srtp ?? null;
  if (keys && (a.crypto.length !== 1 || a.crypto[0].tag !== keys.tag || a.crypto[0].suite !== keys.suite)) return `the answer's keys are ${JSON.stringify(a.crypto)}, expected tag ${keys.tag} ${keys.suite}`;
  if (!keys && a.crypto.length) return `the answer has keys (${JSON.stringify(a.crypto)}) for an offer without usable ones`;
  // RFC 5761 §5.1.1: rtcp-mux offered is taken by saying so (README: our leg then muxes).
  if (a.rtcpMux !== !!offer.rtcpMux) return `the answer ${a.rtcpMux ? 'has' : 'lacks'} a=rtcp-mux, the offer ${offer.rtcpMux ? 'has' : 'lacks'} it`;
  const te = a.fmts.filter((pt, i) => /^telephone-event$/i.test(a.names[i]));
  if (offer.te && (te.length !== 1 || te[0] !== (offer.tePt ?? 101))) return `the answer's telephone-event is ${te.join(' ') || 'none'}, the offer's ${offer.tePt ?? 101}`;
  const mlines = 1 + (offer.video ? 1 : 0) + (offer.refusedFirst ? 1 : 0);
  if (a.mlines.length !== mlines) return `the answer has ${a.mlines.length} m-lines, the offer ${mlines}`;
  if (offer.refusedFirst && (a.mlines[0].type !== 'audio' || a.mlines[0].port !== 0)) return 'the refused audio stream not answered with port 0 in its place';
  const video = offer.video === 'before' ? (offer.refusedFirst ? 1 : 0) : mlines - 1;
  if (offer.video && a.mlines[video].port !== 0) return 'the offered video stream not refused with port 0';
  return null;
}

// ---------------------------------------------------------------------------------------------

const browsers = browserPeers();
let gw: Awaited<ReturnType<typeof startGateway>>;
let trunk: SipUserAgent;
let raw: RawSip;
const mediaSockets: dgram.Socket[] = [];
const crashes: string[] = [];
const onCrash = (err: unknown) => { crashes.push(String((err as Error)?.stack ?? err)); };
/** Every call the gateway created (CallManager's callStarted hook) and every refused attempt it recorded. */
let created = new Set<string>();
let recordedRefusals = new Set<string>();
/** INVITEs that reached the trunk's user agent for no call of ours (a REFER followed, say). */
const strayInvites: string[] = [];
let world: World | null = null;

const managerCalls = () => (gw.gateway['manager'] as unknown as { calls: Map<string, unknown> }).calls;
const cdrIds = () => readFileSync(gw.cdrPath, 'utf8').split('\n').filter(Boolean).map((l) => (JSON.parse(l) as { callId: string }).callId);
const zero = { legs: 0, bridges: 0, portsAllocated: 0, icePorts: 0 };

before(async () => {
  process.on('uncaughtException', onCrash);
  process.on('unhandledRejection', onCrash);
  stunPort = await browsers.stunPort();
  for (let p = TRUNK_MEDIA; p < TRUNK_MEDIA + 4 * SLOTS; p++) {
    const s = dgram.createSocket('udp4');
    // RTP (not RTCP: packet types 200-204) on the even ports.
    if (p % 2 === 0) s.on('message', (m) => { if (m.length >= 12 && (m[0] & 0xc0) === 0x80 && (m[1] < 200 || m[1] > 204)) rtpCount.set(p, (rtpCount.get(p) ?? 0) + 1); });
    await new Promise<void>((r) => s.bind(p, '127.0.0.1', () => r()));
    mediaSockets.push(s);
  }
  raw = new RawSip();
  await raw.start();
  trunk = new SipUserAgent({ transports: [{ protocol: 'udp', host: '127.0.0.1', port: TRUNK_PORT }], logger: pino({ level: 'silent' }), timers: TIMERS });
  trunk.on('invite', (inv: ServerInvite) => {
    const c = world?.byXFuzz.get(inv.request.header('x-fuzz') ?? '');
    if (!c || c.serverInvite) { strayInvites.push(short(inv.request.toString(), 400)); inv.reject(404); return; }
    c.onTrunkInvite(inv);
  });
  await trunk.start();
  gw = await startGateway(BASE, {
    auth: { mode: 'token', hs256Secret: SECRET },
    demo: { enabled: false, sipPort: BASE + 2 },
    trunk: { uri: `sip:127.0.0.1:${TRUNK_PORT}`, fromDomain: '127.0.0.1', srtp: 'optional', codecs: ['PCMU', 'PCMA'], sourceCidrs: ['127.0.0.1/32'] },
    dialplan: { allow: ['+1555*'] },
    inbound: { ringTimeoutSec: 60 },
    limits: { maxCallsPerIdentity: 20, maxCallsGlobal: 50, callsPerIdentityPerMin: 10_000, connectsPerIpPerMin: 10_000 },
    media: { portRange: [BASE + 30, BASE + 59], inactivityTimeoutSec: 120 },
    webrtc: { portRange: [BASE + 60, BASE + 99], connectTimeoutSec: 10 },
  }, { captureLogs: true });
  Object.assign((gw.gateway['ua'] as SipUserAgent).timers, TIMERS);
  ({ created, refused: recordedRefusals } = recordCallIds(gw.gateway));
});

after(async () => {
  await gw?.stop();
  await trunk?.stop();
  raw?.sock.close();
  for (const s of mediaSockets) s.close();
  await Promise.all(peers.map((pc) => pc.close().catch(() => undefined)));
  process.off('uncaughtException', onCrash);
  process.off('unhandledRejection', onCrash);
});

test('seeded SIP traffic inside real calls: every request answered once and as the RFCs say, the calls as asked, nothing held or unrecorded afterwards', async () => {
  const t0 = Date.now();
  const stats: Record<string, number> = {};
  let requests = 0;
  for (const seed of SEEDS) {
    const sockets: WebSocket[] = [];
    const w: World = { seed, raw, alice: await TabConn.open('alice', sockets), bob: await TabConn.open('bob', sockets), calls: [], violations: [], stats, byXFuzz: new Map() };
    world = w;
    const base = prng(seed);
    const kinds: Kind[] = ['out', 'out', 'in', 'raw', 'raw', base.pick<Kind>(['out', 'in', 'raw'])];
    w.calls = kinds.map((k, n) => { const r = prng(base.int(0x7fffffff) + 1); return new Call(w, n, r, planFor(r, k)); });
    const txsBefore = raw.txs.size;
    await Promise.all(w.calls.map((c) => c.run()));

    // The seed's end: nothing left at the gateway, one CDR line per call, our 2xx retransmissions over.
    await waitUntil(() => gw.gateway.activeCalls === 0 && JSON.stringify(heldResources(gw.gateway)) === JSON.stringify(zero), 10_000);
    await waitUntil(() => { const ids = new Set(cdrIds()); return [...created].every((id) => ids.has(id)); }, 5000);
    const txs = [...raw.txs.values()].slice(txsBefore);
    const lastUnacked = Math.max(0, ...txs.filter((tx) => tx.ack === 'never').map((tx) => tx.sentAt));
    await sleep(Math.max(0, lastUnacked + ACK_WAIT_MS + 600 - Date.now()));
    for (const tx of txs) {
      if (tx.method === 'ACK') continue;
      const finals = tx.responses.filter((x) => x.status >= 200 && (tx.retransmittedAt === undefined || x.at < tx.retransmittedAt));
      const c = tx.call;
      if (tx.allowed === 'none' && tx.responses.length) c.violation(`${tx.label}: answered ${tx.responses.map((x) => x.status).join(', ')} though it should get nothing`);
      if (Array.isArray(tx.allowed) && !finals.length) c.violation(`${tx.label}: no final response by the seed's end`);
      if (Array.isArray(tx.allowed) && finals.length && !tx.judged && !tx.allowed.includes(finals[0].status)) c.violation(`${tx.label}: answered ${finals[0].status}, expected ${tx.allowed.join('/')}`);
      if (new Set(finals.map((x) => `${x.status} ${x.toTag}`)).size > 1) c.violation(`${tx.label}: more than one final response: ${finals.map((x) => `${x.status} (tag ${x.toTag})`).join(', ')}`);
      const firstFinal = finals[0]?.at ?? Infinity;
      const late = tx.responses.filter((x) => x.status >= 200 && x.at > firstFinal + ACK_WAIT_MS + 500 && (tx.retransmittedAt === undefined || x.at > tx.retransmittedAt + ACK_WAIT_MS + 500));
      if (late.length) c.violation(`${tx.label}: still answered ${late.length} times more than 64·T1 after it was sent`);
    }
    for (const tab of [w.alice, w.bob]) for (const m of tab.unrouted) w.violations.push(`seed 0x${seed.toString(16)}: a tab was told about no call of its own: ${short(m)}`);
    for (const s of raw.stray.splice(0)) w.violations.push(`seed 0x${seed.toString(16)}: ${s}`);
    for (const s of strayInvites.splice(0)) w.violations.push(`seed 0x${seed.toString(16)}: an INVITE reached the trunk for no call: ${s}`);
    requests += txs.length;
    for (const ws of sockets) ws.close();
    await Promise.all(peers.splice(0).map((pc) => pc.close().catch(() => undefined)));

    explain(() => `seed 0x${seed.toString(16)} (${txs.length} requests)`, () => {
      assert.deepEqual(w.violations.slice(0, 6), [], `${w.violations.length} violations (the first ones shown)`);
      assert.deepEqual(crashes, [], 'uncaught exceptions or unhandled rejections');
      assert.equal(gw.gateway.activeCalls, 0, 'calls still up after every call ended');
      assert.deepEqual(heldResources(gw.gateway), zero, 'resources still held after every call ended');
      const counts = new Map<string, number>();
      for (const id of cdrIds()) counts.set(id, (counts.get(id) ?? 0) + 1);
      assert.deepEqual([...counts].filter(([, n]) => n !== 1), [], 'calls with more than one CDR line');
      assert.deepEqual([...created].filter((id) => !counts.has(id)), [], 'calls created without a CDR line');
      assert.deepEqual([...counts.keys()].filter((id) => !created.has(id) && !recordedRefusals.has(id)), [], 'CDR lines of calls never created');
      const errors = gw.logs.filter((l) => (l.level as number) >= 50);
      assert.deepEqual(errors.map((l) => `${l.msg} ${short(l.err ?? '')}`), [], 'error-level log lines');
    });
  }
  const warns = new Map<string, number>();
  for (const l of gw.logs.filter((x) => (x.level as number) === 40)) warns.set(String(l.msg), (warns.get(String(l.msg)) ?? 0) + 1);
  console.log(`dialog fuzz: what ran: ${JSON.stringify(Object.fromEntries(Object.entries(stats).sort()))}`);
  console.log(`dialog fuzz: ${requests} requests by hand over ${SEEDS.length} seeds x ${SLOTS} calls in ${Date.now() - t0} ms; gateway warnings: ${JSON.stringify([...warns])}`);
});

// ---------------------------------------------------------------------------------------------
// Bugs the fuzz found, each as its smallest case (the same oracle, the steps written out).

/** One call of `plan` in a world of its own (tabs opened for it), set up; `done` ends it and returns the oracle's findings. */
async function pinned(plan: Plan, seed: number): Promise<{ c: Call; done(): Promise<string[]> }> {
  const sockets: WebSocket[] = [];
  const w: World = { seed, raw, alice: await TabConn.open('alice', sockets), bob: await TabConn.open('bob', sockets), calls: [], violations: [], stats: {}, byXFuzz: new Map() };
  world = w;
  const c = new Call(w, 0, prng(seed), plan);
  w.calls.push(c);
  await c.setup();
  c.what = 'the steps written out';
  return {
    c,
    done: async () => {
      await c.end();
      for (const ws of sockets) ws.close();
      await Promise.all(peers.splice(0).map((pc) => pc.close().catch(() => undefined)));
      return [...w.violations, ...crashes];
    },
  };
}

test('a trunk holding the call answers our offer in a 200 (its re-INVITE without SDP while the tab holds) recvonly: it still holds the call, the tab is not told resumed, and the tab\'s resume offers recvonly', async () => {
  const { c, done } = await pinned({ kind: 'out', start: 'answered', srtp: false, codecs: ['PCMU'] }, 0x91);
  await c.aOffer('INVITE', { s: c.offer({ label: 'hold', dir: 'sendonly' }) }); // held by remote
  await c.aTabHold(false, 0); // our offer: inactive
  await c.aNoSdp('answer', 'recvonly'); // our offer in the 200: sendonly; the only answers are recvonly and inactive
  await c.aTabHold(false, 0); // our resume offers recvonly: the trunk still holds us
  assert.deepEqual(await done(), []);
});

test('a request in a dialog with more header fields than we read (130) before its Call-ID and CSeq: the 400 copies them (§8.2.6.2), so that its sender can match it', async () => {
  const { c, done } = await pinned({ kind: 'out', start: 'answered', srtp: false, codecs: ['PCMU'] }, 0x92);
  await c.broken('INFO', '130 headers first', (t) => t.replace('Max-Forwards: 70', `Max-Forwards: 70\r\n${Array.from({ length: 130 }, (_, i) => `X-H${i}: v`).join('\r\n')}`));
  const tx = c.lastTx!;
  const res = tx.responses.find((x) => x.status >= 200)?.res;
  assert.deepEqual([res?.status, res?.callId, res?.header('cseq'), res?.header('from'), res?.header('to')], [400, c.sipCallId, `${tx.seq} INFO`, c.fromHdr, c.toHdr]);
  assert.deepEqual([...await done(), ...raw.stray.splice(0)], []);
});

test('a stray ACK (a CSeq of no 2xx of ours) with a body while our offer in a 200 waits for its ACK: not taken for the answer, the call goes on', async () => {
  const { c, done } = await pinned({ kind: 'out', start: 'answered', srtp: false, codecs: ['PCMU'] }, 0x93);
  await c.aNoSdp('never'); // our offer waits for the ACK of its 200
  await c.aStrayAck({ higher: false, body: 'v=0\r\ngarbage\r\n' });
  await c.aInfo();
  assert.deepEqual(await done(), []);
});

test('an ACK with a CSeq above that of the 200 carrying our offer (which it stops sending): the offer is no longer waited for, offers go both ways again', async () => {
  const { c, done } = await pinned({ kind: 'in', start: 'answered', srtp: false, codecs: ['PCMA'] }, 0x94);
  await c.aNoSdp('never');
  await c.aStrayAck({ higher: true, body: '' }); // our 200 is not sent again now: its ACK will not come
  await sleep(500);
  await c.aOffer('INVITE', { s: c.offer({ label: 'hold', dir: 'sendonly' }) }); // 200, not 491 (for ever, before)
  await c.aTabHold(false, 0); // our re-INVITE goes
  assert.deepEqual(await done(), []);
});
