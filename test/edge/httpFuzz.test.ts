/**
 * Seeded fuzzing of what the internet controls: raw HTTP requests over plain TCP sockets to a
 * live gateway (demo mode, then token mode behind an origin allow-list), so that requests no
 * HTTP client would send reach it — every route and method, bad/huge/duplicated headers, bad
 * Origin, Content-Length and Transfer-Encoding that disagree, bad JSON, huge, slow, cut-off and
 * pipelined bodies, bodies on GET, path traversal against the static files (../, %2e%2e, encoded
 * NUL and slashes, backslashes, double slashes, very long paths), query strings, HEAD/OPTIONS,
 * bent WebSocket upgrades (bad Sec-WebSocket-Key or version, wrong path or method, an Origin
 * not allowed) and, on upgraded connections, hellos with bad tokens (malformed JWTs, alg none,
 * other algorithms, the wrong key, expired, huge, bad claims).
 *
 * Oracle, per request: at most one final response per request sent, its status in the set the
 * case allows (stated in `allowed()`), or a clean close; never a 500, never a stack trace in a
 * body; a 200 for a static path is the bytes of the file under web/ that path names (so nothing
 * outside web/ is ever served); a bad token never gets a `welcome`. For the whole run: no
 * uncaught exception or unhandled rejection, no error-level log line (nothing here deserves a
 * 500), no secret or whole token in the log; afterwards no socket or session is left open and
 * /healthz and /metrics still answer. Fixed seeds; a failure names the seed, the case and the
 * request bytes.
 *
 * Found here and fixed (the pinned tests at the end): a client that went away while sending a
 * POST body was logged as an error with a stack trace ("HTTP request failed: aborted"); a
 * WebSocket upgrade refused (origin, path, rate limit) with bytes arriving after its request
 * kept its socket open for good, since nobody read it to see the peer's FIN (one file
 * descriptor per such request, until the process ran out).
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes, createHmac } from 'node:crypto';
import { readdirSync, readFileSync, statSync } from 'node:fs';
import net from 'node:net';
import tls from 'node:tls';
import { spawnSync } from 'node:child_process';
import { join, relative } from 'node:path';
import pino from 'pino';
import { mintToken } from '../../src/edge';
import { HttpServer, sendJson } from '../../src/http/httpServer';
import { explain, prng, type Prng } from '../support/fuzz';
import { startGateway } from '../support/gateway';
import { tempDir } from '../support/tempDir';

/** This file's ports: 28580-28599 (HTTP, SIP, demo, then media and ICE ranges). */
const BASE = 28580;
const PORT_OVERRIDES = { webrtc: { portRange: [28590, 28599] as [number, number] }, media: { portRange: [28584, 28589] as [number, number] } };
const ROOT = join(__dirname, '..', '..');
const WEB = join(ROOT, 'web');
const SECRET = 'http-fuzz-hs256-secret-0123456789-Vq7Lx2Tn';
const ALLOWED_ORIGIN = 'https://app.example.com';

// ---- what may be served --------------------------------------------------------------------

function filesUnder(dir: string): string[] {
  return readdirSync(dir).flatMap((name) => {
    const p = join(dir, name);
    return statSync(p).isDirectory() ? filesUnder(p) : [p];
  });
}
/** Every file under web/, by path relative to it. */
const WEB_FILES = new Map(filesUnder(WEB).map((p) => [relative(WEB, p).split('\\').join('/'), readFileSync(p)]));
/** Files outside web/ a traversal would aim at: their bytes must never come back. */
const OUTSIDE = ['package.json', 'README.md', 'tsconfig.json', 'src/http/httpServer.ts', 'config.example.yaml'].map((f) => readFileSync(join(ROOT, f)));
const ALIASES: Record<string, string> = { '/': 'index.html', '/index.html': 'index.html', '/widget.js': 'dist/widget.js', '/widget.js.map': 'dist/widget.js.map', '/sdk.js': 'dist/gateway-sdk.js', '/sdk.js.map': 'dist/gateway-sdk.js.map', '/widget-demo.html': 'widget-demo.html' };
const ROUTES = new Set(['GET /healthz', 'GET /readyz', 'GET /metrics', 'POST /api/demo/callback', 'GET /api/demo/token']);

/** The file under web/ a GET of this path serves (the server's own mapping, written out), or null. */
function staticFile(pathname: string): string | null {
  const f = Object.prototype.hasOwnProperty.call(ALIASES, pathname) ? ALIASES[pathname] : pathname.startsWith('/dist/') ? pathname.slice(1) : null;
  return f !== null && WEB_FILES.has(f) ? f : null;
}

// ---- requests ------------------------------------------------------------------------------

interface Case {
  what: string;
  bytes: Buffer[];
  /** Delay between the pieces (a slow client). */
  gapMs: number;
  /** The client gives up (closes) this long after its last piece, whatever came back: no response is owed. */
  abortAfterMs?: number;
  /** Final responses owed, in order, by method (HEAD: no body). */
  methods: string[];
  /** Allowed statuses of each final response (same order); 'close' in it: no response at all is fine too. */
  allowed: Array<Set<number | 'close'>>;
  /** The static file each response serves when 200 (same order), or null for a route. */
  paths: Array<string | null>;
}

