/**
 * The far ends' sending clock, shared by the media bench's load generator and the relay floor:
 * calls spread over `phases` phases of `phaseMs` each, as independent callers are not in
 * lockstep (every call's packet at one instant would measure queueing that real traffic does
 * not cause). Phases are due by the clock, not by timer ticks, so a late tick sends what fell
 * due meanwhile and the packet rate stays exact however busy the sender is — and how late each
 * phase left is kept: that is how bursty the gateway's input was.
 */
export class PhaseClock {
  private timer: NodeJS.Timeout | null = null;
  /** Lateness (ms) of each phase sent while recording. */
  private late: number[] = [];
  private recording = false;

  constructor(private readonly phases: number, private readonly phaseMs: number) {}

  /** Calls `send(phase)` for each phase as it falls due, until stopped. */
  start(send: (phase: number) => void): void {
    this.stop(); // one clock at a time
    const start = performance.now();
    let sent = 0;
    this.timer = setInterval(() => {
      const now = performance.now();
      const due = Math.floor((now - start) / this.phaseMs) + 1;
      for (; sent < due; sent++) {
        if (this.recording) this.late.push(now - (start + sent * this.phaseMs));
        send(sent % this.phases);
      }
    }, this.phaseMs);
  }

  stop(): void {
    if (this.timer) clearInterval(this.timer);
    this.timer = null;
  }

  /** Starts recording lateness afresh. */
  record(): void {
    this.late = [];
    this.recording = true;
  }

  /** p99 and worst lateness of the phases recorded (NaN when none were). */
  lateness(): { p99: number; max: number } {
    const s = [...this.late].sort((a, b) => a - b);
    return { p99: s.length ? s[Math.min(s.length - 1, Math.floor(s.length * 0.99))] : NaN, max: s.length ? s[s.length - 1] : NaN };
  }
}
