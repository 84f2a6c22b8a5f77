/**
 * One HTTP exchange over node:http: no redirects, no retries, no auth (the endpoint adds those).
 * Bodies stream both ways; keep-alive agents are shared by every registry of a client.
 */
import http from 'node:http';
import type { Agent as HttpsAgent, RequestOptions } from 'node:https';
import { createRequire } from 'node:module';
import type { Readable } from 'node:stream';
import type { SecureContext } from 'node:tls';
import { MyBuildError } from '@mybuild/oci';

export type Method = 'GET' | 'HEAD' | 'POST' | 'PUT' | 'PATCH' | 'DELETE';

export interface Timeouts {
  /** TCP connect (and TLS handshake) limit; fast by default so a dead host fails quickly. */
  connectMs: number;
  /** From the end of the request body to the response headers. */
  responseMs: number;
  /** Longest silence on the socket while sending or receiving a body. */
  idleMs: number;
}

export const DEFAULT_TIMEOUTS: Timeouts = { connectMs: 5_000, responseMs: 60_000, idleMs: 60_000 };

export interface TlsOptions {
  rejectUnauthorized: boolean;
  /**
   * The host's CAs and client certificate as one TLS context, asked for by https requests only
   * (made once: every new connection would otherwise parse them again, 50 ms for Node's roots
   * plus a CA); undefined means Node's default context.
   */
  context?: () => SecureContext | undefined;
}

function secureContextOf(tls: TlsOptions | undefined): { secureContext?: SecureContext } {
  const context = tls?.context?.();
  return context ? { secureContext: context } : {};
}

export interface HttpRequest {
  method: Method;
  url: URL;
  headers: Record<string, string>;
  body?: Buffer | Readable;
  tls?: TlsOptions;
  timeouts?: Partial<Timeouts>;
}

export interface RawResponse {
  status: number;
  headers: http.IncomingHttpHeaders;
  url: URL;
  /** The response body; consume it, or call {@link discard}. */
  body: Readable;
}

export interface HttpOptions {
  userAgent: string;
  timeouts: Timeouts;
  maxSockets: number;
}

const NO_BODY = Buffer.alloc(0);

function timeoutError(event: string, ms: number, url: URL): Error {
  return Object.assign(new Error(`timeout awaiting '${event}' for ${ms}ms (${url.host})`), { code: 'ETIMEDOUT', event });
}

type HttpsModule = typeof import('node:https');
let httpsModule: HttpsModule | undefined;

/** node:https, and node:tls under it, loaded at the first https request: talking plain http to a registry needs neither (2.4 ms to load). */
function https(): HttpsModule {
  return (httpsModule ??= createRequire(import.meta.url)('node:https') as HttpsModule);
}

export class Http {
  readonly #opts: HttpOptions;
  readonly #agentOpts: http.AgentOptions;
  readonly #httpAgent: http.Agent;
  #httpsAgent: HttpsAgent | undefined;

  constructor(opts: HttpOptions) {
    this.#opts = opts;
    this.#agentOpts = { keepAlive: true, maxSockets: opts.maxSockets, maxFreeSockets: opts.maxSockets, scheduling: 'lifo' };
    this.#httpAgent = new http.Agent(this.#agentOpts);
  }