const GOOD_KEY = 'dGhlIHNhbXBsZSBub25jZQ==';
const PATHS = [
  '/', '/index.html', '/widget.js', '/widget.js.map', '/sdk.js', '/sdk.js.map', '/widget-demo.html', '/dist/gateway-sdk.mjs', '/dist/demo.js', '/dist/widget.js',
  '/healthz', '/readyz', '/metrics', '/api/demo/callback', '/api/demo/token', '/ws', '/api/', '/api/x', '/dist/', '/dist', '/nope', '/HEALTHZ', '/healthz/', '/healthz;x', '/index.html/',
  '/../package.json', '/dist/../../package.json', '/dist/%2e%2e/%2e%2e/package.json', '/dist/..%2f..%2fpackage.json', '/dist/%2E%2E%2F%2E%2E%2Fpackage.json',
  '/dist/....//....//package.json', '/dist/..\\..\\package.json', '/dist/%5c..%5c..%5cpackage.json', '/dist/widget.js%00.html', '/dist/%00', '/dist/widget.js%00',
  '//etc/passwd', '///etc/passwd', '/dist//../../../etc/passwd', '/dist/./././widget.js', '/dist/%252e%252e/%252e%252e/package.json', '/%2e%2e/%2e%2e/etc/passwd',
  '/dist/..%c0%af..%c0%afetc/passwd', '/dist/%2e%2e%5c%2e%2e%5cpackage.json', '/src/main.ts', '/dist/../src/sdk/index.ts', '/dist/%2e%2e/src/sdk/index.ts', '/web/index.html',
  '/dist/gateway-sdk.js/..', '/dist/.', '/dist/..', '/.git/config', '/dist/~', '/dist/%', '/dist/%zz', '/%', '/?%', '/dist/%ff%fe', '/dist/😀', '/dist/\u00e9',
  '//', '//a:b', '//[', '*', 'http://127.0.0.1:28580/healthz', 'http://evil.example/../../etc/passwd', 'http://[::1]/index.html', 'file:///etc/passwd', 'example.com:443', '',
];
const QUERIES = ['', '?', '?a=1', '?a=1&a=2', '?token=abc.def.ghi', '?x=%zz', '?x=%00', `?${'q'.repeat(4000)}`, '?__proto__[x]=1', '#frag', '?a=1#f', '?../../etc/passwd'];
const METHODS = ['GET', 'GET', 'GET', 'HEAD', 'POST', 'POST', 'OPTIONS', 'PUT', 'DELETE', 'PATCH', 'TRACE'];
const BAD_METHODS = ['get', 'G ET', 'FOO', 'GET\0', 'CONNECT', 'PRI', 'SEARCH', 'M-SEARCH', 'PROPFIND'];
const VERSIONS = ['HTTP/1.1', 'HTTP/1.1', 'HTTP/1.1', 'HTTP/1.0'];
const BAD_VERSIONS = ['HTTP/2.0', 'HTTP/1.2', 'HTTP/0.9', '', 'http/1.1', 'HTTP/1.1x', 'HTTP/11'];
const ORIGINS = [ALLOWED_ORIGIN, `http://127.0.0.1:${BASE}`, `http://localhost:${BASE}`, 'https://evil.example', 'null', '', 'https://app.example.com.evil.example', 'https://app.example.com/', 'https://APP.example.com', 'https://app.example.com:443', `https://${'a'.repeat(5000)}.example`, 'https://app.example.com, https://evil.example', '\u00e9', 'javascript:alert(1)'];
const BODIES = ['', '{}', '{"sessionId":"nope"}', '{"sessionId":{"toString":"x"}}', '{"__proto__":{"sessionId":"x"},"sessionId":null}', 'null', '[]', '"str"', '{"sessionId":', '{', '\u0000\u0001\u0002', `{"sessionId":"${'x'.repeat(5000)}"}`, '['.repeat(20000), 'x'.repeat(16 * 1024), 'x'.repeat(20 * 1024)];
const TOKENS_IN_HEADERS = ['Bearer ', 'Bearer x', 'Bearer a.b.c', `Bearer ${'a'.repeat(9000)}`, 'Basic YWRtaW46YWRtaW4=', 'Bearer eyJhbGciOiJub25lIn0.eyJzdWIiOiJhIn0.'];

/** What a request is owed, given how it was made. */
interface Shape {
  method: string;
  target: string;
  syntaxOk: boolean;
  upgrade?: { path: string; originOk: boolean; handshakeOk: boolean };
  bodyLen: number;
}

function allowed(s: Shape, mode: 'demo' | 'token'): { statuses: Set<number | 'close'>; file: string | null } {
  const set = new Set<number | 'close'>();
  let file: string | null = null;
  const url = (() => { try { return new URL(s.target || '/', 'http://localhost'); } catch { return null; } })();
  if (!s.syntaxOk) {
    // The parser refuses it (400, 413, 414, 431, 501, 505) or drops the connection; when it
    // reads it after all, whatever that request is owed.
    for (const st of [400, 413, 414, 431, 501, 505, 'close'] as const) set.add(st);
  }
  if (!url) { set.add(400); return { statuses: set, file }; }
  if (s.upgrade) {
    if (url.pathname !== '/ws') set.add(404);
    else if (!s.upgrade.originOk) set.add(403);
    else {
      // Past the origin: the connect rate limit (429), then the WebSocket handshake itself.
      set.add(429);
      if (s.upgrade.handshakeOk) set.add(101);
      else for (const st of [400, 405, 426] as const) set.add(st);
    }
    return { statuses: set, file };
  }
  const key = `${s.method === 'HEAD' ? 'GET' : s.method} ${url.pathname}`;
  if (ROUTES.has(key) && (mode === 'demo' || key !== 'GET /api/demo/token')) {
    if (key === 'POST /api/demo/callback') {
      // No session of ours is ever named: 400; 413 past 16 KB.
      set.add(400);
      if (s.bodyLen > 16 * 1024) set.add(413);
    } else set.add(200);
  } else {
    if (s.method === 'GET' || s.method === 'HEAD') file = staticFile(url.pathname);
    // A path served to other methods: 405 (with Allow); any other: 404.
    // (A GET of a page whose file is missing is a 404.)
    const get = s.method === 'GET' || s.method === 'HEAD';
    const served = [...ROUTES].some((r) => r.endsWith(` ${url.pathname}`) && (mode === 'demo' || r !== 'GET /api/demo/token')) || (!get && Object.prototype.hasOwnProperty.call(ALIASES, url.pathname));
    set.add(file ? 200 : served ? 405 : 404);
  }
  return { statuses: set, file };
}

