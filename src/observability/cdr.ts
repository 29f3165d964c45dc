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

  /** Appends one line; throws when it could not be written whole (the caller keeps the record). */
  write(record: object): void {
    if (this.fd === null) throw new Error('CDR writer is closed');
    // writeSync may write less than asked (a full disk, a signal): the rest follows, so a line
    // is never left torn for the next record to be glued onto.
    const line = Buffer.from(`${JSON.stringify(record)}\n`);
    for (let off = 0; off < line.length;) {
      const n = writeSync(this.fd, line, off, line.length - off);
      if (n <= 0) throw new Error(`CDR line cut short after ${off} of ${line.length} bytes`);
      off += n;
    }
    fdatasyncSync(this.fd);
  }

  close(): void {
    if (this.fd === null) return;
    closeSync(this.fd);
    this.fd = null;
  }
}
