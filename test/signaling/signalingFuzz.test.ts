/**
 * Bad input from browsers, generated: four tabs at a time (ws clients; werift peer connections
 * as their media, which really connect once answered) send seeded mutations of every client
 * message of docs/protocol.md to one gateway (demo mode) over real WebSockets — wrong JSON types
 * for every field, strings at and past each limit (and frames at and past
 * limits.wsMaxMessageBytes), deep nesting, prototype keys (__proto__, constructor), unicode (lone
 * surrogates, U+2028, NUL, RTL marks), duplicate keys, broken JSON, invalid UTF-8 — in every
 * state (before hello, for unknown, ended, refused and other tabs' callIds) and interleaved
 * (hangup, restart, DTMF or hold right after `calling`, bursts of calls past the per-identity and
 * global limits, two restarts or a restart and a hangup back to back, hold against unhold,
 * accepts good and bad and followed at once by more requests, unusable offers, a tab closed or
 * cut while its call is set up, drops with and without resume, a resume taking over a connection
 * that still looks up, floods, oversize and binary frames). The far ends: the demo endpoint
 * (1000 echo, 1001 tone, 1002 busy; it also calls a tab back, for incoming calls) and a SIP trunk
 * of this file's (answers, re-INVITEs answered, one number hangs up by itself, one is busy).
 *
 * Transfers (`transfer`, docs/protocol.md "Transferring a call"): malformed ones (every field of
 * the wrong type, `to` empty or past 64 characters, `ref` past 64, unknown, ended and other tabs'
 * callIds) and valid ones in every call state — dialing, ringing, an incoming call this tab did
 * not answer, answered (to the trunk or the demo endpoint, placed or accepted), held, with a hold
 * change or another transfer out, or interleaved with hangup, hold, unhold, restart, DTMF and a
 * dropped connection resumed. The targets: numbers the trunk answers REFER for by a script of
 * its own (keyed by the Refer-To number, written in several ways the dial plan reads: 202 and a
 * NOTIFY 200; 202 then BYE; 403; 202 and a NOTIFY 486; 202 and no NOTIFY, under the short
 * transferTimeoutMs set below; 202 and a subscription ending on a 1xx; 202 and a slow NOTIFY 200),
 * the demo numbers (`forbidden`), numbers the dial plan refuses and strings that must never reach
 * SIP (control characters, CRLF, angle brackets, quotes, URIs: `forbidden`); past the call-attempt
 * limit (a tab's identity throttled in the gateway's limiter for one action), `rate-limited` with
 * retryAfterMs. The oracle: exactly one answer per transfer — its `error` (naming request, ref and
 * callId) or the call's `ended` —, `ended {cause: 'transferred'}` only for a transfer the far end
 * could carry out, `transfer-progress` only while one of the call's transfers is out and naming
 * its ref; per seed, every REFER the trunk got names a dial-plan number as the URI a call would
 * take, and the CDR line of every transferred call has its transferTo (no other line has one).
 *
 * Asserted, per frame (each has an expectation computed when it is sent, from an oracle of its
 * own — the JSON rules and limits below, not the gateway's zod schemas — and the tab's model of
 * its calls): an invalid frame gets exactly one `error` (`bad-message` naming the request when
 * its type is known, with the ref of a `call` or `restart` and the callId of a `restart`;
 * `unknown-type` or `bad-message` without `request` otherwise); a valid one gets the answer the
 * protocol promises (`pong`, `welcome`, one of `calling`/`ended`/`error` per `call` by its ref,
 * `restarted` or `error` per `restart`, `ended` per `hangup`, `unknown-call` for a callId the
 * tab does not hold…) and nothing it does not; after every action a `ping` still gets its
 * `pong`; floods and oversize frames get the documented close (1008 after one `rate-limited`,
 * 1009), invalid UTF-8 RFC 6455's (1007; docs/protocol.md says nothing of it); hold and unhold
 * back to back leave the call as the last one asked, or refuse it. Per message from the gateway: a documented type and code, calls named once (`calling`
 * or `incoming` for a new callId), at most one `ended` per call and nothing after it, and an
 * `ended` only for a call the gateway really let go (each demo tab is an identity of its own, so
 * no call legitimately goes on in another tab). Per seed: once every tab has hung up, each tab
 * still places a call to 1000 that is answered; once they have closed, the gateway holds nothing
 * (heldResources, activeCalls), every call it created has exactly one CDR line, and so has every
 * refused attempt it recorded, and no other line is there. Throughout: no uncaughtException or
 * unhandledRejection in the process (the gateway runs in it), no error-level log line, no
 * property added to Object.prototype.
 *
 * Bugs it found are pinned at the end, each as its smallest case (all fixed). A new one found
 * goes there too; while it is open, a `todo` test, and its input left out of the generated mix so
 * that the fuzz stays a regression test for everything else.
 *
 * Ports: listening ones only in 28150-28449 (http 28150, SIP 28151, demo SIP 28152, the trunk
 * 28153 and its RTP 28154, media 28250-28349, WebRTC 28350-28449); the fake browsers' sockets
 * (ws clients, werift, the STUN responder, the demo endpoint's RTP) are ephemeral, as in every
 * other test. Fixed seeds; what a tab does next also follows what it was told (timing), so a
 * failure names the seed, the tab, its action and its last frames and messages.
 */
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import dgram from 'node:dgram';
import { readFileSync } from 'node:fs';
import timersPromises from 'node:timers/promises';
import pino from 'pino';
import WebSocket from 'ws';
import { MediaStreamTrack, RTCPeerConnection } from 'werift';
import { SipUserAgent, type Dialog, type ServerInvite, type SipRequest } from '../../src/sip';
import { RateLimiter } from '../../src/edge/limits';
import { heldResources, recordCallIds, startGateway } from '../support/gateway';
import { browserPeers, gatheredSdp, newBrowserPeer, until, type Msg } from '../support/tabs';
import { explain, prng, type Prng } from '../support/fuzz';

const BASE = 28150;
const URL = `ws://127.0.0.1:${BASE}/ws`;
const ORIGIN = `http://127.0.0.1:${BASE}`;
/** limits.wsMaxMessageBytes and limits.wsMessagesPerSec, as configured below (the defaults). */
const MAX_BYTES = 64 * 1024;
const PER_SEC = 50;
/** Frames a tab sends in any second, at most (under PER_SEC: only the flood action goes past). */
const PACE = 40;
/** limits.maxCallsPerIdentity (each demo tab is an identity of its own) and limits.maxCallsGlobal. */
const MAX_CALLS_PER_TAB = 3;
const MAX_CALLS = 10;
const SEEDS = [0x5eed0001, 0x00c0ffee, 0x1badb002];
const TABS = 4;
const ACTIONS_PER_TAB = 45;
/** How long an answer the protocol promises may take (a werift answer, an ICE connect timeout). */
const ANSWER_MS = 8000;

const CLIENT_TYPES = ['hello', 'call', 'candidate', 'accept', 'reject', 'hangup', 'dtmf', 'hold', 'unhold', 'restart', 'transfer', 'ping'] as const;
const SERVER_TYPES = new Set(['welcome', 'calling', 'restarted', 'progress', 'answered', 'incoming', 'ended', 'held', 'resumed', 'dtmf', 'transfer-progress', 'error', 'pong']);
const ERROR_CODES = new Set(['bad-message', 'unknown-type', 'not-authenticated', 'token-missing', 'token-invalid', 'token-expired', 'token-wrong-algorithm', 'rate-limited', 'too-many-calls', 'unknown-call', 'invalid-state', 'bad-sdp', 'draining', 'internal', 'forbidden', 'transfer-failed']);
/** `connection-lost` is documented as never sent. */
const SENT_CAUSES = new Set(['busy', 'no-answer', 'rejected', 'not-found', 'unavailable', 'cancelled', 'remote-hangup', 'local-hangup', 'answered-elsewhere', 'declined-elsewhere', 'forbidden', 'media-timeout', 'ice-failed', 'shutdown', 'failed', 'transferred']);
/** Messages that answer a request (the others are call events, though `ended` and `held` answer some). */
const ANSWERS = new Set(['error', 'pong', 'welcome', 'calling', 'restarted']);
/**
 * Numbers a call may go to: the demo endpoint's (1000 echo, 1001 tone, 1002 busy) and the
 * trunk's (answers and stays; answers and hangs up; busy). Others are refused by the dial plan
 * (allow +1555*), except what it reads as one of these ('555 000-1000'): the oracle leaves
 * strings it did not make to the gateway.
 */
const DIALABLE = ['1000', '1001', '1002', '+15550001000', '+15550002000', '+15550003000'];
const UNDIALABLE = ['2000', '+1000', '☎', '1000\u0000', '1'.repeat(64), '+15550001000x', '+44 20 7946 0000'];
const toClass = (to: unknown): 'dial' | 'refused' | 'maybe' => {
  const t = typeof to === 'string' ? to.trim() : to === undefined ? '1000' : null; // no number: the demo echo (demo mode)
  return t === null ? 'maybe' : DIALABLE.includes(t) ? 'dial' : UNDIALABLE.includes(t) ? 'refused' : 'maybe';
};

/** Who a call's far end is (by the `to` of the call that placed it; incoming calls: the demo endpoint). */
type Far = 'demo' | 'trunk' | 'trunk-bye' | 'maybe';
const farOf = (to: unknown): Far => {
  const t = typeof to === 'string' ? to.trim() : to === undefined ? '1000' : null;
  return t === '1000' || t === '1001' || t === '1002' ? 'demo' : t === '+15550001000' ? 'trunk' : t === '+15550002000' ? 'trunk-bye' : 'maybe';
};

/**
 * What the trunk does with a REFER, by its Refer-To number (the transfer target): ok: 202, NOTIFY
 * 100, NOTIFY 200; bye: 202 then its BYE; r403: 403; n486: 202, NOTIFY 180, NOTIFY 486; silent:
 * 202 and nothing (the transfer times out); nofinal: 202, NOTIFY 100, then a NOTIFY 180 that
 * ends the subscription; slow: 202, then NOTIFY 100 and 200 most of a second later. Any other
 * number: 603.
 */
type Script = 'ok' | 'bye' | 'r403' | 'n486' | 'silent' | 'nofinal' | 'slow';
const SCRIPTS: Record<string, Script> = {
  '+15550004001': 'ok', '+15550004002': 'bye', '+15550004003': 'r403', '+15550004004': 'n486', '+15550004005': 'silent', '+15550004006': 'nofinal', '+15550004007': 'slow',
};
/** Transfer targets as a tab writes them, and the number the dial plan makes of each (a script's). */
const TRANSFER_OK: Record<string, string> = {
  '+15550004001': '+15550004001', '+1 555 000 4001': '+15550004001', '+1555000\r\n4001': '+15550004001', '5550004002': '+15550004002', '+15550004002': '+15550004002',
  '+15550004003': '+15550004003', '(555) 000-4004': '+15550004004', '+15550004004': '+15550004004', '+15550004005': '+15550004005', '+15550004006': '+15550004006',
  ' +15550004007 ': '+15550004007', '+15550004007': '+15550004007',
};
/** The demo numbers: callable, but no transfer target (forbidden). */
const TRANSFER_DEMO = ['1000', '1001', ' 1002 ', '1002'];
/** Refused by the dial plan (forbidden), among them strings that would be header text in a REFER. */
const TRANSFER_REFUSED = [
  '2000', '+44 20 7946 0000', '+19005550000', '☎', '1000\u0000', '1'.repeat(64), '+1555*', '+1555000<4001>', '+15550004001>', '<sip:+15550004001@127.0.0.1>',
  '"+15550004001"', "+1555000'4001", '+15550004001\r\nVia: SIP/2.0/UDP evil;branch=z9hG4bK1', 'sip:+15550004001@evil.example', '+15550004001;transport=tcp',
  '+1555000\u00004001', '+1555000\u001b4001', '+1555000\u00854001', 'x\r\nVia: SIP/2.0/UDP evil;branch=z9hG4bK1\r\n',
];
/** Strings the schema refuses as a transfer's `to` (empty, past 64 characters). */
const TRANSFER_MALFORMED_TO = ['', '+'.repeat(65), '+1555000400'.padEnd(65, '1')];
type TransferClass = Script | 'demo' | 'refused' | 'maybe';
const transferClass = (to: unknown): TransferClass => {
  if (typeof to !== 'string') return 'maybe';
  if (Object.hasOwn(TRANSFER_OK, to)) return SCRIPTS[TRANSFER_OK[to]];
  return TRANSFER_DEMO.includes(to) ? 'demo' : TRANSFER_REFUSED.includes(to) ? 'refused' : 'maybe';
};

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/**
 * werift's DTLS retransmits a flight (timers/promises, up to ~30 s) even after its peer
 * connection closed: the fake browsers' handshakes cut short by a call's end would keep this
 * process alive that long after the last test. Those waits no longer hold the process (they still
 * fire while it runs).
 */
const realSleep = timersPromises.setTimeout;
(timersPromises as { setTimeout: typeof realSleep }).setTimeout = ((ms?: number, value?: unknown, options?: { ref?: boolean; signal?: AbortSignal }) =>
  realSleep(ms, value, new Error().stack?.includes('/dtls/') ? { ...options, ref: false } : options)) as typeof realSleep;

// ---------------------------------------------------------------------------------------------
// Frames: built as ordered field lists (duplicate and prototype keys survive), serialized here.

/** JSON text put into a frame as it is (e.g. 1e400, deep nesting). */
class Raw { constructor(readonly text: string) {} }
/** An object with ordered, possibly repeated keys. */
class Obj { constructor(public fields: Array<[string, unknown]>) {} }

function ser(v: unknown): string {
  if (v instanceof Raw) return v.text;
  if (v instanceof Obj) return `{${v.fields.map(([k, x]) => `${JSON.stringify(k)}:${ser(x)}`).join(',')}}`;
  if (Array.isArray(v)) return `[${v.map(ser).join(',')}]`;
  if (v !== null && typeof v === 'object') return ser(new Obj(Object.entries(v)));
  return JSON.stringify(v) ?? 'null';
}

const get = (o: Obj, k: string) => o.fields.filter(([f]) => f === k).at(-1)?.[1];
function set(o: Obj, k: string, v: unknown): void {
  const i = o.fields.findIndex(([f]) => f === k);
  if (i >= 0) o.fields[i] = [k, v]; else o.fields.push([k, v]);
}

