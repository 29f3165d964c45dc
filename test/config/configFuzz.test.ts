/**
 * Seeded fuzzing of what an operator controls: config files (YAML; JSON by the .json
 * extension) and GATEWAY_* / PORT / SIP_PORT environment overrides, made by mutating valid
 * configurations — wrong types, numbers as text, NaN/Infinity/negative/huge/fractional numbers,
 * port ranges reversed, overlapping, out of 1-65535 or of odd sizes, empty and very long
 * strings, control characters, unknown and near-miss keys, duplicate keys, deep nesting,
 * prototype keys (__proto__, constructor), a BOM, bytes that are not UTF-8, UTF-16, truncated
 * and spliced files, missing and unreadable paths, and secrets in the wrong places (misspelled
 * keys, a section given as text, a password in a SIP URI, YAML that cannot hold them unquoted).
 *
 * Oracle, for every input: loadConfig returns (never throws, never prints: YAML warnings went to
 * stderr), fast. An accepted configuration is one the schema really accepts (validating it again
 * gives it back), shows no secret in redactConfig (what --check-config prints), keeps every
 * timer duration within what setTimeout can hold, and its maps (inbound.didMap,
 * inbound.digest.users) answer only for the keys they were given. A refused one gets lines that
 * each start "config error: ", are one line, name the key path (or the variable, or the file)
 * and carry no TypeError/RangeError or stack text. No secret value (SECRET_PATHS in schema.ts)
 * is ever in an error, a warning or anything printed. A sample of the accepted configurations
 * starts a whole gateway (its ports and hosts moved to this file's loopback ports) or fails with
 * one clear line; either way every port is free again afterwards.
 *
 * Found here and fixed (the "pinned" tests at the end): inbound.digest.users and didMap answered
 * for Object.prototype names, so an INVITE authenticated as user "constructor" with the text of
 * Object as password; trunk.optionsKeepaliveSec and inbound.ringTimeoutSec took values past what
 * a timer holds (Node then fires it after 1 ms); a list index in a variable name was unbounded
 * (item 4294967294 ran the process out of memory, item 100000 gave 100000 lines; "01" was
 * silently no item); YAML nested thousands deep overflowed the parser's stack, and a second such
 * file aborted the process; YAML errors quoted an unquoted secret (*x, >x) and its warnings
 * printed the whole line (!x) to stderr; a file that is not UTF-8 was read with U+FFFD in place
 * (a Latin-1 password silently changed) and JSON with a BOM was "invalid JSON"; key and variable
 * names went into errors raw (a newline split the line, a huge key was printed whole); a
 * password in a SIP URI was accepted and then shown by --check-config and the start log line.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync, spawnSync } from 'node:child_process';
import { createSocket } from 'node:dgram';
import { isUtf8 } from 'node:buffer';
import { mkdirSync, symlinkSync, writeFileSync } from 'node:fs';
import { createHash } from 'node:crypto';
import net from 'node:net';
import { join } from 'node:path';
import pino from 'pino';
import { stringify as toYaml } from 'yaml';
import { loadConfig, redactConfig, validateConfig, type GatewayConfig, type LoadResult } from '../../src/config';
import { DigestServer, parseSipMessage, type SipRequest } from '../../src/sip';
import { Gateway } from '../../src/gateway';
import { explain, prng, type Prng } from '../support/fuzz';
import { tempDir } from '../support/tempDir';

const ROOT = join(__dirname, '..', '..');
const work = tempDir('gw-config-fuzz-');

/** Ports this file may bind (28550-28579), for the gateways started from fuzzed configurations. */
const PORTS = { http: 28550, sip: 28551, demo: 28552, media: [28560, 28569] as [number, number], webrtc: [28570, 28579] as [number, number] };

// ---- inputs --------------------------------------------------------------------------------

/** Secret values: each ends in a marker no other value holds; a marker found in output is a leak. */
const SECRET = {
  trunk: 'Trunk-Pw-Qx7Zr4Lm',
  hs256: 'Hs256-Secret-0123456789abcdef-Kp9Wd2Vb',
  turn: 'Turn-Cred-Ye5Nc8Tg',
  digest: 'Digest-Pw-Ha3Js6Uf',
  reg: 'Reg-Pw-Mb1Xo4Ri',
};
const markerOf = (secret: string) => secret.slice(-8);
/** A fresh secret for a mutation; its marker (digits and "Zj") is in no key name or message. */
const secretValue = (r: Prng, prefix: string) => `${prefix}-${r.int(1e6)}-Pw${String(r.int(1e6)).padStart(6, '0')}Zj`;

type Json = null | boolean | number | string | Raw | Json[] | { [k: string]: Json };

/** A scalar written into the file's text as it is (NaN, .inf, 0x1F, a lone surrogate, deep nesting): what JSON/YAML values cannot say. */
class Raw {
  constructor(readonly json: string, readonly yaml: string) {}
}

/** Every setting, a realistic value each: token auth, a trunk with digest and SRTP, TURN, inbound digest and registrations. */
const FULL: { [k: string]: Json } = {
  http: { host: '127.0.0.1', port: 8080 },
  sip: { host: '127.0.0.1', port: 5060, transports: ['udp', 'tcp'], sessionExpiresSec: 1800, minSessionExpiresSec: 90, maxConnections: 1000, maxConnectionsPerIp: 50, firstMessageTimeoutSec: 10, dnsServers: ['10.0.0.2', '[2001:db8::53]:53'] },
  trunk: { uri: 'sip:trunk.example.com:5060', username: '4930123456', password: SECRET.trunk, fromDomain: 'trunk.example.com', outboundProxy: 'sip:sbc.example.com', srtp: 'optional', codecs: ['PCMA', 'PCMU'], register: true, optionsKeepaliveSec: 30, answerTimeoutSec: 120, sourceCidrs: ['198.51.100.0/24', '2001:db8::/32'] },
  demo: { sipPort: 5062 },
  media: { host: '127.0.0.1', portRange: [30000, 30999], inactivityTimeoutSec: 30, opusComplexity: 1, workers: 0 },
  webrtc: { hostAddresses: ['127.0.0.1'], portRange: [40000, 40999], preferPcmu: false, connectTimeoutSec: 15, stunServers: ['stun:stun.example.com:3478'], turnServers: [{ urls: ['turn:turn.example.com:3478?transport=udp'], username: 'lab', credential: SECRET.turn }] },
  auth: { mode: 'token', hs256Secret: SECRET.hs256, issuer: 'site', audience: 'gateway', maxTokenLifetimeSec: 3600 },
  dialplan: { defaultCountryCode: '49', allow: ['+49*'], deny: ['+49900*'], allowInternational: false, allowPremium: false },
  inbound: { didMap: { '+4930123456': 'support' }, routeByUserPart: true, ringTimeoutSec: 45, registerUsers: { registrar: 'sip:pbx.example.com', domain: 'pbx.example.com', expiresSec: 300, password: SECRET.reg }, digest: { realm: 'gw', users: { pbx: SECRET.digest } } },
  limits: { connectsPerIpPerMin: 30, callsPerIdentityPerMin: 10, maxCallsPerIdentity: 2, maxCallsGlobal: 200, wsMaxMessageBytes: 65536, wsMessagesPerSec: 50, wsHeartbeatSec: 20, wsHelloTimeoutSec: 10, wsResumeGraceSec: 20 },
  edge: { allowedOrigins: ['https://app.example.com', 'https://*.example.org'] },
  cdr: { path: 'cdr.jsonl' },
  drain: { timeoutSec: 30 },
  log: { level: 'info', pretty: false },
};
/** The no-trunk demo set-up (demo auth, loopback). */
const DEMO: { [k: string]: Json } = { http: { port: 9000 }, sip: { port: 5070 }, inbound: { didMap: { '1000': 'alice' } }, log: { level: 'debug' } };
const BASES = { full: FULL, demo: DEMO };

/** Keys a base leaves out, to be added. */
const ABSENT_KEYS = ['sip.tlsPort', 'sip.advertisedHost', 'sip.tls', 'http.tls', 'media.advertisedHost', 'webrtc.bindAddress', 'webrtc.advertisedAddress', 'auth.es256PublicKeyFile', 'demo.enabled', 'trunk', 'inbound.digest.users.alice', 'inbound.didMap.+15550001'];

/**
 * Keys whose seconds become a setTimeout/setInterval delay as they are: more than 2^31-1 ms and
 * Node fires them after 1 ms. (media.inactivityTimeoutSec and drain.timeoutSec are compared with
 * clocks, never handed to a timer whole.)
 */
