/**
 * SIP message model, parser and serializer (RFC 3261 §7, §20, §25).
 *
 * Headers keep their order and repetitions; names are compared case-insensitively and compact
 * forms are expanded on parse. The parser never throws: it returns a `SipParseError` naming
 * the problem, which the transport answers with 400 or drops.
 */

const COMPACT: Record<string, string> = {
  i: 'Call-ID', m: 'Contact', f: 'From', t: 'To', v: 'Via', l: 'Content-Length', c: 'Content-Type',
  k: 'Supported', s: 'Subject', e: 'Content-Encoding', o: 'Event', u: 'Allow-Events', r: 'Refer-To',
  b: 'Referred-By', x: 'Session-Expires', a: 'Accept-Contact', j: 'Reject-Contact', d: 'Request-Disposition',
  y: 'Identity', n: 'Identity-Info',
};

const CANONICAL: Record<string, string> = {
  'call-id': 'Call-ID', cseq: 'CSeq', 'www-authenticate': 'WWW-Authenticate', 'max-forwards': 'Max-Forwards',
  'content-length': 'Content-Length', 'content-type': 'Content-Type', 'record-route': 'Record-Route',
  'proxy-authenticate': 'Proxy-Authenticate', 'proxy-authorization': 'Proxy-Authorization',
  'session-expires': 'Session-Expires', 'min-se': 'Min-SE', 'user-agent': 'User-Agent', 'rseq': 'RSeq', 'rack': 'RAck',
};

/** Headers whose values may be comma-separated lists (RFC 3261 §7.3.1). */
const LIST_HEADERS = new Set(['Via', 'Route', 'Record-Route', 'Contact', 'Allow', 'Supported', 'Require', 'Accept', 'Proxy-Require', 'Unsupported']);

/** Names seen so far → canonical form (bounded: peers can send any header names). */
const canonicalCache = new Map<string, string>();

export function canonicalHeaderName(name: string): string {
  const cached = canonicalCache.get(name);
  if (cached !== undefined) return cached;
  const lower = name.toLowerCase();
  let out: string;
  if (lower.length === 1 && COMPACT[lower]) out = COMPACT[lower];
  else if (CANONICAL[lower]) out = CANONICAL[lower];
  else out = lower.replace(/(^|-)([a-z])/g, (_m, d: string, c: string) => d + c.toUpperCase());
  if (canonicalCache.size < 2048) canonicalCache.set(name, out);
  return out;
}

export interface SipSource { protocol: 'udp' | 'tcp' | 'tls'; host: string; port: number }

abstract class SipMessage {
  /** [canonical name, value] in wire order; list headers are split into one entry per value. */
  headerList: Array<[string, string]> = [];
  body = '';

  // Every stored name is canonical (parse, addHeader and setHeader make it so), and names that
  // are equal ignoring case have one canonical form: plain comparison is enough.
  header(name: string): string | undefined {
    const n = canonicalHeaderName(name);
    for (const [k, v] of this.headerList) if (k === n) return v;
    return undefined;
  }

  headers(name: string): string[] {
    const n = canonicalHeaderName(name);
    const out: string[] = [];
    for (const [k, v] of this.headerList) if (k === n) out.push(v);
    return out;
  }

  setHeader(name: string, value: string): this {
    this.removeHeader(name);
    this.headerList.push([canonicalHeaderName(name), value]);
    return this;
  }

  addHeader(name: string, value: string, first = false): this {
    const entry: [string, string] = [canonicalHeaderName(name), value];
    if (first) this.headerList.unshift(entry);
    else this.headerList.push(entry);
    return this;
  }

  removeHeader(name: string): this {
    const n = canonicalHeaderName(name);
    this.headerList = this.headerList.filter(([k]) => k !== n);
    return this;
  }

  get callId(): string { return this.header('call-id') ?? ''; }
  get cseq(): { seq: number; method: string } {
    const m = /^\s*(\d+)\s+(\S+)/.exec(this.header('cseq') ?? '');
    return m ? { seq: Number(m[1]), method: m[2].toUpperCase() } : { seq: 0, method: '' };
  }
  get topVia(): Via | null { const v = this.header('via'); return v ? parseVia(v) : null; }

