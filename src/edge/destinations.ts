/**
 * Dial plan: normalisation to E.164 and allow/deny rules with toll-fraud-safe defaults.
 */
export interface DialPlanRules {
  defaultCountryCode: string;
  allow: string[];
  deny: string[];
  allowInternational: boolean;
  allowPremium: boolean;
}

/**
 * Premium-rate and other high-cost prefixes blocked unless allowed (a documented selection,
 * not exhaustive): NANP 900/976, UK 09 and 070/087x, France 089, Germany 0900/0137,
 * satellite and international premium (+881, +882, +883, +979), and some of the ranges most
 * abused for international revenue share fraud.
 */
export const PREMIUM_PREFIXES = ['+1900', '+1976', '+449', '+4470', '+44871', '+44872', '+44873', '+3389', '+49900', '+49137', '+39899', '+34803', '+34806', '+34807', '+881', '+882', '+883', '+979', '+870'];

/** '+1 (555) 123-4567' → '+15551234567'; '00' → '+'; national numbers get the default country code; short extensions stay. */
export function normalizeNumber(input: string, defaultCountryCode: string): string | null {
  const s = input.trim().replace(/[\s\-().]/g, '');
  if (!/^\+?[0-9*#]{1,32}$/.test(s)) return null;
  if (s.startsWith('+')) return s.length >= 3 ? s : null;
  if (s.startsWith('00')) return `+${s.slice(2)}`;
  if (s.length <= 6) return s; // extension / short code
  if (defaultCountryCode === '1' && s.length === 11 && s.startsWith('1')) return `+${s}`;
  return `+${defaultCountryCode}${s.replace(/^0/, '')}`;
}

/** '*' = any suffix, '?' = one character; everything else literal. */
export function matchPattern(pattern: string, value: string): boolean {
  const re = new RegExp(`^${pattern.replace(/[.+^${}()|[\]\\]/g, '\\$&').replace(/\*/g, '.*').replace(/\?/g, '.')}$`);
  return re.test(value);
}

export type DestinationDecision = { allowed: true; normalized: string } | { allowed: false; reason: string };

/**
 * Deny by default. A number is allowed only when an allow pattern (config or token) matches it,
 * no deny pattern does, and — unless explicitly allowed — it is neither premium-rate nor
 * outside the home country. Token patterns narrow further: with a token `dest` claim, the
 * number must match one of its patterns too.
 */
export function evaluateDestination(input: string, rules: DialPlanRules, tokenPatterns?: string[]): DestinationDecision {
  const n = normalizeNumber(input, rules.defaultCountryCode);
  if (!n) return { allowed: false, reason: `"${input.slice(0, 32)}" is not a dialable number` };
  if (rules.deny.some((p) => matchPattern(p, n))) return { allowed: false, reason: `${n} is denied by the dial plan` };
  if (tokenPatterns && !tokenPatterns.some((p) => matchPattern(p, n))) return { allowed: false, reason: `${n} is not allowed by this token` };
  const explicitlyAllowed = rules.allow.some((p) => matchPattern(p, n)) || (tokenPatterns?.some((p) => p !== '*' && matchPattern(p, n)) ?? false);
  if (!explicitlyAllowed) return { allowed: false, reason: `${n} is not in the allowed destinations` };
  if (n.startsWith('+')) {
    if (!rules.allowPremium && PREMIUM_PREFIXES.some((p) => n.startsWith(p)) && !rules.allow.some((p) => p !== '*' && p !== '+*' && matchPattern(p, n))) return { allowed: false, reason: `${n} is a premium-rate number` };
    if (!rules.allowInternational && !n.startsWith(`+${rules.defaultCountryCode}`) && !rules.allow.some((p) => !p.startsWith('+*') && p !== '*' && matchPattern(p, n))) return { allowed: false, reason: `${n} is international` };
  }
  return { allowed: true, normalized: n };
}
