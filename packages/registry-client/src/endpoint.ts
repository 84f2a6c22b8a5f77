/**
 * One registry host as the client talks to it: scheme (https, or http for insecure and loopback
 * registries that do not speak TLS), auth, redirects (Authorization never crosses to another
 * host), retries with backoff and Retry-After, and errors built from distribution error bodies.
 */
import type { Readable } from 'node:stream';
import { errnoCode, MyBuildError } from '@mybuild/oci';
import { Authenticator } from './auth.js';
import { type ClientContext, isLoopbackHost, type SchemeMemo } from './context.js';
import { codeForStatus, describeErrorBody, plainError, RegistryError, redactUrl } from './errors.js';
import { discard, header, type Method, type RawResponse, readSome, type Timeouts } from './http.js';
import { backoffMs, isRetryableStatus, isTransientNetworkError, parseRetryAfter } from './retry.js';

export type Body = Buffer | (() => Promise<Readable>);

export interface RequestSpec {
  method: Method;
  /** A path (`/v2/...`) on this registry, or an absolute URL (a Location). */
  url: string | URL;
  /** Token scopes the request needs. */
  scopes: readonly string[];
  headers?: Record<string, string>;
  /** A buffer, or a factory that opens the body afresh (for redirects and retries). */
  body?: Body;
  /** Safe to send again after a 5xx or a broken connection (default: GET, HEAD, DELETE, PUT of a buffer). */
  idempotent?: boolean;
  /** For messages: what is being done (`pull manifest`). */
  what: string;
  /** For messages: the reference or repository (`host/repo:tag`). */
  where: string;
  timeouts?: Partial<Timeouts>;
}

const REDIRECTS = new Set([301, 302, 303, 307, 308]);
const MAX_REDIRECTS = 5;
const MAX_ERROR_BODY = 16_384;

/** What a TLS client sees when the server speaks plain HTTP (not: a TLS server refusing us). */
const TLS_PROTOCOL_ERRORS = /wrong version number|packet length too long|unknown protocol|http request/i;

function isTlsProtocolError(err: unknown): boolean {
  const code = errnoCode(err) ?? '';
  const cause = (err as { cause?: unknown }).cause;
  const text = `${code} ${(err as Error).message ?? ''} ${errnoCode(cause) ?? ''}`;
  return TLS_PROTOCOL_ERRORS.test(text);
}

const CERT_ERRORS =
  /CERT|SELF_SIGNED|UNABLE_TO_VERIFY|UNABLE_TO_GET_ISSUER|ERR_TLS_CERT_ALTNAME_INVALID|DEPTH_ZERO|certificate/i;

export class Endpoint {
  readonly host: string;
  readonly auth: Authenticator;
  /** `https:`/`http:` once known; undefined while an insecure or loopback host is probed. */
  #protocol: 'https:' | 'http:' | undefined;
  /** Set while the first request to a probed host is out (see #follow). */
  #probing: Promise<void> | undefined;
  readonly #probe: boolean;
  /** A loopback host remembered as plain http: tried first, not yet confirmed. */
  #guess: 'http:' | undefined;
  readonly #ctx: ClientContext;
  /** How blobs are uploaded here; downgraded when the registry refuses a form. */
  uploadMode: 'patch' | 'put' | 'chunked' = 'patch';

  /** Host name and explicit port, to tell this registry's URLs from others (`:443` == none on https). */
  readonly #hostname: string;
  readonly #port: string;

  constructor(host: string, ctx: ClientContext, protocol?: 'https:' | 'http:') {
    this.host = host;
    // A non-special scheme keeps the port as written.
    const parsed = new URL(`registry://${host}`);
    this.#hostname = parsed.hostname;
    this.#port = parsed.port;
    this.#ctx = ctx;
    this.auth = new Authenticator(host, ctx);
    this.#probe = protocol === undefined && (ctx.isInsecure(host) || isLoopbackHost(host));
    this.#protocol = protocol ?? (this.#probe ? undefined : 'https:');
    if (this.#probe && isLoopbackHost(host) && this.#memo((m) => m.get(host)) === 'http:') this.#guess = 'http:';
  }

  get baseUrl(): string {
    return `${this.#protocol ?? this.#guess ?? 'https:'}//${this.host}`;
  }

  /** A call on the scheme memo; one that fails (a caller's own memo) counts as not remembered. */
  #memo<T>(call: (m: SchemeMemo) => T): T | undefined {
    if (!this.#ctx.schemes) return undefined;
    try {
      return call(this.#ctx.schemes);
    } catch (err) {
      this.#ctx.debug(`scheme memo: ${(err as Error).message}`);
      return undefined;
    }
  }

  /** The remembered plain http did not answer as a registry: forget it, probe from https. */
  #dropGuess(url: URL, why: string): URL {
    this.#guess = undefined;
    this.#memo((m) => m.set(this.host, undefined));
    this.#ctx.debug(`${this.host}: plain http (remembered) failed (${why}): trying https`);
    const next = new URL(url);
    next.protocol = 'https:';
    return next;
  }

  /** Is `url` on this registry (same host, same port, default ports counted)? */
  #isOwn(url: URL): boolean {
    const fallback = url.protocol === 'http:' ? '80' : '443';
    return url.hostname === this.#hostname && (url.port || fallback) === (this.#port || fallback);
  }

