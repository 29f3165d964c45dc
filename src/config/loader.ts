import { createPrivateKey, createPublicKey, X509Certificate } from 'node:crypto';
import { isUtf8 } from 'node:buffer';
import { existsSync, readFileSync, statSync } from 'node:fs';
import { isIP } from 'node:net';
import { LineCounter, parseDocument, Parser as YamlParser, visit } from 'yaml';
import type { z } from 'zod';
import { ConfigSchema, SECRET_PATHS, type GatewayConfig } from './schema';

/**
 * `warnings`: settings that are valid but probably not what was meant (shown at start, never
 * stop it: the gateway cannot tell a mistake from a set-up it does not see, such as a TURN
 * server or an SBC on the same host).
 */
export type LoadResult = { ok: true; config: GatewayConfig; warnings: string[] } | { ok: false; errors: string[] };

/** Short environment names people expect, besides GATEWAY_<SECTION>__<KEY>. */
const ALIASES = new Map([['PORT', 'http.port'], ['SIP_PORT', 'sip.port']]);
/** GATEWAY_* variables that are not settings. */
const NOT_SETTINGS = new Set(['GATEWAY_CONFIG']);

/**
 * Loads the configuration: defaults ← file (`--config path`, `--config=path` or GATEWAY_CONFIG;
 * JSON or YAML) ← environment, then validates it. Errors name the key and what was expected;
 * nothing throws.
 *
 * Environment: GATEWAY_<SECTION>__<KEY>[__<KEY>…] (case and single underscores in a segment
 * are ignored, so GATEWAY_AUTH__HS256_SECRET works; a list index is a number segment, e.g.
 * GATEWAY_WEBRTC__TURNSERVERS__0__CREDENTIAL), plus PORT (http.port) and SIP_PORT (sip.port).
 * GATEWAY_* settings win over PORT/SIP_PORT (which are ignored when they hold a service link
 * such as tcp://10.0.0.7:5060). Values are read by the type of their key:
 * numbers, booleans (true/false/1/0/yes/no/on/off), lists as JSON or comma-separated, sections
 * and maps as JSON, strings verbatim (a numeric password stays a string). An empty variable
 * counts as unset.
 */
export function loadConfig(argv: string[], env: NodeJS.ProcessEnv): LoadResult {
  const errors: string[] = [];
  let raw: Record<string, unknown> = {};
  const arg = configArg(argv);
  if (arg === '') return { ok: false, errors: ['config error: --config needs a file path'] };
  const path = arg ?? (env.GATEWAY_CONFIG || undefined);
  if (path) {
    if (!existsSync(path)) return { ok: false, errors: [`config error: config file not found: ${path}`] };
    try {
      // A FIFO or a device (/dev/zero) would be read for ever: the start would hang, not fail.
      if (!statSync(path).isFile()) return { ok: false, errors: [`config error: ${path}: not a regular file`] };
      const text = readText(path);
      if (typeof text !== 'string') return { ok: false, errors: [`config error: ${path}: ${text.error}`] };
      let parsed: unknown;
      if (/\.json$/i.test(path)) {
        try { parsed = JSON.parse(text); } catch (e) { return { ok: false, errors: [`config error: ${path}: ${jsonErrorWithoutInput(e)}`] }; }
        const dup = duplicateJsonKey(text);
        if (dup) return { ok: false, errors: [`config error: ${path}: ${dup}`] };
      } else {
        const yaml = readYaml(text);
        if (!yaml.ok) return { ok: false, errors: [`config error: ${path}: ${yaml.error}`] };
        parsed = yaml.value;
      }
      if (parsed !== null && parsed !== undefined && (typeof parsed !== 'object' || Array.isArray(parsed))) return { ok: false, errors: [`config error: ${path}: expected a mapping of sections (http:, sip:, trunk:, …)`] };
      raw = (parsed ?? {}) as Record<string, unknown>;
    } catch (e) {
      return { ok: false, errors: [`config error: ${path}: ${String((e as Error).message ?? e).split('\n')[0].replace(/:\s*$/, '')}`] };
    }
  }

  const sources = new Map<string, string>();
  const overrides: { name: string; keyPath: string[]; leaf: unknown; value: string }[] = [];
  for (const [name, value] of Object.entries(env)) {
    if (value === undefined || value === '') continue;
    let spec: string | undefined;
    if (ALIASES.has(name)) {
      // Kubernetes and Docker links set <SERVICE>_PORT=tcp://10.0.0.7:5060 for a service named
      // "sip": that is not a port number for us.
      if (/^(tcp|udp|sctp):\/\//.test(value)) continue;
      spec = ALIASES.get(name);
    }
    // Only names with "__" are settings: others, such as the GATEWAY_PORT or
    // GATEWAY_SERVICE_HOST that Kubernetes injects for a service named "gateway", are not ours.
    else if (name.startsWith('GATEWAY_') && name.includes('__') && !NOT_SETTINGS.has(name)) spec = name.slice('GATEWAY_'.length).split('__').join('.');
    if (!spec) continue;
    const resolved = resolveKeyPath(spec.split('.'));
    if (!resolved || 'error' in resolved) {
      errors.push(`config error: ${printable(name)}: ${resolved ? resolved.error : `no such setting (${printable(spec.toLowerCase())})`}`);
      continue;
    }
    overrides.push({ name, keyPath: resolved.path, leaf: resolved.schema, value });
  }
  // Aliases first so GATEWAY_* wins; whole sections before the keys inside them.
  const rank = (o: (typeof overrides)[number]) => (ALIASES.has(o.name) ? 0 : 1);
  overrides.sort((a, b) => rank(a) - rank(b) || a.keyPath.length - b.keyPath.length || (a.name < b.name ? -1 : 1));
  for (const o of overrides) {
    const v = coerce(o.value, o.leaf);
    if (!v.ok) {
      errors.push(`config error: ${o.keyPath.join('.')} (from ${o.name}): ${v.error}`);
      continue;
    }
    setPath(raw, o.keyPath, v.value);
    sources.set(o.keyPath.join('.'), o.name);
  }
  // An item set past the end of its list leaves a gap, which read as one "missing" line per
  // absent item; one line naming the variable says it better.
  const gapsTold = new Set<string>();
  for (const o of overrides) {
    const gap = listGap(raw, o.keyPath);
    if (!gap || gapsTold.has(gap.list)) continue;
    gapsTold.add(gap.list);
    errors.push(`config error: ${o.keyPath.join('.')} (from ${printable(o.name)}): ${gap.message}`);
  }
  if (errors.length) return { ok: false, errors };
  return validateConfig(raw, sources);
}

/** The value of `--config path` / `--config=path`: undefined when absent, '' when the path is missing. */
function configArg(argv: string[]): string | undefined {
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    if (a === '--config') {
      const next = argv[i + 1];
      return next === undefined || next.startsWith('--') ? '' : next;
    }
    if (a.startsWith('--config=')) return a.slice('--config='.length);
  }
  return undefined;
}