const TIMER_SECONDS = ['sip.sessionExpiresSec', 'sip.minSessionExpiresSec', 'sip.firstMessageTimeoutSec', 'trunk.optionsKeepaliveSec', 'trunk.answerTimeoutSec', 'webrtc.connectTimeoutSec', 'inbound.ringTimeoutSec', 'inbound.registerUsers.expiresSec', 'limits.wsHeartbeatSec', 'limits.wsHelloTimeoutSec', 'limits.wsResumeGraceSec'];
const MAX_TIMER_MS = 2 ** 31 - 1;

const deep = (n: number, open = '[', close = ']') => new Raw(open.repeat(n) + close.repeat(n), open.repeat(n) + close.repeat(n));

/** Values for any key: wrong types, numbers that are not, strings that are not what a key wants. */
const VALUES: Json[] = [
  null, true, false, 0, -0, -1, 1, 2, 0.5, 1.5, -1.5, 59, 65535, 65536, 99999, 1e308, -1e308, 2 ** 31, 2 ** 53, 1e-300, 3000000,
  new Raw('1e999', '.inf'), new Raw('-1e999', '-.inf'), new Raw('NaN', '.nan'), new Raw('0x1F90', '0x1F90'), new Raw('08080', '08080'),
  new Raw('9007199254740993', '9007199254740993'), new Raw('1E2', '1E2'), new Raw('-0.0', '-0.0'), new Raw('"\\ud800"', '"\\ud800"'),
  new Raw('"a\\u0000b"', '"a\\0b"'), new Raw('[1,2,]', '[1, 2, ]'), new Raw('{"a":1,"a":2}', '{a: 1, a: 2}'),
  new Raw('{"__proto__":{"port":1},"constructor":{"x":1}}', '{__proto__: {port: 1}, constructor: {x: 1}}'),
  new Raw('~', '~'), new Raw('yes', 'yes'), new Raw('on', 'on'), new Raw('0o17', '0o17'), new Raw('1_000', '1_000'),
  deep(40), deep(300), deep(3000), deep(3000, '{"a":', '}'),
  '', ' ', '8080', ' 8080 ', '0x1F90', '1e3', 'true', 'yes', 'null', 'NaN', 'Infinity', '-1', '08080', '1,2',
  'x'.repeat(70), 'x'.repeat(5000), 'a\nb', 'a\r\nb', 'a\u0000b', '\u202eevil', '\ud800', '😀', 'é', '\t', '\u00a0',
  '../../etc/passwd', 'sip:', 'sips:a b', 'https://', 'https://app.example.com/', '0.0.0.0', '::', '::ffff:0.0.0.0', '127.0.0.1', 'localhost', '203.0.113.5',
  '*', '+', '?', '[', '{', 'udp', 'tls', 'PCMU', 'opus', 'mandatory', 'token', 'demo', 'silent',
  [], [1], [1, 2], [2, 1], [1, 2, 3], ['a'], [null], [[]], [{}], ['udp', 'udp'], ['tls'], ['0.0.0.0'], ['x'.repeat(5000)],
  {}, { a: 1 }, { port: 8080 }, { certFile: '/nonexistent.pem', keyFile: '/nonexistent.key' }, { certFile: '', keyFile: '' },
];

/** For the two port ranges: reversed, empty, out of 1-65535, one port pair or none, overlapping, not numbers. */
const PORT_RANGES: Json[] = [
  [2, 1], [30000, 30000], [0, 10], [1, 65536], [65534, 65535], [30000, 30001], [30001, 30002], [30001, 30001], [40000, 40999], [30500, 40500],
  [1, 65535], [8080, 8090], [5060, 5070], [30000], [30000, 30999, 31000], ['30000', '30999'], [30000.5, 30999], [-30999, -30000],
  { low: 30000, high: 30999 }, '30000-30999', '30000,30999', [new Raw('1e999', '.inf'), 1], [new Raw('NaN', '.nan'), 40000],
];

/** Key names that are not settings: prototype names, near misses, odd characters, huge. */
const ODD_KEYS = ['__proto__', 'constructor', 'prototype', 'toString', 'hasOwnProperty', 'valueOf', 'Port', 'PORT', 'por_t', 'prot', 'passwd', 'password', 'secret', 'credentials', '', ' ', 'a.b', 'a\nb', 'a\u0000b', '\u202e', '😀', 'k'.repeat(3000), '0', '-1', '$ref', '<<'];

interface Input {
  kind: string;
  base: keyof typeof BASES;
  /** The mutated configuration, or text/bytes as written. */
  file?: { name: string; bytes: Buffer };
  env: Record<string, string>;
  argv?: string[];
  /** An error must name one of these (a key path, a variable, the file); empty: any clear line will do. */
  names: string[];
  /** Secret values in this input that must never be printed. */
  secrets: string[];
  /** When set: the outcome must be the same as for this other input (a BOM, CRLF line ends). */
  sameAs?: Input;
  /** Not UTF-8: must be refused. */
  notUtf8?: boolean;
  note: string;
}

type Path = (string | number)[];

function paths(v: Json, prefix: Path = []): Path[] {
  const out: Path[] = prefix.length ? [prefix] : [];
  if (Array.isArray(v)) v.forEach((x, i) => out.push(...paths(x, [...prefix, i])));
  else if (v !== null && typeof v === 'object' && !(v instanceof Raw)) for (const k of Object.keys(v)) out.push(...paths(v[k], [...prefix, k]));
  return out;
}

function setIn(root: { [k: string]: Json }, path: Path, value: Json | undefined): void {
  let o: Json = root;
  for (let i = 0; i < path.length - 1; i++) {
    const container = o as { [k: string]: Json };
    const k = path[i] as string;
    if (container[k] === null || typeof container[k] !== 'object' || container[k] instanceof Raw) container[k] = typeof path[i + 1] === 'number' ? [] : {};
    o = container[k];
  }
  const last = path[path.length - 1] as string;
  if (value === undefined) delete (o as { [k: string]: Json })[last];
  else Object.defineProperty(o, last, { value, enumerable: true, writable: true, configurable: true });
}

const clone = (v: { [k: string]: Json }): { [k: string]: Json } => structuredCloneRaw(v) as { [k: string]: Json };
function structuredCloneRaw(v: Json): Json {
  if (v instanceof Raw || v === null || typeof v !== 'object') return v;
  if (Array.isArray(v)) return v.map(structuredCloneRaw);
  const o: { [k: string]: Json } = {};
  for (const k of Object.keys(v)) Object.defineProperty(o, k, { value: structuredCloneRaw(v[k]), enumerable: true, writable: true, configurable: true });
  return o;
}

/** The configuration as file text: JSON (indented or not) or YAML, with Raw values put in as written. */
function render(v: { [k: string]: Json }, format: 'json' | 'json1' | 'yaml'): string {
  const raws: Raw[] = [];
  const replacer = (_k: unknown, x: unknown) => {
    if (x instanceof Raw) { raws.push(x); return `RAWVALUE${raws.length - 1}X`; }
    return x;
  };
  let text = format === 'yaml' ? toYaml(v, replacer, { lineWidth: 0 }) : JSON.stringify(v, replacer, format === 'json' ? 2 : undefined);
  raws.forEach((r, i) => {
    const placeholder = format === 'yaml' ? `RAWVALUE${i}X` : `"RAWVALUE${i}X"`;
    text = text.split(placeholder).join(format === 'yaml' ? r.yaml : r.json);
  });
  return text;
}

const fmtPath = (p: Path) => p.join('.');

function describeInput(x: Input): string {
  const env = Object.entries(x.env).map(([k, v]) => `${k}=${JSON.stringify(v.length > 200 ? `${v.slice(0, 200)}…(${v.length})` : v)}`).join(' ');
  let file = '';
  if (x.file) {
    const t = x.file.bytes.toString('latin1');
    file = ` file ${x.file.name} (${x.file.bytes.length} bytes): ${JSON.stringify(t.length > 1500 ? `${t.slice(0, 1500)}…` : t)}`;
  }
  return `[${x.kind}] ${x.note}; base ${x.base}${x.argv ? ` argv ${JSON.stringify(x.argv)}` : ''}${env ? ` env ${env}` : ''}${file}`;
}

// ---- mutations of the configuration --------------------------------------------------------

