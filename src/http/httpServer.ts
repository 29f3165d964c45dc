import { createServer as createHttpServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { createServer as createHttpsServer } from 'node:https';
import { readFile, realpath } from 'node:fs/promises';
import { extname, join, normalize, sep } from 'node:path';
import type { Logger } from 'pino';

export type RouteHandler = (req: IncomingMessage, res: ServerResponse, body: string) => void | Promise<void>;

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

  constructor(private readonly opts: { webRoot: string; logger: Logger; tls?: { cert: string; key: string } }) {
    const handler = (req: IncomingMessage, res: ServerResponse) => {
      this.onRequest(req, res).catch((err) => {
        this.opts.logger.error({ err }, 'HTTP handler failed');
        res.destroy();
      });
    };
    this.server = opts.tls ? createHttpsServer({ cert: opts.tls.cert, key: opts.tls.key }, handler) : createHttpServer(handler);
    // Slow or idle clients must not hold sockets forever.
    this.server.requestTimeout = 15_000;
    this.server.headersTimeout = 10_000;
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
    });
  }

  private async onRequest(req: IncomingMessage, res: ServerResponse): Promise<void> {
    // `GET //x` is a valid request line but no URL relative to a base: a 400, not a rejection
    // nobody handles (which ends the process).
    const url = requestUrl(req.url);
    if (!url) { sendJson(res, 400, { error: 'bad request target' }); return; }
    const route = this.routes.get(`${req.method} ${url.pathname}`);
    try {
      if (route) {
        const body = req.method === 'POST' ? await readBody(req, 16 * 1024) : '';
        await route(req, res, body);
        return;
      }
      if (req.method === 'GET' || req.method === 'HEAD') {
        const file = STATIC_ALIASES[url.pathname] ?? (url.pathname.startsWith('/dist/') ? url.pathname.slice(1) : undefined);
        if (file) { await this.serveFile(file, res); return; }
      }
      sendJson(res, 404, { error: 'not found' });
    } catch (err) {
      this.opts.logger.warn({ err: (err as Error).message, path: url.pathname }, 'HTTP request failed');
      if (!res.headersSent) sendJson(res, (err as { status?: number }).status ?? 500, { error: (err as Error).message });
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
      'cache-control': 'no-cache',
      // The widget script is loaded by other sites' pages.
      'cross-origin-resource-policy': 'cross-origin',
      'x-content-type-options': 'nosniff',
    });
    res.end(data);
  }
}

export function sendJson(res: ServerResponse, status: number, body: unknown, headers: Record<string, string> = {}): void {
  res.writeHead(status, { 'content-type': 'application/json', ...headers });
  res.end(JSON.stringify(body));
}

function readBody(req: IncomingMessage, limit: number): Promise<string> {
  return new Promise((resolve, reject) => {
    let size = 0;
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => {
      size += c.length;
      if (size > limit) { reject(Object.assign(new Error('request body too large'), { status: 413 })); req.destroy(); return; }
      chunks.push(c);
    });
    req.on('end', () => resolve(Buffer.concat(chunks).toString('utf8')));
    req.on('error', reject);
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
