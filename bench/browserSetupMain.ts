/**
 * Runs the browser call-setup benchmark alone and prints its figures as JSON:
 *   npx tsc -p tsconfig.json && node dist/bench/browserSetupMain.js [--quick] [--pages=N]
 * (--pages overrides how many pages call at once in part 3; 10 quick, 50 full.)
 */
import { browserSetup } from './browserSetup';

const pagesArg = process.argv.find((a) => a.startsWith('--pages='));
browserSetup({ quick: process.argv.includes('--quick'), concurrentPages: pagesArg ? Number(pagesArg.slice('--pages='.length)) : undefined })
  .then((r) => console.log(JSON.stringify(r, null, 2)))
  .catch((err) => { console.error(err); process.exitCode = 1; });