/** Field limits of the protocol (src/signaling/protocol.ts; docs/protocol.md names some). */
const LIMITS: Record<string, [min: number, max: number]> = {
  callId: [1, 64], sdp: [10, 32 * 1024], token: [0, 8192], candidate: [0, 1024], ref: [0, 64], to: [1, 64], digits: [1, 32], sdpMid: [0, 64], sessionId: [0, 64],
};
const UNICODE = ['☎', '\u0000', '\ud800', '\udfff', '\u202e1000', 'e\u0301', '\u2028', '\ufeff', '😀😀😀', 'Ω', '\u0085', '\u00a0', '١٠٠٠', '\u001b[31m'];
/** C0 and C1 control characters but HT, LF and CR: none may be in a SIP header line (RFC 3261 §25.1, TEXT-UTF8). */
const CONTROL_CHARS = /[\u0000-\u0008\u000b\u000c\u000e-\u001f\u007f-\u009f]/;
/** Values of an X- header a call may carry: all within the schema. */
const HEADER_VALUES = ['v', 'é☎', '\u2028', ' ', '', 'a\tb', 'a'.repeat(256)];
/** Values the schema refuses: control characters (they must never reach the SIP side). */
const BAD_HEADER_VALUES = ['\u0000', 'a\u000bb\u0085', '\u007f', 'a\u001bb'];
const PROTO_KEYS = ['__proto__', 'constructor', 'prototype', 'toString', 'hasOwnProperty', 'valueOf', 'then', '__defineGetter__'];
const pollution = () => new Obj([['polluted', 'yes'], ['type', 'hangup'], ['callId', 'polluted'], ['isAdmin', true]]);

function weird(r: Prng): unknown {
  switch (r.int(22)) {
    case 0: return 0;
    case 1: return -1;
    case 2: return 1.5;
    case 3: return new Raw('1e400'); // Infinity once parsed
    case 4: return true;
    case 5: return null;
    case 6: return [];
    case 7: return {};
    case 8: return [r.pick(['a', 1, null])];
    case 9: return new Obj([['a', new Obj([['b', []]])]]);
    case 10: return '';
    case 11: return ' ';
    case 12: return r.pick(UNICODE);
    case 13: return r.pick(['1000', '0', 'null', 'true', '[]']);
    case 14: return 'x'.repeat(r.pick([63, 64, 65, 1024, 1025, 8192, 8193, 32768, 32769, 60_000]));
    case 15: { const n = 100 + r.int(20_000); return new Raw(`${'['.repeat(n)}${']'.repeat(n)}`); }
    case 16: { const n = 100 + r.int(5000); return new Raw(`${'{"a":'.repeat(n)}1${'}'.repeat(n)}`); }
    case 17: return new Obj([['__proto__', pollution()], ['constructor', new Obj([['prototype', pollution()]])]]);
    case 18: return 'x\r\nVia: SIP/2.0/UDP evil;branch=z9hG4bK1\r\n';
    case 19: return new Raw(String(Number.MAX_SAFE_INTEGER + 2));
    case 20: return new Raw('-0');
    default: return new Raw('1.0');
  }
}

/**
 * The oracle: what the protocol says of a frame's text. JSON as JavaScript reads it (the last of
 * repeated keys wins); the rules and limits of docs/protocol.md and protocol.ts, written out.
 */
type Verdict =
  | { kind: 'bad-json' }
  | { kind: 'unknown-type' }
  | { kind: 'invalid'; type: string; ref?: string; callId?: string; namesCall: boolean }
  | { kind: 'valid'; msg: Msg };

