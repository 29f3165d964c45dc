/**
 * In-band DTMF detection (ITU-T Q.23/Q.24 tones in 8 kHz audio), for trunks that negotiated no
 * telephone-event: a legacy PBX or IVR plays its digits, or passes its callers', as tones.
 *
 * Goertzel filters for the eight DTMF frequencies over blocks of 205 samples (25.6 ms, the
 * usual block: its 39 Hz bins keep the rows, 73-89 Hz apart, separate). A block holds a digit
 * when its strongest row and column tone are both loud enough, neither is more than 8 dB below
 * the other (twist), every other row and column tone is at least 8 dB below them, and the two
 * tones carry most of the block's energy (speech spreads its energy; a digit does not). A digit
 * is reported once it held for two blocks in a row (51 ms; Q.24 asks 40 ms) and again only
 * after a block without it, so one long tone is one digit.
 */

const ROWS = [697, 770, 852, 941];
const COLS = [1209, 1336, 1477, 1633];
const KEYS = ['123A', '456B', '789C', '*0#D'];
const BLOCK = 205;
const RATE = 8000;
const COEFFS = [...ROWS, ...COLS].map((hz) => 2 * Math.cos((2 * Math.PI * hz) / RATE));
/** -8 dB as a power ratio: twist allowed between the tones, and the margin over the others. */
const MINUS_8_DB = 10 ** (-8 / 10);
/** Share of the block's energy the two tones must carry. */
const PURITY = 0.7;
/**
 * The weakest tone taken, as the Goertzel power of a sine of this amplitude over a block
 * ((A·N/2)²): amplitude 400 of 32767 is about -38 dBm0 (Q.24 accepts down to about -25 dBm0).
 */
const MIN_TONE_POWER = (400 * BLOCK / 2) ** 2;

export class DtmfToneDetector {
  private readonly block = new Float64Array(BLOCK);
  /** The eight Goertzel powers of the block being read (reused: one per 25.6 ms block otherwise). */
  private readonly power = new Float64Array(8);
  private fill = 0;
  /** The digit the last block held ('' for none), and whether it was reported already. */
  private last = '';
  private reported = false;

  constructor(private readonly onDigit: (digit: string) => void) {}

  /** Feeds 8 kHz PCM (any length); digits are reported as their second block completes. */
  push(pcm: Int16Array): void {
    let off = 0;
    while (off < pcm.length) {
      const n = Math.min(pcm.length - off, BLOCK - this.fill);
      for (let i = 0; i < n; i++) this.block[this.fill + i] = pcm[off + i];
      this.fill += n;
      off += n;
      if (this.fill === BLOCK) {
        this.fill = 0;
        this.onBlock(this.detect());
      }
    }
  }

  private onBlock(digit: string): void {
    if (digit && digit === this.last && !this.reported) {
      this.reported = true;
      this.onDigit(digit);
    } else if (digit !== this.last) this.reported = false;
    this.last = digit;
  }

  /** The digit this block holds, or ''. */
  private detect(): string {
    const x = this.block;
    let energy = 0;
    for (let i = 0; i < BLOCK; i++) energy += x[i] * x[i];
    if (energy === 0) return '';
    const power = this.power;
    for (let k = 0; k < 8; k++) {
      const c = COEFFS[k];
      let s1 = 0;
      let s2 = 0;
      for (let i = 0; i < BLOCK; i++) {
        const s = x[i] + c * s1 - s2;
        s2 = s1;
        s1 = s;
      }
      power[k] = s1 * s1 + s2 * s2 - c * s1 * s2;
    }
    const row = strongest(power, 0);
    const col = strongest(power, 4);
    const pr = power[row];
    const pc = power[4 + col];
    if (pr < MIN_TONE_POWER || pc < MIN_TONE_POWER) return '';
    if (pr < pc * MINUS_8_DB || pc < pr * MINUS_8_DB) return '';
    for (let k = 0; k < 4; k++) {
      if (k !== row && power[k] > pr * MINUS_8_DB) return '';
      if (k !== col && power[4 + k] > pc * MINUS_8_DB) return '';
    }
    // A sine's Goertzel power is (A·N/2)² and its energy over the block A²·N/2: the two tones'
    // share of the block's energy is (pr + pc) / (energy · N/2).
    if ((pr + pc) / (energy * (BLOCK / 2)) < PURITY) return '';
    return KEYS[row][col];
  }
}

function strongest(power: Float64Array, from: number): number {
  let best = 0;
  for (let k = 1; k < 4; k++) if (power[from + k] > power[from + best]) best = k;
  return best;
}
