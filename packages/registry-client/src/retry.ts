/** How requests are retried on 5xx, 429 and broken connections. */
export interface RetryPolicy {
  /** Retries after the first attempt (default 4). */
  retries: number;
  /** First backoff delay (default 200 ms); doubles each time, with jitter. */
  minDelayMs: number;
  /** Longest backoff delay (default 10 s). */
  maxDelayMs: number;
  /** Longest `Retry-After` honoured; a longer one fails at once (default 60 s). */
  maxRetryAfterMs: number;
}

export const DEFAULT_RETRY: RetryPolicy = { retries: 4, minDelayMs: 200, maxDelayMs: 10_000, maxRetryAfterMs: 60_000 };

/** Exponential backoff with full jitter in the upper half: attempt 0 → ~minDelay. */
export function backoffMs(attempt: number, policy: RetryPolicy): number {
  const base = Math.min(policy.maxDelayMs, policy.minDelayMs * 2 ** attempt);
  return Math.round(base / 2 + (Math.random() * base) / 2);
}

/**
 * `Retry-After` in seconds (`120`) or as an HTTP-date; undefined when absent or unreadable.
 * Leniently parsed: fractional or padded numbers are accepted, negative ones are 0.
 */
export function parseRetryAfter(value: string | string[] | undefined, now = Date.now()): number | undefined {
  const v = (Array.isArray(value) ? value[0] : value)?.trim();
  if (!v) return undefined;
  if (/^-?\d+(\.\d+)?$/.test(v)) return Math.max(0, Math.round(Number(v) * 1000));
  const date = Date.parse(v);
  if (Number.isNaN(date)) return undefined;
  return Math.max(0, date - now);
}

/**
 * Network errors worth a retry: resets, timeouts and dropped connections. A refused
 * connection or an unreachable host is not: nothing listens there, and retrying only makes
 * the user wait (skopeo and docker fail at once too).
 */
const TRANSIENT_CODES = new Set([
  'ECONNRESET',
  'ECONNABORTED',
  'EPIPE',
  'ETIMEDOUT',
  'EAI_AGAIN',
  'ERR_STREAM_PREMATURE_CLOSE',
  'ERR_HTTP_CONTENT_LENGTH_MISMATCH',
  'UND_ERR_SOCKET',
]);

export function isTransientNetworkError(err: unknown): boolean {
  let e: unknown = err;
  for (let depth = 0; depth < 4 && e && typeof e === 'object'; depth++) {
    const code = (e as { code?: unknown }).code;
    if (typeof code === 'string' && TRANSIENT_CODES.has(code)) return true;
    const msg = (e as { message?: unknown }).message;
    if (typeof msg === 'string' && /socket hang up|aborted pending request|premature close/i.test(msg)) return true;
    e = (e as { cause?: unknown }).cause;
  }
  return false;
}

export function isRetryableStatus(status: number): boolean {
  return status === 429 || status === 408 || status === 500 || status === 502 || status === 503 || status === 504;
}