function verdictOf(text: string): Verdict {
  let v: unknown;
  try { v = JSON.parse(text); } catch { return { kind: 'bad-json' }; }
  if (typeof v !== 'object' || v === null || typeof (v as Msg).type !== 'string') return { kind: 'bad-json' };
  const o = v as Msg;
  const type = o.type as string;
  if (!(CLIENT_TYPES as readonly string[]).includes(type)) return { kind: 'unknown-type' };
  const own = (x: Msg, k: string): unknown => (Object.prototype.hasOwnProperty.call(x, k) ? x[k] : undefined);
  const isObj = (x: unknown): x is Msg => typeof x === 'object' && x !== null && !Array.isArray(x);
  const str = (x: unknown, k: string) => typeof x === 'string' && x.length >= LIMITS[k][0] && x.length <= LIMITS[k][1];
  const field = (k: string, optional = false) => (own(o, k) === undefined ? optional : str(own(o, k), k));
  const headersOk = (h: unknown) => h === undefined || (isObj(h) && Object.keys(h).length <= 10
    && Object.entries(h).every(([k, x]) => /^X-[A-Za-z0-9-]{1,60}$/.test(k) && typeof x === 'string' && x.length <= 256 && !/[\x00-\x08\x0a-\x1f\x7f-\x9f]/.test(x)));
  let ok: boolean;
  switch (type) {
    case 'hello': {
      const resume = own(o, 'resume');
      ok = own(o, 'version') === 1 && field('token', true)
        && (resume === undefined || (isObj(resume) && str(own(resume, 'sessionId'), 'sessionId') && typeof own(resume, 'token') === 'string' && (own(resume, 'token') as string).length <= 128));
      break;
    }
    case 'call': ok = field('to', true) && field('sdp') && field('ref', true) && headersOk(own(o, 'headers')); break;
    case 'candidate': {
      const c = own(o, 'candidate'); const mid = own(o, 'sdpMid'); const idx = own(o, 'sdpMLineIndex');
      ok = field('callId') && (c === null || str(c, 'candidate')) && (mid === undefined || mid === null || str(mid, 'sdpMid'))
        && (idx === undefined || idx === null || (Number.isSafeInteger(idx) && (idx as number) >= 0 && (idx as number) <= 16));
      break;
    }
    case 'accept': ok = field('callId') && field('sdp'); break;
    case 'reject': ok = field('callId') && [undefined, 'busy', 'declined'].includes(own(o, 'reason') as string); break;
    case 'dtmf': ok = field('callId') && typeof own(o, 'digits') === 'string' && /^[0-9*#A-Da-d]{1,32}$/.test(own(o, 'digits') as string); break;
    case 'restart': ok = field('callId') && field('sdp') && field('ref', true); break;
    case 'transfer': ok = field('callId') && field('to') && field('ref', true); break;
    case 'ping': ok = true; break;
    default: ok = field('callId'); // hangup, hold, unhold
  }
  if (ok) return { kind: 'valid', msg: o };
  const ref = (type === 'call' || type === 'restart' || type === 'transfer') && str(own(o, 'ref'), 'ref') ? own(o, 'ref') as string : undefined;
  // Every request about a call names it in its refusal, when its callId is one.
  const namesCall = !['hello', 'call', 'ping'].includes(type) && str(own(o, 'callId'), 'callId');
  return { kind: 'invalid', type, ref, callId: namesCall ? own(o, 'callId') as string : undefined, namesCall };
}

function mutateFields(r: Prng, o: Obj): void {
  const keys = o.fields.map(([k]) => k);
  switch (r.int(9)) {
    case 0: set(o, r.pick(keys), weird(r)); return;
    case 1: { const k = r.pick(keys); o.fields = o.fields.filter(([f]) => f !== k); return; }
    case 2: o.fields.splice(r.int(o.fields.length + 1), 0, [r.pick(PROTO_KEYS), r.int(2) ? pollution() : weird(r)]); return;
    case 3: { // a key twice: the junk first (the real value wins) or last (the junk wins)
      const k = r.pick(keys);
      if (r.int(2)) o.fields.unshift([k, weird(r)]); else o.fields.push([k, weird(r)]);
      return;
    }
    case 4: set(o, 'type', r.int(3) ? r.pick(['Ping', 'PING', ' ping', 'ping ', 'bye', 'invite', 'register', 'constructor', '__proto__', 'toString', 'hasOwnProperty', '', 'x'.repeat(5000), 'hangup\u0000', 'ping\u2028']) : weird(r)); return;
    case 5: { // a string field at, under or past its limit
      const k = r.pick(keys.filter((f) => Object.hasOwn(LIMITS, f))) ?? 'callId';
      const [min, max] = LIMITS[k];
      const n = Math.max(0, r.pick([min - 1, min, max - 1, max, max + 1, max + 100]));
      const filler = k === 'sdp' ? `v=0\r\n${'a'.repeat(Math.max(0, n - 5))}`.slice(0, Math.max(n, 0)) : k === 'digits' ? '1'.repeat(n) : 'x'.repeat(n);
      set(o, k, filler);
      return;
    }
    case 6: { const k = r.pick(keys.filter((f) => f !== 'type')) ?? 'x'; set(o, k, r.pick(UNICODE) + (typeof get(o, k) === 'string' ? String(get(o, k)).slice(0, 40) : '')); return; }
    case 7: // nested objects with prototype keys where the schema reads objects
      if (get(o, 'type') === 'call') set(o, 'headers', r.pick([new Obj([['X-A', '1'], ['__proto__', new Obj([['X-B', '2']])]]), new Obj([['constructor', 'x']]), new Obj(Array.from({ length: 11 }, (_, i) => [`X-H${i}`, 'v'])), new Obj([['X-Inject', 'a\u0000b\u000bc\u2028d']]), new Obj([['X-Long', 'v'.repeat(256)]]), new Obj([['x-lower', 'v']]), []]));
      else if (get(o, 'type') === 'transfer') set(o, 'to', r.pick([...TRANSFER_REFUSED, ...TRANSFER_MALFORMED_TO, ...TRANSFER_DEMO, '+1555000\r\n4001', 'x\r\n'.repeat(20), ' ']));
      else if (get(o, 'type') === 'hello') set(o, 'resume', r.pick([new Obj([['sessionId', 'x'], ['token', 'y'], ['__proto__', pollution()]]), new Obj([['sessionId', 's'.repeat(65)], ['token', 't']]), [], null, new Obj([['sessionId', 1], ['token', 2]])]));
      else o.fields.push(['extra', weird(r)]);
      return;
    default: { const k = r.pick(keys.filter((f) => f !== 'type')) ?? 'x'; set(o, k, r.pick([1000, 0, -1, 17, 16, 1.5, true, false])); }
  }
}

function mutateText(r: Prng, text: string): string {
  switch (r.int(10)) {
    case 0: return text.slice(0, r.int(text.length));
    case 1: { const i = r.int(text.length); return text.slice(0, i) + r.pick(['{', '}', '[', ']', ':', ',', '"', '\\', '\u0000', '\ud800']) + text.slice(i); }
    case 2: return `\ufeff${text}`;
    case 3: return text + r.pick(['}', ']', 'x', ',', '{}', '\n{"type":"ping"}']);
    case 4: return `[${text}]`;
    case 5: return r.pick(['null', '123', '"ping"', '[]', '{}', '', ' ', 'true', '{"type":null}', '{"type":1}', '{"type":["ping"]}', '{"type":{"0":"ping"}}', '{"type":"ping"', "{'type':'ping'}", '{"type":"\\u0070ing"}', 'NaN']);
    case 6: return `${' \t\n'.repeat(r.int(300))}${text}${' '.repeat(r.int(1000))}`; // still valid JSON
    case 7: return text.replace(/^\{/, `{"type":${JSON.stringify(r.pick([...CLIENT_TYPES, 'bye']))},`); // type twice: the real one wins
    case 8: return text.replace(/\}$/, `,"type":${JSON.stringify(r.pick([...CLIENT_TYPES, 'bye', 7]))}}`); // type twice: this one wins
    default: return text.replace(/"([a-zA-Z]+)":/, (_m, k: string) => `"${k}":"dup","${k}":`);
  }
}

// ---------------------------------------------------------------------------------------------
// The fake browsers' media: werift peer connections.

type Codec = 'opus' | 'pcmu';
type SdpClass = 'good' | 'bad' | 'maybe';

let stunPort = 0;
const peers: RTCPeerConnection[] = [];
/** What the oracle knows of an SDP it handed out: usable or not, and the codec a good one sends. */
const sdpInfo = new Map<string, { cls: SdpClass; codec?: Codec }>();
const sdpClass = (sdp: unknown): SdpClass => (typeof sdp === 'string' ? sdpInfo.get(sdp)?.cls ?? 'maybe' : 'bad');

const newPeer = (codec: Codec) => newBrowserPeer(stunPort, peers, codec);
const gathered = gatheredSdp;

/** A browser's offer (a new peer connection): its answer, when one comes, is applied so it connects. */
async function browserOffer(codec: Codec): Promise<{ pc: RTCPeerConnection; sdp: string }> {
  const pc = newPeer(codec);
  pc.addTransceiver(new MediaStreamTrack({ kind: 'audio' }), { direction: 'sendrecv' });
  await pc.setLocalDescription(await pc.createOffer());
  const sdp = await gathered(pc);
  sdpInfo.set(sdp, { cls: 'good', codec });
  return { pc, sdp };
}

/** The browser's answer to a gateway offer (`incoming`). */
async function browserAnswer(offer: string): Promise<{ pc: RTCPeerConnection; sdp: string }> {
  const pc = newPeer('opus');
  await pc.setRemoteDescription({ type: 'offer', sdp: offer });
  await pc.setLocalDescription(await pc.createAnswer());
  const sdp = await gathered(pc);
  sdpInfo.set(sdp, { cls: 'good', codec: 'opus' });
  return { pc, sdp };
}

/** SDP no call can be placed with (registered as such for the oracle). */
function badSdp(r: Prng, real: string): string {
  const s = r.pick([
    'hello world, not sdp',
    `v=0\r\n${'x'.repeat(40)}`,
    real.replace(/a=fingerprint:[^\r\n]*\r\n/g, ''),
    real.replace(/a=ice-(ufrag|pwd):[^\r\n]*\r\n/g, ''),
    real.replace(/m=audio/, 'm=video'),
    real.replace(/UDP\/TLS\/RTP\/SAVPF/, 'RTP/AVP'),
    real.replace(/opus\/48000\/2/g, 'G722/8000').replace(/PCMU\/8000/g, 'G722/8000'),
    `x${real}`,
  ]);
  sdpInfo.set(s, { cls: 'bad' });
  return s;
}

/** A real offer bent so that whether it can be used is not for the oracle to say. */
function maybeSdp(r: Prng, real: string): string {
  const lines = real.split('\r\n');
  switch (r.int(5)) {
    case 0: return lines.slice(0, 1 + r.int(lines.length)).join('\r\n');
    case 1: return real.replace(/a=candidate:[^\r\n]*/g, 'a=candidate:1 1 udp 2122260223 host.local 9 typ host');
    case 2: { const i = 1 + r.int(lines.length - 1); lines[i] = r.pick(UNICODE) + lines[i]; return lines.join('\r\n'); }
    case 3: return real.replace(/\r\n/g, '\n');
    default: return real + Array.from({ length: 40 }, (_, i) => `a=candidate:${i} 1 udp 1 127.0.0.${i % 250} ${1000 + i} typ host\r\n`).join('');
  }
}

// ---------------------------------------------------------------------------------------------
// Tabs.

interface CallModel {
  id: string;
  dir: 'out' | 'in';
  state: 'dialing' | 'ringing' | 'answered' | 'ended';
  /** Reached `answered` at some point (a frame sent before may have found it so). */
  wasAnswered: boolean;
  /**
   * Has audio (a media bridge): answered, or an outbound call ringing with our ringback (180) or
   * early media — what DTMF and a restart need.
   */
  hasAudio: boolean;
  codec: Codec;
  /** Incoming: this tab sent an accept with a usable answer. */
  accepted: boolean;
  held: boolean;
  offer?: string;
  pc?: RTCPeerConnection;
  /** Restarts sent for it: a newer one may replace an older one still connecting. */
  restarts: number;
  /** Its far end (what a REFER goes to). */
  far: Far;
  /** Its transfers sent and not answered yet (a transfer-progress names one of their refs). */
  transfersOut: Array<{ ref?: string }>;
  /** A valid transfer of it was sent (an `ended` transferred needs one). */
  transferAsked: boolean;
  /** A hangup or reject of it was sent. */
  endAsked: boolean;
}

/** One expected answer (or silence) to a frame. */
interface Expect {
  frame: string;
  /** Whether the message answers this frame. `knew`: the tab knew the callId before it. */
  accepts(m: Msg, knew: boolean): boolean;
  /** An answer is certain: waited for before the barrier ping. */
  wait: boolean;
  /** After the barrier: what is wrong with the answer, or with its absence. */
  final(got: Msg | undefined): string | null;
  /** Offered only what no other expectation takes (so is one that does not `wait`). */
  fallback?: boolean;
  /** A hold or unhold of this call (one at a time: a second while it is out is refused). */
  holdOf?: string;
  /** A transfer of this call (one at a time), and its ref. */
  transferOf?: string;
  transferRef?: string;
  /** Kept from one settle to the next until answered or its call ends (a transfer out when the connection dropped). */
  carry?: boolean;
  got?: Msg;
}

const short = (m: unknown) => {
  const s = typeof m === 'string' ? (/^[\x20-\x7e]*$/.test(m) ? m : JSON.stringify(m)) : JSON.stringify(m, (k, v) => (k === 'sdp' && typeof v === 'string' ? `<sdp ${v.length}>` : k === 'missed' ? `<${(v as unknown[]).length} missed>` : v));
  return s.length > 300 ? `${s.slice(0, 300)}…(${s.length})` : s;
};

interface World {
  seed: number;
  gw: Awaited<ReturnType<typeof startGateway>>;
  tabs: Tab[];
  violations: string[];
  frames: number;
  /** callIds the tabs were told of (calling, incoming, ended of a refused call). */
  seen: Set<string>;
  refusedIds: Set<string>;
  managerHas(callId: string): boolean;
  /** What the run exercised (printed: a mix that stopped reaching a state would show). */
  stats: Record<string, number>;
  /** By callId: the numbers its transfers asked for ('*': one the oracle did not classify). Over all seeds, as the CDR is. */
  transferTargets: Map<string, Set<string>>;
  /** Calls a tab was told ended as `transferred`. */
  transferred: Set<string>;
}

class Tab {
  ws!: WebSocket;
  private generation = 0;
  closedCode: number | null = null;
  private closed: Promise<number> = Promise.resolve(0);
  authed = false;
  helloSent = false;
  welcome: Msg | null = null;
  readonly calls = new Map<string, CallModel>();
  /** Calls of this tab's earlier connections (unknown to its current session). */
  readonly oldCalls: string[] = [];
  private pending: Expect[] = [];
  private unclaimed: Msg[] = [];
  private readonly sends: number[] = [];
  private readonly recent: string[] = [];
  private readonly offersByRef = new Map<string, RTCPeerConnection>();
  /** The far end each call request goes to, by its ref. */
  private readonly farByRef = new Map<string, Far>();
  /** The gateway's call-attempt limiter refuses this tab's identity (throttledTransfer). */
  throttled = false;
  private inFlightCalls = 0;
  pendingCallback = false;
  private refs = 0;
  action = 0;
  private expectingClose = false;
  /** Calls the frames of the action in progress were about. */
  private readonly aboutInAction = new Set<string>();
  /** A resume in progress: what to check of its welcome. */
  private resumeCheck: ((welcome: Msg) => void) | null = null;
  /** Observations that are not violations (for the report). */

  constructor(readonly w: World, readonly index: number, readonly r: Prng) {}

  private note(s: string): void {
    this.recent.push(s.length > 400 ? `${s.slice(0, 400)}…` : s);
    if (this.recent.length > 14) this.recent.shift();
  }

  violation(what: string): void {
    this.w.violations.push(`seed 0x${this.w.seed.toString(16)} tab ${this.index} action ${this.action}: ${what}\n    recent:\n      ${this.recent.join('\n      ')}`);
  }

  private live(callId: unknown): CallModel | undefined {
    const c = typeof callId === 'string' ? this.calls.get(callId) : undefined;
    return c && c.state !== 'ended' ? c : undefined;
  }

  get liveCalls(): CallModel[] {
    return [...this.calls.values()].filter((c) => c.state !== 'ended');
  }

  /** Own: placed here, or accepted here (what a resume keeps). */
  private own(c: CallModel): boolean {
    return c.dir === 'out' || c.accepted;
  }

  async connect(): Promise<void> {
    const gen = ++this.generation;
    const ws = new WebSocket(URL, { headers: { Origin: ORIGIN } });
    this.ws = ws;
    this.closedCode = null;
    this.authed = false;
    this.helloSent = false;
    this.welcome = null;
    this.closed = new Promise<number>((resolve) => ws.once('close', (code) => { if (gen === this.generation) this.closedCode = code; resolve(code); }));
    ws.on('error', () => undefined);
    ws.on('message', (d, isBinary) => {
      if (gen !== this.generation) return;
      let m: Msg;
      try { m = JSON.parse(d.toString()); } catch { this.violation(`a frame from the gateway that is not JSON: ${short(d.toString())}`); return; }
      if (isBinary) this.violation('a binary frame from the gateway');
      this.receive(m);
    });
    await new Promise((res, rej) => { ws.once('open', res); ws.once('error', rej); });
    this.note('(a new connection)');
  }

  /** A message from the gateway: the model follows it, then the frame it answers claims it. */
  receive(m: Msg, replayed = false): void {
    this.note(`< ${short(m)}`);
    const stat = `< ${m.type}${m.type === 'error' ? ` ${m.code}` : m.type === 'ended' ? ` ${m.cause}` : ''}`;
    this.w.stats[stat] = (this.w.stats[stat] ?? 0) + 1;
    const knew = typeof m.callId === 'string' && this.calls.has(m.callId);
    this.track(m, knew);
    if (replayed) {
      // The answer to a transfer out when the connection dropped may be among the missed messages.
      const e = this.pending.find((x) => x.carry && !x.got && x.accepts(m, knew));
      if (e) e.got = m;
      return;
    }
    // A call's `ended` may answer several requests at once (an accept and a hangup of it). An
    // answer goes to the expectations that are sure of one first: one that may stay unanswered
    // (an error for a request that raced the call's end) takes only what is left.
    let claimed = false;
    for (const fallback of [false, true]) {
      for (const e of this.pending) {
        if (!e.got && (!!e.fallback || !e.wait) === fallback && e.accepts(m, knew)) {
          e.got = m;
          claimed = true;
          if (m.type !== 'ended' || !knew) return;
        }
      }
    }
    if (claimed) return;
    if (ANSWERS.has(m.type) || (m.type === 'ended' && !knew)) this.unclaimed.push(m);
  }

  private track(m: Msg, knew: boolean): void {
    if (!SERVER_TYPES.has(m.type)) { this.violation(`undocumented message type: ${short(m)}`); return; }
    const c = typeof m.callId === 'string' ? this.calls.get(m.callId) : undefined;
    const needLive = () => {
      if (!c) this.violation(`${m.type} about a call this tab was never told of: ${short(m)}`);
      else if (c.state === 'ended') this.violation(`${m.type} after the call's ended: ${short(m)}`);
      return c && c.state !== 'ended' ? c : undefined;
    };
    const newCall = (): boolean => {
      if (typeof m.callId !== 'string' || !m.callId) { this.violation(`no callId: ${short(m)}`); return false; }
      if (this.w.seen.has(m.callId)) { this.violation(`a callId named a second time: ${short(m)}`); return false; }
      this.w.seen.add(m.callId);
      return true;
    };
    switch (m.type) {
      case 'welcome':
        if (this.authed) this.violation(`a second welcome on one connection: ${short(m)}`);
        this.authed = true;
        this.welcome = m;
        if (typeof m.sessionId !== 'string' || typeof m.resumeToken !== 'string' || m.version !== 1) this.violation(`welcome without its fields: ${short(m)}`);
        if (this.resumeCheck) { const check = this.resumeCheck; this.resumeCheck = null; check(m); }
        return;
      case 'calling': {
        if (!newCall()) return;
        const pc = typeof m.ref === 'string' ? this.offersByRef.get(m.ref) : undefined;
        if (pc) {
          this.offersByRef.delete(m.ref);
          pc.setRemoteDescription({ type: 'answer', sdp: m.sdp }).catch(() => undefined);
        }
        const codec = (pc?.localDescription && sdpInfo.get(pc.localDescription.sdp)?.codec) || 'opus';
        const far = (typeof m.ref === 'string' && this.farByRef.get(m.ref)) || 'maybe';
        this.calls.set(m.callId, { id: m.callId, dir: 'out', state: 'dialing', wasAnswered: false, hasAudio: false, codec, accepted: false, held: false, pc, restarts: 0, far, transfersOut: [], transferAsked: false, endAsked: false });
        return;
      }
      case 'incoming':
        if (!newCall()) return;
        this.pendingCallback = false;
        this.calls.set(m.callId, { id: m.callId, dir: 'in', state: 'ringing', wasAnswered: false, hasAudio: false, codec: 'opus', accepted: false, held: false, offer: m.sdp, restarts: 0, far: 'demo', transfersOut: [], transferAsked: false, endAsked: false });
        return;
      case 'progress': {
        const l = needLive();
        if (l && l.state === 'dialing') l.state = 'ringing';
        if (l && (m.status === 180 || m.earlyMedia === true)) l.hasAudio = true;
        return;
      }
      case 'answered': { const l = needLive(); if (l) { l.state = 'answered'; l.wasAnswered = true; l.hasAudio = true; } return; }
      case 'held': case 'resumed': {
        const l = needLive();
        if (m.by !== 'local' && m.by !== 'remote') this.violation(`${m.type} without by: ${short(m)}`);
        if (l && m.by === 'local') l.held = m.type === 'held';
        return;
      }
      case 'dtmf': needLive(); return;
      case 'transfer-progress': {
        const l = needLive();
        if (!Number.isInteger(m.status) || m.status < 100 || m.status > 199) this.violation(`transfer-progress with a status that is not provisional: ${short(m)}`);
        if (l && !l.transfersOut.some((t) => t.ref === m.ref)) this.violation(`transfer-progress naming no transfer of the call out (${l.transfersOut.map((t) => JSON.stringify(t.ref)).join(', ') || 'none out'}): ${short(m)}`);
        return;
      }
      case 'restarted': {
        const l = needLive();
        const pc = typeof m.ref === 'string' ? this.offersByRef.get(m.ref) : undefined;
        if (l && pc) { this.offersByRef.delete(m.ref); pc.setRemoteDescription({ type: 'answer', sdp: m.sdp }).catch(() => undefined); }
        return;
      }
      case 'ended': {
        if (!SENT_CAUSES.has(m.cause)) this.violation(`ended with an undocumented (or never sent) cause: ${short(m)}`);
        if (knew) {
          if (c!.state === 'ended') { this.violation(`a second ended for one call: ${short(m)}`); return; }
          if (m.cause === 'transferred') {
            this.w.transferred.add(m.callId);
            if (!c!.transferAsked) this.violation(`ended as transferred, though no transfer of it was asked: ${short(m)}`);
          }
          c!.state = 'ended';
          c!.transfersOut = [];
          c!.pc?.close().catch(() => undefined);
          // Every demo tab is an identity of its own: no call goes on in another tab.
          if (this.w.managerHas(m.callId)) this.violation(`the tab was told its call ended (${m.cause}) but the gateway still holds it`);
          return;
        }
        // A call refused before dialing: a fresh callId, the request's ref.
        if (newCall()) this.w.refusedIds.add(m.callId);
        if (m.cause !== 'forbidden') this.violation(`ended for a call this tab never had, not a dial-plan refusal: ${short(m)}`);
        return;
      }
      case 'error':
        if (!ERROR_CODES.has(m.code) || typeof m.message !== 'string') this.violation(`error with an undocumented code or no message: ${short(m)}`);
        if (m.request !== undefined && !(CLIENT_TYPES as readonly string[]).includes(m.request)) this.violation(`error naming an unknown request: ${short(m)}`);
        if (m.code === 'internal') this.violation(`internal error: a handler threw: ${short(m)}`);
        return;
      default:
    }
  }

  /** Sends one frame, at most PACE a second. */
  async sendRaw(data: string | Buffer, binary = false): Promise<void> {
    for (;;) {
      const now = Date.now();
      while (this.sends.length && now - this.sends[0] >= 1000) this.sends.shift();
      if (this.sends.length < PACE) break;
      await sleep(this.sends[0] + 1005 - now);
    }
    this.sends.push(Date.now());
    this.w.frames++;
    this.note(`> ${short(typeof data === 'string' ? data : `<binary ${data.length}>`)}`);
    this.ws.send(data, { binary }, () => undefined);
  }

  /** Sends a frame with what the oracle expects of it. */
  async frame(sent: string): Promise<Expect[]> {
    // What goes on the wire, as the gateway reads it: a lone surrogate is sent as UTF-8's U+FFFD.
    const text = Buffer.from(sent, 'utf8').toString('utf8');
    const v = verdictOf(text);
    const kind = v.kind === 'valid' ? `valid ${v.msg.type}` : v.kind === 'invalid' ? `invalid ${v.type}` : v.kind;
    this.w.stats[kind] = (this.w.stats[kind] ?? 0) + 1;
    const es = this.expectFor(v, short(text));
    this.pending.push(...es);
    await this.sendRaw(text);
    return es;
  }

  /** Waits for the answers that are certain, sends a ping, then judges every expectation. */
  async settle(): Promise<void> {
    await until(() => this.pending.every((e) => e.got || !e.wait) || this.closedCode !== null, 'answers', ANSWER_MS).catch(() => undefined);
    if (this.closedCode === null) {
      const pong: Expect = { frame: 'the barrier ping', wait: true, accepts: (m) => m.type === 'pong', final: (got) => (got ? null : 'no pong: the connection is not usable any more') };
      this.pending.push(pong);
      await this.sendRaw('{"type":"ping"}');
      await until(() => !!pong.got || this.closedCode !== null, 'the barrier pong', ANSWER_MS).catch(() => undefined);
    }
    const carried = this.pending.filter((e) => e.carry && !e.got && this.live(e.transferOf));
    const done = this.pending.filter((e) => !carried.includes(e));
    this.pending = carried;
    this.aboutInAction.clear();
    for (const e of done) {
      const p = e.final(e.got);
      if (p) this.violation(`${e.frame}: ${p}${e.got ? `\n    got ${short(e.got)}` : ''}`);
    }
    for (const m of this.unclaimed) this.violation(`a message answering nothing sent: ${short(m)}`);
    this.unclaimed = [];
    if (this.closedCode !== null && !this.expectingClose) {
      this.violation(`the gateway closed the connection (${this.closedCode})`);
      await this.reconnect();
    }
  }

  // -------------------------------------------------------------------------------------------
  // The oracle's expectations.

  private expectFor(v: Verdict, frame: string): Expect[] {
    const errorOf = (pred: (m: Msg) => boolean) => (m: Msg) => m.type === 'error' && pred(m);
    if (v.kind === 'bad-json' || v.kind === 'unknown-type') {
      const code = v.kind === 'bad-json' ? 'bad-message' : 'unknown-type';
      return [{
        frame, wait: true, accepts: errorOf((m) => m.request === undefined && m.retryAfterMs === undefined),
        final: (got) => (!got ? `no error for ${v.kind === 'bad-json' ? 'a frame that is not a JSON object with a string type' : 'an unknown type'}`
          : got.code !== code || got.ref !== undefined || got.callId !== undefined ? `expected error ${code} naming nothing` : null),
      }];
    }
    if (v.kind === 'invalid') {
      return [{
        // (Only a bad-message: an unknown-call answering an earlier request about the same call is that one's.)
        frame, wait: true, accepts: errorOf((m) => (m.request === v.type || m.request === undefined) && m.code === 'bad-message'),
        final: (got) => {
          if (!got) return 'no error for a malformed message';
          if (got.code !== 'bad-message' || got.request !== v.type) return `expected bad-message naming request ${v.type}`;
          if (got.ref !== v.ref) return `the refused ${v.type}'s ref is ${JSON.stringify(v.ref)}, the error names ${JSON.stringify(got.ref)}`;
          if (v.namesCall && got.callId !== v.callId) return `the refused ${v.type}'s callId is ${JSON.stringify(v.callId)}, the error names ${JSON.stringify(got.callId)}`;
          return null;
        },
      }];
    }
    const msg = v.msg;
    const type = msg.type as (typeof CLIENT_TYPES)[number];
    if (type === 'ping') return [{ frame, wait: true, accepts: (m) => m.type === 'pong', final: (got) => (got ? null : 'no pong') }];
    if (type === 'hello') {
      if (this.authed || this.helloSent) {
        return [{ frame, wait: true, accepts: errorOf((m) => m.request === 'hello'), final: (got) => (got?.code === 'invalid-state' ? null : 'a second hello not refused with invalid-state') }];
      }
      this.helloSent = true;
      return [{
        // (An invalid-state refusal is a later hello's, sent while this one is checked.)
        frame, wait: true, accepts: (m) => m.type === 'welcome' || (m.type === 'error' && m.request === 'hello' && m.code !== 'invalid-state'),
        final: (got) => (got?.type !== 'welcome' ? 'a valid hello (demo mode) not welcomed'
          : got.resumed !== (msg.resume !== undefined ? false : undefined) ? `welcome.resumed is ${got.resumed} for a hello ${msg.resume ? 'with a resume naming no waiting session' : 'without resume'}` : null),
      }];
    }
    const ref = type === 'call' || type === 'restart' || type === 'transfer' ? msg.ref : undefined;
    if (!this.authed) {
      // Before hello (or while it is checked: demo hellos are not): not-authenticated.
      const inFlightHello = this.helloSent;
      // (A callId a message of this type has no field for is not read: `call` has none.)
      const callId = type === 'call' ? undefined : msg.callId;
      return [{
        frame, wait: true, accepts: errorOf((m) => m.request === type && m.ref === ref && m.callId === callId),
        final: (got) => (!got ? 'no error for a request before hello'
          : got.code === 'not-authenticated' ? null
            : inFlightHello ? null : `expected not-authenticated, got ${got.code}`),
      }];
    }
    if (type === 'call') return [this.expectCall(msg, frame)];
    const id = msg.callId as string;
    const c = this.live(id);
    const sameCall = (m: Msg) => m.callId === id;
    const refused = errorOf((m) => m.request === type && sameCall(m) && ((type !== 'restart' && type !== 'transfer') || m.ref === ref));
    if (!c) {
      return [{
        frame, wait: true, accepts: refused,
        final: (got) => (!got ? `no error for a ${type} about a call this tab does not hold`
          : got.code !== 'unknown-call' ? `expected unknown-call, got ${got.code}`
            : (type === 'restart' || type === 'transfer') && got.ref !== ref ? `the refusal lost the ${type}'s ref` : null),
      }];
    }
    /** An unknown-call about a call the model holds is right only if it ended meanwhile. */
    const unknownOk = (got: Msg) => got.code === 'unknown-call' && c.state === 'ended';
    /**
     * A request answered by the call's `ended` (hangup, reject, accept) about a call that ended on
     * its own just before (the far end hung up): that `ended` is taken for the answer, and the
     * request's own (unknown-call) follows it.
     */
    const endedFirst = (first: Expect): Expect[] => [first, {
      frame: `${frame} (the call ended just before it)`, wait: false, fallback: true, accepts: (m) => refused(m) && first.got?.type === 'ended',
      final: (got) => (got && got.code !== 'unknown-call' ? `a second answer: ${got.code}` : null),
    }];
    const answeredAtSend = c.state === 'answered';
    /** Other requests about this call in this action: its `ended` may answer one of those. */
    const alsoAbout = this.aboutInAction.has(id);
    this.aboutInAction.add(id);
    const audioAtSend = c.hasAudio;
    switch (type) {
      case 'candidate':
        return [{ frame, wait: false, accepts: refused, final: (got) => (got && !unknownOk(got) ? 'an error for a trickled candidate of a call this tab holds' : null) }];
      case 'dtmf':
        return [{
          frame, wait: false, accepts: refused,
          final: (got) => (got ? (unknownOk(got) || (got.code === 'invalid-state' && !audioAtSend) ? null : 'an error for DTMF on a call with audio')
            : c.hasAudio ? null : 'no error for DTMF on a call without audio'),
        }];
      case 'hold': case 'unhold': {
        const want = type === 'hold';
        const event = want ? 'held' : 'resumed';
        // Another hold change of this call still unanswered: this one may be refused as in progress.
        const changing = this.pending.some((e) => e.holdOf === c.id && !e.got);
        if (answeredAtSend && c.held === want) {
          return [{ frame, holdOf: c.id, wait: changing, accepts: refused, final: (got) => (got && !unknownOk(got) && !(changing && got.code === 'invalid-state') ? `an error for ${type} of a call already so` : null) }];
        }
        if (!answeredAtSend && !want) {
          // Not answered: refused at once — or, if it was answered meanwhile, nothing to do.
          return [{ frame, wait: false, accepts: refused, final: (got) => (got ? (got.code === 'invalid-state' || unknownOk(got) ? null : `expected invalid-state, got ${got.code}`) : c.wasAnswered ? null : `no error for ${type} of an unanswered call`) }];
        }
        return [{
          frame, holdOf: c.id, wait: true, accepts: (m) => (m.type === event && m.by === 'local' && sameCall(m)) || refused(m),
          final: (got) => (!got ? `no answer to ${type}` : got.type === event || got.code === 'invalid-state' || unknownOk(got) ? null : `expected ${event} or invalid-state, got ${got.code}`),
        }];
      }
      case 'reject':
        c.endAsked = true;
        if (c.dir === 'out') {
          return [{ frame, wait: true, accepts: refused, final: (got) => (!got ? 'no answer to reject of an outbound call' : got.code !== 'invalid-state' && !unknownOk(got) ? `expected invalid-state, got ${got.code}` : null) }];
        }
        return endedFirst({
          frame, wait: true, accepts: (m) => (m.type === 'ended' && sameCall(m)) || refused(m),
          final: (got) => (!got ? 'no answer to reject' : got.type === 'ended' ? (c.accepted || alsoAbout || got.cause === (msg.reason === 'busy' ? 'busy' : 'rejected') ? null : `ended with cause ${got.cause} for a reject (${msg.reason ?? 'declined'})`)
            : got.code === 'invalid-state' || unknownOk(got) ? null : `unexpected ${got.code}`),
        });
      case 'hangup':
        c.endAsked = true;
        return endedFirst({
          frame, wait: true, accepts: (m) => (m.type === 'ended' && sameCall(m)) || refused(m),
          final: (got) => (!got ? 'no ended for a hangup' : got.type === 'ended' || unknownOk(got) ? null : `unexpected ${got.code}`),
        });
      case 'accept': {
        if (c.dir === 'out') {
          return [{ frame, wait: true, accepts: refused, final: (got) => (got && (got.code === 'invalid-state' || unknownOk(got)) ? null : 'an accept of an outbound call not refused with invalid-state') }];
        }
        const cls = sdpClass(msg.sdp);
        if (c.accepted) {
          // Accepted already: refused (invalid-state) — or, if the call ended meanwhile, nothing.
          return [{
            frame, wait: false, accepts: refused,
            final: (got) => (got ? (got.code === 'invalid-state' || unknownOk(got) ? null : `unexpected ${got.code}`) : c.state === 'ended' ? null : 'a second accept not refused'),
          }];
        }
        if (cls === 'good') c.accepted = true;
        // A usable answer is answered (or the call ends); an unusable one is refused, the call rings on.
        return endedFirst({
          frame, wait: true,
          accepts: (m) => ((m.type === 'answered' || m.type === 'ended') && sameCall(m)) || (refused(m) && (cls !== 'good' || m.code === 'unknown-call')),
          final: (got) => {
            if (!got) return 'no answer to accept (answered, ended or error)';
            if (got.type === 'error' && got.code !== 'invalid-state' && got.code !== 'bad-sdp' && !unknownOk(got)) return `unexpected ${got.code}`;
            if (cls === 'bad' && got.type !== 'error') return 'an unusable answer taken';
            return null;
          },
        });
      }
      case 'restart': {
        const cls = sdpClass(msg.sdp);
        const codec = sdpInfo.get(msg.sdp)?.codec;
        const seq = ++c.restarts;
        return [{
          frame, wait: true, accepts: (m) => (m.type === 'restarted' || (m.type === 'error' && m.request === 'restart')) && sameCall(m) && m.ref === ref,
          final: (got) => {
            if (!got) return 'no answer to restart';
            if (got.type === 'restarted') {
              if (!this.own(c) || !c.hasAudio) return 'a restart of a call without audio (or not this tab\'s) taken';
              if (cls === 'bad') return 'an unusable restart offer taken';
              if (codec && codec !== c.codec) return `a restart changing the codec (${c.codec} to ${codec}) taken`;
              return null;
            }
            switch (got.code) {
              case 'unknown-call': return unknownOk(got) ? null : 'unknown-call for a call this tab holds';
              case 'bad-sdp': return cls === 'good' ? 'a good restart offer refused as bad-sdp' : null;
              case 'too-many-calls': return null;
              case 'invalid-state':
                return !audioAtSend || !this.own(c) || (codec && codec !== c.codec) || c.restarts > seq || c.state === 'ended' || cls !== 'good' ? null : `a restart refused: ${got.message}`;
              default: return `unexpected ${got.code}`;
            }
          },
        }];
      }
      case 'transfer':
        return endedFirst(this.expectTransfer(msg, c, frame, { answeredAtSend, refused, unknownOk }));
      default:
        return [];
    }
  }

  /**
   * A valid `transfer` of a call this tab holds: exactly one answer — its error (refused, or
   * failed: the call goes on) or the call's `ended` (transferred, or ended otherwise meanwhile).
   * What the answer may be follows from docs/protocol.md: the checks a transfer gets (this tab's
   * call, the call-attempt limit, the target as a `call` to it, the call's state), in no order
   * the document sets, then the far end's script.
   */
  private expectTransfer(msg: Msg, c: CallModel, frame: string, k: { answeredAtSend: boolean; refused: (m: Msg) => boolean; unknownOk: (m: Msg) => boolean }): Expect {
    const tc = transferClass(msg.to);
    const to = JSON.stringify(msg.to);
    const tref = msg.ref as string | undefined;
    const ownAtSend = this.own(c);
    const throttled = this.throttled;
    /** A hold change or another transfer of the call out: invalid-state is a right answer. */
    const busyAtSend = this.pending.some((e) => (e.holdOf === c.id || e.transferOf === c.id) && !e.got);
    /** Another transfer of the call out under the same ref: which answer is whose cannot be told. */
    const ambiguous = this.pending.some((e) => e.transferOf === c.id && !e.got && e.transferRef === tref);
    const far = c.far;
    const forbiddenTarget = tc === 'demo' || tc === 'refused';
    c.transferAsked = true;
    const entry = { ref: tref };
    c.transfersOut.push(entry);
    const targets = this.w.transferTargets.get(c.id) ?? new Set<string>();
    this.w.transferTargets.set(c.id, targets);
    if (tc === 'maybe') targets.add('*');
    else if (!forbiddenTarget) targets.add(TRANSFER_OK[msg.to as string]);
    /**
     * What the far end makes of the REFER: the demo endpoint takes none (405); the trunk follows
     * the script of the target; one hanging up by itself (2000) may do so before the REFER (the
     * call ends) or after its 202 (transferred, RFC 5589 §6 as docs/protocol.md reads it).
     */
    const script = forbiddenTarget || tc === 'maybe' ? null : tc;
    const maybeAny = tc === 'maybe' || far === 'maybe';
    const canTransfer = maybeAny || (far !== 'demo' && (script === 'ok' || script === 'bye' || script === 'slow' || (far === 'trunk-bye' && script !== 'r403')));
    const failStatuses: Array<number | undefined> = maybeAny ? [] : far === 'demo' ? [405]
      : script === 'r403' ? [403] : script === 'n486' ? [486] : script === 'silent' || script === 'nofinal' ? [undefined] : [];
    const e: Expect = {
      frame, wait: true, transferOf: c.id, transferRef: tref,
      accepts: (m) => (m.type === 'ended' && m.callId === c.id) || k.refused(m),
      final: (got) => {
        if (!got) return 'no answer to a transfer (its error, or the call\'s ended)';
        const stat = `transfer of ${c.dir === 'in' ? 'an incoming' : 'a'} call ${k.answeredAtSend ? 'answered' : 'unanswered'} (far end ${far}), target ${tc === 'demo' || tc === 'refused' || tc === 'maybe' ? tc : 'scripted'}: ${got.type === 'error' ? got.code : `ended ${got.cause}`}`;
        this.w.stats[stat] = (this.w.stats[stat] ?? 0) + 1;
        if (ambiguous) return null;
        // Past the call-attempt limit, the only refusal of this tab's call is rate-limited.
        if (throttled && ownAtSend && got.type === 'error' && got.code !== 'rate-limited' && !k.unknownOk(got)) return `past the call-attempt limit, expected rate-limited, got ${got.code}`;
        if (got.type === 'ended') {
          if (got.cause === 'transferred') return canTransfer && c.wasAnswered && !throttled ? null : `the call ended as transferred on a transfer to ${to} (${tc}) of a call to ${far}`;
          // Ended otherwise: asked to (hangup), not answered yet (busy, …), or a far end that hangs up by itself.
          return c.endAsked || !k.answeredAtSend || !ownAtSend || far !== 'trunk' ? null : `the call ended (${got.cause}) on a transfer to ${to} (${tc}), nothing else asked of it`;
        }
        switch (got.code) {
          case 'unknown-call': return k.unknownOk(got) ? null : 'unknown-call for a call this tab holds';
          case 'rate-limited':
            if (!throttled) return 'rate-limited under the call-attempt limit';
            return typeof got.retryAfterMs === 'number' && got.retryAfterMs > 0 ? null : 'rate-limited without retryAfterMs';
          case 'forbidden': return forbiddenTarget || tc === 'maybe' ? null : `a transfer to ${to} (a number the dial plan allows, the trunk's) refused as forbidden`;
          case 'invalid-state':
            if (!ownAtSend || !k.answeredAtSend || busyAtSend) return null;
            return forbiddenTarget ? `a transfer to ${to} refused as invalid-state, not forbidden` : `a transfer of an answered call, nothing else out, refused: ${got.message}`;
          case 'transfer-failed':
            if (forbiddenTarget) return `a transfer to ${to} (${tc}) failed at the far end: it was referred, not refused as forbidden`;
            if (!c.wasAnswered) return 'transfer-failed for a call never answered';
            if (maybeAny) return null;
            if (!failStatuses.includes(got.sipStatus)) return `transfer-failed with sipStatus ${got.sipStatus} on a transfer to ${to} (${tc}) of a call to ${far} (expected ${failStatuses.length ? failStatuses.map(String).join(' or ') : 'the call transferred'})`;
            return null;
          default: return `unexpected ${got.code}`;
        }
      },
    };
    // Answered: no longer out (a transfer-progress may no longer name it).
    const accepts = e.accepts;
    e.accepts = (m, knew) => {
      const ok = accepts(m, knew);
      if (ok) c.transfersOut = c.transfersOut.filter((t) => t !== entry);
      return ok;
    };
    return e;
  }

  private expectCall(msg: Msg, frame: string): Expect {
    const ref = msg.ref as string | undefined;
    if (typeof ref === 'string') this.farByRef.set(ref, farOf(msg.to));
    const dest = toClass(msg.to);
    const cls = sdpClass(msg.sdp);
    const mine = this.liveCalls.length + this.inFlightCalls + (this.pendingCallback ? 1 : 0);
    this.inFlightCalls++;
    let counted = true;
    const e: Expect = {
      frame, wait: true,
      accepts: (m, knew) => m.ref === ref && (m.type === 'calling' || (m.type === 'error' && m.request === 'call') || (m.type === 'ended' && !knew)),
      final: (got) => {
        if (!got) return 'no answer to a call (calling, ended or error)';
        if (got.type === 'calling') {
          if (dest === 'refused') return 'a number the dial plan refuses was dialed';
          if (cls === 'bad') return 'an unusable offer was answered';
          return null;
        }
        if (got.type === 'ended') return dest === 'dial' ? 'a dialable number refused by the dial plan' : got.cause === 'forbidden' ? null : `refused with cause ${got.cause}`;
        switch (got.code) {
          case 'too-many-calls':
            return /for this identity/.test(got.message) && mine < MAX_CALLS_PER_TAB ? `refused at the per-identity limit with ${mine} calls up` : null;
          case 'bad-sdp':
            if (dest === 'refused') return 'the offer checked before the dial plan';
            return cls === 'good' ? `a good offer refused: ${got.message}` : null;
          default: return `unexpected ${got.code}`;
        }
      },
    };
    // The count of calls in flight drops once the answer came.
    const accepts = e.accepts;
    e.accepts = (m, knew) => {
      const ok = accepts(m, knew);
      if (ok && counted) { counted = false; this.inFlightCalls--; }
      return ok;
    };
    const final = e.final;
    e.final = (got) => { if (counted) { counted = false; this.inFlightCalls--; } return final(got); };
    return e;
  }

  // -------------------------------------------------------------------------------------------
  // Frames the tab builds.

  private nextRef(): string {
    return `t${this.index}-${++this.refs}`;
  }

  /** A transfer target: mostly a number the trunk has a script for, else a demo number or one refused. */
  private transferTarget(): string {
    const k = this.r.int(10);
    return this.r.pick(k < 6 ? Object.keys(TRANSFER_OK) : k < 8 ? TRANSFER_REFUSED : TRANSFER_DEMO);
  }

  private pickCallId(): string {
    const r = this.r;
    const live = this.liveCalls;
    const ended = [...this.calls.values()].filter((c) => c.state === 'ended');
    const others = this.w.tabs.filter((t) => t !== this).flatMap((t) => [...t.calls.keys()]);
    switch (r.int(10)) {
      case 0: case 1: case 2: case 3: if (live.length) return r.pick(live).id; break;
      case 4: if (ended.length) return r.pick(ended).id; break;
      case 5: if (others.length) return r.pick(others); break;
      case 6: if (this.oldCalls.length) return r.pick(this.oldCalls); break;
      case 7: if (this.w.refusedIds.size) return r.pick([...this.w.refusedIds]); break;
      default:
    }
    return r.pick(['00000000-0000-4000-8000-000000000000', 'c-1', 'x'.repeat(64), '☎', '\ud800', '__proto__', 'constructor', 'toString', ' ', '1']);
  }

  /** A valid message of `type` (offers are real, from a new werift peer connection). */
  private async base(type: (typeof CLIENT_TYPES)[number]): Promise<Obj> {
    const r = this.r;
    const o = new Obj([['type', type]]);
    switch (type) {
      case 'hello':
        o.fields.push(['version', 1]);
        if (r.int(2)) o.fields.push(['token', r.pick(['demo-mode', 'not.a.token', 'x'.repeat(8192), '☎'])]);
        if (!r.int(3)) o.fields.push(['resume', new Obj([['sessionId', r.pick([...this.w.tabs.map((t) => String(t.welcome?.sessionId ?? 's')), 'nope'])], ['token', r.pick(['x', 'y'.repeat(32)])]])]);
        break;
      case 'call': {
        const codec: Codec = r.int(5) ? 'opus' : 'pcmu';
        const { pc, sdp } = await browserOffer(codec);
        const ref = this.nextRef();
        this.offersByRef.set(ref, pc);
        const k = r.int(10);
        o.fields.push(['sdp', k < 7 ? sdp : k < 9 ? badSdp(r, sdp) : maybeSdp(r, sdp)], ['ref', ref]);
        const to = r.pick([...DIALABLE, '1000', '+15550001000', undefined, ' 1000 ', ...UNDIALABLE]);
        if (to !== undefined) o.fields.splice(1, 0, ['to', to]);
        if (!r.int(4)) o.fields.push(['headers', new Obj([['X-Fuzz', r.pick([...HEADER_VALUES, ...BAD_HEADER_VALUES])]])]);
        break;
      }
      case 'candidate':
        o.fields.push(['callId', this.pickCallId()], ['candidate', r.pick([
          null, '', 'candidate:1 1 udp 2122260223 127.0.0.1 9 typ host', 'candidate:1 1 udp 1 abc.local 9 typ host',
          'a=candidate:1 1 udp 1 127.0.0.1 5000 typ host', 'candidate:1 1 udp 1 127.0.0.1 99999 typ host', 'candidate:1 1 udp 1 127.0.0.1 -1 typ host',
          'candidate:1 1 udp 1 224.0.0.1 9 typ host', 'candidate:1 1 udp 1 ::1 9 typ host', 'candidate:1 1 tcp 1 127.0.0.1 9 typ host tcptype active',
          'candidate:1 1 udp 1 0.0.0.0 0 typ relay raddr 1.2.3.4 rport 5', 'garbage', 'candidate:x', `candidate:${'9'.repeat(1000)}`,
        ])]);
        if (r.int(2)) o.fields.push(['sdpMid', r.pick(['0', 'audio', null, '', '☎'])]);
        if (r.int(2)) o.fields.push(['sdpMLineIndex', r.pick([0, 1, 16, null])]);
        break;
      case 'accept': {
        const ringing = this.liveCalls.filter((c) => c.dir === 'in');
        o.fields.push(['callId', ringing.length && r.int(2) ? r.pick(ringing).id : this.pickCallId()]);
        // No real answer here (the accept action makes those): an offer in its place is for the
        // gateway to judge (werift may take it; its audio never connects).
        const real = (await browserOffer('opus')).sdp;
        o.fields.push(['sdp', r.int(2) ? badSdp(r, real) : r.int(2) ? maybeSdp(r, real) : `${real}a=x-an-offer:1\r\n`]);
        break;
      }
      case 'reject': {
        const callId = this.pickCallId();
        const c = this.live(callId);
        o.fields.push(['callId', callId]);
        if (r.int(2)) o.fields.push(['reason', r.pick(['busy', 'declined'])]);
        break;
      }
      case 'dtmf':
        o.fields.push(['callId', this.pickCallId()], ['digits', Array.from({ length: 1 + r.int(r.int(4) ? 6 : 32) }, () => r.pick([...'0123456789*#ABCDabcd'])).join('')]);
        break;
      case 'restart': {
        const answered = this.liveCalls.filter((c) => c.wasAnswered);
        o.fields.push(['callId', answered.length && r.int(3) ? r.pick(answered).id : this.pickCallId()]);
        const { pc, sdp } = await browserOffer(r.int(6) ? 'opus' : 'pcmu');
        const ref = this.nextRef();
        this.offersByRef.set(ref, pc);
        o.fields.push(['sdp', r.int(8) ? sdp : r.int(2) ? badSdp(r, sdp) : maybeSdp(r, sdp)]);
        if (r.int(5)) o.fields.push(['ref', ref]);
        break;
      }
      case 'transfer': {
        const answered = this.liveCalls.filter((c) => c.wasAnswered);
        o.fields.push(['callId', answered.length && r.int(2) ? r.pick(answered).id : this.pickCallId()], ['to', this.transferTarget()]);
        if (r.int(5)) o.fields.push(['ref', this.nextRef()]);
        break;
      }
      case 'ping':
        break;
      default: // hangup, hold, unhold
        o.fields.push(['callId', this.pickCallId()]);
    }
    return o;
  }

  // -------------------------------------------------------------------------------------------
  // Actions.

  /** A few frames: each a valid message, or one bent by a field mutation or two, or its text broken. */
  async fuzzFrame(): Promise<void> {
    const r = this.r;
    for (let n = 1 + r.int(3); n > 0; n--) {
      const type = r.pick<(typeof CLIENT_TYPES)[number]>([...CLIENT_TYPES, 'hangup', 'dtmf', 'restart', 'candidate', 'hold', 'transfer']);
      const o = await this.base(type);
      let text: string;
      const k = r.int(10);
      if (k < 3) text = ser(o);
      else if (k < 8) {
        for (let i = 1 + r.int(2); i > 0; i--) mutateFields(r, o);
        text = ser(o);
      } else text = mutateText(r, ser(o));
      if (Buffer.byteLength(text) > MAX_BYTES) text = ser(await this.base(type)); // oversize frames are an action of their own
      await this.frame(text);
    }
    await this.settle();
  }

  async validCall(to = '1000'): Promise<Expect[]> {
    const { pc, sdp } = await browserOffer(this.r.int(6) ? 'opus' : 'pcmu');
    const ref = this.nextRef();
    this.offersByRef.set(ref, pc);
    const headers = this.r.int(4) ? undefined : { 'X-Fuzz': this.r.pick(HEADER_VALUES) };
    return this.frame(JSON.stringify({ type: 'call', to, sdp, ref, headers }));
  }

  /** A well-formed call or restart whose offer is unusable (or bent): bad-sdp, never a call or a leg. */
  async badOffer(): Promise<void> {
    const real = (await browserOffer('opus')).sdp;
    const sdp = this.r.int(3) ? badSdp(this.r, real) : maybeSdp(this.r, real);
    const c = this.answeredCall();
    if (c && this.r.int(2)) await this.frame(JSON.stringify({ type: 'restart', callId: c.id, sdp, ref: this.nextRef() }));
    else await this.frame(JSON.stringify({ type: 'call', to: this.r.pick(DIALABLE), sdp, ref: this.nextRef() }));
    await this.settle();
  }

  private async callIdOf(es: Expect[]): Promise<string | undefined> {
    await until(() => !!es[0].got || this.closedCode !== null, 'the answer to a call', ANSWER_MS).catch(() => undefined);
    return es[0].got?.type === 'calling' ? es[0].got.callId : undefined;
  }

  /** hangup (or a restart, or another request) the moment `calling` arrives. */
  async callThen(next: 'hangup' | 'restart' | 'dtmf' | 'hold' | 'transfer'): Promise<void> {
    const id = await this.callIdOf(await this.validCall(this.r.pick(DIALABLE)));
    if (id) {
      if (next === 'restart') await this.restartFrame(id);
      else if (next === 'transfer') await this.transferFrame(id);
      else await this.frame(JSON.stringify(next === 'dtmf' ? { type: next, callId: id, digits: '1' } : { type: next, callId: id }));
    }
    await this.settle();
  }

  /** A valid transfer of `callId` (a fresh ref). */
  private async transferFrame(callId: string, to = this.transferTarget()): Promise<void> {
    await this.frame(JSON.stringify({ type: 'transfer', callId, to, ref: this.nextRef() }));
  }

  /**
   * A transfer of an answered call — mostly one placed to the trunk for it —, alone or with
   * another request about the call right before (a hold change: the transfer is refused) or
   * after it (a second transfer, hangup, hold, restart, DTMF, the connection dropped and resumed).
   */
  async transferFlow(): Promise<void> {
    const r = this.r;
    const incoming = this.liveCalls.filter((x) => x.dir === 'in' && x.state === 'answered' && x.accepted);
    let c = incoming.length && r.int(2) ? r.pick(incoming) : this.answeredCall();
    if ((!c || (c.far !== 'trunk' && c.dir === 'out' && r.int(3))) && this.liveCalls.length < MAX_CALLS_PER_TAB) {
      const id = await this.callIdOf(await this.validCall(r.pick(['+15550001000', '+15550001000', '+15550001000', '+15550002000'])));
      if (id) await until(() => this.calls.get(id)?.state !== 'dialing' && this.calls.get(id)?.state !== 'ringing', 'the call answered', ANSWER_MS).catch(() => undefined);
      const placed = id ? this.calls.get(id) : undefined;
      if (placed?.state === 'answered') c = placed;
    }
    if (!c || c.state !== 'answered') { await this.settle(); return; }
    const mode = r.pick(['alone', 'alone', 'alone', 'second', 'hangup', 'hangup-later', 'hold-first', 'hold-after', 'restart', 'dtmf', 'drop']);
    this.w.stats[`transfer flow ${mode}`] = (this.w.stats[`transfer flow ${mode}`] ?? 0) + 1;
    const hold = () => this.frame(JSON.stringify({ type: c.held ? 'unhold' : 'hold', callId: c.id }));
    if (mode === 'hold-first') await hold();
    await this.transferFrame(c.id, r.int(4) ? r.pick(Object.keys(TRANSFER_OK)) : r.int(3) ? r.pick(TRANSFER_REFUSED) : r.pick(TRANSFER_DEMO));
    switch (mode) {
      case 'second': await this.transferFrame(c.id); break;
      case 'hangup': await this.frame(JSON.stringify({ type: 'hangup', callId: c.id })); break;
      case 'hangup-later': await sleep(r.int(600)); await this.frame(JSON.stringify({ type: 'hangup', callId: c.id })); break;
      case 'hold-after': await sleep(r.int(200)); await hold(); break;
      case 'restart': await sleep(r.int(200)); await this.restartFrame(c.id, c.codec); break;
      case 'dtmf': await this.frame(JSON.stringify({ type: 'dtmf', callId: c.id, digits: '9' })); break;
      case 'drop': await sleep(r.int(300)); return this.dropAndResume();
      default:
    }
    await this.settle();
  }

  /**
   * A malformed transfer, each field in turn (the others valid): `to` missing, empty, past 64
   * characters or not a string; `ref` past 64 or not a string; `callId` missing, empty, past 64 or
   * not a string. The oracle's error: bad-message naming the request, its ref and its callId
   * when those are readable.
   */
  async badTransfer(): Promise<void> {
    const r = this.r;
    const c = this.answeredCall();
    for (let n = 1 + r.int(2); n > 0; n--) {
      const o = new Obj([['type', 'transfer'], ['callId', c && r.int(2) ? c.id : this.pickCallId()], ['to', r.pick(Object.keys(TRANSFER_OK))], ['ref', this.nextRef()]]);
      const field = r.pick(['to', 'to', 'ref', 'callId']);
      const bad = r.pick<unknown>(field === 'to' ? [...TRANSFER_MALFORMED_TO, 15550004001, null, [], true, new Obj([['to', '+15550004001']]), undefined]
        : field === 'ref' ? ['r'.repeat(65), 7, null, ['t'], false]
          : ['', 'c'.repeat(65), 7, null, [c?.id ?? 'x'], undefined]);
      if (bad === undefined) o.fields = o.fields.filter(([k]) => k !== field); else set(o, field, bad);
      await this.frame(ser(o));
    }
    await this.settle();
  }

  /** Transfers while the gateway's call-attempt limiter refuses this tab's identity: rate-limited. */
  async throttledTransfer(): Promise<void> {
    const identity = this.welcome?.identity;
    if (!this.authed || typeof identity !== 'string') return this.fuzzFrame();
    const live = this.liveCalls;
    const c = this.answeredCall() ?? (live.length ? this.r.pick(live) : undefined);
    // A limiter of one attempt a minute, its one attempt taken: the next waits about a minute.
    const limiter = new RateLimiter({ perMinute: 1 });
    limiter.take(identity);
    throttledIdentities.set(identity, limiter);
    this.throttled = true;
    try {
      for (let i = 1 + this.r.int(2); i > 0; i--) await this.transferFrame(c && this.r.int(4) ? c.id : this.pickCallId());
      await this.settle();
    } finally {
      throttledIdentities.delete(identity);
      this.throttled = false;
    }
  }

  private async restartFrame(callId: string, codec: Codec = 'opus'): Promise<void> {
    const { pc, sdp } = await browserOffer(codec);
    const ref = this.nextRef();
    this.offersByRef.set(ref, pc);
    await this.frame(JSON.stringify({ type: 'restart', callId, sdp, ref }));
  }

  /** Calls sent back to back, past the per-identity limit. */
  async burstCalls(): Promise<void> {
    const n = 2 + this.r.int(4);
    const offers = await Promise.all(Array.from({ length: n }, () => browserOffer('opus')));
    for (const { pc, sdp } of offers) {
      const ref = this.nextRef();
      this.offersByRef.set(ref, pc);
      await this.frame(JSON.stringify({ type: 'call', to: this.r.pick([...DIALABLE, '9']), sdp, ref }));
    }
    await this.settle();
  }

  private answeredCall(): CallModel | undefined {
    const a = this.liveCalls.filter((c) => c.state === 'answered' && this.own(c));
    return a.length ? this.r.pick(a) : undefined;
  }

  /** Two restarts of an answered call back to back, or a restart and a hangup. */
  async restartTwice(thenHangup: boolean): Promise<void> {
    const c = this.answeredCall();
    if (!c) return this.fuzzFrame();
    await this.restartFrame(c.id, this.r.int(4) ? 'opus' : 'pcmu');
    if (thenHangup) await this.frame(JSON.stringify({ type: 'hangup', callId: c.id }));
    else await this.restartFrame(c.id);
    await this.settle();
  }

  /**
   * hold and unhold (or the other way round) back to back on an answered call: the call ends as
   * the last request asked, or that request is refused — never dropped without a word.
   */
  async holdRace(): Promise<void> {
    const c = this.answeredCall();
    if (!c) return this.fuzzFrame();
    const first = c.held ? 'unhold' : 'hold';
    const last = first === 'hold' ? 'unhold' : 'hold';
    await this.frame(JSON.stringify({ type: first, callId: c.id }));
    const es = await this.frame(JSON.stringify({ type: last, callId: c.id }));
    await this.settle();
    // (Both answers were waited for: the first one's held or resumed, or its error, is in.)
    const refusedLast = es[0]?.got?.type === 'error';
    if (!refusedLast && c.state === 'answered' && c.held !== (last === 'hold')) this.violation(`${first} then ${last}: ${last} was not refused, yet the call is ${c.held ? 'held' : 'not held'}`);
  }

  /** Several valid requests about one call, back to back. */
  async mixedBurst(): Promise<void> {
    const live = this.liveCalls;
    if (!live.length) return this.fuzzFrame();
    const c = this.r.pick(live);
    for (let i = 2 + this.r.int(5); i > 0; i--) {
      const kind = this.r.pick(['dtmf', 'hold', 'unhold', 'candidate', 'restart', 'hangup', 'hangup', 'accept', 'reject', 'transfer']);
      if (kind === 'restart') await this.restartFrame(c.id);
      else if (kind === 'transfer') await this.transferFrame(c.id);
      else if (kind === 'accept') await this.frame(JSON.stringify({ type: 'accept', callId: c.id, sdp: badSdp(this.r, 'v=0\r\n') }));
      else if (kind === 'candidate') await this.frame(JSON.stringify({ type: 'candidate', callId: c.id, candidate: 'candidate:1 1 udp 2122260223 127.0.0.1 9 typ host', sdpMid: '0' }));
      else await this.frame(JSON.stringify(kind === 'dtmf' ? { type: kind, callId: c.id, digits: '#1' } : kind === 'reject' ? { type: kind, callId: c.id, reason: this.r.pick(['busy', 'declined']) } : { type: kind, callId: c.id }));
    }
    await this.settle();
  }

  /** The demo endpoint calls this tab (an incoming call). */
  async callback(): Promise<void> {
    if (!this.authed || this.pendingCallback || this.liveCalls.some((c) => c.dir === 'in')) return this.fuzzFrame();
    this.pendingCallback = true;
    const res = await fetch(`http://127.0.0.1:${BASE}/api/demo/callback`, { method: 'POST', body: JSON.stringify({ sessionId: this.welcome!.sessionId }) });
    await res.arrayBuffer();
    if (res.status !== 202) { this.pendingCallback = false; return; }
    // The gateway may be at its call limit (503 to the demo endpoint): then nothing rings.
    await until(() => !this.pendingCallback, 'the callback ringing', 3000).catch(() => { this.pendingCallback = false; });
  }

  /**
   * Accepts a ringing call (the demo endpoint calls back first if none rings) with a real answer
   * (its peer connection connects); then, at once or once it is answered, more requests about it.
   */
  async accept(): Promise<void> {
    if (!this.liveCalls.some((c) => c.dir === 'in' && !c.accepted && c.offer)) await this.callback();
    const ringing = this.liveCalls.filter((c) => c.dir === 'in' && !c.accepted && c.offer);
    if (!ringing.length) return;
    const c = this.r.pick(ringing);
    const { pc, sdp } = await browserAnswer(c.offer!);
    c.pc = pc;
    await this.frame(JSON.stringify({ type: 'accept', callId: c.id, sdp }));
    if (this.r.int(2)) await this.settle(); // answered (or not): the requests below find it so
    for (let i = this.r.int(3); i > 0; i--) {
      const next = this.r.pick(['hangup', 'reject', 'reject', 'dtmf', 'accept', 'hold', 'restart', 'transfer']);
      if (next === 'restart') await this.restartFrame(c.id);
      else if (next === 'transfer') await this.transferFrame(c.id);
      else await this.frame(JSON.stringify({ type: next, callId: c.id, ...(next === 'dtmf' ? { digits: '5' } : next === 'accept' ? { sdp } : next === 'reject' ? { reason: this.r.pick(['busy', 'declined']) } : {}) }));
    }
    await this.settle();
  }

  async binary(): Promise<void> {
    this.pending.push({
      frame: 'a binary frame', wait: true, accepts: (m) => m.type === 'error' && m.request === undefined,
      final: (got) => (got?.code === 'bad-message' ? null : 'no bad-message error for a binary frame'),
    });
    await this.sendRaw(Buffer.from(this.r.int(2) ? '{"type":"ping"}' : this.r.bytes(1 + this.r.int(200))), true);
    await this.settle();
  }

  /** A frame of exactly MAX_BYTES bytes (multi-byte characters too): read like any other. */
  async atLimit(): Promise<void> {
    const head = this.r.int(2) ? '{"type":"ping","pad":"' : '{"type":"hangup","callId":"nope","pad":"';
    const unit = this.r.pick(['x', '€', '😀']);
    let pad = unit.repeat(Math.floor((MAX_BYTES - head.length - 2) / Buffer.byteLength(unit)));
    pad += 'x'.repeat(MAX_BYTES - head.length - 2 - Buffer.byteLength(pad));
    const text = `${head}${pad}"}`;
    assert.equal(Buffer.byteLength(text), MAX_BYTES);
    await this.frame(text);
    await this.settle();
  }

  /** A connection-ending action: its close code, then the tab connects again. */
  private async closing(what: string, code: number, send: () => Promise<void>, check?: () => string | null): Promise<void> {
    const closed = this.closed;
    this.expectingClose = true;
    // Answers to what was sent before the close (a flood's pongs) are not judged one by one.
    this.pending.push({ frame: what, wait: false, accepts: (m) => m.type === 'pong' || m.type === 'error', final: () => null });
    await send();
    const got = await Promise.race([closed, sleep(5000).then(() => null)]);
    if (got !== code) this.violation(`${what}: expected close ${code}, got ${got ?? 'no close within 5 s'}`);
    this.w.stats[`closed ${got}`] = (this.w.stats[`closed ${got}`] ?? 0) + 1;
    const p = check?.();
    if (p) this.violation(`${what}: ${p}`);
    this.pending = [];
    this.unclaimed = [];
    this.expectingClose = false;
    await this.reconnect();
  }

  /** More than PER_SEC frames at once: one rate-limited error, then 1008, nothing more read. */
  async flood(): Promise<void> {
    const seen: Msg[] = [];
    const gen = this.generation;
    this.ws.on('message', (d) => { if (gen === this.generation) seen.push(JSON.parse(d.toString())); });
    await this.closing('a flood', 1008, async () => {
      const binary = this.r.int(2) === 0;
      for (let i = 0; i < PER_SEC + 30; i++) this.ws.send(binary ? Buffer.from('{"type":"ping"}') : '{"type":"ping"}', { binary }, () => undefined);
      this.w.frames += PER_SEC + 30;
    }, () => {
      const limited = seen.filter((m) => m.type === 'error' && m.code === 'rate-limited');
      if (limited.length !== 1 || !(limited[0].retryAfterMs > 0) || limited[0].request !== undefined) return `expected one rate-limited error (retryAfterMs, no request), got ${short(limited)}`;
      const answered = seen.filter((m) => m.type === 'pong' || (m.type === 'error' && m.code !== 'rate-limited')).length;
      return answered > PER_SEC ? `${answered} frames answered: more than ${PER_SEC} read` : null;
    });
  }

  /** A frame past MAX_BYTES: 1009. */
  async oversize(): Promise<void> {
    await this.closing('a frame over limits.wsMaxMessageBytes', 1009, async () => {
      const n = MAX_BYTES + 1 + this.r.pick([0, 1, 100, 70_000]);
      const head = '{"type":"ping","pad":"';
      await this.sendRaw(`${head}${'x'.repeat(n - head.length - 2)}"}`);
    });
  }

  /** Invalid UTF-8 in a text frame: RFC 6455 §8.1 fails the connection (1007). */
  async badUtf8(): Promise<void> {
    await this.closing('invalid UTF-8 in a text frame', 1007, async () => {
      await this.sendRaw(Buffer.from([...Buffer.from('{"type":"ping","x":"'), 0xff, 0xfe, 0xc0, 0x80, ...Buffer.from('"}')]), false);
    });
  }

  /**
   * The socket is cut without a close frame (1006): the next connection resumes the session
   * (its calls and the messages it missed) or starts afresh.
   */
  async dropAndResume(): Promise<void> {
    if (!this.welcome) return this.fuzzFrame();
    const mode = this.r.pick(['fresh', 'resume', 'resume', 'takeover']);
    const resume = mode === 'fresh' ? undefined : { sessionId: this.welcome.sessionId as string, token: this.welcome.resumeToken as string };
    if (mode !== 'takeover') {
      this.expectingClose = true;
      const closed = this.closed;
      this.ws.terminate();
      await closed;
      this.expectingClose = false;
    }
    // takeover: the old connection still looks up (the tab's network changed under it); the
    // gateway cuts it when the new one resumes the session.
    // Transfers still out: their answers come on the new connection, in `missed`, or went with
    // the old one — whichever, nothing to judge but that they are answers.
    const transfersOut = this.pending.filter((e) => e.transferOf && !e.got).map((e): Expect => ({ ...e, frame: `${e.frame} (out when the connection dropped)`, wait: false, carry: true, final: () => null }));
    this.pending = [];
    this.unclaimed = [];
    // A call ringing here stops ringing here; nothing says so.
    for (const c of this.liveCalls) if (!this.own(c)) this.gone(c);
    if (!resume) { await this.reconnect(); return; }
    await this.connect();
    this.pending.push(...transfersOut);
    // Judged as the welcome arrives, before any later message moves the model on.
    this.resumeCheck = (welcome) => {
      this.w.stats[`resumed ${welcome.resumed}`] = (this.w.stats[`resumed ${welcome.resumed}`] ?? 0) + 1;
      if (!welcome.resumed) {
        // Nothing to resume: its calls had all ended when the drop was seen (or it held none of its own).
        for (const c of this.liveCalls) this.gone(c);
        return;
      }
      if (welcome.sessionId !== resume.sessionId) this.violation('a resumed session with another sessionId');
      for (const m of welcome.missed as Msg[]) this.receive(m, true);
      const listed = new Map((welcome.calls as Array<{ callId: string; state: string }>).map((x) => [x.callId, x.state]));
      for (const [id, state] of listed) {
        const c = this.live(id);
        if (!c) this.violation(`resumed with a call the tab does not hold (${id}, ${state})`);
        else if (!this.own(c)) this.violation(`resumed with a call that only rang here (${id})`);
        else if (c.state === 'answered' && state !== 'answered') this.violation(`an answered call resumed as ${state}`);
      }
      // Lost with the dead connection, both ways (docs/protocol.md): a call not listed is over.
      for (const c of this.liveCalls) if (!listed.has(c.id)) this.gone(c);
    };
    this.helloSent = true;
    this.pending.push({ frame: 'a hello resuming the dropped session', wait: true, accepts: (m) => m.type === 'welcome' || m.type === 'error', final: (got) => (got?.type === 'welcome' ? null : 'a resuming hello not welcomed') });
    await this.sendRaw(JSON.stringify({ type: 'hello', version: 1, resume }));
    await this.settle();
  }

  /**
   * The tab goes (closed, or cut without a close frame) right after sending a call, while the
   * gateway sets it up: the call ends unseen (its CDR line is checked at the end of the seed).
   */
  async goDuringCall(): Promise<void> {
    const { sdp } = await browserOffer('opus');
    this.expectingClose = true;
    await this.sendRaw(JSON.stringify({ type: 'call', to: this.r.pick(DIALABLE), sdp, ref: this.nextRef() }));
    await sleep(this.r.int(60));
    const closed = this.closed;
    if (this.r.int(2)) this.ws.terminate(); else this.ws.close(1000);
    await Promise.race([closed, sleep(3000)]);
    this.expectingClose = false;
    await this.reconnect();
  }

  /** The tab lost sight of a call (its connection went): the gateway ends it unseen. */
  private gone(c: CallModel): void {
    c.state = 'ended';
    c.pc?.close().catch(() => undefined);
    this.oldCalls.push(c.id);
  }

  /** A new connection: a few frames before hello (fuzzed), then hello. */
  async reconnect(): Promise<void> {
    for (const c of this.liveCalls) this.gone(c);
    this.calls.clear();
    this.pending = [];
    this.unclaimed = [];
    this.inFlightCalls = 0;
    this.pendingCallback = false;
    if (this.closedCode === null && this.ws) { this.ws.terminate(); await this.closed; }
    await this.connect();
    await this.helloPhase();
  }

  async helloPhase(): Promise<void> {
    for (let i = this.r.int(5); i > 0; i--) await this.fuzzFrame();
    if (!this.authed && !this.helloSent) {
      await this.frame(JSON.stringify({ type: 'hello', version: 1 }));
      if (!this.r.int(4)) await this.frame(JSON.stringify({ type: 'hello', version: 1 })); // a second one at once: refused
      await this.settle();
    }
    if (!this.authed) {
      this.violation('no welcome after hello');
      await this.frame(JSON.stringify({ type: 'hello', version: 1 }));
      await this.settle();
    }
  }

  async run(actions: number): Promise<void> {
    const picks: Array<[number, () => Promise<void>]> = [
      [40, () => this.fuzzFrame()],
      [8, async () => { await this.validCall(this.r.pick([...DIALABLE, '1000', '+15550001000'])); await this.settle(); }],
      [2, () => this.holdRace()],
      [3, () => this.badOffer()],
      [3, () => this.callThen('hangup')],
      [3, () => this.callThen('restart')],
      [1, () => this.callThen('transfer')],
      [12, () => this.transferFlow()],
      [2, () => this.badTransfer()],
      [1, () => this.throttledTransfer()],
      [1, () => this.callThen('dtmf')],
      [1, () => this.callThen('hold')],
      [2, () => this.burstCalls()],
      [3, () => this.restartTwice(false)],
      [2, () => this.restartTwice(true)],
      [3, () => this.mixedBurst()],
      [2, () => this.callback()],
      [4, () => this.accept()],
      [2, () => this.binary()],
      [1, () => this.atLimit()],
      [1, () => this.oversize()],
      [1, () => this.flood()],
      [1, () => this.badUtf8()],
      [3, () => this.dropAndResume()],
      [1, () => this.goDuringCall()],
    ];
    const total = picks.reduce((n, [w]) => n + w, 0);
    for (this.action = 1; this.action <= actions; this.action++) {
      // A tab at its call limit mostly hangs one up first, so that calls keep reaching the checks past the limit.
      const live = this.liveCalls;
      if (live.length >= MAX_CALLS_PER_TAB && this.r.int(3)) {
        await this.frame(JSON.stringify({ type: 'hangup', callId: this.r.pick(live).id }));
        await this.settle();
      }
      let x = this.r.int(total);
      const [, act] = picks.find(([w]) => (x -= w) < 0)!;
      await act();
    }
  }

  /** Hangs up every call this tab holds. */
  async hangUpAll(): Promise<void> {
    await until(() => this.inFlightCalls === 0, 'calls in flight answered', ANSWER_MS).catch(() => undefined);
    for (const c of this.liveCalls) await this.frame(JSON.stringify({ type: 'hangup', callId: c.id }));
    await this.settle();
  }

  /** The connection still works: a call to 1000 is answered and hung up. */
  async stillWorks(): Promise<void> {
    const es = await this.validCall('1000');
    const id = await this.callIdOf(es);
    if (!id) { this.violation(`the closing call to 1000 was not dialed: ${short(es[0].got)}`); await this.settle(); return; }
    await until(() => this.calls.get(id)?.state !== 'dialing' && this.calls.get(id)?.state !== 'ringing', 'the closing call answered', ANSWER_MS).catch(() => undefined);
    if (this.calls.get(id)?.state !== 'answered') this.violation(`the closing call to 1000 was not answered (${this.calls.get(id)?.state})`);
    await this.frame(JSON.stringify({ type: 'hangup', callId: id }));
    await this.settle();
  }

  async close(): Promise<void> {
    this.expectingClose = true;
    const closed = this.closed;
    this.ws.close(1000);
    await Promise.race([closed, sleep(3000)]);
  }
}

// ---------------------------------------------------------------------------------------------

const browsers = browserPeers();
let gw: Awaited<ReturnType<typeof startGateway>>;
let trunk: SipUserAgent;
let trunkRtp: dgram.Socket;
/** The INVITEs the trunk got, as they came. */
const trunkInvites: string[] = [];
/** The REFERs the trunk got, as they came. */
const trunkRefers: SipRequest[] = [];
/** Identities the gateway's call-attempt limiter is made to refuse, each by a limiter of its own. */
const throttledIdentities = new Map<string, RateLimiter>();
/** calls.transferTimeoutMs for the fuzz: a REFER accepted with no NOTIFY fails this soon. */
const TRANSFER_TIMEOUT_MS = 1200;

/** The trunk's answer to a REFER in `dialog`: the script of its Refer-To number (SCRIPTS). */
function trunkRefer(dialog: Dialog, req: SipRequest, respond: (status: number, reason?: string) => void): void {
  trunkRefers.push(req);
  const number = /^<sips?:([^@;>]+)@/.exec(req.header('refer-to') ?? '')?.[1] ?? '';
  const notify = async (frag: string, state: string) => {
    const n = dialog.createRequest('NOTIFY', `${frag}\r\n`, 'message/sipfrag;version=2.0');
    n.addHeader('Event', `refer;id=${req.cseq.seq}`);
    n.addHeader('Subscription-State', state);
    await trunk.sendInDialog(dialog, n);
  };
  // (The call may have ended meanwhile: what the script sends then gets 481, or goes nowhere.)
  const later = (ms: number, f: () => Promise<unknown>) => setTimeout(() => { f().catch(() => undefined); }, ms);
  switch (SCRIPTS[number]) {
    case 'ok':
      respond(202, 'Accepted');
      later(30, async () => { await notify('SIP/2.0 100 Trying', 'active;expires=60'); await notify('SIP/2.0 200 OK', 'terminated;reason=noresource'); });
      return;
    case 'bye': respond(202, 'Accepted'); later(60, () => dialog.bye()); return;
    case 'r403': respond(403, 'Forbidden'); return;
    case 'n486':
      respond(202, 'Accepted');
      later(30, async () => { await notify('SIP/2.0 180 Ringing', 'active;expires=60'); await notify('SIP/2.0 486 Busy Here', 'terminated;reason=noresource'); });
      return;
    case 'silent': respond(202, 'Accepted'); return;
    case 'nofinal':
      respond(202, 'Accepted');
      later(30, async () => { await notify('SIP/2.0 100 Trying', 'active;expires=60'); await notify('SIP/2.0 180 Ringing', 'terminated;reason=timeout'); });
      return;
    case 'slow':
      respond(202, 'Accepted');
      later(300, () => notify('SIP/2.0 100 Trying', 'active;expires=60'));
      later(700, () => notify('SIP/2.0 200 OK', 'terminated;reason=noresource'));
      return;
    default: respond(603, 'Decline');
  }
}
const crashes: string[] = [];
const onCrash = (err: unknown) => { crashes.push(String((err as Error)?.stack ?? err)); };
const protoBefore = Object.getOwnPropertyNames(Object.prototype).sort().join();
/** Every call the gateway created (CallManager's callStarted hook) and every refused attempt it recorded. */
let created = new Set<string>();
let recordedRefusals = new Set<string>();
const transferTargets = new Map<string, Set<string>>();

before(async () => {
  process.on('uncaughtException', onCrash);
  process.on('unhandledRejection', onCrash);
  stunPort = await browsers.stunPort();
  // The trunk: +1555000 1000 answers and stays, 2000 answers and hangs up a second later, 3000
  // is busy; re-INVITEs (hold, resume) are answered 200 after 80 ms, mirroring the direction.
  trunkRtp = dgram.createSocket('udp4');
  await new Promise<void>((r) => trunkRtp.bind(BASE + 4, '127.0.0.1', () => r()));
  trunk = new SipUserAgent({ transports: [{ protocol: 'udp', host: '127.0.0.1', port: BASE + 3 }], logger: pino({ level: 'silent' }) });
  trunk.on('invite', (inv: ServerInvite) => {
    const number = /sips?:([^@;>]+)@/.exec(inv.request.uri)?.[1] ?? '';
    trunkInvites.push(inv.request.toString());
    let cancelled = false;
    inv.on('cancelled', () => { cancelled = true; });
    inv.progress(180);
    setTimeout(() => {
      if (cancelled) return;
      if (number.endsWith('3000')) { inv.reject(486, 'Busy Here'); return; }
      const dialog = inv.accept(trunkSdp('sendrecv'));
      dialog.on('refer', (req, respond) => trunkRefer(dialog, req, respond));
      dialog.on('reinvite', (req: SipRequest, reply: (status: number, sdp?: string) => void) => {
        const dir = /a=(sendonly|recvonly|inactive)/.exec(req.body)?.[1];
        setTimeout(() => reply(200, trunkSdp(dir === 'sendonly' ? 'recvonly' : dir === 'recvonly' ? 'sendonly' : dir === 'inactive' ? 'inactive' : 'sendrecv')), 80);
      });
      if (number.endsWith('2000')) setTimeout(() => dialog.bye().catch(() => undefined), 1000);
    }, 150);
  });
  await trunk.start();
  gw = await startGateway(BASE, {
    auth: { mode: 'demo' },
    demo: { enabled: true, sipPort: BASE + 2 },
    trunk: { uri: `sip:127.0.0.1:${BASE + 3}`, fromDomain: '127.0.0.1', srtp: 'off', codecs: ['PCMU'] },
    dialplan: { allow: ['+1555*'] },
    limits: {
      maxCallsPerIdentity: MAX_CALLS_PER_TAB, maxCallsGlobal: MAX_CALLS, callsPerIdentityPerMin: 10_000, connectsPerIpPerMin: 10_000,
      wsMaxMessageBytes: MAX_BYTES, wsMessagesPerSec: PER_SEC, wsResumeGraceSec: 2,
    },
    media: { portRange: [BASE + 100, BASE + 199], inactivityTimeoutSec: 60 },
    webrtc: { portRange: [BASE + 200, BASE + 299], connectTimeoutSec: 3 },
  }, { captureLogs: true });
  ({ created, refused: recordedRefusals } = recordCallIds(gw.gateway));
  (gw.gateway['manager'] as unknown as { opts: { ctx: { transferTimeoutMs?: number } } }).opts.ctx.transferTimeoutMs = TRANSFER_TIMEOUT_MS;
  // The call-attempt limit, for the identities a tab throttles (throttledTransfer); the others as configured.
  const signaling = gw.gateway['signaling'] as unknown as { opts: { callAttempt(identity: string): number } };
  const callAttempt = signaling.opts.callAttempt.bind(signaling.opts);
  signaling.opts.callAttempt = (identity) => throttledIdentities.get(identity)?.take(identity) ?? callAttempt(identity);
});

after(async () => {
  await gw?.stop();
  await trunk?.stop();
  trunkRtp?.close();
  await Promise.all(peers.map((pc) => pc.close().catch(() => undefined)));
  process.off('uncaughtException', onCrash);
  process.off('unhandledRejection', onCrash);
});

const cdrLines = () => readFileSync(gw.cdrPath, 'utf8').split('\n').filter(Boolean).map((l) => JSON.parse(l) as Record<string, unknown>);
const cdrIds = () => cdrLines().map((l) => l.callId as string);
const managerCalls = () => (gw.gateway['manager'] as unknown as { calls: Map<string, unknown> }).calls;
const zero = { legs: 0, bridges: 0, portsAllocated: 0, icePorts: 0 };
const trunkSdp = (dir: string) => `v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio ${BASE + 4} RTP/AVP 0 101\r\na=rtpmap:0 PCMU/8000\r\na=rtpmap:101 telephone-event/8000\r\na=fmtp:101 0-15\r\na=${dir}\r\n`;

test('seeded bad input from several tabs: every frame answered as promised, the connection usable, nothing held or unrecorded afterwards', async () => {
  let frames = 0;
  const stats: Record<string, number> = {};
  for (const seed of SEEDS) {
    const w: World = { seed, gw, tabs: [], violations: [], frames: 0, seen: new Set(), refusedIds: new Set(), managerHas: (id) => managerCalls().has(id), stats, transferTargets, transferred: new Set() };
    const refersBefore = trunkRefers.length;
    const base = prng(seed);
    w.tabs = Array.from({ length: TABS }, (_, i) => new Tab(w, i, prng(base.int(0x7fffffff) + 1)));
    await Promise.all(w.tabs.map(async (t) => { await t.connect(); await t.helloPhase(); }));
    await Promise.all(w.tabs.map((t) => t.run(ACTIONS_PER_TAB)));
    for (const t of w.tabs) t.action = 0;

    // Every tab hangs up; once the gateway holds no call (dropped sessions wait 2 s), each still places one.
    await Promise.all(w.tabs.map((t) => t.hangUpAll()));
    await until(() => gw.gateway.activeCalls === 0, 'every call ended before the closing calls', 10_000).catch(() => undefined);
    if (gw.gateway.activeCalls !== 0) w.violations.push(`seed 0x${seed.toString(16)}: calls still up once every tab hung up: ${[...managerCalls().keys()].join(', ')}`);
    await Promise.all(w.tabs.map((t) => t.stillWorks()));
    await Promise.all(w.tabs.map((t) => t.close()));

    await until(() => gw.gateway.activeCalls === 0 && JSON.stringify(heldResources(gw.gateway)) === JSON.stringify(zero), 'nothing held', 10_000).catch(() => undefined);
    const expected = [...created, ...recordedRefusals];
    await until(() => cdrIds().length >= expected.length, 'every CDR line', 10_000).catch(() => undefined);
    await Promise.all(peers.splice(0).map((pc) => pc.close().catch(() => undefined)));
    frames += w.frames;

    explain(() => `seed 0x${seed.toString(16)} (${w.frames} frames)`, () => {
      assert.deepEqual(w.violations.slice(0, 6), [], `${w.violations.length} violations (the first ones shown)`);
      assert.deepEqual(crashes, [], 'uncaught exceptions or unhandled rejections');
      assert.equal(gw.gateway.activeCalls, 0, 'calls still up after every tab closed');
      assert.deepEqual(heldResources(gw.gateway), zero, 'resources still held after every tab closed');
      const lines = cdrIds();
      const counts = new Map<string, number>();
      for (const id of lines) counts.set(id, (counts.get(id) ?? 0) + 1);
      assert.deepEqual([...counts].filter(([, n]) => n !== 1), [], 'calls with more than one CDR line');
      assert.deepEqual(expected.filter((id) => !counts.has(id)), [], 'calls created or refused without a CDR line');
      assert.deepEqual(lines.filter((id) => !created.has(id) && !recordedRefusals.has(id)), [], 'CDR lines of calls never created');
      assert.deepEqual([...w.seen].filter((id) => !created.has(id) && !recordedRefusals.has(id) && !w.refusedIds.has(id)), [], 'callIds told to tabs that the gateway never created');
      // What reached SIP: no control characters in the trunk's INVITEs (header lines end in CRLF).
      const bent = trunkInvites.filter((inv) => CONTROL_CHARS.test(inv.split('\r\n\r\n')[0]));
      assert.deepEqual(bent.map((inv) => short(inv.split('\r\n').find((l) => CONTROL_CHARS.test(l)))), [], 'INVITEs carrying control characters');
      // Every REFER: in a call's dialog, to a number of the dial plan as the URI a call to it takes (no demo number, no header text).
      const refers = trunkRefers.slice(refersBefore);
      assert.deepEqual(refers.filter((req) => !/^<sip:\+1555\d{7}@127\.0\.0\.1:28153>$/.test(req.header('refer-to') ?? '') || CONTROL_CHARS.test(req.toString().split('\r\n\r\n')[0]))
        .map((req) => short(req.header('refer-to'))), [], 'REFERs to what is not a dial-plan number at the trunk');
      // The CDR of a transferred call names the target its transfer asked for; no other line names one.
      const records = cdrLines().filter((l) => created.has(l.callId as string));
      const wrongTransferTo = records.filter((l) => (l.cause === 'transferred') !== (l.transferTo !== undefined)
        || (l.cause === 'transferred' && !w.transferTargets.get(l.callId as string)?.has(l.transferTo as string) && !w.transferTargets.get(l.callId as string)?.has('*')));
      assert.deepEqual(wrongTransferTo.map((l) => short({ callId: l.callId, cause: l.cause, transferTo: l.transferTo, asked: [...(w.transferTargets.get(l.callId as string) ?? [])] })), [], 'CDR lines whose transferTo and cause disagree with the transfers asked');
      assert.deepEqual([...w.transferred].filter((id) => records.find((l) => l.callId === id)?.cause !== 'transferred'), [], 'calls the tab was told ended transferred whose CDR says otherwise');
      const errors = gw.logs.filter((l) => (l.level as number) >= 50);
      assert.deepEqual(errors.map((l) => l.msg), [], 'error-level log lines');
      assert.equal(Object.getOwnPropertyNames(Object.prototype).sort().join(), protoBefore, 'Object.prototype was changed');
      assert.equal(({} as Record<string, unknown>).polluted, undefined, 'Object.prototype polluted');
    });
  }
  const warns = new Map<string, number>();
  for (const l of gw.logs.filter((x) => (x.level as number) === 40)) warns.set(String(l.msg), (warns.get(String(l.msg)) ?? 0) + 1);
  console.log(`signaling fuzz: what ran: ${JSON.stringify(Object.fromEntries(Object.entries(stats).sort()))}`);
  console.log(`signaling fuzz: ${frames} frames over ${SEEDS.length} seeds x ${TABS} tabs; warnings: ${JSON.stringify([...warns])}`);
});

// ---------------------------------------------------------------------------------------------
// Bugs the fuzz found, each as its smallest case (fixed; these keep them so).

/** A bare tab: hello answered, every message kept. */
async function bareTab(): Promise<{ ws: WebSocket; messages: Msg[]; closed: Promise<number>; send(m: object): void; next(pred: (m: Msg) => boolean, what: string, from?: number): Promise<Msg>; close(): Promise<void> }> {
  const ws = new WebSocket(URL, { headers: { Origin: ORIGIN } });
  const messages: Msg[] = [];
  ws.on('message', (d) => messages.push(JSON.parse(d.toString())));
  ws.on('error', () => undefined);
  const closed = new Promise<number>((r) => ws.once('close', (code) => r(code)));
  await new Promise((res, rej) => { ws.once('open', res); ws.once('error', rej); });
  const next = async (pred: (m: Msg) => boolean, what: string, from = 0) => {
    await until(() => messages.slice(from).some(pred), what, ANSWER_MS);
    return messages.slice(from).find(pred)!;
  };
  // A normal close (its calls hang up), waited for at most 2 s.
  const close = async () => { ws.close(1000); await Promise.race([closed, sleep(2000)]); };
  const tab = { ws, messages, closed, send: (m: object) => ws.send(JSON.stringify(m)), next, close };
  tab.send({ type: 'hello', version: 1 });
  await next((m) => m.type === 'welcome', 'welcome');
  return tab;
}

/** An incoming call (the demo endpoint calls the tab back) ringing in `tab`: its callId and offer. */
async function ringing(tab: Awaited<ReturnType<typeof bareTab>>): Promise<{ callId: string; offer: string }> {
  const sessionId = tab.messages.find((m) => m.type === 'welcome')!.sessionId;
  const res = await fetch(`http://127.0.0.1:${BASE}/api/demo/callback`, { method: 'POST', body: JSON.stringify({ sessionId }) });
  assert.equal(res.status, 202, await res.text());
  const incoming = await tab.next((m) => m.type === 'incoming', 'the callback ringing');
  return { callId: incoming.callId, offer: incoming.sdp };
}

/** A call from `tab` to the trunk (which answers it): its callId once answered. */
async function answeredOutbound(tab: Awaited<ReturnType<typeof bareTab>>): Promise<string> {
  const { sdp } = await browserOffer('opus');
  tab.send({ type: 'call', to: '+15550001000', sdp, ref: 'out' });
  const callId = (await tab.next((m) => m.type === 'calling', 'calling')).callId;
  await tab.next((m) => m.type === 'answered' && m.callId === callId, 'the trunk answered');
  return callId;
}

test('a flood of binary frames is cut like any flood (one rate-limited error, then 1008)', async () => {
  const tab = await bareTab();
  try {
    for (let i = 0; i < PER_SEC + 30; i++) tab.ws.send(Buffer.from('{"type":"ping"}'), { binary: true });
    const code = await Promise.race([tab.closed, sleep(3000).then(() => null)]);
    assert.equal(code, 1008, `not closed: ${tab.messages.filter((m) => m.type === 'error' && m.code === 'bad-message').length} bad-message errors sent back, ${tab.messages.filter((m) => m.code === 'rate-limited').length} rate-limited`);
    assert.equal(tab.messages.filter((m) => m.code === 'rate-limited').length, 1);
  } finally {
    tab.ws.terminate();
  }
});

test('reject of an incoming call this tab accepted ends the call as a hangup: the call does not go on without a tab', async () => {
  const tab = await bareTab();
  let callId = '';
  try {
    const call = await ringing(tab);
    callId = call.callId;
    const { sdp } = await browserAnswer(call.offer);
    tab.send({ type: 'accept', callId, sdp });
    await tab.next((m) => m.type === 'answered' && m.callId === callId, 'the call answered');
    const from = tab.messages.length;
    tab.send({ type: 'reject', callId });
    const answer = await tab.next((m) => m.callId === callId && (m.type === 'ended' || m.type === 'error'), 'the answer to the reject', from);
    assert.equal(answer.type, 'ended', JSON.stringify(answer));
    assert.equal(answer.cause, 'local-hangup');
    await until(() => !managerCalls().has(callId), 'the call ended at the gateway', 2000).catch(() => undefined);
    assert.equal(managerCalls().has(callId), false, `the tab was told ${JSON.stringify(answer)}, yet the gateway still holds the call`);
  } finally {
    await tab.close();
    (managerCalls().get(callId) as { hangup?(): void } | undefined)?.hangup?.();
  }
});

test('reject of a call this tab placed is refused (invalid-state), and the call goes on', async () => {
  const tab = await bareTab();
  try {
    const callId = await answeredOutbound(tab);
    const from = tab.messages.length;
    tab.send({ type: 'reject', callId });
    const answer = await tab.next((m) => m.callId === callId && (m.type === 'ended' || m.type === 'error'), 'the answer to the reject', from);
    assert.deepEqual([answer.type, answer.code, answer.request], ['error', 'invalid-state', 'reject']);
    assert.ok(managerCalls().has(callId), 'the call ended');
  } finally {
    await tab.close();
  }
});

test('hold then unhold at once: the unhold is refused as in progress (not dropped), and the hold completes', async () => {
  const tab = await bareTab();
  try {
    const callId = await answeredOutbound(tab);
    const from = tab.messages.length;
    tab.send({ type: 'hold', callId });
    tab.send({ type: 'unhold', callId });
    await tab.next((m) => (m.type === 'held' || m.type === 'error') && m.callId === callId, 'the answer to the hold', from);
    await sleep(500); // the trunk answers a re-INVITE after 80 ms
    const after = tab.messages.slice(from).filter((m) => m.callId === callId);
    const unholdRefused = after.find((m) => m.type === 'error' && m.request === 'unhold');
    assert.equal(unholdRefused?.code, 'invalid-state', `the unhold was not refused: ${JSON.stringify(after)}`);
    assert.deepEqual(after.filter((m) => m.type === 'held' || m.type === 'resumed').map((m) => m.type), ['held']);
  } finally {
    await tab.close();
  }
});

test('an accept the schema refuses still names its call (error.callId), as a restart refused so does', async () => {
  const tab = await bareTab();
  try {
    const { callId } = await ringing(tab);
    const from = tab.messages.length;
    tab.send({ type: 'accept', callId, sdp: 'v=0' }); // under the schema's 10 characters
    const refused = await tab.next((m) => m.type === 'error', 'the refusal', from);
    assert.deepEqual([refused.code, refused.request, refused.callId], ['bad-message', 'accept', callId]);
  } finally {
    await tab.close();
  }
});

test('a call header value with a control character other than CR and LF is refused and never reaches SIP', async () => {
  const tab = await bareTab();
  try {
    const before = trunkInvites.length;
    const from = tab.messages.length;
    const { sdp } = await browserOffer('opus');
    tab.send({ type: 'call', to: '+15550003000', sdp, ref: 'nul', headers: { 'X-Account': 'a\u0000b\u000bc\u007fd\u0085e' } });
    const answer = await tab.next((m) => m.ref === 'nul', 'the answer to the call', from);
    assert.deepEqual([answer.type, answer.code], ['error', 'bad-message']);
    await sleep(300);
    assert.equal(trunkInvites.length, before, 'an INVITE reached the trunk');
  } finally {
    await tab.close();
  }
});

test('a transfer whose subscription ends on a provisional report fails without a sipStatus (the 1xx did not end it), and the call goes on', async () => {
  const tab = await bareTab();
  try {
    const callId = await answeredOutbound(tab);
    const from = tab.messages.length;
    // The trunk: 202, NOTIFY 100 (active), NOTIFY 180 with Subscription-State terminated;reason=timeout.
    tab.send({ type: 'transfer', callId, to: '+15550004006', ref: 'nofinal' });
    const failed = await tab.next((m) => m.type === 'error' && m.ref === 'nofinal', 'the transfer failing', from);
    assert.deepEqual([failed.code, failed.request, failed.callId, failed.sipStatus], ['transfer-failed', 'transfer', callId, undefined], JSON.stringify(failed));
    assert.ok(managerCalls().has(callId), 'the call ended');
  } finally {
    await tab.close();
  }
});

test('a transfer refused (the call not answered yet) and a hangup read in one go: the tab gets the call\'s ended, and nothing about the call after it', async () => {
  const tab = await bareTab();
  try {
    const { sdp } = await browserOffer('opus');
    tab.send({ type: 'call', to: '+15550001000', sdp, ref: 'ringing' });
    const callId = (await tab.next((m) => m.type === 'calling', 'calling')).callId; // the trunk answers 150 ms after its 180
    const from = tab.messages.length;
    // Both frames in one write: the gateway reads them in one go, the transfer's refusal still being worked out when the hangup ends the call.
    const socket = (tab.ws as unknown as { _socket: import('node:net').Socket })._socket;
    socket.cork();
    tab.send({ type: 'transfer', callId, to: '+15550004001', ref: 'early' });
    tab.send({ type: 'hangup', callId });
    process.nextTick(() => socket.uncork());
    await tab.next((m) => m.type === 'ended' && m.callId === callId, 'the call ended', from);
    await sleep(300);
    const about = tab.messages.slice(from).filter((m) => m.callId === callId);
    assert.equal(about.at(-1)?.type, 'ended', `after the ended: ${JSON.stringify(about)}`);
    assert.equal(about.filter((m) => m.type === 'ended').length, 1);
  } finally {
    await tab.close();
  }
});
