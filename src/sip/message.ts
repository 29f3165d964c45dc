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
  b: 'Referred-By', x: 'Session-Expires',
};

const CANONICAL: Record<string, string> = {
  'call-id': 'Call-ID', cseq: 'CSeq', 'www-authenticate': 'WWW-Authenticate', 'max-forwards': 'Max-Forwards',
  'content-length': 'Content-Length', 'content-type': 'Content-Type', 'record-route': 'Record-Route',
  'proxy-authenticate': 'Proxy-Authenticate', 'proxy-authorization': 'Proxy-Authorization',
  'session-expires': 'Session-Expires', 'min-se': 'Min-SE', 'user-agent': 'User-Agent', 'rseq': 'RSeq', 'rack': 'RAck',
};

/** Headers whose values may be comma-separated lists (RFC 3261 §7.3.1). */
const LIST_HEADERS = new Set(['via', 'route', 'record-route', 'contact', 'allow', 'supported', 'require', 'accept', 'proxy-require', 'unsupported']);

export function canonicalHeaderName(name: string): string {
  const lower = name.toLowerCase();
  if (lower.length === 1 && COMPACT[lower]) return COMPACT[lower];
  if (CANONICAL[lower]) return CANONICAL[lower];
  return lower.replace(/(^|-)([a-z])/g, (_m, d: string, c: string) => d + c.toUpperCase());
}

export interface SipSource { protocol: 'udp' | 'tcp' | 'tls'; host: string; port: number }

abstract class SipMessage {
  /** [canonical name, value] in wire order; list headers are split into one entry per value. */
  headerList: Array<[string, string]> = [];
  body = '';

  header(name: string): string | undefined {
    const n = canonicalHeaderName(name).toLowerCase();
    for (const [k, v] of this.headerList) if (k.toLowerCase() === n) return v;
    return undefined;
  }

