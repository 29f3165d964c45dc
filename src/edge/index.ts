/** The public edge: tokens, origins, rate limits, dial-plan rules, trusted SIP sources. */
export { verifyToken, mintToken, redactToken, loadEs256PublicKey, type TokenClaims, type TokenKeys, type VerifyResult, type TokenError } from './tokens';
export { evaluateDestination, normalizeNumber, matchPattern, PREMIUM_PREFIXES, type DialPlanRules, type DestinationDecision } from './destinations';
export { RateLimiter } from './limits';
export { originAllowed, originMatches } from './origins';
export { ipInCidrs } from './cidr';