  protected serializeHeadersAndBody(startLine: string): string {
    const lines = [startLine];
    for (const [k, v] of this.headerList) if (k !== 'Content-Length') lines.push(`${k}: ${v}`);
    lines.push(`Content-Length: ${Buffer.byteLength(this.body)}`);
    return `${lines.join('\r\n')}\r\n\r\n${this.body}`;
  }
}

export class SipRequest extends SipMessage {
  source: SipSource = { protocol: 'udp', host: '', port: 0 };
  constructor(public method: string, public uri: string) { super(); }
  override toString(): string { return this.serializeHeadersAndBody(`${this.method} ${this.uri} SIP/2.0`); }
}

export class SipResponse extends SipMessage {
  source: SipSource = { protocol: 'udp', host: '', port: 0 };
  constructor(public status: number, public reason: string) { super(); }
  override toString(): string { return this.serializeHeadersAndBody(`SIP/2.0 ${this.status} ${this.reason}`); }
}

/**
 * Why a message could not be parsed. `partial` is what we could read of a request (to route a
 * 400 back when its Via is usable); `status` is the response RFC 3261 calls for when it is not
 * a plain 400 (505 for another SIP version, 513 for an oversized message).
 */
export interface SipParseError { error: string; partial?: SipRequest; status?: number }

export const PARSE_LIMITS = { maxMessageBytes: 65535, maxHeaders: 128, maxLineLength: 8192 };