/** Secrets put where they do not belong, or in forms the schema refuses: never to be printed. */
function misplaceSecret(r: Prng, c: { [k: string]: Json }): { note: string; names: string[]; secret: string } {
  const S = secretValue(r, 'Moved');
  const cases: Array<() => { note: string; names: string[] }> = [
    () => { const p = r.pick(['trunk.password', 'auth.hs256Secret', 'webrtc.turnServers.0.credential', 'inbound.registerUsers.password', 'inbound.digest.users.pbx']); setIn(c, keyPath(p), r.pick<Json>([[S], { value: S }, `${S}\n`, S.slice(0, 3), S.repeat(300), 123456789012, true, new Raw(`"${S}\\q"`, `"${S}\\q"`)]) as Json); return { note: `secret ${p} of the wrong type or form`, names: [p] }; },
    () => { const [section, key] = r.pick([['trunk', 'pasword'], ['trunk', 'Password'], ['trunk', 'secret'], ['auth', 'hs256secret'], ['auth', 'secret'], ['auth', 'hs256_secret'], ['webrtc.turnServers.0', 'credentials'], ['webrtc.turnServers.0', 'password'], ['inbound.registerUsers', 'pass'], ['inbound.digest', 'user'], ['', 'password']]); setIn(c, keyPath(section ? `${section}.${key}` : key), S); return { note: `secret under an unknown key ${section}.${key}`, names: [section ? `${section}.${key}` : key] }; },
    () => { const [p, v] = r.pick<[string, Json]>([['trunk', S], ['webrtc.turnServers', `turn:x.example.com,lab,${S}`], ['webrtc.turnServers', [S]], ['webrtc.turnServers.0', S], ['inbound.digest', `pbx:${S}`], ['inbound.digest.users', S], ['inbound.digest.users', [S]], ['inbound.registerUsers', S], ['auth', { hs256Secret: [S] }]]); setIn(c, keyPath(p), v); return { note: `secret in place of the section ${p}`, names: [p] }; },
    () => { const [p, v] = r.pick<[string, string]>([['trunk.uri', `sip:4930123456:${S}@trunk.example.com`], ['trunk.uri', `sips:u:${S}@trunk.example.com:5061;transport=tls`], ['trunk.outboundProxy', `sip:u:${S}@sbc.example.com`], ['inbound.registerUsers.registrar', `sip:alice:${S}@pbx.example.com`], ['trunk.uri', `sip:u:${S}@trunk.example.com x`]]); setIn(c, keyPath(p), v); return { note: `a password in the SIP URI ${p}`, names: [p] }; },
  ];
  const made = r.pick(cases)();
  return { ...made, secret: S };
}

/** "a.b.0.c" → ['a', 'b', 0, 'c']. */
function keyPath(dotted: string): Path {
  return dotted.split('.').map((s) => (/^\d+$/.test(s) ? Number(s) : s));
}

/** One structural mutation of a configuration (in place); what an error must then name. */
function mutate(r: Prng, c: { [k: string]: Json }): { note: string; names: string[]; secret?: string } {
  const all = paths(c);
  const roll = r.int(100);
  if (roll < 40) {
    const p = r.pick(all);
    const isRange = String(p[p.length - 1]) === 'portRange';
    const v = isRange && r.int(3) > 0 ? r.pick(PORT_RANGES) : r.pick(VALUES);
    setIn(c, p, structuredCloneRaw(v));
    return { note: `${fmtPath(p)} = ${short(v)}`, names: [fmtPath(p)] };
  }
  if (roll < 50) {
    const p = keyPath(r.pick(ABSENT_KEYS));
    const v = r.pick(VALUES);
    setIn(c, p, structuredCloneRaw(v));
    return { note: `added ${fmtPath(p)} = ${short(v)}`, names: [fmtPath(p)] };
  }
  if (roll < 62) {
    const sections = [[], ...all.filter((p) => { let o: Json = c; for (const k of p) o = (o as { [k: string]: Json })[k as string]; return o !== null && typeof o === 'object' && !Array.isArray(o) && !(o instanceof Raw); })];
    const p = r.pick(sections);
    const k = r.pick(ODD_KEYS);
    setIn(c, [...p, k], structuredCloneRaw(r.pick(VALUES)));
    // The line names the section, and the key as it can be printed.
    return { note: `unknown key ${JSON.stringify(k).slice(0, 40)} in ${fmtPath(p) || '(top level)'}`, names: [p.length ? `${fmtPath(p)}.` : 'unknown setting'] };
  }
  if (roll < 70) {
    const p = r.pick(all);
    setIn(c, p, undefined);
    return { note: `removed ${fmtPath(p)}`, names: [fmtPath(p)] };
  }
  if (roll < 78) {
    // Two ports that collide, or a range around a listener.
    const [a, b] = r.pick<[string, string]>([['http.port', 'sip.port'], ['http.port', 'media.portRange'], ['sip.port', 'webrtc.portRange'], ['demo.sipPort', 'media.portRange'], ['media.portRange', 'webrtc.portRange'], ['sip.tlsPort', 'webrtc.portRange']]);
    const port = 30000 + r.int(1000);
    setIn(c, keyPath(a), a.endsWith('Range') ? [port - 10, port + 11] : port);
    setIn(c, keyPath(b), b.endsWith('Range') ? [port - r.int(5), port + 1 + r.int(5)] : port);
    if (a === 'sip.tlsPort' || r.int(4) === 0) setIn(c, keyPath('sip.transports'), ['udp', 'tls']);
    return { note: `${a} and ${b} around ${port}`, names: [a, b, 'sip.tls'] };
  }
  if (roll < 88) return misplaceSecret(r, c);
  // Several at once.
  const first = mutate(r, c);
  const second = mutate(r, c);
  return { note: `${first.note}; ${second.note}`, names: [...first.names, ...second.names], secret: first.secret ?? second.secret };
}

function short(v: Json): string {
  if (v instanceof Raw) return `raw ${v.json.length > 40 ? `${v.json.slice(0, 40)}…` : v.json}`;
  const s = JSON.stringify(v);
  return s.length > 60 ? `${s.slice(0, 60)}…(${s.length})` : s;
}

/** Where a secret sits unquoted in YAML text, put a character YAML reads as syntax in front of it. */
function yamlAroundSecret(r: Prng, text: string, secret: string): string {
  const at = text.indexOf(`: ${secret}`);
  if (at < 0) return text;
  const form = r.pick(['*S', '&S', '!S', '>S', '|S', '%S', '@S', '`S', '"S', "'S", 'S: x', '{S', '[S', '!S x', '&a S', '*S x', '!!int S', '!<S> x']);
  return `${text.slice(0, at + 2)}${form.replace('S', secret)}${text.slice(at + 2 + secret.length)}`;
}

/** Byte-level damage to a file: its encoding, its lines, its end. */
function damage(r: Prng, bytes: Buffer): { bytes: Buffer; note: string; notUtf8?: boolean; sameOutcome?: boolean } {
  const lines = bytes.toString('utf8').split('\n');
  switch (r.int(10)) {
    case 0: return { bytes: Buffer.concat([Buffer.from([0xef, 0xbb, 0xbf]), bytes]), note: 'UTF-8 BOM', sameOutcome: true };
    case 1: {
      const bad = r.pick([[0xff], [0xc3], [0xed, 0xa0, 0x80], [0xc0, 0x80], [0xe9], [0xf8, 0x88, 0x80, 0x80, 0x80]]);
      const at = r.int(bytes.length + 1);
      return { bytes: Buffer.concat([bytes.subarray(0, at), Buffer.from(bad), bytes.subarray(at)]), note: `bytes ${bad.map((b) => b.toString(16)).join(' ')} at ${at}`, notUtf8: true };
    }
    case 2: return { bytes: Buffer.concat([Buffer.from([0xff, 0xfe]), Buffer.from(bytes.toString('utf8'), 'utf16le')]), note: 'UTF-16LE with BOM', notUtf8: true };
    case 3: return { bytes: Buffer.from(lines.join('\r\n')), note: 'CRLF line ends' };
    case 4: { const at = r.int(bytes.length + 1); return { bytes: bytes.subarray(0, at), note: `cut at ${at}` }; }
    case 5: { const i = r.int(lines.length); lines.splice(i, 0, lines[i]); return { bytes: Buffer.from(lines.join('\n')), note: `line ${i + 1} twice` }; }
    case 6: { const i = r.int(lines.length); lines.splice(i, 1); return { bytes: Buffer.from(lines.join('\n')), note: `line ${i + 1} removed` }; }
    case 7: { const i = r.int(lines.length); lines[i] = lines[i].replace(/^ +/, (s) => '\t'.repeat(Math.max(1, s.length / 2))); return { bytes: Buffer.from(lines.join('\n')), note: `line ${i + 1} indented with tabs` }; }
    case 8: { const at = r.int(bytes.length + 1); const ch = r.pick([':', '-', '#', '"', "'", '[', ']', '{', '}', ',', '&', '*', '!', '|', '>', '%', '@', '`', '\0', '\x1b']); return { bytes: Buffer.concat([bytes.subarray(0, at), Buffer.from(ch), bytes.subarray(at)]), note: `${JSON.stringify(ch)} inserted at ${at}` }; }
    default: return { bytes: Buffer.concat([bytes, Buffer.from(r.pick(['\n---\nhttp: {}\n', '\n...\n', '\nx', '\n# end', '\n\u0000', '\n%YAML 1.1\n', '\n? [k, v]\n: 1\n', '\nhttp:\n  ? {a: 1}\n  : 1\n', '\na: &x [*x]\n', `\nl: &a [1,1,1,1,1,1,1,1,1,1]\nm: &b [${'*a,'.repeat(10)}]\nn: [${'*b,'.repeat(10)}]\n`]))]), note: 'appended' };
  }
}