function headerLines(r: Prng, opts: { host: boolean; bodyLen: number; chunked: boolean; upgrade?: { key: string; version: string; origin?: string; upgradeValue: string } }): { lines: string[]; syntaxOk: boolean; note: string[] } {
  const lines: string[] = [];
  const note: string[] = [];
  let syntaxOk = true;
  if (opts.host) lines.push(r.pick(['Host: x', 'Host: 127.0.0.1:28580', 'Host: ', `Host: ${'h'.repeat(3000)}`, 'Host: evil.example']));
  if (opts.upgrade) {
    lines.push(`Upgrade: ${opts.upgrade.upgradeValue}`, r.pick(['Connection: Upgrade', 'Connection: keep-alive, Upgrade', 'Connection: upgrade']));
    if (opts.upgrade.key !== '') lines.push(`Sec-WebSocket-Key: ${opts.upgrade.key}`);
    if (opts.upgrade.version !== '') lines.push(`Sec-WebSocket-Version: ${opts.upgrade.version}`);
    if (opts.upgrade.origin !== undefined) lines.push(`Origin: ${opts.upgrade.origin}`);
  } else if (r.int(3) === 0) lines.push(`Origin: ${r.pick(ORIGINS)}`);
  if (opts.chunked) lines.push('Transfer-Encoding: chunked');
  else if (opts.bodyLen > 0) lines.push(`Content-Length: ${opts.bodyLen}`);
  // Extra headers, well-formed.
  for (let n = r.int(4); n > 0; n--) {
    lines.push(r.pick([
      'Connection: close', 'Connection: keep-alive', 'Accept: */*', 'Accept-Encoding: gzip, br', 'Range: bytes=0-10', 'If-None-Match: "x"', 'Expect: 100-continue',
      `Authorization: ${r.pick(TOKENS_IN_HEADERS)}`, `Cookie: ${'c=1; '.repeat(500)}`, 'X-Forwarded-For: 203.0.113.9, 10.0.0.1', `X-Long: ${'v'.repeat(8000)}`,
      'Sec-WebSocket-Protocol: chat', 'Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits=99', 'Content-Type: application/json', 'Content-Type: text/plain; charset=\u00ff',
      `Origin: ${r.pick(ORIGINS)}`, 'Upgrade-Insecure-Requests: 1', 'Te: trailers', 'X-Dup: 1', 'X-Dup: 2', 'User-Agent: \u00e9\u00e8',
    ]));
  }
  // Damage, now and then: the parser must refuse it or read it right.
  if (r.int(6) === 0) {
    syntaxOk = false;
    const bad = r.pick([
      'Content-Length: -1', 'Content-Length: 1e3', 'Content-Length: 5, 6', 'Content-Length: 99999999999999999999', 'Content-Length:  +5', 'Transfer-Encoding: gzip', 'Transfer-Encoding: chunked, chunked',
      'Transfer-Encoding: chunked\r\nContent-Length: 3', 'Bad Header: x', 'X-Nul: a\0b', ' folded: continuation', 'X-Obs: a\r\n b', ': empty name', 'X-Ctl: \x01', 'Host: a\r\nHost: b', 'Content-Length: 0\r\nContent-Length: 1',
      `X-Huge: ${'h'.repeat(20000)}`, ...Array(3).fill(Array.from({ length: 300 }, (_, i) => `X-Many-${i}: ${'m'.repeat(60)}`).join('\r\n')),
    ]);
    lines.splice(r.int(lines.length + 1), 0, bad);
    note.push(`bad header ${JSON.stringify(bad.slice(0, 60))}`);
  }
  return { lines, syntaxOk, note };
}

function makeCase(r: Prng, mode: 'demo' | 'token'): Case {
  // Pipelined requests now and then: each owes its own response.
  const count = r.int(8) === 0 ? 2 + r.int(2) : 1;
  const pieces: Buffer[] = [];
  const methods: string[] = [];
  const allowedSets: Array<Set<number | 'close'>> = [];
  const files: Array<string | null> = [];
  const notes: string[] = [];
  const shapes: Shape[] = [];
  const closes: boolean[] = [];
  /** The server is owed more bytes than were sent (a declared body cut short): it waits, the client gives up. */
  let waits = false;
  let mayClose = false;
  for (let i = 0; i < count; i++) {
    const shape = oneRequest(r, mode, i === count - 1);
    pieces.push(shape.bytes);
    methods.push(shape.method);
    const a = allowed(shape.shape, mode);
    // Once a request may close the connection (refused, 413, upgraded), the ones behind it may get nothing.
    if (mayClose) a.statuses.add('close');
    if (!shape.shape.syntaxOk || shape.shape.upgrade || a.statuses.has(413) || shape.closes) mayClose = true;
    allowedSets.push(a.statuses);
    files.push(a.file);
    notes.push(shape.note);
    shapes.push(shape.shape);
    closes.push(shape.closes);
    waits ||= shape.short;
  }
  // A pipeline with a request the parser refuses, an upgrade, or anything after a request that
  // ends the connection: Node ends the connection (a 400 for the parse error) or hands it to the
  // upgrade handler as soon as it reads that far, whether or not the requests before were
  // answered. Each of them may then get nothing, that 400, or the upgrade's answer.
  const breaker = shapes.findIndex((x, k) => k > 0 && (!x.syntaxOk || x.upgrade || closes[k - 1] || !shapes[k - 1].syntaxOk));
  if (breaker > 0) {
    // (Any request from there on may be the one answered: an upgrade further on still is.)
    const theirs = shapes.slice(breaker).flatMap((x) => [...allowed(x, mode).statuses]);
    for (const set of allowedSets) { set.add('close'); set.add(400); for (const st of theirs) set.add(st); }
  }
  const bytes = Buffer.concat(pieces);
  // Delivery: at once, in random pieces, slowly, or cut off and abandoned.
  const d = r.int(10);
  let split: Buffer[] = [bytes];
  let gapMs = 0;
  let abortAfterMs: number | undefined;
  let how = 'at once';
  if (d < 3) {
    split = [];
    for (let at = 0; at < bytes.length;) { const n = 1 + r.int(Math.max(1, Math.min(bytes.length - at, 64 + r.int(2000)))); split.push(bytes.subarray(at, at + n)); at += n; }
    gapMs = r.int(3);
    how = `in ${split.length} pieces`;
  } else if (d === 3 && count === 1) {
    split = [bytes.subarray(0, Math.floor(bytes.length * 0.3)), bytes.subarray(Math.floor(bytes.length * 0.3), Math.floor(bytes.length * 0.7)), bytes.subarray(Math.floor(bytes.length * 0.7))];
    gapMs = 60;
    how = 'slowly (60 ms between three pieces)';
  } else if (d === 4 || waits) {
    // Cut off anywhere, then the client goes away: nothing is owed but a clean end.
    const at = waits ? bytes.length : r.int(bytes.length);
    split = [bytes.subarray(0, at)];
    abortAfterMs = r.int(3) * 40;
    how = `cut at ${at} of ${bytes.length} and abandoned after ${abortAfterMs} ms`;
    for (const s of allowedSets) s.add('close');
  }
  return { what: `${notes.join(' | ')}; sent ${how}`, bytes: split, gapMs, abortAfterMs, methods, allowed: allowedSets, paths: files };
}

