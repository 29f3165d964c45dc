import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

/** Directories made by tempDir() in this test process. */
const made: string[] = [];

// Removed when the test process exits, failed tests or not: a test that fails half-way (or a peer
// that crashed) leaves nothing behind in /tmp, and its files are still there for the assertions
// and failure messages that read them before the process ends. A process killed by a signal
// (Ctrl-C, the runner's timeout) runs no exit handler and leaves them.
process.once('exit', () => {
  for (const dir of made) rmSync(dir, { recursive: true, force: true });
});

/** A fresh directory under the system's temp dir (prefix as for mkdtemp), removed at exit. */
export function tempDir(prefix: string): string {
  const dir = mkdtempSync(join(tmpdir(), prefix));
  made.push(dir);
  return dir;
}