function makeFileInput(r: Prng): Input {
  const base = r.pick(['full', 'full', 'demo'] as const);
  const c = clone(BASES[base]);
  const secrets = base === 'full' ? Object.values(SECRET) : [];
  const m = r.int(10) < 9 ? mutate(r, c) : { note: 'unchanged', names: [] as string[] };
  if ('secret' in m && m.secret) secrets.push(m.secret);
  const format = r.pick(['yaml', 'yaml', 'json', 'json1'] as const);
  const ext = format === 'yaml' ? r.pick(['.yaml', '.yml', '', '.txt']) : r.pick(['.json', '.json', '.JSON', '.yaml']);
  let text = render(c, format);
  let note = m.note;
  if (format === 'yaml' && r.int(3) === 0) {
    const s = r.pick(secrets.length ? secrets : ['']);
    if (s) {
      text = yamlAroundSecret(r, text, s);
      note += '; YAML syntax around a secret';
      m.names.push('trunk.password', 'auth.hs256Secret', 'webrtc.turnServers', 'inbound.registerUsers', 'inbound.digest');
    }
  }
  let bytes: Buffer = Buffer.from(text);
  const input: Input = { kind: `file ${format}`, base, env: {}, names: m.names, secrets, note, file: { name: `fuzz${ext}`, bytes } };
  if (r.int(4) === 0) {
    const d = damage(r, bytes);
    bytes = d.bytes;
    // Damage changes what an error names: the file, or any key.
    return { ...input, kind: `${input.kind}, damaged`, names: [], note: `${note}; ${d.note}`, file: { name: `fuzz${ext}`, bytes }, notUtf8: d.notUtf8 && !isUtf8(bytes), sameAs: d.sameOutcome ? input : undefined };
  }
  return input;
}

// ---- mutations of the environment ------------------------------------------------------------

const ENV_VALUES = ['', ' ', '0', '1', '-1', '80.5', '65536', '1e999', 'NaN', 'Infinity', '0x1F90', 'yes', 'off', 'maybe', 'null', '[]', '[', '{', '{}', '[1,2]', '[2,1]', '1,2', ',,,', '["udp","udp"]', '{"a":1}', '{"__proto__":{"x":1}}', '"quoted"', 'a\nb', 'x'.repeat(5000), '😀', '\u0000', 'tcp://10.0.0.7:5060', 'udp://10.0.0.7:5060', 'sip:t.example.com', '127.0.0.1', '0.0.0.0', '[' + '['.repeat(3000)];
/** Every key of FULL, plus keys it leaves out. */
const KEY_PATHS = [...paths(FULL).map(fmtPath), ...ABSENT_KEYS];

/** A key path as a variable name: any case, underscores in a segment, or none. */
function envName(r: Prng, dotted: string): string {
  const segs = dotted.split('.').map((s) => {
    switch (r.int(4)) {
      case 0: return s.toUpperCase();
      case 1: return s.replace(/([a-z0-9])([A-Z])/g, '$1_$2').toUpperCase();
      case 2: return s.toLowerCase();
      default: return s;
    }
  });
  return `GATEWAY_${segs.join('__')}`;
}

function makeEnvInput(r: Prng): Input {
  const base = r.pick(['full', 'demo'] as const);
  const secrets = base === 'full' ? Object.values(SECRET) : [];
  const env: Record<string, string> = {};
  const names: string[] = [];
  const notes: string[] = [];
  for (let n = 1 + r.int(3); n > 0; n--) {
    const kind = r.int(10);
    if (kind < 5) {
      const p = r.pick(KEY_PATHS);
      const name = envName(r, p);
      env[name] = r.pick(ENV_VALUES);
      names.push(name, p);
    } else if (kind < 6) {
      const name = r.pick(['PORT', 'SIP_PORT', 'GATEWAY_PORT', 'GATEWAY_SERVICE_HOST', 'GATEWAY_CONFIG', 'GATEWAY_', 'GATEWAY__', 'GATEWAY_HTTP__', 'GATEWAY_HTTP____PORT', 'GATEWAY___PROTO____X', 'GATEWAY_CONSTRUCTOR__X', 'GATEWAY_INBOUND__DIDMAP__CONSTRUCTOR', 'GATEWAY_INBOUND__DIGEST__USERS__TOSTRING', 'GATEWAY_HTTP__PO\nRT', `GATEWAY_HTTP__${'X'.repeat(3000)}`, 'GATEWAY_WEBRTC__HOSTADDRESSES__01', 'GATEWAY_WEBRTC__TURNSERVERS__1__URLS']);
      env[name] = r.pick(ENV_VALUES);
      names.push(name.split('\n')[0].slice(0, 40));
    } else if (kind < 7) {
      // A list item far past the end: one error, at once, not one per missing item.
      const idx = r.pick(['999', '1000', '100000', '4294967294', '4294967296', '99999999999999999999']);
      const p = r.pick(['WEBRTC__HOSTADDRESSES', 'WEBRTC__TURNSERVERS', 'SIP__TRANSPORTS', 'DIALPLAN__ALLOW', 'TRUNK__SOURCECIDRS']);
      const name = `GATEWAY_${p}__${idx}${p === 'WEBRTC__TURNSERVERS' ? '__URLS' : ''}`;
      env[name] = r.pick(['127.0.0.1', 'turn:t.example.com', 'udp', '+1*', '10.0.0.0/8']);
      names.push(name);
    } else {
      const S = secretValue(r, 'Env');
      secrets.push(S);
      const [name, value] = r.pick<[string, string]>([
        ['GATEWAY_TRUNK__PASSWORD', S.slice(0, 0)], ['GATEWAY_TRUNK__PASSWORD', S], ['GATEWAY_AUTH__HS256SECRET', S.slice(0, 10)], ['GATEWAY_AUTH__HS256_SECRET', `[${S}`],
        ['GATEWAY_WEBRTC__TURNSERVERS', `turn:x.example.com,lab,${S}`], ['GATEWAY_WEBRTC__TURNSERVERS', `[{"urls":"turn:x","credential":"${S}"`], ['GATEWAY_WEBRTC__TURNSERVERS', `[{"urls":"turn:x","credential":${S}}]`],
        ['GATEWAY_WEBRTC__TURNSERVERS__0', `{"urls":"turn:x","credential":${S}}`], ['GATEWAY_WEBRTC__TURNSERVERS__0__CREDENTIAL', `{${S}`], ['GATEWAY_WEBRTC__TURNSERVERS__3__CREDENTIAL', S],
        ['GATEWAY_INBOUND__DIGEST__USERS', `{"pbx":${S}}`], ['GATEWAY_INBOUND__DIGEST__USERS', `{"pbx":"${S}"`], ['GATEWAY_INBOUND__DIGEST__USERS', `["${S}"]`], ['GATEWAY_INBOUND__DIGEST', `pbx:${S}`],
        ['GATEWAY_INBOUND__DIGEST__USERS__PBX', S.slice(0, 5)], ['GATEWAY_INBOUND__REGISTERUSERS', S], ['GATEWAY_INBOUND__REGISTERUSERS__PASSWORD', `[${S}]`], ['GATEWAY_TRUNK__PASSWORD__X', S],
        ['GATEWAY_TRUNK__URI', `sip:u:${S}@trunk.example.com`], ['GATEWAY_TRUNK__URI', `sip:u:${S}@trunk.example.com bad`], ['GATEWAY_TRUNK', S], ['GATEWAY_AUTH', `{"hs256Secret":"${S}"`],
        ['GATEWAY_TRUNK__OUTBOUNDPROXY', `sip:u:${S}@sbc.example.com`], ['GATEWAY_INBOUND__REGISTERUSERS__REGISTRAR', `sip:a:${S}@pbx.example.com`],
      ]);
      if (value === '') continue;
      env[name] = value;
      names.push(name);
      notes.push('secret in the environment');
    }
  }
  const format = r.pick(['yaml', 'json'] as const);
  const ext = format === 'json' ? '.json' : '.yaml';
  const bytes = Buffer.from(render(clone(BASES[base]), format));
  return { kind: 'env', base, env, names, secrets, note: notes.join(', ') || 'overrides', file: { name: `envbase${ext}`, bytes } };
}

