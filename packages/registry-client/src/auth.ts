/**
 * Registry authentication, chosen by the server's challenge (RFC 7235), never by host name:
 * Basic sends the stored credentials; Bearer exchanges them (or nothing, for anonymous pulls)
 * for a token at the challenge's realm — the OAuth2 POST form first when there is a password or
 * an identity token, the spec's GET with Basic credentials as the fallback. Tokens are cached per
 * scope set, renewed before they expire, and dropped on `invalid_token`.
 */
import { type Challenge, parseChallenges } from './challenge.js';
import { type ClientContext, isLoopbackHost } from './context.js';
import type { Credentials } from './credentials.js';
import { describeErrorBody, plainError, RegistryError } from './errors.js';
import { discard, header, readBody, readSome, type RawResponse } from './http.js';
import { isTransientNetworkError } from './retry.js';

/** Docker's floor for token lifetimes (the spec's default when `expires_in` is absent). */
export const MIN_TOKEN_LIFETIME_MS = 60_000;
const MAX_TOKEN_RESPONSE = 1 << 20;
const CLIENT_ID = 'mybuild';

interface CachedToken {
  value: string;
  renewAt: number;
}

const ACTION_ORDER = ['pull', 'push', 'delete', '*'];

/**
 * Merge scopes naming the same resource (`repository:a:pull` + `repository:a:pull,push` →
 * `repository:a:pull,push`), sorted, so one scope set has one spelling and one cached token.
 */
export function mergeScopes(scopes: readonly string[]): string[] {
  const byResource = new Map<string, Set<string>>();
  for (const scope of scopes) {
    for (const s of scope.split(' ')) {
      const last = s.lastIndexOf(':');
      if (!s || last <= s.indexOf(':')) continue;
      const resource = s.slice(0, last);
      const actions = byResource.get(resource) ?? new Set<string>();
      for (const a of s.slice(last + 1).split(',')) if (a) actions.add(a);
      byResource.set(resource, actions);
    }
  }
  const rank = (a: string) => (ACTION_ORDER.includes(a) ? ACTION_ORDER.indexOf(a) : ACTION_ORDER.length);
  return [...byResource.entries()]
    .map(([resource, actions]) => `${resource}:${[...actions].sort((a, b) => rank(a) - rank(b) || a.localeCompare(b)).join(',')}`)
    .sort();
}

export function scopeKey(scopes: readonly string[]): string {
  return mergeScopes(scopes).join(' ');
}

/** `repository:NAME:pull` or `repository:NAME:pull,push`. */
export function repositoryScope(path: string, push = false): string {
  return `repository:${path}:${push ? 'pull,push' : 'pull'}`;
}


export class Authenticator {
  readonly #host: string;
  readonly #ctx: ClientContext;
  #challenge: Challenge | undefined;
  readonly #tokens = new Map<string, CachedToken>();
  readonly #inflight = new Map<string, Promise<CachedToken>>();
  /** Realms whose OAuth2 POST form failed: use the GET form there. */
  readonly #noPost = new Set<string>();
  #creds: Promise<Credentials | undefined> | undefined;

  constructor(host: string, ctx: ClientContext) {
    this.#host = host;
    this.#ctx = ctx;
  }

  /** The scheme the registry asked for, once known (`basic`, `bearer`). */
  get scheme(): string | undefined {
    return this.#challenge?.scheme;
  }

  credentials(): Promise<Credentials | undefined> {
    this.#creds ??= this.#ctx.credentials(this.#host);
    return this.#creds;
  }

  /** Use these credentials instead of the provider's (login checks). */
  setCredentials(creds: Credentials | undefined): void {
    this.#creds = Promise.resolve(creds);
    this.#tokens.clear();
  }