function oneRequest(r: Prng, mode: 'demo' | 'token', last: boolean): { bytes: Buffer; method: string; shape: Shape; note: string; closes: boolean; short: boolean } {
  let syntaxOk = true;
  const notes: string[] = [];
  let method = r.pick(METHODS);
  if (r.int(25) === 0) { method = r.pick(BAD_METHODS); syntaxOk = false; }
  let target = r.pick(PATHS) + (r.int(3) === 0 ? r.pick(QUERIES) : '');
  if (r.int(30) === 0) target = `/${'a'.repeat(r.pick([2000, 8000, 70000]))}`;
  if (r.int(40) === 0) { target = `/dist/${r.pick(['\x01', ' x', '\x7f', '\u0000'])}`; syntaxOk = false; }
  let version = r.pick(VERSIONS);
  if (r.int(25) === 0) { version = r.pick(BAD_VERSIONS); syntaxOk = false; }
  // A WebSocket upgrade, bent or not.
  let upgrade: Shape['upgrade'];
  let short = false;
  let up: { key: string; version: string; origin?: string; upgradeValue: string } | undefined;
  if (r.int(5) === 0) {
    method = r.int(8) === 0 ? r.pick(['POST', 'HEAD', 'PUT']) : 'GET';
    target = r.int(4) === 0 ? r.pick(PATHS) : r.pick(['/ws', '/ws', '/ws?x=1', '/ws/', '/WS', '//ws', '/ws%00']);
    const key = r.int(3) === 0 ? r.pick(['', 'abc', `${GOOD_KEY}x`, 'dGhlIHNhbXBsZSBub25jZQ', '!!!!!!!!!!!!!!!!!!!!!!==', r.bytes(16).toString('base64'), `${GOOD_KEY}, ${GOOD_KEY}`]) : GOOD_KEY;
    const wsVersion = r.int(4) === 0 ? r.pick(['', '8', '12', '99', '13, 13', 'x']) : '13';
    const origin = r.int(3) === 0 ? undefined : r.pick(ORIGINS);
    const upgradeValue = r.int(6) === 0 ? r.pick(['h2c', 'WebSocket', 'websocket, h2c', 'x']) : 'websocket';
    up = { key, version: wsVersion, origin, upgradeValue };
    const keyOk = key === GOOD_KEY || (/^[A-Za-z0-9+/]{22}==$/.test(key) && Buffer.from(key, 'base64').length === 16);
    const handshakeOk = method === 'GET' && keyOk && (wsVersion === '13' || wsVersion === '8') && upgradeValue.toLowerCase() === 'websocket';
    upgrade = { path: target, originOk: false, handshakeOk };
    notes.push(`upgrade key=${JSON.stringify(key)} version=${JSON.stringify(wsVersion)} origin=${JSON.stringify(origin?.slice(0, 40))} upgrade=${upgradeValue}`);
  }
  // What the request line cannot hold (the parser's 400; 431 past its 16 KB header limit): blanks,
  // control characters, non-ASCII, a target that is neither a path, "*", nor an absolute URL.
  if (/[\s\x00-\x1f\x7f-\uffff]/.test(target) || !/^(\/|\*$|[a-z]+:\/\/)/.test(target) || target.length > 15000) syntaxOk = false;
  const bodyText = method === 'POST' || r.int(6) === 0 ? r.pick(BODIES) : '';
  const body = Buffer.from(bodyText);
  const chunked = body.length > 0 && r.int(4) === 0;
  const h = headerLines(r, { host: r.int(20) !== 0 || version === 'HTTP/1.0', bodyLen: body.length, chunked, upgrade: up });
  if (!h.syntaxOk) syntaxOk = false;
  if (upgrade) {
    // The Origin the gateway sees: Node joins repeated ones with ", " (then no origin matches).
    const origins = h.lines.filter((l) => /^origin:/i.test(l)).map((l) => l.slice(l.indexOf(':') + 1).trim());
    const origin = origins.length ? origins.join(', ') : undefined;
    const own = [`http://127.0.0.1:${BASE}`, `http://localhost:${BASE}`];
    upgrade.originOk = !origin ? mode === 'demo' : (mode === 'token' ? [...own, ALLOWED_ORIGIN] : own).includes(origin);
  }
  if (version === 'HTTP/1.1' && !h.lines.some((l) => /^host:/i.test(l))) { syntaxOk = false; notes.push('no Host'); }
  // A declared length the body does not match (shorter: the server waits; longer: the rest is the next request).
  let bodyBytes: Buffer = chunked ? chunk(r, body) : body;
  if (!chunked && body.length > 0 && r.int(8) === 0) { bodyBytes = body.subarray(0, r.int(body.length)); notes.push('body shorter than Content-Length'); syntaxOk = false; short = true; }
  if (h.lines.some((l) => /^Connection: close/i.test(l)) && !last) notes.push('close before the end of the pipeline');
  const head = `${method} ${target} ${version}`.replace(/ $/, '');
  const headBytes = Buffer.from(`${head}\r\n${h.lines.join('\r\n')}${h.lines.length ? '\r\n' : ''}\r\n`, 'latin1');
  // Past Node's 16 KB for the request line and headers: 431.
  if (headBytes.length > 16_000) { syntaxOk = false; notes.push(`${headBytes.length} bytes of headers`); }
  const bytes = Buffer.concat([headBytes, bodyBytes]);
  const closes = h.lines.some((l) => /^Connection: close/i.test(l)) || version === 'HTTP/1.0';
  notes.unshift(`${JSON.stringify(head.slice(0, 120))}${body.length ? ` body ${JSON.stringify(bodyText.slice(0, 40))} (${body.length} bytes${chunked ? ', chunked' : ''})` : ''}`, ...h.note);
  return { bytes, method, shape: { method, target, syntaxOk, upgrade, bodyLen: body.length }, note: notes.join(', '), closes, short };
}

function chunk(r: Prng, body: Buffer): Buffer {
  const parts: Buffer[] = [];
  for (let at = 0; at < body.length;) {
    const n = 1 + r.int(Math.min(body.length - at, 4096));
    parts.push(Buffer.from(`${n.toString(16)}\r\n`), body.subarray(at, at + n), Buffer.from('\r\n'));
    at += n;
  }
  return Buffer.concat([...parts, Buffer.from('0\r\n\r\n')]);
}

// ---- talking to the gateway ------------------------------------------------------------------

interface Response { status: number; headers: Record<string, string>; body: Buffer }

/**
 * The final responses in `data` (100 Continue skipped; parsing stops at a 101), and whether the
 * bytes after the last one are a cut response or junk.
 */