// ---- running one input and checking it -----------------------------------------------------

/** Runs fn with everything it would print (stderr, console, process warnings) kept instead. */
function quietly<T>(fn: () => T): { value: T; printed: string[] } {
  const printed: string[] = [];
  const saved = { emitWarning: process.emitWarning, write: process.stderr.write, warn: console.warn, error: console.error, log: console.log };
  process.emitWarning = ((w: string | Error) => { printed.push(typeof w === 'string' ? w : `${w.name}: ${w.message}`); }) as typeof process.emitWarning;
  process.stderr.write = ((chunk: string | Uint8Array) => { printed.push(String(chunk)); return true; }) as typeof process.stderr.write;
  console.warn = console.error = console.log = (...a: unknown[]) => { printed.push(a.map(String).join(' ')); };
  try {
    return { value: fn(), printed };
  } finally {
    process.emitWarning = saved.emitWarning;
    process.stderr.write = saved.write;
    console.warn = saved.warn;
    console.error = saved.error;
    console.log = saved.log;
  }
}

function run(x: Input, dir: string): { result: LoadResult; printed: string[]; ms: number } {
  let argv = x.argv ?? [];
  if (x.file && !x.argv) {
    const p = join(dir, x.file.name);
    writeFileSync(p, x.file.bytes);
    argv = ['--config', p];
  }
  const t0 = performance.now();
  const { value, printed } = quietly(() => loadConfig(argv, x.env));
  return { result: value, printed, ms: performance.now() - t0 };
}

const CRASH_TEXT = /TypeError|RangeError|ReferenceError|SyntaxError|Maximum call stack|Cannot read prop|is not a function|is not iterable|\[object Object\]|undefined|\n\s+at |node:internal/;

/** Records a configuration holds: they must answer only for keys they were given. */
const PROTO_NAMES = ['constructor', 'toString', 'valueOf', 'hasOwnProperty', '__proto__', 'isPrototypeOf', '__defineGetter__'];

function getDotted(o: unknown, dotted: string): unknown {
  let v = o as Record<string, unknown> | undefined;
  for (const k of dotted.split('.')) {
    if (v === null || typeof v !== 'object') return undefined;
    v = v[k] as Record<string, unknown> | undefined;
  }
  return v;
}

function checkOutcome(x: Input, result: LoadResult, printed: string[], ms: number): void {
  assert.ok(ms < 2000, `loadConfig took ${Math.round(ms)} ms`);
  assert.deepEqual(printed, [], 'the loader printed something');
  const leaks = (text: string) => x.secrets.filter((s) => text.includes(markerOf(s)));
  if (result.ok) {
    const c = result.config;
    for (const w of result.warnings) {
      assert.match(w, /^config warning: /);
      assert.doesNotMatch(w, /\n/);
      assert.deepEqual(leaks(w), [], `a secret in a warning: ${w}`);
    }
    assert.ok(!x.notUtf8, 'a file that is not UTF-8 was accepted (its text silently changed)');
    // The schema really accepts it: validated again, the same configuration comes back.
    const again = validateConfig(JSON.parse(JSON.stringify(c)) as Record<string, unknown>);
    assert.ok(again.ok, `the accepted configuration fails validation: ${again.ok ? '' : again.errors.join(' | ')}`);
    assert.deepEqual(JSON.parse(JSON.stringify(again.config)), JSON.parse(JSON.stringify(c)));
    // What --check-config prints.
    const shown = JSON.stringify(redactConfig(c));
    assert.deepEqual(leaks(shown), [], `a secret in the printed configuration: ${shown.slice(0, 300)}`);
    for (const key of TIMER_SECONDS) {
      const v = getDotted(c, key);
      if (typeof v === 'number') assert.ok(v * 1000 <= MAX_TIMER_MS, `${key} = ${v} s does not fit a timer (Node fires it after 1 ms)`);
    }
    for (const [key, map] of [['inbound.didMap', c.inbound.didMap], ['inbound.digest.users', c.inbound.digest?.users]] as const) {
      if (!map) continue;
      for (const name of PROTO_NAMES) {
        if (!Object.prototype.hasOwnProperty.call(map, name)) assert.equal((map as Record<string, unknown>)[name], undefined, `${key}[${JSON.stringify(name)}] answers without being configured`);
      }
    }
    return;
  }
  assert.ok(Array.isArray(result.errors) && result.errors.length > 0, 'refused without an error');
  for (const e of result.errors) {
    assert.equal(typeof e, 'string');
    assert.match(e, /^config error: /);
    assert.doesNotMatch(e, /[\r\n]/, `an error line of several lines: ${JSON.stringify(e.slice(0, 300))}`);
    assert.ok(e.length <= 600, `an error line of ${e.length} characters: ${JSON.stringify(e.slice(0, 300))}`);
    assert.doesNotMatch(e, CRASH_TEXT, `an error that is a crash, not a message: ${e.slice(0, 300)}`);
    assert.deepEqual(leaks(e), [], `a secret in an error: ${e.slice(0, 300)}`);
  }
  // Refusing 2000 lines at once is no clearer than refusing the first few.
  assert.ok(result.errors.length <= 40, `${result.errors.length} error lines`);
  if (x.notUtf8) assert.ok(result.errors.some((e) => x.file && e.includes(x.file.name)), 'a file that is not UTF-8 is refused naming the file');
  if (x.names.length) assert.ok(namesOneOf(result.errors, x.names, x.file?.name), `no error names ${x.names.join(' or ')}`);
}

/** A key path or GATEWAY_ variable as lower-case dotted segments without underscores: GATEWAY_AUTH__HS256_SECRET → auth.hs256secret. */
const normKey = (s: string) => s.toLowerCase().replace(/^gateway_/, '').split('__').join('.').replace(/_/g, '');

/**
 * Does some error name one of the keys? By name, or by a key in the same section: a key of a
 * section that lacks a required one (a trunk without uri) is refused as that missing key, and a
 * list or tuple as a whole. Settings that decide others' defaults (a trunk or demo.enabled
 * decides the auth mode, http.host whether demo auth is allowed) may be refused as auth.
 */