  url(path: string | URL): URL {
    return typeof path === 'string' && path.startsWith('/') ? new URL(`${this.baseUrl}${path}`) : new URL(path);
  }

  /**
   * Send a request with auth, redirects and retries. Answers of every status are returned
   * (callers decide); only network failures throw.
   */
  async request(spec: RequestSpec): Promise<RawResponse> {
    let scopes = [...spec.scopes];
    const idempotent =
      spec.idempotent ?? (spec.method === 'GET' || spec.method === 'HEAD' || spec.method === 'DELETE' || (spec.method === 'PUT' && Buffer.isBuffer(spec.body)));
    let authRetries = 0;
    let attempt = 0;
    for (;;) {
      const authorization = await this.auth.authorization(scopes);
      let res: RawResponse;
      try {
        res = await this.#follow(spec, authorization);
      } catch (err) {
        if (idempotent && attempt < this.#ctx.retry.retries && isTransientNetworkError(err)) {
          const wait = backoffMs(attempt++, this.#ctx.retry);
          this.#ctx.debug(`${spec.method} ${spec.what} ${spec.where}: ${errnoCode(err) ?? (err as Error).message}, retry in ${wait} ms`);
          await this.#ctx.sleep(wait);
          continue;
        }
        throw this.networkError(err, spec);
      }
      if (res.status === 401 && authRetries < 2) {
        const next = await this.auth.retryScopes(res, scopes, authorization);
        if (next) {
          discard(res);
          scopes = next;
          authRetries++;
          continue;
        }
      }
      if (isRetryableStatus(res.status) && idempotent && attempt < this.#ctx.retry.retries) {
        const after = parseRetryAfter(res.headers['retry-after']);
        if (after === undefined || after <= this.#ctx.retry.maxRetryAfterMs) {
          const wait = after ?? backoffMs(attempt, this.#ctx.retry);
          attempt++;
          discard(res);
          this.#ctx.debug(`${spec.method} ${spec.what} ${spec.where}: ${res.status}, retry in ${wait} ms`);
          await this.#ctx.sleep(wait);
          continue;
        }
      }
      return res;
    }
  }

  /** One exchange, following redirects; Authorization goes only to this registry's host. */
  async #follow(spec: RequestSpec, authorization: string | undefined): Promise<RawResponse> {
    let url = this.url(spec.url);
    let method = spec.method;
    let body: Body | undefined = spec.body;
    // Set while this request is the one finding out whether an insecure or loopback host
    // speaks TLS; the requests that start meanwhile wait for its answer instead of each trying.
    let endProbe: (() => void) | undefined;
    for (let hops = 0; ; hops++) {
      const own = this.#isOwn(url);
      if (own && hops === 0 && this.#probe && this.#protocol === undefined && endProbe === undefined) {
        if (this.#probing) {
          await this.#probing;
          url = this.url(spec.url);
        } else {
          this.#probing = new Promise<void>((resolve) => {
            endProbe = () => {
              if (this.#protocol === undefined) this.#probing = undefined; // not learnt: the next one probes
              resolve();
            };
          });
        }
      }
      const headers: Record<string, string> = { ...spec.headers };
      if (authorization && own) headers.authorization = authorization;
      let res: RawResponse;
      const started = Date.now();
      try {
        const payload = body === undefined ? undefined : Buffer.isBuffer(body) ? body : await body();
        res = await this.#ctx.http.send({
          method,
          url,
          headers,
          ...(payload === undefined ? {} : { body: payload }),
          tls: this.#ctx.tlsFor(url.host),
          ...(spec.timeouts ? { timeouts: spec.timeouts } : {}),
        });
      } catch (err) {
        if (own && this.#protocol === undefined && this.#guess !== undefined && url.protocol === 'http:') {
          url = this.#dropGuess(url, errnoCode(err) ?? (err as Error).message);
          hops--;
          continue;
        }
        if (own && this.#probe && this.#protocol !== 'https:' && url.protocol === 'https:' && isTlsProtocolError(err)) {
          // An insecure or loopback registry that does not speak TLS: use plain http from now on.
          this.#protocol = 'http:';
          if (isLoopbackHost(this.host)) this.#memo((m) => m.set(this.host, 'http:'));
          this.#ctx.debug(`${this.host} does not speak TLS: using http`);
          url = new URL(url);
          url.protocol = 'http:';
          hops--;
          endProbe?.();
          continue;
        }
        endProbe?.();
        throw err;
      }
      if (own && this.#protocol === undefined && this.#guess !== undefined && url.protocol === 'http:' && (REDIRECTS.has(res.status) || header(res, 'docker-distribution-api-version') === undefined)) {
        // Only a registry's own answer confirms the guess: a TLS server answers plain http with a
        // 400 ("Client sent an HTTP request to an HTTPS server") or a redirect to https, and
        // following that would leave this client on plain http for requests with credentials.
        discard(res);
        url = this.#dropGuess(url, `status ${res.status}`);
        hops--;
        continue;
      }
      if (own && this.#protocol === undefined) this.#protocol = url.protocol as 'https:' | 'http:';
      endProbe?.();
      if (this.#ctx.debugging) this.#ctx.debug(`${method} ${redactUrl(url)} → ${res.status} (${Date.now() - started} ms)`);
      const location = header(res, 'location');
      if (!REDIRECTS.has(res.status) || !location) return res;
      discard(res);
      if (hops >= MAX_REDIRECTS) {
        throw new RegistryError('UNAVAILABLE', `${spec.what} ${spec.where}: more than ${MAX_REDIRECTS} redirects`, { registry: this.host });
      }
      const next = new URL(location, url);
      if (next.protocol === 'http:' && url.protocol === 'https:' && !this.#ctx.isInsecure(next.host) && !isLoopbackHost(next.host)) {
        throw new RegistryError('FAILED_PRECONDITION', `${spec.what} ${spec.where}: refusing a redirect from https to plain http (${redactUrl(next.origin)})`, {
          registry: this.host,
        });
      }
      if (res.status === 303) {
        method = method === 'HEAD' ? 'HEAD' : 'GET';
        body = undefined;
      }
      url = next;
    }
  }

