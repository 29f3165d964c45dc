import { closeSync, fdatasyncSync, openSync, writeSync } from 'node:fs';

/**
 * Call detail records: one JSON line per ended call, appended and flushed to disk before
 * `write` returns, so a crash loses no call that has ended.
 */
export class CdrWriter {
  private fd: number | null;

  constructor(readonly path: string) {
    this.fd = openSync(path, 'a');
  }

  write(record: object): void {
    if (this.fd === null) throw new Error('CDR writer is closed');
    writeSync(this.fd, `${JSON.stringify(record)}\n`);
    fdatasyncSync(this.fd);
  }

  close(): void {
    if (this.fd === null) return;
    closeSync(this.fd);
    this.fd = null;
  }
}