/**
 * The file's text, or why it has none that can be trusted. A UTF-8 byte order mark (some
 * Windows editors write one) is dropped: JSON.parse refused it. Bytes that are not UTF-8 (a
 * file saved as Latin-1 or UTF-16) are refused rather than read as U+FFFD, which silently
 * changed a password or a host name.
 */
function readText(path: string): string | { error: string } {
  let bytes = readFileSync(path);
  if (bytes[0] === 0xef && bytes[1] === 0xbb && bytes[2] === 0xbf) bytes = bytes.subarray(3);
  if (isUtf8(bytes)) return bytes.toString('utf8');
  // A byte sequence cannot run across a line end (0x0a is never inside a UTF-8 character).
  let line = 1;
  for (let start = 0; start <= bytes.length; line++) {
    const end = bytes.indexOf(0x0a, start);
    if (!isUtf8(bytes.subarray(start, end < 0 ? bytes.length : end))) break;
    start = end < 0 ? bytes.length + 1 : end + 1;
  }
  return { error: `not UTF-8 text (line ${line}); save the file as UTF-8` };
}

/**
 * Deeper than any setting goes (webrtc.turnServers[0].urls[0] is four levels). The YAML library
 * recurses once per level: thousands of levels overflowed the stack, and V8 could abort the
 * whole process (out of memory in its regular expression compiler) instead of throwing.
 */
const MAX_YAML_DEPTH = 32;

type YamlResult = { ok: true; value: unknown } | { ok: false; error: string };

/** Parses YAML; warnings (an unknown tag or directive: the value is not what was written) are errors too. */
function readYaml(text: string): YamlResult {
  if (yamlDepth(text) > MAX_YAML_DEPTH) return { ok: false, error: `nested more than ${MAX_YAML_DEPTH} levels deep` };
  const lineCounter = new LineCounter();
  // logLevel: the library's own warnings (a key that is a list, say) went to stderr with the text.
  const doc = parseDocument(text, { lineCounter, logLevel: 'error' });
  const problem = doc.errors[0] ?? doc.warnings[0];
  if (problem) return { ok: false, error: yamlMessage(problem) };
  // Found here rather than by toJS(), whose error says neither where nor anything but the name.
  let unresolved: number | undefined;
  visit(doc, { Alias(_, node) { if (unresolved === undefined && !node.resolve(doc)) unresolved = node.range?.[0] ?? 0; } });
  if (unresolved !== undefined) {
    const { line, col } = lineCounter.linePos(unresolved);
    return { ok: false, error: `Unresolved alias (the anchor must be set before the alias) at line ${line}, column ${col}${QUOTE_HINT}` };
  }
  try {
    return { ok: true, value: doc.toJS() };
  } catch (e) {
    return { ok: false, error: yamlMessage(e) }; // too many aliases (a "billion laughs")
  }
}

