/** Readiness: named checks that must all be true for /readyz to answer 200. */
export class Readiness {
  private readonly checks = new Map<string, boolean | (() => boolean)>();

  set(name: string, ok: boolean): void {
    this.checks.set(name, ok);
  }

  /** A check read each time readiness is asked (state that changes without an event to set it). */
  watch(name: string, ok: () => boolean): void {
    this.checks.set(name, ok);
  }

  report(): { ready: boolean; checks: Record<string, boolean> } {
    const checks: Record<string, boolean> = {};
    for (const [name, ok] of this.checks) checks[name] = typeof ok === 'function' ? ok() : ok;
    return { ready: this.checks.size > 0 && Object.values(checks).every(Boolean), checks };
  }
}
