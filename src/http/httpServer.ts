import { randomUUID } from 'node:crypto';
import { createServer as createHttpServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { createServer as createHttpsServer } from 'node:https';
import type { Socket } from 'node:net';
import { readFile, realpath } from 'node:fs/promises';
import { extname, join, normalize, sep } from 'node:path';
import type { Logger } from 'pino';

export type RouteHandler = (req: IncomingMessage, res: ServerResponse, body: string) => void | Promise<void>;

/** The largest POST body a route is given. */
const MAX_BODY_BYTES = 16 * 1024;

/** An error whose status and message are meant for the client (anything else is a 500, its message only logged). */
class HttpError extends Error {
  constructor(readonly status: number, message: string) {
    super(message);
  }
}

const CONTENT_TYPES: Record<string, string> = {
  '.html': 'text/html; charset=utf-8',
  '.js': 'text/javascript; charset=utf-8',
  '.mjs': 'text/javascript; charset=utf-8',
  '.map': 'application/json',
  '.css': 'text/css; charset=utf-8',
  '.json': 'application/json',
  '.svg': 'image/svg+xml',
  '.wav': 'audio/wav',
};

/** Public paths → files under web/ (everything else is a 404: no directory listing, no traversal). */
const STATIC_ALIASES: Record<string, string> = {
  '/': 'index.html',
  '/index.html': 'index.html',
  '/widget.js': 'dist/widget.js',
  '/widget.js.map': 'dist/widget.js.map',
  '/sdk.js': 'dist/gateway-sdk.js',
  '/sdk.js.map': 'dist/gateway-sdk.js.map',
  '/widget-demo.html': 'widget-demo.html',
};

/**
 * The gateway's HTTP(S) server: the web pages and scripts from `web/`, small JSON APIs and the
 * operational endpoints. The WebSocket signaling endpoint attaches to the same server.
 */
export class HttpServer {
  readonly server: Server;
  private readonly routes = new Map<string, RouteHandler>();
  /**
   * Every accepted TCP connection. closeAllConnections() only knows HTTP connections: over TLS a
   * socket becomes one after its handshake, so a client silent before it kept close() waiting
   * for the handshake timeout (120 s by default).
   */
  private readonly sockets = new Set<Socket>();

  constructor(private readonly opts: { webRoot: string; logger: Logger; tls?: { cert: string; key: string } }) {
    const handler = (req: IncomingMessage, res: ServerResponse) => {
      this.onRequest(req, res).catch((err) => {
        this.opts.logger.error({ err }, 'HTTP handler failed');
        res.destroy();
      });
    };
    // Slow or idle clients must not hold sockets forever: a TLS handshake gets as long as the
    // request headers (Node's default is 120 s).
    this.server = opts.tls ? createHttpsServer({ cert: opts.tls.cert, key: opts.tls.key, handshakeTimeout: 10_000 }, handler) : createHttpServer(handler);
    this.server.requestTimeout = 15_000;
    this.server.headersTimeout = 10_000;
    this.server.on('connection', (socket: Socket) => {
      this.sockets.add(socket);
      socket.once('close', () => this.sockets.delete(socket));
    });
  }

  route(method: string, path: string, handler: RouteHandler): void {
    this.routes.set(`${method} ${path}`, handler);
  }

  listen(host: string, port: number): Promise<{ host: string; port: number }> {
    return new Promise((resolve, reject) => {
      const onError = (err: NodeJS.ErrnoException) => reject(new Error(`cannot listen for HTTP on ${host}:${port}: ${err.code ?? err.message}`));
      this.server.once('error', onError);
      this.server.listen(port, host, () => {
        this.server.off('error', onError);
        const a = this.server.address();
        resolve({ host, port: typeof a === 'object' && a ? a.port : port });
      });
    });
  }

  close(): Promise<void> {
    return new Promise((resolve) => {
      this.server.close(() => resolve());
      this.server.closeAllConnections();
      for (const socket of this.sockets) socket.destroy();
    });
  }

  private async onRequest(req: IncomingMessage, res: ServerResponse): Promise<void> {
    // `GET //x` is a valid request line but no URL relative to a base: a 400, not a rejection
    // nobody handles (which ends the process).
    const url = requestUrl(req.url);
    if (!url) { sendJson(res, 400, { error: 'bad request target' }); return; }
    // HEAD is GET without the body (RFC 9110 §9.3.2); Node leaves the body out of a HEAD response.
    const route = this.routes.get(`${req.method} ${url.pathname}`) ?? (req.method === 'HEAD' ? this.routes.get(`GET ${url.pathname}`) : undefined);
    try {
      if (route) {
        const body = req.method === 'POST' ? await readBody(req, MAX_BODY_BYTES) : '';
        await route(req, res, body);
        return;
      }
      const file = STATIC_ALIASES[url.pathname] ?? (url.pathname.startsWith('/dist/') ? url.pathname.slice(1) : undefined);
      if (file && (req.method === 'GET' || req.method === 'HEAD')) { await this.serveFile(file, res); return; }
      // A path we serve, asked with another method: 405 naming the methods it takes (RFC 9110
      // §15.5.6), so that a client sees its mistake instead of a missing page.
      const allowed = [...this.routes.keys()].filter((k) => k.endsWith(` ${url.pathname}`)).map((k) => k.slice(0, k.indexOf(' ')));
      if (STATIC_ALIASES[url.pathname] || allowed.includes('GET')) allowed.push('GET', 'HEAD');
      if (allowed.length) { sendJson(res, 405, { error: 'method not allowed' }, { allow: [...new Set(allowed)].join(', ') }); return; }
      sendJson(res, 404, { error: 'not found' });
    } catch (err) {
      if (err instanceof HttpError) {
        this.opts.logger.debug({ status: err.status, reason: err.message, path: url.pathname }, 'HTTP request refused');
        // Connection: close: the client may still be sending the body we will not read.
        if (!res.headersSent) sendJson(res, err.status, { error: err.message }, { connection: 'close' });
        else res.destroy();
        return;
      }
      // The message may name hosts, files or settings: for the log only, found by the id the
      // client is given.
      const requestId = randomUUID();
      this.opts.logger.error({ err, requestId, method: req.method, path: url.pathname }, 'HTTP request failed');
      if (!res.headersSent) sendJson(res, 500, { error: 'internal error', requestId }, { 'x-request-id': requestId });
      else res.destroy();
    }
  }

  private async serveFile(relative: string, res: ServerResponse): Promise<void> {
    const root = normalize(this.opts.webRoot);
    const full = normalize(join(root, relative));
    if (!full.startsWith(root + sep)) { sendJson(res, 404, { error: 'not found' }); return; }
    let data: Buffer;
    try {
      // A symbolic link under web/ that leads out of it is not served (the link target counts).
      const [real, realRoot] = await Promise.all([realpath(full), realpath(root)]);
      if (!real.startsWith(realRoot + sep)) throw new Error('outside the web root');
      data = await readFile(real);
    } catch {
      sendJson(res, 404, { error: 'not found' });
      return;
    }
    res.writeHead(200, {
      'content-type': CONTENT_TYPES[extname(full)] ?? 'application/octet-stream',
      // Also what a HEAD request is told (its response has no body to count).
      'content-length': data.length,
      'cache-control': 'no-cache',
      // The widget script is loaded by other sites' pages.
      'cross-origin-resource-policy': 'cross-origin',
      'x-content-type-options': 'nosniff',
    });
    res.end(data);
  }
}

export function sendJson(res: ServerResponse, status: number, body: unknown, headers: Record<string, string> = {}): void {
  const text = JSON.stringify(body);
  // Set here, not left to res.end(): a HEAD response has no body for Node to count.
  res.writeHead(status, { 'content-type': 'application/json', 'content-length': String(Buffer.byteLength(text)), ...headers });
  res.end(text);
}

function readBody(req: IncomingMessage, limit: number): Promise<string> {
  return new Promise((resolve, reject) => {
    let size = 0;
    const chunks: Buffer[] = [];
    const onData = (c: Buffer) => {
      size += c.length;
      if (size > limit) {
        // Not req.destroy(): that reset the connection before the 413 was written. The rest of
        // the body is read and dropped while the 413 goes out; Connection: close ends the
        // connection after it.
        req.off('data', onData);
        chunks.length = 0;
        req.resume();
        reject(new HttpError(413, 'request body too large'));
        return;
      }
      chunks.push(c);
    };
    req.on('data', onData);
    req.on('end', () => resolve(Buffer.concat(chunks).toString('utf8')));
    // The client went away before the end of its body (Node's "aborted"): a request refused,
    // not a failure of ours to log as an error with its stack.
    req.on('error', () => reject(new HttpError(400, 'request body incomplete: the client went away')));
  });
}

/** The request target as a URL, or null when it is not one (`//`, `//[`, …). */
export function requestUrl(target: string | undefined): URL | null {
  try {
    return new URL(target ?? '/', 'http://localhost');
  } catch {
    return null;
  }
}
