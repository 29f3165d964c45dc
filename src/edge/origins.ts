/** Origin checks for WebSocket upgrades: exact origins and `https://*.example.com` wildcards. */

/** An http(s) URL that is nothing but an origin (a trailing '/' allowed), or null. */
function parseOriginUrl(text: string): URL | null {
  let u: URL;
  try {
    u = new URL(text);
  } catch {
    return null;
  }
  if ((u.protocol !== 'https:' && u.protocol !== 'http:') || u.username || u.password || u.pathname !== '/' || u.search || u.hash || text.endsWith('#') || text.endsWith('?')) return null;
  return u;
}

/**
 * Does the Origin header value match the pattern? The origin must be exactly as browsers
 * serialise it; patterns are compared as origins, so 'https://App.example.com:443/' in config
 * matches 'https://app.example.com'. A wildcard matches subdomains only, never the apex.
 */
export function originMatches(origin: string, pattern: string): boolean {
  if (typeof origin !== 'string' || typeof pattern !== 'string') return false;
  if (pattern === origin) return true;
  const u = parseOriginUrl(origin);
  if (!u || u.origin !== origin) return false;
  const m = /^(https?):\/\/\*\.(.+)$/.exec(pattern);
  if (!m) {
    const p = parseOriginUrl(pattern);
    return p !== null && p.origin === origin;
  }
  const base = parseOriginUrl(`${m[1]}://wildcard.${m[2]}`);
  if (!base || !base.hostname.startsWith('wildcard.')) return false;
  const suffix = base.hostname.slice('wildcard'.length); // '.example.com'
  return u.protocol === base.protocol && u.port === base.port && u.hostname.length > suffix.length && u.hostname.endsWith(suffix);
}

export function originAllowed(origin: string | undefined, allowed: string[], opts: { allowMissing: boolean }): boolean {
  if (!origin) return opts.allowMissing;
  return allowed.some((p) => originMatches(origin, p));
}
