/** Readiness: named checks that must all be true for /readyz to answer 200. */
export class Readiness {
  private readonly checks = new Map<string, boolean>();

  set(name: string, ok: boolean): void {
    this.checks.set(name, ok);
  }

  report(): { ready: boolean; checks: Record<string, boolean> } {
    const checks = Object.fromEntries(this.checks);
    return { ready: this.checks.size > 0 && [...this.checks.values()].every(Boolean), checks };
  }
}
