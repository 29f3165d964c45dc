import { loadConfig, redactConfig } from './config';
import { createLogger } from './observability/logger';
import { Gateway } from './gateway';
import { installProcessGuards } from './observability/processGuards';

/**
 * `node dist/src/main.js [--config file] [--check-config]`
 * Exit codes: 0 clean stop, 1 start failure (one clear line), 2 bad configuration, 70 a bug
 * (an uncaught exception, logged as fatal).
 */
async function main(): Promise<void> {
  const argv = process.argv.slice(2);
  const loaded = loadConfig(argv, process.env);
  if (!loaded.ok) {
    for (const e of loaded.errors) process.stderr.write(`${e}\n`);
    process.exit(2);
  }
  const config = loaded.config;
  if (argv.includes('--check-config')) {
    process.stdout.write(`configuration is valid\n${JSON.stringify(redactConfig(config), null, 2)}\n`);
    return;
  }
  const logger = createLogger(config.log);
  installProcessGuards(logger);
  // Valid but probably not meant (e.g. only loopback addresses offered to browsers on a public
  // host): said once at start, in the log.
  for (const warning of loaded.warnings) logger.warn({ config: true }, warning);
  const gateway = new Gateway(config, logger);
  try {
    await gateway.start();
  } catch (err) {
    logger.fatal({ err: (err as Error).message }, 'gateway failed to start');
    await new Promise((r) => setTimeout(r, 50));
    process.exit(1);
  }
  const where = gateway.httpAddress!;
  const scheme = config.http.tls ? 'https' : 'http';
  logger.info(`open ${scheme}://${where.host === '0.0.0.0' ? 'localhost' : where.host}:${where.port}/ ${config.demo.enabled ? 'and call 1000 to hear yourself' : ''}`);

  let signals = 0;
  const onSignal = (sig: NodeJS.Signals) => {
    signals++;
    if (signals > 1) {
      logger.warn({ sig }, 'second signal: exiting now');
      process.exit(1);
    }
    logger.info({ sig, drainTimeoutSec: config.drain.timeoutSec }, 'stopping: draining calls');
    void (async () => {
      await gateway.drain(config.drain.timeoutSec * 1000);
      await gateway.stop();
      process.exit(0);
    })();
  };
  process.on('SIGTERM', onSignal);
  process.on('SIGINT', onSignal);
}

void main();