function namesOneOf(errors: string[], names: string[], fileName?: string): boolean {
  const errorSections = errors.map((e) => normKey(/^config error: ([^\s:(]*)/.exec(e)?.[1] ?? '').split('.')[0]);
  return names.some((n) => {
    const section = normKey(n).split('.')[0];
    return errors.some((e) => e.includes(n) || (fileName !== undefined && e.includes(fileName)))
      || (section !== '' && errorSections.includes(section))
      || (['trunk', 'demo', 'http', 'auth'].includes(section) && errorSections.includes('auth'));
  });
}

function outcomeKey(r: LoadResult): string {
  return r.ok ? `ok ${JSON.stringify(r.config)}` : r.errors.map((e) => e.replace(/fuzz[\w.]*/g, 'FILE')).join('\n');
}

// ---- the fuzz ------------------------------------------------------------------------------

const SEEDS = [0xc0f16, 0x5eed2, 0xbadcf9];
const ROUNDS = 900;
/** Accepted configurations (other than the bases), for the gateway-start sample. */
const accepted: Array<{ what: string; config: GatewayConfig }> = [];

for (const seed of SEEDS) {
  test(`fuzz seed ${seed}: ${ROUNDS} mutated files and ${ROUNDS} environments; every outcome a configuration the schema accepts or clear lines without secrets`, () => {
    const r = prng(seed);
    const dir = join(work, `seed-${seed}`);
    mkdirSync(dir);
    let ok = 0;
    for (let i = 0; i < 2 * ROUNDS; i++) {
      const x = i % 2 === 0 ? makeFileInput(r) : makeEnvInput(r);
      const what = () => `seed ${seed} round ${i}: ${describeInput(x)}`;
      const { result, printed, ms } = explain(what, () => run(x, dir));
      explain(what, () => checkOutcome(x, result, printed, ms));
      if (x.sameAs) {
        const plain = run(x.sameAs, dir);
        explain(what, () => assert.equal(outcomeKey(result), outcomeKey(plain.result), 'not the same outcome as the file without it'));
      }
      if (result.ok) {
        ok++;
        if (x.note !== 'unchanged' && x.note !== 'overrides' && r.int(40) === 0) accepted.push({ what: what(), config: result.config });
      }
    }
    // The fuzz is only worth something when both outcomes are common.
    assert.ok(ok > ROUNDS / 10 && ok < (2 * ROUNDS * 9) / 10, `${ok} of ${2 * ROUNDS} accepted`);
    console.log(`seed ${seed}: ${2 * ROUNDS} inputs (${ROUNDS} files, ${ROUNDS} environments), ${ok} accepted, ${2 * ROUNDS - ok} refused`);
  });
}

test('file paths: missing, empty, a directory, a FIFO, a device, a dangling link, under a file, and --config forms: one clear line or the defaults', () => {
  const dir = join(work, 'paths');
  mkdirSync(dir);
  writeFileSync(join(dir, 'plain.yaml'), 'http:\n  port: 9000\n');
  symlinkSync(join(dir, 'gone.yaml'), join(dir, 'dangling.yaml'));
  mkdirSync(join(dir, 'sub.yaml'));
  execFileSync('mkfifo', [join(dir, 'fifo.yaml')]);
  const cases: Array<{ argv: string[]; env?: Record<string, string>; expect: RegExp | 'ok' }> = [
    { argv: ['--config', join(dir, 'missing.yaml')], expect: /^config error: config file not found: .*missing\.yaml$/ },
    { argv: ['--config', join(dir, 'dangling.yaml')], expect: /^config error: config file not found: .*dangling\.yaml$/ },
    { argv: ['--config', join(dir, 'sub.yaml')], expect: /^config error: .*sub\.yaml: not a regular file$/ },
    // Read for ever, were it read: refused.
    { argv: ['--config', join(dir, 'fifo.yaml')], expect: /^config error: .*fifo\.yaml: not a regular file$/ },
    { argv: ['--config', '/dev/zero'], expect: /^config error: \/dev\/zero: not a regular file$/ },
    { argv: ['--config', join(dir, 'plain.yaml', 'x.yaml')], expect: /^config error: config file not found: / },
    { argv: ['--config', '/dev/null'], expect: /^config error: \/dev\/null: not a regular file$/ },
    { argv: ['--config'], expect: /--config needs a file path/ },
    { argv: ['--config='], expect: /--config needs a file path/ },
    { argv: ['--config', '--config'], expect: /--config needs a file path/ },
    { argv: [`--config=${join(dir, 'plain.yaml')}`], expect: 'ok' },
    { argv: [], env: { GATEWAY_CONFIG: join(dir, 'nope\u0000.yaml') }, expect: /^config error: config file not found: / },
    { argv: [], env: { GATEWAY_CONFIG: '' }, expect: 'ok' },
  ];
  for (const c of cases) {
    const x: Input = { kind: 'path', base: 'demo', env: c.env ?? {}, argv: c.argv, names: [], secrets: [], note: JSON.stringify(c) };
    const { result, printed, ms } = run(x, dir);
    explain(() => describeInput(x), () => {
      checkOutcome(x, result, printed, ms);
      if (c.expect === 'ok') assert.ok(result.ok, JSON.stringify(result));
      else {
        assert.ok(!result.ok);
        assert.equal(result.errors.length, 1, result.errors.join('\n'));
        assert.match(result.errors[0].replace(/\u0000/g, '\\0'), c.expect);
      }
    });
  }
});

// ---- accepted configurations must start ------------------------------------------------------

/** The configuration with every listener moved to this file's loopback ports, and nothing that reaches beyond the machine. */
function confine(c: GatewayConfig, cdrPath: string): GatewayConfig | null {
  const j = JSON.parse(JSON.stringify(c)) as Record<string, Record<string, unknown>>;
  j.http = { ...j.http, host: '127.0.0.1', port: PORTS.http };
  delete j.http.tls;
  const transports = (j.sip.transports as string[]).filter((t) => t !== 'tls');
  j.sip = { ...j.sip, host: '127.0.0.1', port: PORTS.sip, transports: transports.length ? transports : ['udp'], dnsServers: ['127.0.0.1:28579'] };
  delete j.sip.tls;
  delete j.sip.tlsPort;
  j.demo = { ...j.demo, sipPort: PORTS.demo };
  j.media = { ...j.media, host: '127.0.0.1', portRange: PORTS.media, workers: Math.min(Number(j.media.workers), 1) };
  j.webrtc = { ...j.webrtc, bindAddress: '127.0.0.1', portRange: PORTS.webrtc };
  // Registrations toward a registrar nobody runs would make each stop wait 3 s for its un-REGISTER.
  if (j.trunk) {
    j.trunk = { ...j.trunk, uri: 'sip:127.0.0.1:28578', register: false };
    delete j.trunk.outboundProxy;
  }
  delete j.inbound.registerUsers;
  j.cdr = { path: cdrPath };
  j.drain = { timeoutSec: 0 };
  const r = validateConfig(j);
  return r.ok ? r.config : null;
}

async function portBusy(kind: 'tcp' | 'udp', port: number): Promise<boolean> {
  if (kind === 'tcp') {
    return new Promise((resolve) => {
      const s = net.createServer();
      s.once('error', () => resolve(true));
      s.listen(port, '127.0.0.1', () => s.close(() => resolve(false)));
    });
  }
  return new Promise((resolve) => {
    const s = createSocket('udp4');
    s.once('error', () => { s.close(); resolve(true); });
    s.bind(port, '127.0.0.1', () => s.close(() => resolve(false)));
  });
}

async function busyPorts(): Promise<string[]> {
  const busy: string[] = [];
  for (const [kind, port] of [['tcp', PORTS.http], ['udp', PORTS.sip], ['tcp', PORTS.sip], ['udp', PORTS.demo], ['udp', PORTS.media[0]], ['udp', PORTS.webrtc[0]]] as const) {
    if (await portBusy(kind, port)) busy.push(`${kind} ${port}`);
  }
  return busy;
}

/** Starts a gateway; 'started' (then stopped) or the one line it failed with. */
async function startOnce(config: GatewayConfig): Promise<{ outcome: string; logs: string[] }> {
  const logs: string[] = [];
  const logger = pino({ level: 'debug' }, { write: (l: string) => { logs.push(l); } });
  const gateway = new Gateway(config, logger);
  try {
    await gateway.start();
  } catch (err) {
    await gateway.stop();
    assert.ok(err instanceof Error, `start failed with a non-Error: ${String(err)}`);
    assert.ok(!(err instanceof TypeError || err instanceof RangeError || err instanceof ReferenceError), `start failed with a ${err.constructor.name}: ${err.stack}`);
    assert.doesNotMatch(err.message, /\n/);
    return { outcome: `failed: ${err.message}`, logs };
  }
  await gateway.stop();
  return { outcome: 'started', logs };
}

test('a sample of the accepted configurations starts a gateway (ports moved to loopback test ports), or fails with one clear line; every port is free afterwards', async () => {
  assert.ok(accepted.length >= 5, `only ${accepted.length} accepted configurations to start`);
  const uncaught: unknown[] = [];
  const onUncaught = (e: unknown) => uncaught.push(e);
  process.on('uncaughtException', onUncaught);
  process.on('unhandledRejection', onUncaught);
  try {
    let started = 0;
    for (const [i, a] of accepted.slice(0, 10).entries()) {
      const config = confine(a.config, join(work, `cdr-${i}.jsonl`));
      if (!config) continue;
      started++;
      const { outcome, logs } = await startOnce(config).catch((e: unknown) => explain(() => a.what, () => { throw e; }));
      const busy = await busyPorts();
      explain(() => a.what, () => {
        assert.equal(outcome, 'started', 'an accepted configuration (on free loopback ports) did not start');
        const leaked = Object.values(SECRET).filter((s) => logs.some((l) => l.includes(markerOf(s))));
        assert.deepEqual(leaked, [], 'a secret in a log line');
        assert.deepEqual(busy, [], 'ports still bound after stop');
      });
    }
    assert.ok(started >= 5, `only ${started} of the sample could be moved to the test ports`);
    console.log(`${started} accepted configurations started and stopped`);
    // Starts that must fail: a port taken, a CDR file that cannot be opened. One clear line; nothing left bound.
    const full = confine(validateConfigOk(FULL), join(work, 'cdr-full.jsonl'))!;
    const failing: Array<{ what: string; config: GatewayConfig; hold?: () => Promise<() => Promise<void>>; expect: RegExp }> = [
      { what: 'HTTP port taken', config: full, hold: () => holdTcp(PORTS.http), expect: /cannot listen for HTTP on 127\.0\.0\.1:28550: EADDRINUSE/ },
      { what: 'SIP UDP port taken', config: full, hold: () => holdUdp(PORTS.sip), expect: /EADDRINUSE/ },
      { what: 'SIP TCP port taken', config: full, hold: () => holdTcp(PORTS.sip), expect: /EADDRINUSE/ },
      { what: 'demo port taken', config: confine(validateConfigOk(DEMO), join(work, 'cdr-demo.jsonl'))!, hold: () => holdUdp(PORTS.demo), expect: /EADDRINUSE/ },
      { what: 'CDR in a missing directory', config: { ...full, cdr: { path: join(work, 'no-such-dir', 'cdr.jsonl') } }, expect: /ENOENT.*no-such-dir/ },
      { what: 'CDR path is a directory', config: { ...full, cdr: { path: work } }, expect: /EISDIR/ },
    ];
    for (const f of failing) {
      const release = f.hold ? await f.hold() : async () => undefined;
      const started = await startOnce(f.config).catch((e: unknown) => explain(() => f.what, () => { throw e; })).finally(release);
      const busy = await busyPorts();
      explain(() => f.what, () => {
        assert.match(started.outcome, f.expect);
        assert.deepEqual(busy, [], 'ports still bound after the failed start');
      });
    }
  } finally {
    process.off('uncaughtException', onUncaught);
    process.off('unhandledRejection', onUncaught);
  }
  assert.deepEqual(uncaught, []);
});

function validateConfigOk(raw: { [k: string]: Json }): GatewayConfig {
  const r = validateConfig(JSON.parse(render(raw, 'json1')) as Record<string, unknown>);
  if (!r.ok) assert.fail(r.errors.join('\n'));
  return r.config;
}

async function holdTcp(port: number): Promise<() => Promise<void>> {
  const s = net.createServer();
  await new Promise<void>((resolve) => s.listen(port, '127.0.0.1', resolve));
  return () => new Promise<void>((resolve) => s.close(() => resolve()));
}

async function holdUdp(port: number): Promise<() => Promise<void>> {
  const s = createSocket('udp4');
  await new Promise<void>((resolve) => s.bind(port, '127.0.0.1', resolve));
  return () => new Promise<void>((resolve) => s.close(() => resolve()));
}

// ---- pinned: what this fuzz found, one smallest case each --------------------------------------

test('pinned: a digest user name or DID that is an Object.prototype property ("constructor", "toString") finds nothing; it authenticated with the function text as password', () => {
  const r = validateConfig({ inbound: { didMap: { '+4930123456': 'support' }, digest: { users: { pbx: 'pbx-password-1' } } } });
  if (!r.ok) assert.fail(r.errors.join('\n'));
  const users = r.config.inbound.digest!.users;
  for (const name of PROTO_NAMES) {
    assert.equal(users[name], undefined, `users[${name}]`);
    assert.equal(r.config.inbound.didMap[name], undefined, `didMap[${name}]`);
  }
  assert.equal(users.pbx, 'pbx-password-1');
  // The gateway's lookup (src/gateway.ts): an INVITE answering the challenge as user
  // "constructor" with the text of Object as password must not pass.
  const server = new DigestServer('gw', (u) => users[u]);
  const nonce = /nonce="([^"]+)"/.exec(server.challenges()[0])![1];
  const md5 = (s: string) => createHash('md5').update(s).digest('hex');
  const uri = 'sip:1000@127.0.0.1';
  const response = md5(`${md5(`constructor:gw:${String(Object)}`)}:${nonce}:00000001:abc:auth:${md5(`INVITE:${uri}`)}`);
  const invite = parseSipMessage(['INVITE sip:1000@127.0.0.1 SIP/2.0', 'Via: SIP/2.0/UDP 192.0.2.9:5060;branch=z9hG4bKx', 'From: <sip:a@192.0.2.9>;tag=1', 'To: <sip:1000@127.0.0.1>', 'Call-ID: c1', 'CSeq: 1 INVITE', 'Max-Forwards: 70',
    `Authorization: Digest username="constructor", realm="gw", nonce="${nonce}", uri="${uri}", response="${response}", algorithm=MD5, qop=auth, nc=00000001, cnonce="abc"`, 'Content-Length: 0', '', ''].join('\r\n')) as SipRequest;
  assert.equal(invite.method, 'INVITE');
  assert.deepEqual(server.verify(invite), { ok: false, reason: 'unknown-user' });
});