/**
 * Where a JSON text repeats a key in one object, or null. JSON.parse keeps the last silently (a
 * second `"password"` further down wins unseen); a YAML file with the same is refused, and so is
 * this. JSON is YAML, so the YAML parser finds it (after the depth check, as for YAML files).
 */
function duplicateJsonKey(text: string): string | null {
  if (yamlDepth(text) > MAX_YAML_DEPTH) return `nested more than ${MAX_YAML_DEPTH} levels deep`;
  const dup = parseDocument(text, { lineCounter: new LineCounter(), logLevel: 'silent' }).errors.find((e) => e.code === 'DUPLICATE_KEY');
  return dup ? `a key appears twice in one object (${yamlMessage(dup).replace(/^Map keys must be unique/, 'keys must be unique')})` : null;
}

/** Nesting depth of a YAML text, measured on the parser's token tree without recursion. */
function yamlDepth(text: string): number {
  type Token = { type?: string; value?: unknown; items?: Array<{ key?: unknown; value?: unknown }> };
  let max = 0;
  const todo: Array<[Token | undefined, number]> = [];
  for (const token of new YamlParser().parse(text)) todo.push([token as Token, 0]);
  while (todo.length && max <= MAX_YAML_DEPTH) {
    const [t, d] = todo.pop()!;
    if (!t || typeof t !== 'object') continue;
    const depth = t.type === 'block-map' || t.type === 'block-seq' || t.type === 'flow-collection' ? d + 1 : d;
    max = Math.max(max, depth);
    if (t.type === 'document') todo.push([t.value as Token, depth]);
    for (const item of t.items ?? []) todo.push([item.key as Token, depth], [item.value as Token, depth]);
  }
  return max;
}

/**
 * A YAML problem in one line, without the text it quotes: the parser's messages end with the
 * offending source ("Unresolved alias (…): <name>", "Block scalar header includes extra
 * characters: <text>") and its warnings printed the whole line to stderr — a password written
 * unquoted (`password: *x7…`, `>x7…`, `!x7…`) with them. What is wrong and where is kept.
 */
function yamlMessage(e: unknown): string {
  const first = String((e as Error)?.message ?? e).split('\n')[0];
  const at = / at line \d+, column \d+:?$/.exec(first);
  const what = (at ? first.slice(0, at.index) : first).split(': ')[0].replace(/:\s*$/, '');
  const pos = (e as { linePos?: [{ line: number; col: number }] }).linePos?.[0];
  const hint = /alias|anchor|tag|block scalar|cannot start with/i.test(what) ? QUOTE_HINT : '';
  return `${what}${pos ? ` at line ${pos.line}, column ${pos.col}` : ''}${hint}`;
}

const QUOTE_HINT = ' (a value that starts with one of ! & * | > % @ ` must be in quotes)';

/**
 * Validates a configuration object (what a file holds) and resolves derived defaults.
 * `sources` maps dotted key paths to the environment variable that set them (for messages).
 */
export function validateConfig(raw: Record<string, unknown>, sources: Map<string, string> = new Map()): LoadResult {
  const r = ConfigSchema.safeParse(raw, { error: defaultMessage });
  if (!r.success) {
    const seen = new Set<string>();
    const errors: string[] = [];
    for (const iss of r.error.issues) {
      for (const line of formatIssue(iss, raw, sources)) {
        if (!seen.has(line)) errors.push(line);
        seen.add(line);
      }
    }
    return { ok: false, errors };
  }
  const c = r.data;
  const demoEnabled = c.demo.enabled ?? !c.trunk;
  const mode = c.auth.mode ?? (demoEnabled ? 'demo' : 'token');
  const config: GatewayConfig = { ...c, demo: { ...c.demo, enabled: demoEnabled }, auth: { ...c.auth, mode } };
  const problems: string[] = [];
  if (mode === 'demo' && !demoEnabled) problems.push('config error: auth.mode: "demo" needs the built-in demo endpoint (demo.enabled, the default when no trunk is configured)');
  if (mode === 'demo' && !isLoopback(config.http.host)) problems.push(`config error: auth.mode: "demo" (no tokens) is only allowed when http.host is loopback, got http.host "${config.http.host}"; set auth.mode: token with auth.hs256Secret or auth.es256PublicKeyFile`);
  if (mode === 'token' && !config.auth.hs256Secret && !config.auth.es256PublicKeyFile) problems.push('config error: auth: token mode needs auth.hs256Secret (GATEWAY_AUTH__HS256SECRET) or auth.es256PublicKeyFile');
  const t = config.trunk;
  if (t?.register && !t.username) problems.push('config error: trunk.username: trunk.register needs a user name to register');
  if (t?.password && !t.username) problems.push('config error: trunk.username: trunk.password is set but digest auth also needs trunk.username');
  problems.push(...advertisedAddressProblems(config), ...portOverlapProblems(config));
  if (config.sip.transports.includes('tls')) {
    if (!config.sip.tls) problems.push('config error: sip.tls: the tls transport needs sip.tls.certFile and sip.tls.keyFile');
    if (config.sip.tlsPort === undefined && (config.sip.port === 0 || config.sip.port === 65535)) problems.push(`config error: sip.tlsPort: expected an integer 1-65535 (sip.port is ${config.sip.port}, so the default sip.port + 1 does not work)`);
  }
  for (const [key, file, kind] of [
    ['http.tls.certFile', config.http.tls?.certFile, 'cert'],
    ['http.tls.keyFile', config.http.tls?.keyFile, 'key'],
    ['sip.tls.certFile', config.sip.tls?.certFile, 'cert'],
    ['sip.tls.keyFile', config.sip.tls?.keyFile, 'key'],
    ['sip.tls.caFile', config.sip.tls?.caFile, 'cert'],
    ['auth.es256PublicKeyFile', config.auth.es256PublicKeyFile, 'es256'],
  ] as const) {
    if (!file) continue;
    const problem = checkPemFile(file, kind);
    if (problem) problems.push(`config error: ${key}: ${problem}`);
  }
  for (const [section, files] of [['http.tls', config.http.tls], ['sip.tls', config.sip.tls]] as const) {
    if (files && !problems.some((p) => p.startsWith(`config error: ${section}.`)) && !keyMatchesCert(files.certFile, files.keyFile)) {
      problems.push(`config error: ${section}.keyFile: ${files.keyFile} is not the private key of ${section}.certFile ${files.certFile}`);
    }
  }
  if (problems.length) return { ok: false, errors: problems };
  return { ok: true, config, warnings: configWarnings(config) };
}

