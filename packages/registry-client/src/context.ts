import type { CredentialProvider } from './credentials.js';
import type { Http, TlsOptions } from './http.js';
import type { RetryPolicy } from './retry.js';

/** What every endpoint of one client shares. */
export interface ClientContext {
  http: Http;
  credentials: CredentialProvider;
  retry: RetryPolicy;
  /** Is `host` (name:port) configured insecure (plain http or unverified TLS allowed)? */
  isInsecure(host: string): boolean;
  /** TLS options for a connection to `host`. */
  tlsFor(host: string): TlsOptions;
  debug(line: string): void;
  /** Whether debug lines go anywhere (so hot paths skip building them). */
  debugging: boolean;
  /** Milliseconds since the epoch (injectable for token expiry tests). */
  now(): number;
  sleep(ms: number): Promise<void>;
  /** Largest blob chunk when a registry needs chunked uploads. */
  chunkSize: number;
  /** Which loopback registries answered in plain http before (see {@link SchemeMemo}). */
  schemes?: SchemeMemo;
}

/**
 * Remembers which loopback registries speak plain http, so that the next client (the next
 * command) does not try TLS first again (a failed handshake and a second connection, ~15 ms).
 * Only a first guess: a guessed-http registry whose first answer is not a registry's (a TLS
 * server's 400 or a dropped connection) is probed again from https, and forgotten. The first
 * request to a registry carries no credentials (no challenge is known yet).
 */
export interface SchemeMemo {
  get(host: string): 'http:' | undefined;
  set(host: string, protocol: 'http:' | undefined): void;
}

/** 127.0.0.0/8, ::1 and localhost: may speak plain http without being configured insecure. */
export function isLoopbackHost(host: string): boolean {
  let h = host.toLowerCase();
  if (h.startsWith('[')) h = h.slice(1, h.indexOf(']'));
  else if (h.lastIndexOf(':') > 0 && h.indexOf(':') === h.lastIndexOf(':')) h = h.slice(0, h.lastIndexOf(':'));
  return h === 'localhost' || h === '::1' || /^127\.\d+\.\d+\.\d+$/.test(h);
}