function parseResponses(data: Buffer, methods: string[], closed: boolean): { responses: Response[]; junk: string | null } {
  const responses: Response[] = [];
  let at = 0;
  while (at < data.length) {
    const end = data.indexOf('\r\n\r\n', at);
    if (end < 0) return { responses, junk: closed ? data.subarray(at).toString('latin1').slice(0, 200) : null };
    const head = data.subarray(at, end).toString('latin1').split('\r\n');
    const m = /^HTTP\/1\.[01] (\d{3}) /.exec(`${head[0]} `);
    if (!m) return { responses, junk: data.subarray(at).toString('latin1').slice(0, 200) };
    const status = Number(m[1]);
    const headers: Record<string, string> = {};
    for (const line of head.slice(1)) {
      const i = line.indexOf(':');
      headers[line.slice(0, i).trim().toLowerCase()] = line.slice(i + 1).trim();
    }
    at = end + 4;
    if (status === 100) continue;
    if (status === 101) { responses.push({ status, headers, body: Buffer.alloc(0) }); break; }
    const method = methods[responses.length] ?? 'GET';
    let body: Buffer = Buffer.alloc(0);
    if (method !== 'HEAD' && status !== 204 && status !== 304) {
      if (/chunked/i.test(headers['transfer-encoding'] ?? '')) {
        const parts: Buffer[] = [];
        for (;;) {
          const eol = data.indexOf('\r\n', at);
          if (eol < 0) return { responses, junk: closed ? 'a cut chunked body' : null };
          const n = parseInt(data.subarray(at, eol).toString('latin1'), 16);
          if (!Number.isFinite(n)) return { responses, junk: 'a bad chunk size' };
          if (data.length < eol + 2 + n + 2) return { responses, junk: closed ? 'a cut chunk' : null };
          parts.push(data.subarray(eol + 2, eol + 2 + n));
          at = eol + 2 + n + 2;
          if (n === 0) break;
        }
        body = Buffer.concat(parts);
      } else if (headers['content-length'] !== undefined) {
        const n = Number(headers['content-length']);
        if (data.length < at + n) return { responses, junk: closed ? 'a cut body' : null };
        body = data.subarray(at, at + n);
        at += n;
      } else {
        if (!closed) return { responses, junk: null };
        body = data.subarray(at);
        at = data.length;
      }
    }
    responses.push({ status, headers, body });
    // ws answers an upgrade by HEAD with a 405 that has a body anyway; the connection closes
    // after it, so no later response can be misread.
    if (method === 'HEAD' && /close/i.test(headers.connection ?? '')) break;
  }
  return { responses, junk: null };
}

/** Sends a case on a fresh connection; everything that came back, once the responses owed are in, the server closed, or it waited long enough. */
function exchange(port: number, c: Case): Promise<{ data: Buffer; closed: boolean; timedOut: boolean; error?: string }> {
  return new Promise((resolve) => {
    const chunks: Buffer[] = [];
    let settled = false;
    const s = net.connect(port, '127.0.0.1');
    const finish = (how: { closed: boolean; timedOut: boolean; error?: string }) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      s.destroy();
      resolve({ data: Buffer.concat(chunks), ...how });
    };
    // Long enough for a slow delivery and the 413 of a big body; requests the server must wait on end by our abort.
    const timer = setTimeout(() => finish({ closed: false, timedOut: true }), 1000 + c.bytes.length * c.gapMs);
    s.on('data', (d) => {
      chunks.push(d);
      const got = parseResponses(Buffer.concat(chunks), c.methods, false);
      if (got.responses.length >= c.methods.length || got.responses.some((x) => x.status === 101)) finish({ closed: false, timedOut: false });
    });
    s.on('close', () => finish({ closed: true, timedOut: false }));
    s.on('error', (err: NodeJS.ErrnoException) => finish({ closed: true, timedOut: false, error: err.code ?? err.message }));
    s.once('connect', async () => {
      for (const [i, piece] of c.bytes.entries()) {
        if (i > 0 && c.gapMs) await new Promise((r) => setTimeout(r, c.gapMs));
        if (settled) return;
        s.write(piece);
      }
      if (c.abortAfterMs !== undefined) setTimeout(() => finish({ closed: false, timedOut: false }), c.abortAfterMs);
    });
  });
}

const STACK = /\n\s+at |node:internal|\bError: |\.ts:\d+:\d+|\/work\/|\/src\//;

function checkCase(c: Case, got: { data: Buffer; closed: boolean; timedOut: boolean; error?: string }): { statuses: number[]; served: number } {
  const { responses, junk } = parseResponses(got.data, c.methods, got.closed);
  assert.equal(junk, null, `bytes that are not a response: ${JSON.stringify(junk)}`);
  assert.ok(responses.length <= c.methods.length, `${responses.length} responses to ${c.methods.length} requests`);
  let served = 0;
  for (const [i, res] of responses.entries()) {
    assert.ok(c.allowed[i].has(res.status), `response ${i + 1}: status ${res.status}, allowed ${[...c.allowed[i]].join(', ')}`);
    const text = res.body.toString('latin1');
    // (A file under web/ may hold anything — source maps name sources; it is checked byte for byte below.)
    const isFile = res.status === 200 && c.paths[i] !== null;
    assert.ok(isFile || !STACK.test(text), `a stack trace or source path in the body: ${text.slice(0, 300)}`);
    for (const outside of OUTSIDE) assert.ok(outside.length < 64 || !res.body.includes(outside.subarray(0, 64)), 'a file outside web/ in the body');
    if (res.status === 200 && c.paths[i] !== null) {
      const file = WEB_FILES.get(c.paths[i]!)!;
      if (c.methods[i] === 'HEAD') assert.equal(res.headers['content-length'], String(file.length));
      else assert.ok(res.body.equals(file), `the body of ${c.paths[i]} is not web/${c.paths[i]}`);
      served++;
    }
    if (res.status === 200 && c.paths[i] === null && c.methods[i] === 'GET' && !res.headers['content-type']?.startsWith('text/plain')) assert.doesNotThrow(() => JSON.parse(res.body.toString('utf8')), 'a route answered 200 with no JSON');
  }
  // Whatever was not answered: a clean end is allowed only where the case says so.
  for (let i = responses.length; i < c.methods.length; i++) {
    if (responses.some((x) => x.status === 101)) break;
    assert.ok(c.allowed[i].has('close'), `request ${i + 1} got no response (${got.timedOut ? 'the server kept the connection open' : got.error ? `connection ${got.error}` : 'the connection closed'}); allowed ${[...c.allowed[i]].join(', ')}`);
  }
  return { statuses: responses.map((x) => x.status), served };
}

function describeCase(c: Case): string {
  const raw = Buffer.concat(c.bytes).toString('latin1');
  return `${c.what}\n  request bytes (${raw.length}): ${JSON.stringify(raw.length > 1200 ? `${raw.slice(0, 1200)}…` : raw)}`;
}

// ---- WebSocket frames, for hellos on upgraded connections ---------------------------------------