test('pinned: trunk.optionsKeepaliveSec and inbound.ringTimeoutSec past what a timer holds are refused (Node fired them after 1 ms: OPTIONS every millisecond, every inbound call 480 at once)', () => {
  const base = { trunk: { uri: 'sip:198.51.100.1' }, auth: { hs256Secret: SECRET.hs256 } };
  for (const [section, key, value] of [['trunk', 'optionsKeepaliveSec', 3_000_000], ['inbound', 'ringTimeoutSec', 2 ** 31]] as const) {
    const raw = JSON.parse(JSON.stringify(base)) as Record<string, Record<string, unknown>>;
    raw[section] = { ...raw[section], [key]: value };
    const r = validateConfig(raw);
    assert.ok(!r.ok, `${section}.${key}: ${value} was accepted`);
    assert.match(r.errors.join('\n'), new RegExp(`^config error: ${section}\\.${key}: expected a number <= \\d+, got ${value}$`, 'm'));
  }
});

test('pinned: a list index in a variable name is 0-9999 without leading zeros, and items must not skip: one line at once (item 100000 gave 100000 lines; 4294967294 ran out of memory)', () => {
  const cases: Array<[Record<string, string>, RegExp]> = [
    [{ GATEWAY_WEBRTC__HOSTADDRESSES__100000: '127.0.0.1' }, /^config error: GATEWAY_WEBRTC__HOSTADDRESSES__100000: list index 100000: expected 0-9999, without leading zeros$/],
    [{ GATEWAY_WEBRTC__HOSTADDRESSES__01: '127.0.0.2' }, /^config error: GATEWAY_WEBRTC__HOSTADDRESSES__01: list index 01: expected 0-9999/],
    [{ GATEWAY_WEBRTC__HOSTADDRESSES__9999: '127.0.0.2' }, /^config error: webrtc\.hostAddresses\.9999 \(from GATEWAY_WEBRTC__HOSTADDRESSES__9999\): item 9999 is set but not item 0; list items are numbered from 0, without gaps$/],
    [{ GATEWAY_WEBRTC__TURNSERVERS__3__CREDENTIAL: SECRET.turn }, /^config error: webrtc\.turnServers\.3\.credential \(from GATEWAY_WEBRTC__TURNSERVERS__3__CREDENTIAL\): item 3 is set but not item 0/],
    // Item 0 is fine, item 2 skips 1: one line, about an item-2 variable.
    [{ GATEWAY_WEBRTC__TURNSERVERS__0__URLS: 'turn:127.0.0.1', GATEWAY_WEBRTC__TURNSERVERS__2__URLS: 'turn:127.0.0.1', GATEWAY_WEBRTC__TURNSERVERS__2__CREDENTIAL: SECRET.turn },
      /^config error: webrtc\.turnServers\.2\.\w+ \(from GATEWAY_WEBRTC__TURNSERVERS__2__\w+\): item 2 is set but not item 1/],
  ];
  for (const [env, pattern] of cases) {
    const t0 = performance.now();
    const r = loadConfig([], env);
    assert.ok(performance.now() - t0 < 500, `${JSON.stringify(env)} took ${Math.round(performance.now() - t0)} ms`);
    assert.ok(!r.ok);
    assert.equal(r.errors.length, 1, `${JSON.stringify(env)}: ${r.errors.length} lines: ${r.errors.slice(0, 3).join(' | ')}`);
    assert.match(r.errors[0], pattern);
    assert.ok(!r.errors[0].includes(SECRET.turn));
  }
  // Items in order still work, from the tenth on too.
  const env: Record<string, string> = {};
  for (let i = 0; i < 12; i++) env[`GATEWAY_DIALPLAN__ALLOW__${i}`] = `+4930${i}*`;
  const r = loadConfig([], env);
  if (!r.ok) assert.fail(r.errors.join('\n'));
  assert.equal(r.config.dialplan.allow.length, 12);
});