/**
 * 0.0.0.0 and :: mean "every local address" to bind(), but nobody can send to them: in SDP,
 * c=IN IP4 0.0.0.0 is the RFC 2543 way of saying hold (our own parser reads it as sendonly); in
 * Via/Contact or an ICE candidate it leads nowhere. A socket bound to one needs another address
 * to advertise.
 */
function advertisedAddressProblems(c: GatewayConfig): string[] {
  const out: string[] = [];
  const notReachable = (key: string, value: string, what: string) => `config error: ${key}: "${value}" is every local address, not one a peer can send to; set ${what}`;
  for (const [section, goesInto, what] of [
    ['sip', 'Via/Contact', 'the address trunks reach this host at'],
    ['media', 'SDP c= (0.0.0.0 there means hold)', 'the address trunks send RTP to'],
  ] as const) {
    const { host, advertisedHost } = c[section];
    if (advertisedHost !== undefined) {
      if (isUnspecified(advertisedHost)) out.push(notReachable(`${section}.advertisedHost`, advertisedHost, what));
    } else if (isUnspecified(host)) {
      out.push(`config error: ${section}.advertisedHost: ${section}.host is "${host}" (every local address), which cannot go into ${goesInto}; set ${section}.advertisedHost to ${what}`);
    }
  }
  // Only the announced addresses matter: with advertisedAddress set, hostAddresses[0] is merely
  // the default bind address.
  const w = c.webrtc;
  if (w.advertisedAddress !== undefined) {
    if (isUnspecified(w.advertisedAddress)) out.push(notReachable('webrtc.advertisedAddress', w.advertisedAddress, 'the address browsers reach this host at'));
  } else {
    const unspecified = w.hostAddresses.find(isUnspecified);
    if (unspecified !== undefined) out.push(`config error: webrtc.hostAddresses: "${unspecified}" is every local address, not an ICE candidate a browser can reach; list the addresses browsers reach this host at (to bind every local address, set webrtc.bindAddress: 0.0.0.0)`);
  }
  return out;
}

/**
 * Ports that would collide: the media plane and the ICE pool bind ports anywhere in their
 * ranges, so two ranges that overlap, or a listener inside one, contend for the same ports and
 * fail now and then, under load, far from the mistake. The ranges are UDP and http.port is TCP,
 * but an HTTP port inside an RTP range is still a mistake (and makes firewall rules lie), so
 * it is refused too.
 */
function portOverlapProblems(c: GatewayConfig): string[] {
  const out: string[] = [];
  const ranges = [['media.portRange', c.media.portRange], ['webrtc.portRange', c.webrtc.portRange]] as const;
  const [[, [mLow, mHigh]], [, [wLow, wHigh]]] = ranges;
  if (wLow <= mHigh && mLow <= wHigh) out.push(`config error: webrtc.portRange: [${wLow}, ${wHigh}] overlaps media.portRange [${mLow}, ${mHigh}]; RTP toward the trunk and ICE toward browsers need separate ranges`);
  const ports: [string, number][] = [['http.port', c.http.port], ['sip.port', c.sip.port]];
  if (c.sip.transports.includes('tls')) {
    if (c.sip.tlsPort !== undefined) ports.push(['sip.tlsPort', c.sip.tlsPort]);
    // sip.port 0 has no "+ 1": that is an error of its own above.
    else if (c.sip.port !== 0) ports.push(['sip.tlsPort', c.sip.port + 1]);
  }
  if (c.demo.enabled) ports.push(['demo.sipPort', c.demo.sipPort]);
  for (const [key, port] of ports) {
    if (port === 0) continue; // any free port: nothing to compare
    const label = key === 'sip.tlsPort' && c.sip.tlsPort === undefined ? `${port} (the default, sip.port + 1)` : String(port);
    for (const [rangeKey, [low, high]] of ranges) {
      if (port >= low && port <= high) out.push(`config error: ${key}: ${label} is inside ${rangeKey} [${low}, ${high}]; choose a port outside it, or move the range`);
    }
  }
  return out;
}