function wsFrame(opcode: number, payload: Buffer, masked = true): Buffer {
  const len = payload.length;
  const head = len < 126 ? Buffer.from([0x80 | opcode, (masked ? 0x80 : 0) | len]) : len < 65536 ? Buffer.from([0x80 | opcode, (masked ? 0x80 : 0) | 126, len >> 8, len & 0xff]) : Buffer.concat([Buffer.from([0x80 | opcode, (masked ? 0x80 : 0) | 127]), (() => { const b = Buffer.alloc(8); b.writeBigUInt64BE(BigInt(len)); return b; })()]);
  if (!masked) return Buffer.concat([head, payload]);
  const mask = randomBytes(4);
  const out = Buffer.from(payload);
  for (let i = 0; i < out.length; i++) out[i] ^= mask[i & 3];
  return Buffer.concat([head, mask, out]);
}

/** Server frames (unmasked) in `data`: text payloads and close codes. */
function wsRead(data: Buffer): Array<{ opcode: number; payload: Buffer }> {
  const frames: Array<{ opcode: number; payload: Buffer }> = [];
  let at = 0;
  while (at + 2 <= data.length) {
    let len = data[at + 1] & 0x7f;
    let off = at + 2;
    if (len === 126) { if (off + 2 > data.length) break; len = data.readUInt16BE(off); off += 2; } else if (len === 127) { if (off + 8 > data.length) break; len = Number(data.readBigUInt64BE(off)); off += 8; }
    if (off + len > data.length) break;
    frames.push({ opcode: data[at] & 0x0f, payload: data.subarray(off, off + len) });
    at = off + len;
  }
  return frames;
}

const b64 = (v: unknown) => Buffer.from(typeof v === 'string' ? v : JSON.stringify(v)).toString('base64url');
const hs256 = (header: unknown, payload: unknown, key = SECRET) => { const h = b64(header); const p = b64(payload); return `${h}.${p}.${createHmac('sha256', key).update(`${h}.${p}`).digest('base64url')}`; };

/** Tokens a hello must refuse, and why. */
function badTokens(r: Prng): Array<{ what: string; token: unknown }> {
  const now = Math.floor(Date.now() / 1000);
  const claims = { sub: 'alice', iss: 'site', iat: now, exp: now + 600 };
  const list: Array<{ what: string; token: unknown }> = [
    { what: 'none', token: undefined }, { what: 'empty', token: '' }, { what: 'null', token: null }, { what: 'number', token: 12345 }, { what: 'object', token: { alg: 'none' } },
    { what: 'two parts', token: 'a.b' }, { what: 'three junk parts', token: 'a.b.c' }, { what: 'dots', token: '...' }, { what: 'four parts', token: `${hs256({ alg: 'HS256' }, claims)}.x` },
    { what: 'huge', token: `${'a'.repeat(9000)}.b.c` }, { what: 'header null', token: `${b64('null')}.${b64(claims)}.x` }, { what: 'header a list', token: `${b64('[1]')}.${b64(claims)}.x` },
    { what: 'header not JSON', token: `${b64('{alg')}.${b64(claims)}.x` }, { what: 'header not base64url', token: `!!!.${b64(claims)}.x` },
    { what: 'alg none', token: `${b64({ alg: 'none', typ: 'JWT' })}.${b64(claims)}.` }, { what: 'alg None', token: `${b64({ alg: 'None' })}.${b64(claims)}.` },
    { what: 'alg HS512', token: `${b64({ alg: 'HS512' })}.${b64(claims)}.${createHmac('sha512', SECRET).update('x').digest('base64url')}` },
    { what: 'alg ES256 (no key configured)', token: `${b64({ alg: 'ES256' })}.${b64(claims)}.AAAA` }, { what: 'alg RS256', token: `${b64({ alg: 'RS256' })}.${b64(claims)}.AAAA` },
    { what: 'alg hs256 lower case', token: hs256({ alg: 'hs256' }, claims) }, { what: 'alg a list', token: hs256({ alg: ['HS256'] }, claims) },
    { what: 'wrong key', token: hs256({ alg: 'HS256' }, claims, 'another-secret-0123456789-0123456789') }, { what: 'signature cut', token: hs256({ alg: 'HS256' }, claims).slice(0, -3) },
    { what: 'signature of other claims', token: (() => { const t = hs256({ alg: 'HS256' }, claims).split('.'); return `${t[0]}.${b64({ ...claims, sub: 'admin' })}.${t[2]}`; })() },
    { what: 'expired', token: hs256({ alg: 'HS256' }, { ...claims, iat: now - 7200, exp: now - 3600 }) }, { what: 'not yet valid', token: hs256({ alg: 'HS256' }, { ...claims, nbf: now + 3600 }) },
    { what: 'lifetime too long', token: hs256({ alg: 'HS256' }, { ...claims, exp: now + 10 * 86400 }) }, { what: 'exp a string', token: hs256({ alg: 'HS256' }, { ...claims, exp: String(now + 600) }) },
    { what: 'exp huge', token: hs256({ alg: 'HS256' }, { ...claims, exp: 1e308 }) }, { what: 'no sub', token: hs256({ alg: 'HS256' }, { iss: 'site', iat: now, exp: now + 600 }) },
    { what: 'sub bad characters', token: hs256({ alg: 'HS256' }, { ...claims, sub: 'alice\r\nINVITE' }) }, { what: 'sub 65 characters', token: hs256({ alg: 'HS256' }, { ...claims, sub: 'a'.repeat(65) }) },
    { what: 'sub a number', token: hs256({ alg: 'HS256' }, { ...claims, sub: 5 }) }, { what: 'dest not a list', token: hs256({ alg: 'HS256' }, { ...claims, dest: '+1555*' }) },
    { what: 'maxCalls 0', token: hs256({ alg: 'HS256' }, { ...claims, maxCalls: 0 }) }, { what: 'maxCalls 1.5', token: hs256({ alg: 'HS256' }, { ...claims, maxCalls: 1.5 }) },
    { what: 'callerId bad', token: hs256({ alg: 'HS256' }, { ...claims, callerId: '<sip:evil>' }) }, { what: 'origins exclude this page', token: hs256({ alg: 'HS256' }, { ...claims, origins: ['https://other.example'] }) },
    { what: 'crit header', token: hs256({ alg: 'HS256', crit: ['exp'] }, claims) }, { what: 'b64 false', token: hs256({ alg: 'HS256', b64: false, crit: ['b64'] }, claims) },
    { what: 'payload not JSON', token: `${b64({ alg: 'HS256' })}.${b64('not json')}.x` }, { what: 'padding', token: `${hs256({ alg: 'HS256' }, claims)}==` },
    { what: 'unicode', token: `${hs256({ alg: 'HS256' }, claims)}\u00e9` }, { what: 'no issuer (one is configured)', token: hs256({ alg: 'HS256' }, { sub: 'alice', iat: now, exp: now + 600 }) }, { what: 'wrong issuer', token: hs256({ alg: 'HS256' }, { ...claims, iss: 'elsewhere' }) },
  ];
  // The order differs per seed.
  for (let i = list.length - 1; i > 0; i--) { const j = r.int(i + 1); [list[i], list[j]] = [list[j], list[i]]; }
  return list;
}