test('pinned: YAML nested thousands of levels deep is one clear line, however often it is read (the parser overflowed the stack, and the second such file aborted the process)', () => {
  // In a child process: without the depth check the second load ends the process (V8: "RegExpCompiler Allocation failed").
  const script = `
    const { writeFileSync } = require('node:fs');
    const { loadConfig } = require(${JSON.stringify(join(ROOT, 'src/config'))});
    const dir = ${JSON.stringify(work)};
    const out = [];
    for (const [name, text] of [['deep1.yaml', '['.repeat(3000)], ['deep1.yaml', '['.repeat(3000)], ['deep2.yaml', 'http: ' + '{a: '.repeat(3000)], ['deep3.yaml', Array.from({ length: 3000 }, (_, i) => ' '.repeat(i) + '- ').join('\\n') + 'x'], ['deep4.yaml', '['.repeat(5000) + ']'.repeat(5000)]]) {
      writeFileSync(dir + '/' + name, text);
      out.push(loadConfig(['--config', dir + '/' + name], {}));
    }
    process.stdout.write(JSON.stringify(out));`;
  const r = spawnSync(process.execPath, ['--import', 'tsx', '-e', script], { cwd: ROOT, encoding: 'utf8', timeout: 30_000 });
  assert.equal(r.status, 0, `the loader process ended with ${r.status ?? r.signal}: ${r.stderr.split('\n').find((l) => /FATAL|Error/.test(l)) ?? r.stderr.slice(0, 300)}`);
  const results = JSON.parse(r.stdout) as LoadResult[];
  for (const result of results) {
    assert.ok(!result.ok);
    assert.equal(result.errors.length, 1);
    assert.match(result.errors[0], /deep\d\.yaml: nested more than 32 levels deep$/);
  }
  // A realistic configuration is far from the limit.
  assert.ok(validateConfigOk(FULL));
  writeFileSync(join(work, 'deep-ok.yaml'), render(FULL, 'yaml'));
  assert.ok(loadConfig(['--config', join(work, 'deep-ok.yaml')], {}).ok);
});

test('pinned: a secret YAML cannot hold unquoted (*S, >S, |S, !S) is neither in the error nor printed to stderr (the parser quoted it, and printed the whole line as a warning)', () => {
  for (const form of ['*S', '>S', '|S', '!S', '!S x', '&S', '%S', '"S']) {
    const p = join(work, 'unquoted.yaml');
    writeFileSync(p, `trunk:\n  uri: sip:198.51.100.1\n  username: u\n  password: ${form.replace('S', SECRET.trunk)}\nauth:\n  hs256Secret: ${SECRET.hs256}\n`);
    const { value: r, printed } = quietly(() => loadConfig(['--config', p], {}));
    assert.deepEqual(printed, [], `${form}: printed`);
    assert.ok(!r.ok, `${form}: accepted`);
    const text = r.errors.join('\n');
    assert.ok(!text.includes(markerOf(SECRET.trunk)), `${form}: ${text}`);
    assert.equal(r.errors.length, 1, text);
    assert.match(text, /unquoted\.yaml: .*at line \d+, column \d+|trunk\.password: expected text, got "\*\*\*"/, form);
  }
  // A key that is a list: the library warned on stderr, quoting it.
  const p = join(work, 'listkey.yaml');
  writeFileSync(p, `http:\n  ? [${SECRET.trunk}, b]\n  : 1\n`);
  const { value: r, printed } = quietly(() => loadConfig(['--config', p], {}));
  assert.deepEqual(printed, []);
  assert.ok(!r.ok);
});

test('pinned: a file that is not UTF-8 is refused naming the file and line (a Latin-1 password became U+FFFD and was accepted); a UTF-8 BOM is dropped (JSON with one was "invalid JSON")', () => {
  const latin1 = join(work, 'latin1.yaml');
  writeFileSync(latin1, Buffer.concat([Buffer.from('trunk:\n  uri: sip:198.51.100.1\n  username: u\n  password: passw'), Buffer.from([0xf6]), Buffer.from('rt-1234\nauth:\n  hs256Secret: ' + SECRET.hs256 + '\n')]));
  const r = loadConfig(['--config', latin1], {});
  assert.ok(!r.ok, 'accepted');
  assert.deepEqual(r.errors, [`config error: ${latin1}: not UTF-8 text (line 4); save the file as UTF-8`]);
  const utf16 = join(work, 'utf16.yaml');
  writeFileSync(utf16, Buffer.concat([Buffer.from([0xff, 0xfe]), Buffer.from('http:\n  port: 9000\n', 'utf16le')]));
  assert.match(errorsOf(loadConfig(['--config', utf16], {}))[0], /utf16\.yaml: not UTF-8 text \(line 1\)/);
  for (const [name, text] of [['bom.json', '{"http":{"port":9000}}'], ['bom.yaml', 'http:\n  port: 9000\n']]) {
    writeFileSync(join(work, name), Buffer.concat([Buffer.from([0xef, 0xbb, 0xbf]), Buffer.from(text)]));
    const loaded = loadConfig(['--config', join(work, name)], {});
    assert.ok(loaded.ok, `${name}: ${loaded.ok ? '' : loaded.errors.join(' | ')}`);
    assert.equal(loaded.config.http.port, 9000);
  }
});

function errorsOf(r: LoadResult): string[] {
  if (r.ok) assert.fail('accepted');
  return r.errors;
}

test('pinned: an unknown key or variable name is printed on one line and short (a newline in a key split the error; a key of 100 KB was printed whole)', () => {
  const r = validateConfig({ http: { 'a\nb': 1, ['k'.repeat(100_000)]: 1, '\u202eoops': 1 } });
  const errors = errorsOf(r);
  assert.equal(errors.length, 3);
  for (const e of errors) {
    assert.doesNotMatch(e, /[\n\u202e]/);
    assert.ok(e.length < 300, `${e.length} characters`);
  }
  assert.match(errors[0], /^config error: http\.a\\u\{a\}b: unknown setting; http takes: host, port, tls$/);
  assert.match(errors[1], /^config error: http\.k{64}…: unknown setting/);
  const fromEnv = errorsOf(loadConfig([], { 'GATEWAY_HTTP__PO\nRT': '1' }));
  assert.deepEqual(fromEnv, ['config error: GATEWAY_HTTP__PO\\u{a}RT: no such setting (http.po\\u{a}rt)']);
});

test('pinned: a password inside a SIP URI (trunk.uri, outboundProxy, registrar) is refused and never printed (it was accepted, and shown by --check-config and the start log line)', () => {
  for (const [key, uri] of [['trunk.uri', `sip:4930123456:${SECRET.trunk}@trunk.example.com`], ['trunk.outboundProxy', `sip:u:${SECRET.trunk}@sbc.example.com`], ['inbound.registerUsers.registrar', `sips:a:${SECRET.trunk}@pbx.example.com:5061`], ['trunk.uri', `sip:u:${SECRET.trunk}@trunk.example.com x`]] as const) {
    const raw = JSON.parse(render(FULL, 'json1')) as Record<string, Record<string, unknown>>;
    const [section, ...rest] = key.split('.');
    if (rest.length === 2) (raw[section][rest[0]] as Record<string, unknown>)[rest[1]] = uri;
    else raw[section][rest[0]] = uri;
    const errors = errorsOf(validateConfig(raw));
    const text = errors.join('\n');
    assert.ok(!text.includes(markerOf(SECRET.trunk)), text);
    assert.match(text, new RegExp(`^config error: ${key.replace(/\./g, '\\.')}: expected (no password in the URI|a SIP URI).*got "sips?:(4930123456|u|a):\\*\\*\\*@`, 'm'));
  }
  assert.ok(validateConfig({ trunk: { uri: 'sip:4930123456@trunk.example.com:5060;transport=tcp' }, auth: { hs256Secret: SECRET.hs256 } }).ok);
});