  /** Send one request; resolves when the response headers arrive. */
  send(req: HttpRequest): Promise<RawResponse> {
    const t = { ...this.#opts.timeouts, ...req.timeouts };
    const canHaveBody = req.method !== 'GET' && req.method !== 'HEAD';
    const body = canHaveBody ? (req.body ?? NO_BODY) : undefined;
    const headers: Record<string, string> = { 'user-agent': this.#opts.userAgent, ...req.headers };
    if (Buffer.isBuffer(body)) headers['content-length'] = String(body.length);
    const secure = req.url.protocol === 'https:';
    const options: RequestOptions = {
      method: req.method,
      headers,
      agent: secure ? (this.#httpsAgent ??= new (https().Agent)(this.#agentOpts)) : this.#httpAgent,
      ...(secure
        ? {
            rejectUnauthorized: req.tls?.rejectUnauthorized ?? true,
            ...secureContextOf(req.tls),
          }
        : {}),
    };
    return new Promise((resolve, reject) => {
      let response: http.IncomingMessage | undefined;
      // Two timers, so that neither can stop or replace the other whatever order the events come in.
      let connectTimer: NodeJS.Timeout | undefined;
      let responseTimer: NodeJS.Timeout | undefined;
      const stopTimers = () => {
        clearTimeout(connectTimer);
        clearTimeout(responseTimer);
      };
      const r = (secure ? https() : http).request(req.url, options);
      // Before the response: reject. After it: the body stream carries the error.
      const fail = (err: Error) => {
        stopTimers();
        if (body && !Buffer.isBuffer(body)) body.destroy();
        if (response) {
          response.destroy(err);
        } else {
          r.destroy(err);
          reject(err);
        }
      };
      r.on('error', fail);
      r.setTimeout(t.idleMs, () => fail(timeoutError('socket', t.idleMs, req.url)));
      r.once('socket', (socket) => {
        // A new connection (lookup, TCP, TLS handshake) has its own short limit; a kept-alive one is ready.
        if (!socket.connecting) return;
        connectTimer = setTimeout(() => fail(timeoutError('connect', t.connectMs, req.url)), t.connectMs);
        socket.once(secure ? 'secureConnect' : 'connect', () => clearTimeout(connectTimer));
      });
      r.once('finish', () => {
        if (!response) responseTimer = setTimeout(() => fail(timeoutError('response', t.responseMs, req.url)), t.responseMs);
      });
      r.once('response', (res: http.IncomingMessage) => {
        stopTimers();
        response = res;
        // Keep one listener so an unread, discarded body cannot crash the process.
        res.on('error', () => undefined);
        if (body && !Buffer.isBuffer(body) && !body.readableEnded) {
          // The server answered before taking the whole body (an error, usually). The request
          // stays half-written: its connection cannot serve another one, so it goes once the
          // answer has been read (else a server keeping it open would hold an agent slot forever).
          body.unpipe();
          body.destroy();
          res.once('close', () => r.destroy());
        }
        resolve({ status: res.statusCode ?? 0, headers: res.headers, url: req.url, body: res });
      });
      if (body === undefined) r.end();
      else if (Buffer.isBuffer(body)) r.end(body);
      else {
        body.once('error', fail);
        body.pipe(r);
      }
    });
  }

  close(): void {
    this.#httpAgent.destroy();
    this.#httpsAgent?.destroy();
  }
}

/** Read a whole (small) body; fails with SIZE_EXCEEDED past `max` bytes without reading on. */
export async function readBody(res: RawResponse, max: number, what = 'response body'): Promise<Buffer> {
  const declared = Number(res.headers['content-length']);
  if (Number.isFinite(declared) && declared > max) {
    res.body.destroy();
    throw new MyBuildError('SIZE_EXCEEDED', `${what} is ${declared} bytes, more than the ${max} allowed`);
  }
  const chunks: Buffer[] = [];
  let n = 0;
  for await (const chunk of res.body as AsyncIterable<Buffer>) {
    n += chunk.length;
    if (n > max) {
      res.body.destroy();
      throw new MyBuildError('SIZE_EXCEEDED', `${what} is more than the ${max} bytes allowed`);
    }
    chunks.push(chunk);
  }
  return Buffer.concat(chunks);
}

/** Read at most `max` bytes of a body for an error message, then let the rest go. */
export async function readSome(res: RawResponse, max: number): Promise<Buffer> {
  const chunks: Buffer[] = [];
  let n = 0;
  try {
    for await (const chunk of res.body as AsyncIterable<Buffer>) {
      chunks.push(chunk);
      n += chunk.length;
      if (n >= max) break;
    }
  } catch {
    // a broken error body still leaves what arrived
  }
  discard(res);
  return Buffer.concat(chunks).subarray(0, max);
}

/** Drop a response body: drain small ones (keeps the connection), destroy large ones. */
export function discard(res: RawResponse): void {
  const declared = Number(res.headers['content-length']);
  if (res.body.readableEnded || res.body.destroyed) return;
  // A HEAD answer has no body whatever its Content-Length says (a blob's size): keep the connection.
  const msg = res.body as { complete?: boolean; req?: { method?: string } };
  if (msg.complete === true || msg.req?.method === 'HEAD') {
    res.body.resume();
    return;
  }
  if (Number.isFinite(declared) && declared <= 65_536) res.body.resume();
  else res.body.destroy();
}

export function header(res: { headers: http.IncomingHttpHeaders }, name: string): string | undefined {
  const v = res.headers[name.toLowerCase()];
  return Array.isArray(v) ? v[0] : v;
}