const TOKEN_CHARS = "A-Za-z0-9.!%*_+`'~-";
const TOKEN = new RegExp(`^[${TOKEN_CHARS}]+$`);
/** An unquoted display name: tokens separated by LWS (§25.1), also taking non-ASCII letters. */
const DISPLAY_TOKENS = new RegExp(`^[\\u0080-\\uffff${TOKEN_CHARS}]+(?:[ \\t]+[\\u0080-\\uffff${TOKEN_CHARS}]+)*$`);
const SCHEME_URI = /^[A-Za-z][A-Za-z0-9+.-]*:[^\s<>"]+$/;
const CSEQ = new RegExp(`^(\\d+)\\s+([${TOKEN_CHARS}]+)$`);
/** What a response copies of its request besides the Vias (§8.2.6.2): by these its sender matches it. */
const COPIED_BY_RESPONSES = new Set(['From', 'To', 'Call-ID', 'CSeq']);
/** Headers that must appear at most once (RFC 3261 §20; multi01 and mcl01 in RFC 4475). */
const SINGLE_HEADERS = ['From', 'To', 'Call-ID', 'CSeq', 'Max-Forwards', 'Content-Length'];

/** Parse one datagram / framed stream message. Never throws. */
export function parseSipMessage(data: Buffer | string): SipRequest | SipResponse | SipParseError {
  const buf = typeof data === 'string' ? Buffer.from(data, 'utf8') : data;
  // RFC 3261 §7.5: tolerate leading CRLFs (keepalives) before the start line.
  let start = 0;
  while (start < buf.length && (buf[start] === 0x0d || buf[start] === 0x0a)) start++;
  if (start === buf.length) return { error: 'empty message' };
  const tooLarge = buf.length > PARSE_LIMITS.maxMessageBytes;
  // The header block ends at the first empty line (CRLF CRLF, or LF LF from a sloppy peer).
  const crlf = buf.indexOf('\r\n\r\n', start);
  const lf = buf.indexOf('\n\n', start);
  const useLf = lf >= 0 && (crlf < 0 || lf < crlf);
  const headEnd = useLf ? lf : crlf;
  if (headEnd < 0 || (tooLarge && headEnd > PARSE_LIMITS.maxMessageBytes)) {
    return tooLarge ? { error: 'Message Too Large', status: 513 } : { error: 'no end of headers' };
  }
  const head = buf.subarray(start, headEnd).toString('utf8');
  const parsed = parseHead(head);
  if ('error' in parsed) return parsed;
  const msg = parsed;
  // Only now, with the headers read, so the 513 can be routed (RFC 3261 §21.5.14).
  if (tooLarge) return partialError(msg, 'Message Too Large', 513);
  const problem = checkMandatory(msg);
  if (problem) return partialError(msg, problem);
  // Content-Length counts octets (§20.14): cut the body from the bytes, not from decoded text.
  const bodyBytes = buf.subarray(headEnd + (useLf ? 2 : 4));
  const cl = msg.header('content-length');
  if (cl !== undefined) {
    if (!/^\d+$/.test(cl)) return partialError(msg, 'invalid Content-Length');
    if (cl.length > 10 || Number(cl) > bodyBytes.length) return partialError(msg, 'Content-Length larger than the body');
    msg.body = bodyBytes.subarray(0, Number(cl)).toString('utf8');
  } else {
    msg.body = bodyBytes.toString('utf8');
  }
  return msg;
}

/** Start line and header fields; a request's start-line error still reads the headers (for the 400). */
function parseHead(head: string): SipRequest | SipResponse | SipParseError {
  // Unfold continuation lines (RFC 3261 §7.3.1): CRLF followed by SP/HT is whitespace.
  const folded = head.includes('\n ') || head.includes('\n\t');
  const lines = (folded ? head.replace(/\r?\n[ \t]+/g, ' ') : head).split(/\r?\n/);
  const startLine = lines[0];
  if (startLine.length > PARSE_LIMITS.maxLineLength) return { error: 'start line too long' };
  let msg: SipRequest | SipResponse;
  let startError: { error: string; status?: number } | null = null;
  if (startLine.startsWith('SIP/')) {
    // Status-Line = SIP-Version SP Status-Code SP Reason-Phrase (§7.2); the reason may be empty.
    // [^\r\n], not ".": a reason phrase is UTF-8 (§25.1), and "." stops at U+2028/U+2029.
    const resp = /^SIP\/(\d+\.\d+) (\d{3})(?: ([^\r\n]*))?$/.exec(startLine);
    if (!resp) return { error: /^SIP\/\S+ \d{4}/.test(startLine) ? 'status code out of range' : 'malformed status line' };
    if (resp[1] !== '2.0') return { error: `unsupported SIP version ${resp[1]}` };
    const status = Number(resp[2]);
    if (status < 100 || status > 699) return { error: `status code out of range: ${status}` };
    msg = new SipResponse(status, resp[3] ?? '');
  } else {
    // Request-Line = Method SP Request-URI SP SIP-Version (§7.1): exactly one SP between elements.
    const req = /^(\S+) (\S+) SIP\/(\d+\.\d+)$/.exec(startLine);
    if (req) {
      msg = new SipRequest(req[1], req[2]);
      if (!TOKEN.test(req[1])) return { error: `invalid method "${req[1].slice(0, 20)}"` };
      if (req[3] !== '2.0') startError = { error: `unsupported SIP version ${req[3]}`, status: 505 };
      else startError = requestUriProblem(req[2]);
    } else {
      // Not well formed, but if it is recognisably a request, keep reading so the 400 can be routed.
      // (A scan, not one regex: nested whitespace quantifiers backtrack badly on long lines.)
      const sp = startLine.search(/[ \t]/);
      const method = sp > 0 ? startLine.slice(0, sp) : '';
      const tail = sp > 0 ? startLine.slice(sp).trim() : '';
      const vAt = tail.search(/(?:^|[ \t])SIP\/\d+\.\d+$/);
      const uri = vAt > 0 ? tail.slice(0, vAt).trim() : '';
      if (!TOKEN.test(method) || !uri) return { error: 'malformed start line' };
      const version = tail.slice(vAt).trim().slice(4);
      msg = new SipRequest(method, uri);
      if (version !== '2.0') startError = { error: `unsupported SIP version ${version}`, status: 505 };
      else if (/\s/.test(uri)) startError = { error: 'malformed Request-URI: contains whitespace' };
      else startError = { error: 'malformed Request-Line: extra whitespace between elements' };
    }
  }
  // A broken line is skipped, not the end of reading: the header fields after it still go into
  // the partial request, so that the 400 copies its From, To, Call-ID and CSeq (§8.2.6.2) —
  // without them the sender cannot match the 400 to its transaction (§17.1.3). The first
  // problem is the one reported.
  let lineError: { error: string; status?: number } | null = null;
  for (let i = 1; i < lines.length; i++) {
    const line = lines[i];
    // Past the limit (a 400 follows) only what that 400 copies and lacks so far is read: a From,
    // To, Call-ID or CSeq after the first fields would else be missing from it, and its sender
    // could not match it (§8.2.6.2, §17.1.3).
    if (i > PARSE_LIMITS.maxHeaders && !copiedAndMissing(msg, line)) continue;
    if (line.length > PARSE_LIMITS.maxLineLength) { lineError ??= { error: 'header line too long' }; continue; }
    const colon = line.indexOf(':');
    if (colon <= 0) { lineError ??= { error: startError?.error ?? `malformed header line "${line.slice(0, 40)}"`, status: startError?.status }; continue; }
    const name = trimLws(line.slice(0, colon));
    if (!TOKEN.test(name)) { lineError ??= { error: startError?.error ?? `invalid header name "${name.slice(0, 40)}"`, status: startError?.status }; continue; }
    // Only SP/HT is LWS (§25.1): String.trim would also eat U+FEFF, NBSP … that belong to the value.
    const value = trimLws(line.slice(colon + 1));
    // A CR has no place in a header value, not even escaped in a quoted-pair (§25.1; other control
    // characters may be, as RFC 4475's intmeth has them): a bare one would be copied into our
    // responses (Via, From, To, Call-ID, CSeq), where a peer that ends lines at a CR would read
    // a header the sender slipped in. Refused (400), not kept.
    if (value.includes('\r')) { lineError ??= { error: `bare CR in the value of ${canonicalHeaderName(name)}` }; continue; }
    const canonical = canonicalHeaderName(name);
    if (LIST_HEADERS.has(canonical)) {
      for (const part of splitList(value)) if (part) msg.headerList.push([canonical, part]);
    } else {
      msg.headerList.push([canonical, value]);
    }
  }
  // A start line with a status of its own (505 for SIP/3.0) says more than a header line's 400.
  if (startError?.status) return partialError(msg, startError.error, startError.status);
  if (lines.length - 1 > PARSE_LIMITS.maxHeaders) return partialError(msg, lineError?.error ?? 'too many headers', lineError?.status);
  if (lineError) return partialError(msg, lineError.error, lineError.status);
  if (startError) return partialError(msg, startError.error, startError.status);
  return msg;
}

/** A From, To, Call-ID or CSeq line (any spelling) of which `msg` has none yet. */
function copiedAndMissing(msg: SipRequest | SipResponse, line: string): boolean {
  const colon = line.indexOf(':');
  if (colon <= 0 || line.length > PARSE_LIMITS.maxLineLength) return false;
  const name = canonicalHeaderName(trimLws(line.slice(0, colon)));
  return COPIED_BY_RESPONSES.has(name) && msg.header(name) === undefined;
}

/** Spaces and tabs off both ends (linear whitespace inside a header value, RFC 3261 §7.3.1). */
export function trimLws(s: string): string {
  let a = 0;
  let b = s.length;
  while (a < b && (s[a] === ' ' || s[a] === '\t')) a++;
  while (b > a && (s[b - 1] === ' ' || s[b - 1] === '\t')) b--;
  return s.slice(a, b);
}

function requestUriProblem(uri: string): { error: string } | null {
  if (uri.startsWith('<')) return { error: 'malformed Request-URI: enclosed in <>' };
  if (!SCHEME_URI.test(uri)) return { error: 'malformed Request-URI' };
  if (/^sips?:/i.test(uri)) {
    const u = parseUri(uri);
    if (!u) return { error: 'malformed Request-URI' };
    // RFC 3261 §19.1.1 (table): headers are not allowed in a Request-URI (RFC 4475 escruri).
    if (u.headers !== undefined) return { error: 'malformed Request-URI: headers are not allowed' };
  }
  return null;
}

function partialError(msg: SipRequest | SipResponse, error: string, status?: number): SipParseError {
  const e: SipParseError = { error };
  if (msg instanceof SipRequest) e.partial = msg;
  if (status !== undefined) e.status = status;
  return e;
}

function checkMandatory(msg: SipRequest | SipResponse): string | null {
  for (const h of ['Via', 'From', 'To', 'Call-ID', 'CSeq']) if (!msg.header(h)) return `missing ${h} header`;
  for (const h of SINGLE_HEADERS) if (msg.headers(h).length > 1) return `more than one ${h} header`;
  const cseq = CSEQ.exec(msg.header('cseq')!);
  if (!cseq) return 'malformed CSeq';
  // §8.1.1.5 / §20.16: a 32-bit unsigned integer.
  if (cseq[1].replace(/^0+(?=\d)/, '').length > 10 || Number(cseq[1]) > 0xffffffff) return 'CSeq number too large';
  // Exactly: methods are case-sensitive (§7.1), so `CSeq: 1 invite` does not name an INVITE.
  if (msg instanceof SipRequest && cseq[2] !== msg.method) return 'CSeq method does not match the request method';
  const mf = msg.header('max-forwards');
  if (mf !== undefined) {
    if (!/^\d+$/.test(mf)) return 'malformed Max-Forwards';
    if (Number(mf) > 255) return 'Max-Forwards out of range'; // §20.22: 0-255, leading zeros allowed
  }
  for (const v of msg.headers('via')) if (!validVia(v)) return 'malformed Via header';
  for (const h of ['From', 'To'] as const) {
    const p = nameAddrProblem(msg.header(h)!);
    if (p) return `malformed ${h} header: ${p}`;
  }
  const contacts = msg.headers('contact');
  for (const c of contacts) {
    // "*" only means "all bindings" in a REGISTER; on anything else it is no target at all.
    if (c === '*' && contacts.length === 1 && msg instanceof SipRequest && msg.method === 'REGISTER') continue;
    const p = nameAddrProblem(c);
    if (p) return `malformed Contact header: ${p}`;
  }
  return null;
}

/** Strict via-parm: sent-protocol, sent-by and well-formed parameters (RFC 4475 badinv01). */
function validVia(value: string): boolean {
  const m = /^\s*SIP\s*\/\s*2\.0\s*\/\s*[A-Za-z0-9.!%*_+`'~-]+\s+(?:\[[0-9A-Fa-f:.]+\]|[^\s:;,"<>[\]]+)(?:\s*:\s*(\d{1,5}))?\s*((?:;.*)?)$/.exec(value);
  // A port we could never send a response to (0, or past 65535) makes the Via unusable.
  if (m?.[1] !== undefined && (Number(m[1]) < 1 || Number(m[1]) > 65535)) return false;
  return !!m && paramsProblem(m[2]) === null;
}

/** Generic-param list (";name[=value]" repeated): null when well formed. */
function paramsProblem(text: string): string | null {
  if (!text.trim()) return null;
  const parts = splitOutside(text, ';');
  if (parts[0].trim() !== '') return 'text before the parameters';
  for (const raw of parts.slice(1)) {
    const p = raw.trim();
    if (!p) return 'empty parameter';
    const eq = p.indexOf('=');
    const name = (eq < 0 ? p : p.slice(0, eq)).trim();
    if (!TOKEN.test(name)) return `bad parameter name "${name.slice(0, 20)}"`;
    if (eq >= 0) {
      const v = p.slice(eq + 1).trim();
      if (!v) return `empty value for parameter "${name.slice(0, 20)}"`;
      if (!/^"(?:[^"\\]|\\.)*"$/.test(v) && !/^[^\s",;]+$/.test(v)) return `bad value for parameter "${name.slice(0, 20)}"`;
    }
  }
  return null;
}

/**
 * name-addr / addr-spec as From, To and Contact carry them (RFC 3261 §20.10, §25.1), with the
 * faults RFC 4475 tests: an unterminated quote (quotbal), LWS inside <> (badaspec), unquoted
 * non-token display names (baddn), and an addr-spec carrying URI headers (regbadct).
 */
function nameAddrProblem(value: string): string | null {
  const v = value.trim();
  let rest = v;
  if (v.startsWith('"')) {
    const q = /^"((?:[^"\\]|\\[\x00-\x09\x0b\x0c\x0e-\x7f])*)"/.exec(v);
    if (!q) return 'unterminated quoted display name';
    rest = v.slice(q[0].length).replace(/^[ \t]+/, '');
    if (!rest.startsWith('<')) return 'quoted display name without <URI>';
  }
  const lt = rest.indexOf('<');
  const semi = rest.indexOf(';');
  const isNameAddr = lt >= 0 && (semi < 0 || lt < semi);
  // Before "<" (name-addr) or before the parameters (addr-spec) a quote has no business.
  if (rest.slice(0, isNameAddr ? lt : semi < 0 ? rest.length : semi).includes('"')) return 'misplaced quote';
  if (isNameAddr) {
    const dn = rest.slice(0, lt).trim();
    if (dn && !DISPLAY_TOKENS.test(dn)) return 'display name must be quoted';
    const gt = rest.indexOf('>', lt);
    if (gt < 0) return 'missing >';
    const uri = rest.slice(lt + 1, gt);
    if (!SCHEME_URI.test(uri)) return /\s/.test(uri) ? 'whitespace inside <>' : 'bad URI';
    const p = paramsProblem(rest.slice(gt + 1));
    return p;
  }
  // addr-spec: a URI with ';', ',' or '?' must be inside <> (§20.10), so parameters belong to the header.
  const uri = (semi < 0 ? rest : rest.slice(0, semi)).trim();
  if (!SCHEME_URI.test(uri)) return 'bad URI';
  if (uri.includes('?')) return 'a URI with headers must be enclosed in <>';
  if (uri.includes(',')) return 'a URI with a comma must be enclosed in <>';
  return semi < 0 ? null : paramsProblem(rest.slice(semi));
}

/** Split a comma-separated header value, respecting quotes and angle brackets. */
export function splitList(value: string): string[] {
  const out: string[] = [];
  let depth = 0; let quoted = false; let cur = '';
  for (let i = 0; i < value.length; i++) {
    const ch = value[i];
    if (quoted) {
      cur += ch;
      if (ch === '\\' && i + 1 < value.length) cur += value[++i];
      else if (ch === '"') quoted = false;
      continue;
    }
    if (ch === '"') quoted = true;
    else if (ch === '<') depth++;
    else if (ch === '>') depth = Math.max(0, depth - 1);
    else if (ch === ',' && depth === 0) { out.push(cur.trim()); cur = ''; continue; }
    cur += ch;
  }
  out.push(cur.trim());
  return out;
}

export interface Via { protocol: string; transport: string; host: string; port?: number; params: Record<string, string | null> }

export function parseVia(value: string): Via | null {
  // The same transport token validVia accepts (e.g. TLS-SCTP, RFC 4168): a request that passed
  // validation must never come back here as null.
  const m = /^\s*SIP\s*\/\s*2\.0\s*\/\s*([A-Za-z0-9.!%*_+`'~-]+)\s+(\[[0-9A-Fa-f:.]+\]|[^\s:;]+)(?:\s*:\s*(\d{1,5}))?\s*((?:;.*)?)$/.exec(value);
  if (!m) return null;
  const params = parseParams(m[4]);
  return { protocol: 'SIP/2.0', transport: m[1].toUpperCase(), host: m[2], port: m[3] ? Number(m[3]) : undefined, params };
}

export function formatVia(v: Via): string {
  return `SIP/2.0/${v.transport} ${v.host}${v.port ? `:${v.port}` : ''}${formatParams(v.params)}`;
}

export function parseParams(text: string): Record<string, string | null> {
  const params: Record<string, string | null> = {};
  for (const part of splitOutside(text, ';')) {
    const p = part.trim();
    if (!p) continue;
    const eq = p.indexOf('=');
    if (eq < 0) params[p.toLowerCase()] = null;
    else params[p.slice(0, eq).trim().toLowerCase()] = p.slice(eq + 1).trim();
  }
  return params;
}

export function formatParams(params: Record<string, string | null>): string {
  return Object.entries(params).map(([k, v]) => (v === null ? `;${k}` : `;${k}=${v}`)).join('');
}

function splitOutside(text: string, sepChar: string): string[] {
  const out: string[] = []; let cur = ''; let quoted = false;
  for (let i = 0; i < text.length; i++) {
    const ch = text[i];
    if (quoted && ch === '\\' && i + 1 < text.length) { cur += ch + text[++i]; continue; }
    if (ch === '"') quoted = !quoted;
    if (ch === sepChar && !quoted) { out.push(cur); cur = ''; continue; }
    cur += ch;
  }
  out.push(cur);
  return out;
}

export interface NameAddr { displayName?: string; uri: string; params: Record<string, string | null> }

/** name-addr or addr-spec with header parameters (From, To, Contact, Route). */
export function parseNameAddr(value: string): NameAddr | null {
  const v = value.trim();
  if (v === '*') return { uri: '*', params: {} };
  let displayName: string | undefined;
  let rest = v;
  const quoted = /^"((?:[^"\\]|\\.)*)"\s*/.exec(rest);
  if (quoted) { displayName = quoted[1].replace(/\\(.)/g, '$1'); rest = rest.slice(quoted[0].length); }
  if (rest.startsWith('<') || /^[^<;"]*</.test(rest)) {
    const lt = rest.indexOf('<');
    if (!quoted) { const dn = rest.slice(0, lt).trim(); if (dn) displayName = dn; }
    const gt = rest.indexOf('>', lt);
    if (gt < 0) return null;
    const uri = rest.slice(lt + 1, gt).trim();
    if (!/^[A-Za-z][A-Za-z0-9+.-]*:/.test(uri)) return null;
    return { displayName, uri, params: parseParams(rest.slice(gt + 1)) };
  }
  if (quoted) return null;
  // addr-spec: parameters after the URI belong to the header (RFC 3261 §20.10).
  const semi = rest.indexOf(';');
  const uri = (semi < 0 ? rest : rest.slice(0, semi)).trim();
  if (!/^[A-Za-z][A-Za-z0-9+.-]*:\S+$/.test(uri)) return null;
  return { uri, params: semi < 0 ? {} : parseParams(rest.slice(semi)) };
}