  headers(name: string): string[] {
    const n = canonicalHeaderName(name).toLowerCase();
    const out: string[] = [];
    for (const [k, v] of this.headerList) if (k.toLowerCase() === n) out.push(v);
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
    const n = canonicalHeaderName(name).toLowerCase();
    this.headerList = this.headerList.filter(([k]) => k.toLowerCase() !== n);
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

export interface SipParseError { error: string; /** What we could read, to route a 400 when possible. */ partial?: SipRequest }

export const PARSE_LIMITS = { maxMessageBytes: 65535, maxHeaders: 128, maxLineLength: 8192 };

const TOKEN = /^[A-Za-z0-9.!%*_+`'~-]+$/;

/** Parse one datagram / framed stream message. */
export function parseSipMessage(data: Buffer | string): SipRequest | SipResponse | SipParseError {
  if (data.length > PARSE_LIMITS.maxMessageBytes) return { error: 'Message Too Large' };
  const text = typeof data === 'string' ? data : data.toString('utf8');
  // RFC 3261 §7.5: tolerate leading CRLFs (keepalives) before the start line.
  const start = text.search(/[^\r\n]/);
  if (start < 0) return { error: 'empty message' };
  const sep = text.indexOf('\r\n\r\n', start);
  const altSep = sep < 0 ? text.indexOf('\n\n', start) : -1;
  const headEnd = sep >= 0 ? sep : altSep;
  if (headEnd < 0) return { error: 'no end of headers' };
  const head = text.slice(start, headEnd);
  const bodyRaw = text.slice(headEnd + (sep >= 0 ? 4 : 2));
  // Unfold continuation lines (RFC 3261 §7.3.1): CRLF followed by SP/HT is whitespace.
  const lines = head.replace(/\r?\n[ \t]+/g, ' ').split(/\r?\n/);
  if (lines.length - 1 > PARSE_LIMITS.maxHeaders) return { error: 'too many headers' };
  const startLine = lines[0];
  if (startLine.length > PARSE_LIMITS.maxLineLength) return { error: 'start line too long' };
  let msg: SipRequest | SipResponse;
  const resp = /^SIP\/(\d+\.\d+) (\d{3}) ?(.*)$/.exec(startLine);
  if (resp) {
    if (resp[1] !== '2.0') return { error: `unsupported SIP version ${resp[1]}` };
    const status = Number(resp[2]);
    if (status < 100 || status > 699) return { error: `status code out of range: ${status}` };
    msg = new SipResponse(status, resp[3]);
  } else {
    const req = /^(\S+) (\S+) SIP\/(\d+\.\d+)$/.exec(startLine);
    if (!req) return { error: 'malformed start line' };
    if (!TOKEN.test(req[1])) return { error: `invalid method "${req[1].slice(0, 20)}"` };
    if (req[3] !== '2.0') return { error: `unsupported SIP version ${req[3]}` };
    if (!/^[A-Za-z][A-Za-z0-9+.-]*:\S+$/.test(req[2])) return { error: 'malformed Request-URI' };
    msg = new SipRequest(req[1], req[2]);
  }
  for (let i = 1; i < lines.length; i++) {
    const line = lines[i];
    if (line.length > PARSE_LIMITS.maxLineLength) return partialError(msg, `header line too long`);
    const colon = line.indexOf(':');
    if (colon <= 0) return partialError(msg, `malformed header line "${line.slice(0, 40)}"`);
    const name = line.slice(0, colon).trim();
    if (!TOKEN.test(name)) return partialError(msg, `invalid header name "${name.slice(0, 40)}"`);
    const value = line.slice(colon + 1).trim();
    const canonical = canonicalHeaderName(name);
    if (LIST_HEADERS.has(canonical.toLowerCase())) {
      for (const part of splitList(value)) if (part) msg.headerList.push([canonical, part]);
    } else {
      msg.headerList.push([canonical, value]);
    }
  }
  const problem = checkMandatory(msg);
  if (problem) return partialError(msg, problem);
  const cl = msg.header('content-length');
  if (cl !== undefined) {
    if (!/^\d+$/.test(cl)) return partialError(msg, 'invalid Content-Length');
    const n = Number(cl);
    const bodyBytes = Buffer.from(bodyRaw, 'utf8');
    if (n > bodyBytes.length) return partialError(msg, 'Content-Length larger than the body');
    msg.body = bodyBytes.subarray(0, n).toString('utf8');
  } else {
    msg.body = bodyRaw;
  }
  return msg;
}

function partialError(msg: SipRequest | SipResponse, error: string): SipParseError {
  return msg instanceof SipRequest ? { error, partial: msg } : { error };
}

function checkMandatory(msg: SipRequest | SipResponse): string | null {
  for (const h of ['Via', 'From', 'To', 'Call-ID', 'CSeq']) if (!msg.header(h)) return `missing ${h} header`;
  if (msg.headers('call-id').length > 1) return 'more than one Call-ID';
  if (!/^\s*\d{1,10}\s+[A-Za-z0-9.!%*_+`'~-]+\s*$/.test(msg.header('cseq')!)) return 'malformed CSeq';
  if (Number(/\d+/.exec(msg.header('cseq')!)![0]) > 0x7fffffff) return 'CSeq number too large';
  if (msg instanceof SipRequest && msg.cseq.method !== msg.method.toUpperCase()) return 'CSeq method does not match the request method';
  const mf = msg.header('max-forwards');
  if (mf !== undefined && !/^\d{1,3}$/.test(mf)) return 'malformed Max-Forwards';
  if (!parseVia(msg.header('via')!)) return 'malformed Via';
  if (!parseNameAddr(msg.header('from')!)) return 'malformed From';
  if (!parseNameAddr(msg.header('to')!)) return 'malformed To';
  return null;
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
  const m = /^\s*SIP\s*\/\s*2\.0\s*\/\s*([A-Za-z]+)\s+(\[[0-9A-Fa-f:.]+\]|[^\s:;]+)(?:\s*:\s*(\d{1,5}))?\s*((?:;.*)?)$/.exec(value);
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
  const m = /^(sips?|tel):(?:([^:@;?]*)(?::([^@;?]*))?@)?(\[[0-9A-Fa-f:.]+\]|[^:;?]+)(?::(\d{1,5}))?((?:;[^?]*)?)(?:\?(.*))?$/i.exec(uri.trim());
  if (!m) return null;
  const scheme = m[1].toLowerCase() as SipUri['scheme'];
  return {
    scheme,
    user: m[2] !== undefined ? safeDecode(m[2]) : undefined,
    password: m[3],
    host: m[4].toLowerCase(),
    port: m[5] ? Number(m[5]) : undefined,
    params: parseParams(m[6] ?? ''),
    headers: m[7],
  };
}

function safeDecode(s: string): string {
  try { return decodeURIComponent(s); } catch { return s; }
}

export function formatUri(u: SipUri): string {
  const user = u.user !== undefined ? `${encodeURIComponent(u.user).replace(/%2B/g, '+').replace(/%2A/g, '*').replace(/%23/g, '%23')}@` : '';
  return `${u.scheme}:${user}${u.host}${u.port ? `:${u.port}` : ''}${formatParams(u.params)}${u.headers ? `?${u.headers}` : ''}`;
}