  /** The Authorization value for a request needing `scopes`, or undefined (none needed yet). */
  async authorization(scopes: readonly string[]): Promise<string | undefined> {
    const c = this.#challenge;
    if (!c) return undefined;
    const creds = await this.credentials();
    if (c.scheme === 'basic') {
      if (creds?.username === undefined || creds.password === undefined) return undefined;
      return `Basic ${Buffer.from(`${creds.username}:${creds.password}`).toString('base64')}`;
    }
    if (creds?.registryToken) return `Bearer ${creds.registryToken}`;
    const key = scopeKey(scopes);
    const hit = this.#tokens.get(key);
    if (hit && this.#ctx.now() < hit.renewAt) return `Bearer ${hit.value}`;
    let pending = this.#inflight.get(key);
    if (!pending) {
      pending = this.#fetchToken(c, mergeScopes(scopes)).finally(() => this.#inflight.delete(key));
      this.#inflight.set(key, pending);
    }
    const token = await pending;
    this.#tokens.set(key, token);
    return `Bearer ${token.value}`;
  }

  /**
   * After a 401: learn the challenge and say with which scopes a retry can succeed, or
   * undefined when it cannot (credentials refused, token lacks access).
   */
  async retryScopes(res: RawResponse, scopes: readonly string[], sent: string | undefined): Promise<string[] | undefined> {
    const challenges = parseChallenges(res.headers['www-authenticate']);
    const bearer = challenges.find((c) => c.scheme === 'bearer');
    const basic = challenges.find((c) => c.scheme === 'basic');
    if (bearer) {
      const previous = this.#challenge;
      this.#challenge = bearer;
      const key = scopeKey(scopes);
      if (bearer.params.error === 'invalid_token') {
        // Expired or revoked mid-operation: fetch a fresh one for the same scopes.
        this.#tokens.delete(key);
        return [...scopes];
      }
      const wanted = mergeScopes([...scopes, ...(bearer.params.scope ?? '').split(' ')]);
      if (!sent?.startsWith('Bearer ')) return wanted;
      if (scopeKey(wanted) !== key) return wanted;
      if (previous?.params.realm !== bearer.params.realm || previous?.params.service !== bearer.params.service) {
        this.#tokens.delete(key);
        return wanted;
      }
      return undefined;
    }
    if (basic) {
      this.#challenge = basic;
      if (sent?.startsWith('Basic ')) return undefined;
      const creds = await this.credentials();
      if (creds?.username === undefined || creds.password === undefined) return undefined;
      return [...scopes];
    }
    return undefined;
  }

  async #fetchToken(c: Challenge, scopes: string[]): Promise<CachedToken> {
    const realmText = c.params.realm;
    const fail = (message: string, hint?: string, status?: number) =>
      new RegistryError('UNAUTHORIZED', message, { registry: this.#host, ...(hint ? { hint } : {}), ...(status ? { status } : {}) });
    if (!realmText) throw fail(`${this.#host} asked for a bearer token but named no realm`);
    let realm: URL;
    try {
      realm = new URL(realmText);
    } catch {
      throw fail(`${this.#host} named an invalid token realm ${JSON.stringify(realmText.slice(0, 200))}`);
    }
    if (realm.protocol !== 'https:' && realm.protocol !== 'http:') throw fail(`${this.#host} named a token realm that is not http(s): ${realm.protocol}`);
    const creds = await this.credentials();
    const secret = creds?.password ?? creds?.identityToken;
    if (secret && realm.protocol === 'http:' && !isLoopbackHost(realm.host) && !this.#ctx.isInsecure(this.#host)) {
      throw fail(
        `refusing to send credentials for ${this.#host} to the plain-http token realm ${realm.origin}${realm.pathname}`,
        `the registry (or a TLS proxy in front of it) advertises an http:// realm; fix its configuration, or mark ${this.#host} insecure if you trust the network`,
      );
    }
    const service = c.params.service;
    if (creds?.identityToken) {
      const form: Record<string, string> = { grant_type: 'refresh_token', refresh_token: creds.identityToken, client_id: CLIENT_ID };
      const token = await this.#oauth(realm, form, service, scopes, true);
      if (token) return token;
    } else if (creds?.username !== undefined && creds.password !== undefined && !this.#noPost.has(realm.href)) {
      const form: Record<string, string> = { grant_type: 'password', username: creds.username, password: creds.password, client_id: CLIENT_ID };
      const token = await this.#oauth(realm, form, service, scopes, false);
      if (token) return token;
      this.#noPost.add(realm.href);
    }
    return this.#getToken(realm, service, scopes, creds);
  }

  async #send(method: 'GET' | 'POST', url: URL, headers: Record<string, string>, body?: Buffer): Promise<RawResponse> {
    for (let attempt = 0; ; attempt++) {
      try {
        const res = await this.#ctx.http.send({ method, url, headers, ...(body ? { body } : {}), tls: this.#ctx.tlsFor(url.host) });
        if (res.status >= 500 && attempt < 2) {
          discard(res);
          await this.#ctx.sleep(200 * (attempt + 1));
          continue;
        }
        this.#ctx.debug(`${method} ${url.origin}${url.pathname} (token) → ${res.status}`);
        return res;
      } catch (err) {
        if (attempt < 2 && isTransientNetworkError(err)) {
          await this.#ctx.sleep(200 * (attempt + 1));
          continue;
        }
        throw new RegistryError('UNAVAILABLE', `cannot reach token realm ${url.origin}${url.pathname} for ${this.#host}: ${(err as Error).message}`, {
          registry: this.#host,
          temporary: true,
          cause: plainError(err),
        });
      }
    }
  }

  /** The OAuth2 POST form. Returns undefined when the realm does not implement it (fall back to GET). */
  async #oauth(realm: URL, form: Record<string, string>, service: string | undefined, scopes: string[], required: boolean): Promise<CachedToken | undefined> {
    const params = new URLSearchParams(form);
    if (service !== undefined) params.set('service', service);
    if (scopes.length > 0) params.set('scope', scopes.join(' '));
    const res = await this.#send('POST', realm, { 'content-type': 'application/x-www-form-urlencoded' }, Buffer.from(params.toString()));
    if (res.status === 200) {
      const body = await readBody(res, MAX_TOKEN_RESPONSE, 'token response');
      const token = this.#parseToken(body);
      if (token) return token;
      if (required) throw new RegistryError('UNAUTHORIZED', `token realm ${realm.origin}${realm.pathname} answered without a token`, { registry: this.#host });
      return undefined;
    }
    const body = await readSome(res, 4096);
    if (!required && [400, 401, 403, 404, 405].includes(res.status)) return undefined;
    const { text } = describeErrorBody(body, header(res, 'content-type'));
    throw new RegistryError('UNAUTHORIZED', `token refresh at ${realm.origin}${realm.pathname} for ${this.#host} failed: ${res.status}${text ? ` ${text}` : ''}`, {
      registry: this.#host,
      status: res.status,
      hint: `the stored identity token may have expired: run mybuild login ${this.#host}`,
    });
  }

  async #getToken(realm: URL, service: string | undefined, scopes: string[], creds: Credentials | undefined): Promise<CachedToken> {
    const url = new URL(realm);
    if (service !== undefined) url.searchParams.set('service', service);
    for (const s of scopes) url.searchParams.append('scope', s);
    const headers: Record<string, string> = {};
    if (creds?.username !== undefined && creds.password !== undefined) {
      if (creds.username !== '') url.searchParams.set('account', creds.username);
      headers.authorization = `Basic ${Buffer.from(`${creds.username}:${creds.password}`).toString('base64')}`;
    }
    const res = await this.#send('GET', url, headers);
    if (res.status !== 200) {
      const body = await readSome(res, 4096);
      const { text } = describeErrorBody(body, header(res, 'content-type'));
      const denied = res.status === 401 || res.status === 403;
      throw new RegistryError(denied ? 'UNAUTHORIZED' : 'UNAVAILABLE', `token request to ${realm.origin}${realm.pathname} for ${this.#host} failed: ${res.status}${text ? ` ${text}` : ''}`, {
        registry: this.#host,
        status: res.status,
        temporary: res.status >= 500,
        ...(denied ? { hint: creds ? `check the credentials stored for ${this.#host} (mybuild login ${this.#host})` : `log in first: mybuild login ${this.#host}` } : {}),
      });
    }
    const token = this.#parseToken(await readBody(res, MAX_TOKEN_RESPONSE, 'token response'));
    if (!token) throw new RegistryError('UNAUTHORIZED', `token realm ${realm.origin}${realm.pathname} answered without a token`, { registry: this.#host });
    return token;
  }

  /** `{token | access_token, expires_in?, issued_at?}`; undefined for anything else (HTML, ...). */
  #parseToken(body: Buffer): CachedToken | undefined {
    let json: { token?: unknown; access_token?: unknown; expires_in?: unknown; issued_at?: unknown };
    try {
      json = JSON.parse(body.toString('utf8')) as typeof json;
    } catch {
      return undefined;
    }
    if (typeof json !== 'object' || json === null) return undefined;
    const value = typeof json.token === 'string' && json.token ? json.token : typeof json.access_token === 'string' ? json.access_token : '';
    if (!value) return undefined;
    const now = this.#ctx.now();
    const lifetime = Math.max(MIN_TOKEN_LIFETIME_MS, typeof json.expires_in === 'number' && json.expires_in > 0 ? json.expires_in * 1000 : 0);
    let issued = typeof json.issued_at === 'string' ? Date.parse(json.issued_at) : Number.NaN;
    // A server clock far off ours would make every token look expired (or eternal): trust ours.
    if (!Number.isFinite(issued) || Math.abs(issued - now) > 5 * 60_000) issued = now;
    const margin = Math.min(30_000, lifetime / 5);
    return { value, renewAt: issued + lifetime - margin };
  }
}