/** Upgrades, says hello with `token`, and returns the first message the gateway sends back (or how the connection ended). */
function hello(port: number, token: unknown, opts: { origin?: string; masked?: boolean; payload?: Buffer } = {}): Promise<{ status: number; message?: Record<string, unknown>; closeCode?: number; ended?: string }> {
  return new Promise((resolve) => {
    const s = net.connect(port, '127.0.0.1');
    let data = Buffer.alloc(0);
    let status = 0;
    const done = (v: { message?: Record<string, unknown>; closeCode?: number; ended?: string }) => {
      clearTimeout(timer);
      // A close frame first, then the connection: what a page does.
      if (!s.destroyed) s.end(wsFrame(0x8, Buffer.from([0x03, 0xe8])));
      setTimeout(() => s.destroy(), 50);
      resolve({ status, ...v });
    };
    const timer = setTimeout(() => done({ ended: 'no answer in 2 s' }), 2000);
    s.on('error', () => done({ ended: 'error' }));
    s.on('close', () => done({ ended: 'closed' }));
    s.on('data', (d) => {
      data = Buffer.concat([data, d]);
      if (!status) {
        const end = data.indexOf('\r\n\r\n');
        if (end < 0) return;
        status = Number(/^HTTP\/1\.1 (\d{3})/.exec(data.toString('latin1'))?.[1] ?? 0);
        data = data.subarray(end + 4);
        if (status !== 101) { done({ ended: `status ${status}` }); return; }
        const msg = opts.payload ?? Buffer.from(JSON.stringify(token === undefined ? { type: 'hello', version: 1 } : { type: 'hello', version: 1, token }));
        s.write(wsFrame(0x1, msg, opts.masked ?? true));
      }
      for (const f of wsRead(data)) {
        if (f.opcode === 0x1) { done({ message: JSON.parse(f.payload.toString('utf8')) as Record<string, unknown> }); return; }
        if (f.opcode === 0x8) { done({ closeCode: f.payload.length >= 2 ? f.payload.readUInt16BE(0) : 1005 }); return; }
      }
    });
    s.write(`GET /ws HTTP/1.1\r\nHost: 127.0.0.1:${port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: ${randomBytes(16).toString('base64')}\r\nSec-WebSocket-Version: 13\r\n${opts.origin === undefined ? '' : `Origin: ${opts.origin}\r\n`}\r\n`);
  });
}

// ---- the runs ------------------------------------------------------------------------------

type Gw = Awaited<ReturnType<typeof startGateway>>;

/** Reads private members, read-only: what the gateway still holds. */
function held(gw: Gw): { sockets: number; sessions: number; clients: number } {
  const g = gw.gateway as unknown as { http: { sockets: Set<unknown> }; signaling: { sessions: Set<unknown>; wss: { clients: Set<unknown> } } };
  return { sockets: g.http.sockets.size, sessions: g.signaling.sessions.size, clients: g.signaling.wss.clients.size };
}

async function settle(gw: Gw): Promise<{ sockets: number; sessions: number; clients: number }> {
  for (let i = 0; i < 40; i++) {
    const h = held(gw);
    if (h.sockets === 0 && h.sessions === 0 && h.clients === 0) return h;
    await new Promise((r) => setTimeout(r, 50));
  }
  return held(gw);
}

async function fuzzGateway(mode: 'demo' | 'token', seeds: number[], rounds: number): Promise<void> {
  const overrides = mode === 'demo'
    ? { ...PORT_OVERRIDES }
    : { ...PORT_OVERRIDES, auth: { mode: 'token' as const, hs256Secret: SECRET, issuer: 'site' }, edge: { allowedOrigins: [ALLOWED_ORIGIN] }, limits: { connectsPerIpPerMin: 100_000, wsHelloTimeoutSec: 1 } };
  const gw = await startGateway(BASE, overrides, { captureLogs: true });
  const uncaught: unknown[] = [];
  const onUncaught = (e: unknown) => uncaught.push(e);
  process.on('uncaughtException', onUncaught);
  process.on('unhandledRejection', onUncaught);
  const tally = new Map<string, number>();
  const sentTokens: string[] = [];
  try {
    for (const seed of seeds) {
      const r = prng(seed);
      for (let i = 0; i < rounds; i += 16) {
        const batch = Array.from({ length: Math.min(16, rounds - i) }, () => makeCase(r, mode));
        const results = await Promise.all(batch.map((c) => exchange(BASE, c)));
        batch.forEach((c, k) => {
          const { statuses, served } = explain(() => `${mode} gateway, seed ${seed} round ${i + k}: ${describeCase(c)}`, () => checkCase(c, results[k]));
          for (const st of statuses.length ? statuses : ['close']) tally.set(String(st), (tally.get(String(st)) ?? 0) + 1);
          if (served) tally.set('files served', (tally.get('files served') ?? 0) + served);
        });
      }
      if (mode === 'token') {
        // Hellos: every bad token refused, never welcomed; the good one welcomed (the control).
        for (const b of badTokens(r)) {
          if (typeof b.token === 'string') sentTokens.push(b.token);
          const got = await hello(BASE, b.token, { origin: ALLOWED_ORIGIN });
          explain(() => `token gateway, seed ${seed}: hello with a token ${b.what}: ${JSON.stringify(b.token)?.slice(0, 300)}`, () => {
            assert.equal(got.status, 101);
            assert.ok(got.message, `no message: ${got.ended ?? `closed ${got.closeCode}`}`);
            assert.equal(got.message.type, 'error', JSON.stringify(got.message));
            assert.match(String(got.message.code), /^(token-(missing|invalid|expired|wrong-algorithm)|bad-message)$/, JSON.stringify(got.message));
          });
          tally.set(`hello ${got.message?.code}`, (tally.get(`hello ${got.message?.code}`) ?? 0) + 1);
        }
        const good = await mintToken({ sub: 'alice' }, { hs256Secret: SECRET }, { ttlSec: 600, issuer: 'site' });
        sentTokens.push(good);
        const welcomed = await hello(BASE, good, { origin: ALLOWED_ORIGIN });
        assert.equal(welcomed.message?.type, 'welcome', JSON.stringify(welcomed));
        // The right token from a page not allowed, an unmasked frame, a frame past wsMaxMessageBytes, a frame that is no JSON.
        assert.equal((await hello(BASE, good, { origin: 'https://evil.example' })).status, 403);
        assert.equal((await hello(BASE, good, {})).status, 403, 'no Origin in token mode');
        assert.equal((await hello(BASE, good, { origin: ALLOWED_ORIGIN, masked: false })).closeCode, 1002);
        assert.equal((await hello(BASE, good, { origin: ALLOWED_ORIGIN, payload: Buffer.alloc(70_000, 0x61) })).closeCode, 1009);
        assert.equal((await hello(BASE, good, { origin: ALLOWED_ORIGIN, payload: Buffer.from('{"type":"hello",') })).message?.type, 'error');
      }
    }
    // Afterwards: nothing held, the operational endpoints answer, nothing went wrong.
    const left = await settle(gw);
    assert.deepEqual(left, { sockets: 0, sessions: 0, clients: 0 }, 'connections or sessions left open');
    const health = await fetch(`${gw.url}/healthz`);
    assert.equal(health.status, 200);
    const metrics = await fetch(`${gw.url}/metrics`);
    assert.equal(metrics.status, 200);
    assert.match(await metrics.text(), /^gateway_websocket_connections 0$/m);
    assert.deepEqual(uncaught, [], 'uncaught exceptions or unhandled rejections');
    const bad = gw.logs.filter((l) => (l.level as number) >= 50);
    assert.deepEqual(bad.map((l) => JSON.stringify(l).slice(0, 500)), [], 'error-level log lines');
    const logText = gw.logs.map((l) => JSON.stringify(l)).join('\n');
    assert.ok(!logText.includes(SECRET), 'the HS256 secret in the log');
    const logged = sentTokens.filter((t) => t.length > 20 && logText.includes(t));
    assert.deepEqual(logged.map((t) => t.slice(0, 40)), [], 'whole tokens in the log');
    console.log(`${mode} gateway: ${seeds.length * rounds} raw requests; ${[...tally].map(([k, v]) => `${k}: ${v}`).join(', ')}`);
  } finally {
    process.off('uncaughtException', onUncaught);
    process.off('unhandledRejection', onUncaught);
    await gw.stop();
  }
}

