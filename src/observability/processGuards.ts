import type { Logger } from 'pino';

/**
 * What the gateway process does with a bug that escapes all handling.
 *
 * - A promise rejected with nobody to handle it is one path failing (one call, one request):
 *   logged as an error, and the process goes on. Node's default ends the process, and with it
 *   every call in progress.
 * - An exception thrown out of an event handler leaves state we cannot trust: logged as fatal
 *   (JSON, like every other line), then the process exits with code 70 for its supervisor to
 *   restart it. Node's default prints a stack trace that is no JSON line.
 */
export function installProcessGuards(logger: Logger): void {
  process.on('unhandledRejection', (reason) => {
    logger.error({ err: reason }, 'unhandled promise rejection (a bug): logged, the gateway goes on');
  });
  process.on('uncaughtException', (err) => {
    logger.fatal({ err }, 'uncaught exception (a bug): exiting');
    // A moment for the line to reach the log before the process goes.
    setTimeout(() => process.exit(70), 50);
  });
}
