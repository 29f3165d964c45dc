/**
 * Entry point of a media worker thread (started by WorkerMediaPlane). Log lines go to the main
 * thread, which writes them to its own destination, so a worker's lines look like any other.
 */
import { parentPort, workerData } from 'node:worker_threads';
import pino from 'pino';
import { REDACT_PATHS } from '../../observability/logger';
import { MediaHost } from './mediaHost';
import type { MediaCommand, MediaEvent, MediaWorkerData } from './protocol';

const port = parentPort;
if (!port) throw new Error('mediaWorker runs only as a worker thread');
const data = workerData as MediaWorkerData;
const post = (ev: MediaEvent, transfer?: ArrayBuffer[]) => port.postMessage(ev, transfer);
const logger = pino({ level: data.logLevel, base: data.logBindings, redact: { paths: REDACT_PATHS, censor: '[redacted]' } }, { write: (line: string) => post({ t: 'log', line }) });
const host = new MediaHost(data, logger, post);
port.on('message', (cmd: MediaCommand) => host.handle(cmd));
post({ t: 'ready' });