test('demo-mode gateway: seeded raw requests over TCP get one sensible response each or a clean close; nothing outside web/ is served; no error logged, nothing left open', async () => {
  await fuzzGateway('demo', [0x41c0, 0x7e57], 700);
});

test('token-mode gateway behind an origin allow-list: the same, plus bent upgrades and hellos with bad tokens, none welcomed', async () => {
  await fuzzGateway('token', [0xbeef], 700);
});

// ---- pinned: what this fuzz found ------------------------------------------------------------

test('pinned: a client that goes away while sending a POST body is no error (it was logged at error level with a stack trace, as a failed request)', async () => {
  const logs: Array<Record<string, unknown>> = [];
  const http = new HttpServer({ webRoot: tempDir('webroot-'), logger: pino({ level: 'debug' }, { write: (l: string) => { logs.push(JSON.parse(l) as Record<string, unknown>); } }) });
  let reached = 0;
  http.route('POST', '/api/echo', (_q, res, body) => { reached++; sendJson(res, 200, { bytes: body.length }); });
  const { port } = await http.listen('127.0.0.1', BASE + 3);
  try {
    for (const request of [
      'POST /api/echo HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{"a":',
      'POST /api/echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nabcde\r\n',
    ]) {
      await new Promise<void>((resolve) => {
        const s = net.connect(port, '127.0.0.1', () => { s.write(request); setTimeout(() => s.destroy(), 50); });
        s.on('close', () => resolve());
      });
    }
    await new Promise((r) => setTimeout(r, 100));
    assert.equal(reached, 0, 'the route ran on a cut body');
    assert.deepEqual(logs.filter((l) => (l.level as number) >= 50).map((l) => l.msg), []);
    assert.ok(logs.some((l) => l.level === 20 && /body/.test(String(l.reason))), JSON.stringify(logs));
    // Still serving.
    assert.deepEqual(await (await fetch(`http://127.0.0.1:${port}/api/echo`, { method: 'POST', body: 'xyz' })).json(), { bytes: 3 });
  } finally {
    await http.close();
  }
});

for (const scheme of ['http', 'https'] as const) {
  test(`pinned: a WebSocket upgrade refused (origin not allowed) with bytes after the request is closed once the client goes, over ${scheme} (it stayed open for good: a socket per request)`, async () => {
    let tlsOpts = {};
    if (scheme === 'https') {
      // A throwaway pair from the script users run (certs/make-self-signed.sh).
      const dir = tempDir('upgrade-tls-');
      assert.equal(spawnSync('bash', [join(process.cwd(), 'certs', 'make-self-signed.sh'), dir], { encoding: 'utf8' }).status, 0);
      tlsOpts = { http: { host: '127.0.0.1', port: BASE, tls: { certFile: join(dir, 'server.cert.pem'), keyFile: join(dir, 'server.key.pem') } } };
    }
    const gw = await startGateway(BASE, { ...PORT_OVERRIDES, ...tlsOpts, auth: { mode: 'token', hs256Secret: SECRET }, edge: { allowedOrigins: [ALLOWED_ORIGIN] } });
    try {
      const answer = await new Promise<string>((resolve) => {
        const request = `GET /ws HTTP/1.1\r\nHost: x\r\nOrigin: https://evil.example\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: ${GOOD_KEY}\r\nSec-WebSocket-Version: 13\r\n\r\n`;
        const s: net.Socket = scheme === 'https'
          ? tls.connect({ host: '127.0.0.1', port: BASE, rejectUnauthorized: false }, () => s.write(request))
          : net.connect(BASE, '127.0.0.1', () => s.write(request));
        let got = '';
        // A frame that arrives after the gateway took the request (a page does not wait for the 101).
        s.once('data', () => s.write('\x81\x80abcd'));
        s.on('data', (d) => { got += d.toString('latin1'); });
        s.on('close', () => resolve(got));
        s.on('error', () => resolve(got));
      });
      assert.match(answer, /^HTTP\/1\.1 403 /);
      assert.deepEqual(await settle(gw), { sockets: 0, sessions: 0, clients: 0 });
    } finally {
      await gw.stop();
    }
  });
}