/**
 * Loopback addresses advertised to peers that are elsewhere: a warning, not an error. The
 * no-config demo binds everything to 127.0.0.1 and must start; and a loopback address can be
 * right even with a public web page, for instance when a TURN server on this host relays the
 * browser's media, or the trunk is an SBC on this host reached through outboundProxy.
 */
function configWarnings(c: GatewayConfig): string[] {
  const out: string[] = [];
  const announcedKey = c.webrtc.advertisedAddress !== undefined ? 'webrtc.advertisedAddress' : 'webrtc.hostAddresses';
  const announced = c.webrtc.advertisedAddress !== undefined ? [c.webrtc.advertisedAddress] : c.webrtc.hostAddresses;
  if (!isLoopback(c.http.host) && announced.every(isLoopback)) {
    out.push(`config warning: ${announcedKey}: http.host "${c.http.host}" serves other machines, but browsers are offered only loopback ICE addresses (${announced.join(', ')}): browsers elsewhere get no audio unless a TURN server on this host relays it; set webrtc.hostAddresses (or webrtc.advertisedAddress behind NAT) to an address they reach`);
  }
  // Where the trunk's requests come from and our RTP goes to: the first hop.
  const trunkHost = c.trunk ? sipUriHost(c.trunk.outboundProxy ?? c.trunk.uri) : undefined;
  if (trunkHost !== undefined && !isLoopback(trunkHost)) {
    for (const [section, goesInto] of [['sip', 'Via/Contact advertise'], ['media', 'SDP c= advertises']] as const) {
      const advertised = c[section].advertisedHost ?? c[section].host;
      if (isLoopback(advertised)) out.push(`config warning: ${section}.advertisedHost: the trunk (${trunkHost}) is not on this host, but ${goesInto} loopback ${advertised}; set ${section}.host (and ${section}.advertisedHost behind NAT) to an address the trunk reaches`);
    }
  }
  return out;
}

/** The host of a sip:/sips: URI, without IPv6 brackets. */
function sipUriHost(uri: string): string | undefined {
  const m = /^sips?:(?:[^@]*@)?(\[[^\]]+\]|[^:;?>]+)/i.exec(uri);
  return m ? m[1].replace(/^\[|\]$/g, '') : undefined;
}

/** 0.0.0.0, :: (any spelling) and ::ffff:0.0.0.0: bindable, never reachable. */
export function isUnspecified(address: string): boolean {
  const v = isIP(address);
  if (v === 4) return address.split('.').every((part) => Number(part) === 0);
  if (v !== 6) return false;
  const mapped = /^::ffff:(\d+\.\d+\.\d+\.\d+)$/i.exec(address);
  return mapped ? isUnspecified(mapped[1]) : /^[0:]+$/.test(address);
}

/** Reads a PEM file and checks it holds what the key expects; returns a problem or null. */
function checkPemFile(file: string, kind: 'cert' | 'key' | 'es256'): string | null {
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    return code === 'ENOENT' ? `file not found: ${file}` : `cannot read ${file}: ${code ?? (e as Error).message}`;
  }
  try {
    if (kind === 'cert') new X509Certificate(text);
    else if (kind === 'key') createPrivateKey(text);
    else {
      const k = createPublicKey(text);
      if (k.asymmetricKeyType !== 'ec' || k.asymmetricKeyDetails?.namedCurve !== 'prime256v1') return `expected an EC P-256 public key (PEM), got ${k.asymmetricKeyType} in ${file}`;
    }
  } catch {
    return `expected a PEM ${kind === 'cert' ? 'certificate' : kind === 'key' ? 'private key' : 'EC P-256 public key'}, ${file} is not one`;
  }
  return null;
}

function keyMatchesCert(certFile: string, keyFile: string): boolean {
  try {
    return new X509Certificate(readFileSync(certFile)).checkPrivateKey(createPrivateKey(readFileSync(keyFile)));
  } catch {
    return false;
  }
}

/** The configuration with secrets replaced, for printing and logging. */
export function redactConfig(c: GatewayConfig): unknown {
  const copy = JSON.parse(JSON.stringify(c)) as unknown;
  for (const p of SECRET_PATHS) redactPath(copy, p.split('.'));
  return copy;
}