export function formatNameAddr(na: NameAddr): string {
  const dn = na.displayName ? `"${na.displayName.replace(/(["\\])/g, '\\$1')}" ` : '';
  return `${dn}<${na.uri}>${formatParams(na.params)}`;
}

export interface SipUri { scheme: 'sip' | 'sips' | 'tel'; user?: string; password?: string; host: string; port?: number; params: Record<string, string | null>; headers?: string }

export function parseUri(uri: string): SipUri | null {
  const sm = /^(sips?|tel):(.*)$/i.exec(uri.trim());
  if (!sm) return null;
  const scheme = sm[1].toLowerCase() as SipUri['scheme'];
  let rest = sm[2];
  let user: string | undefined;
  let password: string | undefined;
  if (scheme !== 'tel') {
    // userinfo ends at the first "@": the user part may hold ";", "?", "/" and "," (RFC 3261
    // §25.1 user-unreserved; RFC 4475 semiuri, intmeth), but never an unescaped "@".
    const at = rest.indexOf('@');
    if (at >= 0) {
      const userinfo = rest.slice(0, at);
      rest = rest.slice(at + 1);
      const colon = userinfo.indexOf(':');
      user = colon < 0 ? userinfo : userinfo.slice(0, colon);
      password = colon < 0 ? undefined : userinfo.slice(colon + 1);
    }
  }
  const m = /^(\[[0-9A-Fa-f:.]+\]|[^:;?]+)(?::(\d{1,5}))?((?:;[^?]*)?)(?:\?(.*))?$/.exec(rest);
  if (!m) return null;
  return {
    scheme,
    user: user !== undefined ? safeDecode(user) : undefined,
    password,
    host: m[1].toLowerCase(),
    port: m[2] ? Number(m[2]) : undefined,
    params: parseParams(m[3] ?? ''),
    headers: m[4],
  };
}

function safeDecode(s: string): string {
  try { return decodeURIComponent(s); } catch { return s; }
}

export function formatUri(u: SipUri): string {
  const pw = u.password !== undefined ? `:${u.password}` : '';
  const user = u.user !== undefined ? `${encodeURIComponent(u.user).replace(/%2B/g, '+').replace(/%2A/g, '*').replace(/%23/g, '%23')}${pw}@` : '';
  return `${u.scheme}:${user}${u.host}${u.port ? `:${u.port}` : ''}${formatParams(u.params)}${u.headers ? `?${u.headers}` : ''}`;
}