  /** Wrap a network failure in a one-line RegistryError with a hint. */
  networkError(err: unknown, spec: Pick<RequestSpec, 'what' | 'where'>): MyBuildError {
    // Our own errors (a body source that failed, a refused redirect) pass unchanged.
    if (err instanceof MyBuildError) return err;
    const code = errnoCode(err);
    const cause = (err as { cause?: unknown }).cause;
    const raw = (err as Error).message ?? String(err);
    // One line: OpenSSL appends file paths and newlines to its messages.
    const text = raw.split('\n', 1)[0]!.replace(/:\.\.\/deps\/openssl\S*/, '').trim().slice(0, 200);
    if (/alert certificate required|alert bad certificate|alert handshake failure|certificate_required/i.test(text)) {
      return new RegistryError('UNAVAILABLE', `${spec.what}: ${this.host} refused the TLS handshake: ${text}`, {
        where: spec.where,
        registry: this.host,
        cause: plainError(err),
        hint: `the registry may want a client certificate: put client.cert and client.key in /etc/docker/certs.d/${this.host}/`,
      });
    }
    if (CERT_ERRORS.test(`${code ?? ''} ${errnoCode(cause) ?? ''} ${text}`) && !isTransientNetworkError(err)) {
      return new RegistryError('UNAVAILABLE', `${spec.what}: TLS verification of ${this.host} failed: ${text}`, {
        where: spec.where,
        registry: this.host,
        cause: plainError(err),
        hint: `put the registry's CA in /etc/docker/certs.d/${this.host}/ca.crt (or MYBUILD_CA_FILE), or mark ${this.host} insecure`,
      });
    }
    const timeout = code === 'ETIMEDOUT' ? ` (${(err as { event?: string }).event ?? 'timeout'})` : '';
    return new RegistryError('UNAVAILABLE', `${spec.what}: cannot reach ${this.host}: ${code ?? ''}${timeout} ${text}`.replace(/\s+/g, ' ').trim(), {
      where: spec.where,
      registry: this.host,
      temporary: isTransientNetworkError(err),
      cause: plainError(err),
    });
  }

  /** Build the error for an unexpected answer, with the registry's own words (capped). */
  async fail(res: RawResponse, spec: Pick<RequestSpec, 'what' | 'where' | 'method'>, hint?: string): Promise<RegistryError> {
    const body = spec.method === 'HEAD' ? Buffer.alloc(0) : await readSome(res, MAX_ERROR_BODY);
    const { text, errors } = describeErrorBody(body, header(res, 'content-type'));
    const first = errors[0]?.code;
    let code = codeForStatus(res.status, first);
    let message = `${spec.what}: ${this.host} answered ${res.status}${text ? ` ${text}` : ''}`;
    let why = hint;
    if (res.status === 401 || res.status === 403) {
      const creds = await this.auth.credentials().catch(() => undefined);
      if (res.status === 401 && this.auth.scheme === 'bearer' && spec.method !== 'DELETE') {
        // Docker Hub answers 401 (not 404) for repositories that do not exist.
        message = `${spec.what}: not found or unauthorized (${this.host} answered 401${text ? ` ${text}` : ''})`;
        code = 'UNAUTHORIZED';
      }
      why ??= creds ? `check the name and that the credentials stored for ${this.host} may access it` : `check the name; for a private repository run mybuild login ${this.host}`;
    } else if (res.status === 429) {
      const after = parseRetryAfter(res.headers['retry-after']);
      why ??= after !== undefined ? `rate limited: retry after ${Math.ceil(after / 1000)} s` : 'rate limited: retry later';
    }
    return new RegistryError(code, message, {
      where: spec.where,
      registry: this.host,
      status: res.status,
      errors,
      temporary: res.status === 429 || res.status >= 500,
      ...(why ? { hint: why } : {}),
    });
  }
}
