/** Origin checks for WebSocket upgrades: exact origins and `https://*.example.com` wildcards. */
export function originMatches(origin: string, pattern: string): boolean {
  if (pattern === origin) return true;
  const m = /^(https?):\/\/\*\.(.+)$/.exec(pattern);
  if (!m) return false;
  try {
    const u = new URL(origin);
    return u.protocol === `${m[1]}:` && u.host.endsWith(`.${m[2]}`) && u.origin === origin;
  } catch {
    return false;
  }
}

export function originAllowed(origin: string | undefined, allowed: string[], opts: { allowMissing: boolean }): boolean {
  if (!origin) return opts.allowMissing;
  return allowed.some((p) => originMatches(origin, p));
}
