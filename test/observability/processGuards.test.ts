import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { join } from 'node:path';

const guards = join(__dirname, '../../src/observability/processGuards.ts');

/** Runs a script with the guards installed; its stdout lines (pino JSON) and exit code. */
function run(body: string): Promise<{ lines: Array<Record<string, unknown>>; code: number | null }> {
  const script = `const { installProcessGuards } = require(${JSON.stringify(guards)}); const logger = require('pino')(); installProcessGuards(logger); ${body}`;
  return new Promise((resolve) => {
    const p = spawn(process.execPath, ['--import', 'tsx', '-e', script], { cwd: join(__dirname, '../..'), stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    p.stdout.on('data', (d) => { out += d; });
    p.on('exit', (code) => resolve({ lines: out.trim().split('\n').filter(Boolean).map((l) => JSON.parse(l)), code }));
  });
}

test('an unhandled rejection is logged and the process goes on; an uncaught exception is logged as fatal and the process exits 70', async () => {
  const rejected = await run(`Promise.reject(new Error('one path failed')); setTimeout(() => { logger.info('still running'); process.exit(0); }, 100);`);
  assert.equal(rejected.code, 0);
  assert.deepEqual(rejected.lines.map((l) => l.msg), ['unhandled promise rejection (a bug): logged, the gateway goes on', 'still running']);
  assert.match(String((rejected.lines[0].err as { message: string }).message), /one path failed/);

  const thrown = await run(`setTimeout(() => { throw new Error('state is gone'); }, 10); setInterval(() => {}, 1000);`);
  assert.equal(thrown.code, 70);
  assert.equal(thrown.lines[0].level, 60);
  assert.match(String((thrown.lines[0].err as { message: string }).message), /state is gone/);
});