function redactPath(obj: unknown, path: string[]): void {
  if (typeof obj !== 'object' || obj === null || path.length === 0) return;
  const o = obj as Record<string, unknown>;
  const [head, ...rest] = path;
  const keys = head === '*' ? Object.keys(o) : [head];
  for (const k of keys) {
    if (!Object.prototype.hasOwnProperty.call(o, k) || o[k] === undefined) continue;
    if (rest.length === 0) o[k] = '***';
    else redactPath(o[k], rest);
  }
}

/**
 * 'secret': a secret path or anything under one (`inbound.digest.users.alice` is a password
 * too). 'holds': a section or list with a secret somewhere under it (`webrtc.turnServers.2`,
 * `inbound.digest`): a scalar found there is probably a secret put at the wrong level, as when
 * GATEWAY_WEBRTC__TURNSERVERS=turn:…,lab,PASSWORD is split at its commas.
 */
function secrecy(path: (string | number)[]): 'secret' | 'holds' | null {
  let holds = false;
  for (const p of SECRET_PATHS) {
    const parts = p.split('.');
    const n = Math.min(parts.length, path.length);
    if (!parts.slice(0, n).every((part, i) => part === '*' || part === String(path[i]))) continue;
    if (path.length >= parts.length) return 'secret';
    holds = true;
  }
  return holds ? 'holds' : null;
}

/**
 * A JSON syntax error without the text around it: Node's message quotes the input, which may be
 * a password. Only the position is kept.
 */
function jsonErrorWithoutInput(e: unknown): string {
  const at = /position (\d+)/.exec(String((e as Error)?.message ?? e));
  return at ? `invalid JSON at position ${at[1]}` : 'invalid JSON';
}

export function isLoopback(hostName: string): boolean {
  return hostName === 'localhost' || hostName === '::1' || /^127\./.test(hostName);
}

// ---- schema introspection ---------------------------------------------------------------

type AnySchema = { def?: { type?: string; innerType?: unknown; element?: unknown; items?: unknown[]; valueType?: unknown; in?: unknown; options?: unknown[] }; shape?: Record<string, unknown> };

/** Strips optional/default/prefault/nullable wrappers. */
function unwrap(schema: unknown): AnySchema | undefined {
  let s = schema as AnySchema | undefined;
  for (let i = 0; i < 10 && s?.def; i++) {
    const t = s.def.type;
    if (t === 'optional' || t === 'default' || t === 'prefault' || t === 'nullable' || t === 'readonly' || t === 'catch') s = s.def.innerType as AnySchema;
    else if (t === 'pipe') s = s.def.in as AnySchema;
    else break;
  }
  return s;
}

/** Loose key match: case and underscores ignored. */
const norm = (k: string) => k.toLowerCase().replace(/_/g, '');

/** Maps env segments (any case) to the schema's key path, and the schema found there. */
function resolveKeyPath(parts: string[]): { path: string[]; schema: unknown } | { error: string } | null {
  let schema: unknown = ConfigSchema;
  const out: string[] = [];
  for (const part of parts) {
    const s = unwrap(schema);
    const type = s?.def?.type;
    if (type === 'object' && s?.shape) {
      const key = Object.keys(s.shape).find((k) => norm(k) === norm(part));
      if (!key) return null;
      out.push(key);
      schema = s.shape[key];
    } else if (type === 'array' && /^\d+$/.test(part)) {
      // "01" set no item (a property of the list, not an index), and item 4294967294 made a list
      // of four billion holes that validation then walked: minutes, or out of memory.
      if (!/^(0|[1-9]\d{0,3})$/.test(part)) return { error: `list index ${printable(part)}: expected 0-9999, without leading zeros` };
      out.push(part);
      schema = s?.def?.element;
    } else if (type === 'record' && part) {
      out.push(part);
      schema = s?.def?.valueType;
    } else return null;
  }
  return out.length ? { path: out, schema } : null;
}

/** The schema at a (parsed) key path, for listing the keys a section takes. */
function schemaAt(path: (string | number)[]): AnySchema | undefined {
  let s: unknown = ConfigSchema;
  for (const seg of path) {
    const u = unwrap(s);
    const type = u?.def?.type;
    if (type === 'object' && u?.shape) s = u.shape[String(seg)];
    else if (type === 'array') s = u?.def?.element;
    else if (type === 'tuple') s = u?.def?.items?.[Number(seg)];
    else if (type === 'record') s = u?.def?.valueType;
    else return undefined;
  }
  return unwrap(s);
}

type Coerced = { ok: true; value: unknown } | { ok: false; error: string };

