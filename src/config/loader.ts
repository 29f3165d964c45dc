import { existsSync, readFileSync } from 'node:fs';
import { parse as parseYaml } from 'yaml';
import { ConfigSchema, SECRET_PATHS, type GatewayConfig } from './schema';

export type LoadResult = { ok: true; config: GatewayConfig } | { ok: false; errors: string[] };

/** Short environment names people expect, besides GATEWAY_<SECTION>__<KEY>. */
const ALIASES: Record<string, string> = { PORT: 'http.port', SIP_PORT: 'sip.port' };

/**
 * Loads the configuration: defaults ← file (`--config path` or GATEWAY_CONFIG; JSON or YAML)
 * ← environment (GATEWAY_SIP__PORT=5070, GATEWAY_TRUNK__PASSWORD=…, PORT, SIP_PORT), then
 * validates it. Errors name the key and what was expected; nothing throws.
 */
export function loadConfig(argv: string[], env: NodeJS.ProcessEnv): LoadResult {
  const errors: string[] = [];
  let raw: Record<string, unknown> = {};
  const i = argv.indexOf('--config');
  const path = i >= 0 ? argv[i + 1] : env.GATEWAY_CONFIG;
  if (i >= 0 && !path) return { ok: false, errors: ['config error: --config needs a file path'] };
  if (path) {
    if (!existsSync(path)) return { ok: false, errors: [`config error: config file not found: ${path}`] };
    try {
      const text = readFileSync(path, 'utf8');
      const parsed = /\.json$/i.test(path) ? JSON.parse(text) : parseYaml(text);
      if (parsed !== null && (typeof parsed !== 'object' || Array.isArray(parsed))) return { ok: false, errors: [`config error: ${path}: expected a mapping of sections`] };
      raw = (parsed ?? {}) as Record<string, unknown>;
    } catch (e) {
      return { ok: false, errors: [`config error: ${path}: ${(e as Error).message.split('\n')[0]}`] };
    }
  }
  for (const [name, value] of Object.entries(env)) {
    if (value === undefined) continue;
    let keyPath: string | undefined = ALIASES[name];
    if (!keyPath && name.startsWith('GATEWAY_') && name.includes('__')) {
      keyPath = name.slice('GATEWAY_'.length).split('__').map((p) => p.toLowerCase()).join('.');
    }
    if (!keyPath) continue;
    const resolved = resolveKeyPath(keyPath);
    if (!resolved) { errors.push(`config error: ${name}: no such setting (${keyPath})`); continue; }
    setPath(raw, resolved, coerce(value));
  }
  if (errors.length) return { ok: false, errors };
  return validateConfig(raw);
}

/** Validates a configuration object (what a file holds) and resolves derived defaults. */
export function validateConfig(raw: Record<string, unknown>): LoadResult {
  const r = ConfigSchema.safeParse(raw);
  if (!r.success) {
    return {
      ok: false,
      errors: r.error.issues.map((iss) => {
        const key = iss.path.join('.') || '(root)';
        const got = getPath(raw, iss.path.map(String));
        const shown = got === undefined ? '' : `, got ${SECRET_PATHS.includes(key) ? '"***"' : JSON.stringify(got)}`;
        return `config error: ${key}: ${iss.message}${shown}`;
      }),
    };
  }
  const c = r.data;
  const demoEnabled = c.demo.enabled ?? !c.trunk;
  const mode = c.auth.mode ?? (demoEnabled ? 'demo' : 'token');
  const config: GatewayConfig = { ...c, demo: { ...c.demo, enabled: demoEnabled }, auth: { ...c.auth, mode } };
  const problems: string[] = [];
  if (mode === 'demo' && !demoEnabled) problems.push('config error: auth.mode: "demo" needs the built-in demo endpoint (no trunk configured)');
  if (mode === 'demo' && !isLoopback(config.http.host)) problems.push(`config error: auth.mode: "demo" (no tokens) is only allowed when http.host is loopback, got "${config.http.host}"`);
  if (mode === 'token' && !config.auth.hs256Secret && !config.auth.es256PublicKeyFile) problems.push('config error: auth: token mode needs auth.hs256Secret (GATEWAY_AUTH__HS256SECRET) or auth.es256PublicKeyFile');
  for (const [key, file] of [['http.tls.certFile', config.http.tls?.certFile], ['http.tls.keyFile', config.http.tls?.keyFile], ['sip.tls.certFile', config.sip.tls?.certFile], ['sip.tls.keyFile', config.sip.tls?.keyFile], ['auth.es256PublicKeyFile', config.auth.es256PublicKeyFile]] as const) {
    if (file && !existsSync(file)) problems.push(`config error: ${key}: file not found: ${file}`);
  }
  if (config.sip.transports.includes('tls') && !config.sip.tls) problems.push('config error: sip.tls: the tls transport needs sip.tls.certFile and sip.tls.keyFile');
  if (problems.length) return { ok: false, errors: problems };
  return { ok: true, config };
}

/** The configuration with secrets replaced, for printing and logging. */
export function redactConfig(c: GatewayConfig): unknown {
  const copy = JSON.parse(JSON.stringify(c)) as Record<string, unknown>;
  for (const p of SECRET_PATHS) if (getPath(copy, p.split('.')) !== undefined) setPath(copy, p.split('.'), '***');
  return copy;
}

export function isLoopback(hostName: string): boolean {
  return hostName === 'localhost' || hostName === '::1' || /^127\./.test(hostName);
}

/** Maps lower-cased env segments to the schema's camelCase keys. */
function resolveKeyPath(lowerPath: string): string[] | null {
  const parts = lowerPath.split('.');
  let shape: Record<string, unknown> | undefined = (ConfigSchema as unknown as { shape: Record<string, unknown> }).shape;
  const out: string[] = [];
  for (const part of parts) {
    if (!shape) return null;
    const key = Object.keys(shape).find((k) => k.toLowerCase() === part);
    if (!key) return null;
    out.push(key);
    shape = innerShape(shape[key]);
  }
  return out;
}

function innerShape(schema: unknown): Record<string, unknown> | undefined {
  let s = schema as { shape?: Record<string, unknown>; def?: { innerType?: unknown } } | undefined;
  for (let i = 0; i < 5 && s; i++) {
    if (s.shape) return s.shape;
    s = s.def?.innerType as typeof s;
  }
  return undefined;
}

function coerce(v: string): unknown {
  const t = v.trim();
  if (/^-?\d+(\.\d+)?$/.test(t) || t === 'true' || t === 'false' || /^[[{]/.test(t)) {
    try { return JSON.parse(t); } catch { return v; }
  }
  return v;
}

function setPath(obj: Record<string, unknown>, path: string[], value: unknown): void {
  let o = obj;
  for (const k of path.slice(0, -1)) {
    if (typeof o[k] !== 'object' || o[k] === null) o[k] = {};
    o = o[k] as Record<string, unknown>;
  }
  o[path[path.length - 1]] = value;
}

function getPath(obj: unknown, path: string[]): unknown {
  let o = obj as Record<string, unknown> | undefined;
  for (const k of path) {
    if (typeof o !== 'object' || o === null) return undefined;
    o = o[k] as Record<string, unknown> | undefined;
  }
  return o;
}