/** Reads an environment string as the type its key expects. */
function coerce(text: string, schema: unknown): Coerced {
  const s = unwrap(schema);
  const type = s?.def?.type;
  const t = text.trim();
  switch (type) {
    case 'number':
      return { ok: true, value: /^[+-]?(\d+\.?\d*|\.\d+)(e[+-]?\d+)?$/i.test(t) ? Number(t) : text };
    case 'boolean': {
      const l = t.toLowerCase();
      if (['true', '1', 'yes', 'on'].includes(l)) return { ok: true, value: true };
      if (['false', '0', 'no', 'off'].includes(l)) return { ok: true, value: false };
      return { ok: true, value: text };
    }
    case 'array':
    case 'tuple': {
      if (t.startsWith('[')) return parseJson(t, 'a JSON list');
      if (t === '') return { ok: true, value: [] };
      // Items that are sections cannot come from comma-separated text; splitting it anyway gave
      // one error per piece, each printing its piece (a TURN password among them).
      const itemType = type === 'array' ? unwrap(s?.def?.element)?.def?.type : undefined;
      if (itemType === 'object' || itemType === 'record') return { ok: false, error: 'expected a JSON list, e.g. [{"key": "value"}]: its items are sections, which comma-separated text cannot give' };
      const items = t.split(',').map((x) => x.trim());
      return { ok: true, value: items.map((x, i) => { const c = coerce(x, type === 'array' ? s?.def?.element : s?.def?.items?.[i]); return c.ok ? c.value : x; }) };
    }
    case 'object':
    case 'record':
      return t.startsWith('{') ? parseJson(t, 'a JSON object') : { ok: true, value: text };
    case 'string':
    case 'enum':
      return { ok: true, value: text };
    default:
      // Unions and anything else: JSON when it looks like JSON, the string otherwise.
      if (/^[[{]/.test(t)) return parseJson(t, 'JSON');
      return { ok: true, value: text };
  }
}

function parseJson(t: string, what: string): Coerced {
  try {
    return { ok: true, value: JSON.parse(t) };
  } catch (e) {
    return { ok: false, error: `expected ${what}: ${jsonErrorWithoutInput(e)}` };
  }
}

// ---- messages -----------------------------------------------------------------------------

const NOUNS: Record<string, string> = {
  string: 'text',
  number: 'a number',
  int: 'an integer',
  boolean: 'true or false',
  array: 'a list',
  tuple: 'a list',
  object: 'a section (key: value mapping)',
  record: 'a mapping',
};

/** Plain-language messages for the issues the schema does not word itself. */
function defaultMessage(iss: z.core.$ZodRawIssue): string | undefined {
  const i = iss as z.core.$ZodRawIssue & { expected?: string; values?: unknown[]; origin?: string; minimum?: number | bigint; maximum?: number | bigint; inclusive?: boolean; format?: string; pattern?: string };
  switch (i.code) {
    case 'invalid_type':
      if (i.expected === 'string' && (typeof i.input === 'number' || typeof i.input === 'boolean')) return 'expected text (in YAML, put the value in quotes)';
      return `expected ${NOUNS[i.expected ?? ''] ?? i.expected}`;
    case 'invalid_value':
      return i.values && i.values.length === 1 ? `expected ${JSON.stringify(i.values[0])}` : `expected one of ${(i.values ?? []).map((v) => JSON.stringify(v)).join(', ')}`;
    case 'too_small':
    case 'too_big': {
      const small = i.code === 'too_small';
      const bound = small ? i.minimum : i.maximum;
      if (i.origin === 'array') return `expected ${small ? 'at least' : 'at most'} ${bound} item${Number(bound) === 1 ? '' : 's'}`;
      if (i.origin === 'string') return `expected ${small ? 'at least' : 'at most'} ${bound} character${Number(bound) === 1 ? '' : 's'}`;
      return `expected a number ${small ? (i.inclusive ? '>=' : '>') : i.inclusive ? '<=' : '<'} ${bound}`;
    }
    case 'invalid_format':
      return i.pattern ? `expected text matching ${i.pattern}` : `expected a valid ${i.format}`;
    default:
      return undefined;
  }
}

function formatIssue(iss: z.core.$ZodIssue, raw: unknown, sources: Map<string, string>): string[] {
  const path = iss.path.map((p) => (typeof p === 'symbol' ? String(p) : p));
  const where = (p: (string | number)[]) => {
    const key = p.map((k) => printable(String(k))).join('.') || '(top level)';
    // The variable that set this key or the section or list it is in.
    let src: string | undefined;
    for (let n = p.length; n > 0 && !src; n--) src = sources.get(p.slice(0, n).join('.'));
    return src ? `${key} (from ${printable(src)})` : key;
  };
  if (iss.code === 'unrecognized_keys') {
    const known = Object.keys(schemaAt(path)?.shape ?? {});
    const section = path.length ? `${path.join('.')} takes` : 'sections are';
    return iss.keys.map((k) => {
      const close = known.find((kk) => norm(kk) === norm(k));
      const hint = close ? `did you mean "${close}"? ` : '';
      return `config error: ${where([...path, k])}: unknown setting; ${hint}${section}: ${known.join(', ')}`;
    });
  }
  const msg = iss.message;
  if (iss.code === 'invalid_key') {
    // A key the map refuses (an empty user name): name the map and the key, not the key's value (a password, for digest users).
    return [`config error: ${where(path.slice(0, -1))}: ${msg}, got the key "${printable(String(path[path.length - 1] ?? ''))}"`];
  }
  const got = getPath(raw, path.map(String));
  if (got === undefined) return [`config error: ${where(path)}: missing; ${msg}`];
  return [`config error: ${where(path)}: ${msg}, got ${describeValue(got, secrecy(path))}${sectionFromEnvHint(iss, got, path, sources)}`];
}

/**
 * An environment variable holds text; a section is read from it only as JSON. Say so, and how
 * to set the keys one by one, when a section (or a list item that is one) got plain text.
 */
function sectionFromEnvHint(iss: z.core.$ZodIssue, got: unknown, path: (string | number)[], sources: Map<string, string>): string {
  const expected = (iss as { expected?: string }).expected;
  if (iss.code !== 'invalid_type' || (expected !== 'object' && expected !== 'record') || typeof got !== 'string') return '';
  for (let n = path.length; n > 0; n--) {
    const name = sources.get(path.slice(0, n).join('.'));
    if (name) return `; in the environment give it as JSON ({"key": value}) or key by key (${[name, ...path.slice(n).map(String)].join('__').toUpperCase()}__<KEY>)`;
  }
  return '';
}

/**
 * A short, safe rendering of a bad value: scalars and small lists of scalars; never secrets,
 * and of a section or list that holds secrets only its shape.
 */
function describeValue(v: unknown, secrecy: 'secret' | 'holds' | null): string {
  if (secrecy === 'secret') return '"***"';
  if (secrecy === 'holds') {
    if (Array.isArray(v)) return `a list of ${v.length} item${v.length === 1 ? '' : 's'}`;
    return v !== null && typeof v === 'object' ? 'a section (key: value mapping)' : '"***"';
  }
  if (v === null) return 'null';
  if (Array.isArray(v)) {
    if (v.every((x) => x === null || typeof x !== 'object')) {
      const s = JSON.stringify(v);
      if (s.length <= 80) return s;
    }
    return `a list of ${v.length} item${v.length === 1 ? '' : 's'}`;
  }
  if (typeof v === 'object') return 'a section (key: value mapping)';
  // A password inside a URI (sip:user:password@host) is a secret wherever it is: all up to the
  // last @ (a password may hold one; a SIP user part may hold a /).
  const s = typeof v === 'string' ? JSON.stringify(v.replace(/^([a-z][a-z0-9+.-]*:(?:\/\/)?[^:@\s]*:).*@/i, '$1***@')) : String(v);
  return s.length <= 80 ? s : `${s.slice(0, 77)}...`;
}

/**
 * The first list along `path` in which this key's item lies past a missing one (one override
 * with a gap before it: the one to blame, once per list), described; null when there is none.
 */
function listGap(obj: unknown, path: string[]): { list: string; message: string } | null {
  let o = obj;
  for (let k = 0; k < path.length; k++) {
    if (Array.isArray(o)) {
      const list: unknown[] = o;
      const missing = list.findIndex((_, i) => !(i in list));
      if (missing >= 0 && Number(path[k]) > missing) return { list: path.slice(0, k).join('.'), message: `item ${path[k]} is set but not item ${missing}; list items are numbered from 0, without gaps` };
    }
    if (typeof o !== 'object' || o === null) return null;
    o = (o as Record<string, unknown>)[path[k]];
  }
  return null;
}

/**
 * A key or variable name as it can be printed on one line: control and invisible characters
 * escaped, at most 64 characters (a key of a megabyte, or one holding a newline, went into the
 * message as it was).
 */
function printable(name: string): string {
  const cut = name.length > 64 ? `${name.slice(0, 64)}…` : name;
  return cut.replace(/[\p{C}\u2028\u2029]/gu, (ch) => `\\u{${ch.codePointAt(0)!.toString(16)}}`);
}

function setPath(obj: Record<string, unknown>, path: string[], value: unknown): void {
  let o = obj;
  for (let i = 0; i < path.length - 1; i++) {
    const k = path[i];
    const wantArray = /^\d+$/.test(path[i + 1]);
    if (typeof o[k] !== 'object' || o[k] === null) o[k] = wantArray ? [] : {};
    o = o[k] as Record<string, unknown>;
  }
  o[path[path.length - 1]] = value;
}

function getPath(obj: unknown, path: string[]): unknown {
  let o = obj as Record<string, unknown> | undefined;
  for (const k of path) {
    if (typeof o !== 'object' || o === null) return undefined;
    if (!Object.prototype.hasOwnProperty.call(o, k)) return undefined;
    o = o[k] as Record<string, unknown> | undefined;
  }
  return o;
}
