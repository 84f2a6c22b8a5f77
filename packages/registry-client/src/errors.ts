import { type ErrorCode, MyBuildError, type MyBuildErrorOptions } from '@mybuild/oci';

/** One entry of a distribution error body: `{"errors":[{"code","message","detail"}]}`. */
export interface DistributionError {
  code: string;
  message: string;
}

export interface RegistryErrorOptions extends MyBuildErrorOptions {
  /** HTTP status, when the error came from an answer. */
  status?: number;
  /** The registry host the error came from. */
  registry: string;
  errors?: DistributionError[];
  /** Worth retrying (5xx, 429, connection reset). */
  temporary?: boolean;
}

/** An error answered by (or met while talking to) a registry. Messages never hold credentials. */
export class RegistryError extends MyBuildError {
  override readonly name = 'RegistryError';
  readonly status: number | undefined;
  readonly registry: string;
  readonly errors: DistributionError[];
  readonly temporary: boolean;

  constructor(code: ErrorCode, message: string, options: RegistryErrorOptions) {
    super(code, redact(message), { ...options, ...(options.hint ? { hint: redact(options.hint) } : {}) });
    this.status = options.status;
    this.registry = options.registry;
    this.errors = options.errors ?? [];
    this.temporary = options.temporary ?? false;
  }
}

const SECRET_PARAMS = /([?&](?:[^=&#\s]*(?:token|signature|secret|password|credential|key|_state)[^=&#\s]*)=)[^&#\s"']*/gi;

/**
 * Remove credentials from text meant for users or logs: Authorization values, bearer and basic
 * tokens, JSON token fields, secret-looking query parameters, URL user info.
 */
export function redact(text: string): string {
  return text
    .replace(/(authorization\s*[:=]\s*)("?)[^"\r\n]*/gi, '$1$2<redacted>')
    .replace(/\b(Bearer|Basic)\s+([A-Za-z0-9._~+/=-]{8,})/g, (m, scheme: string, value: string) =>
      /[0-9._~+/=-]/.test(value) || value.length >= 20 ? `${scheme} <redacted>` : m,
    )
    .replace(/("(?:token|access_token|refresh_token|identitytoken|password|secret|auth)"\s*:\s*)"[^"]*"/gi, '$1"<redacted>"')
    .replace(SECRET_PARAMS, '$1<redacted>')
    .replace(/(\b[a-z][a-z0-9+.-]*:\/\/)[^/@\s]+@/gi, '$1<redacted>@');
}

/** A URL for messages and debug lines: secret query values and user info removed. */
export function redactUrl(url: URL | string): string {
  return redact(String(url));
}

/** MyBuildError code for an HTTP status (and the first distribution error code, when known). */
export function codeForStatus(status: number, errorCode?: string): ErrorCode {
  switch (errorCode) {
    case 'BLOB_UNKNOWN':
    case 'MANIFEST_UNKNOWN':
    case 'NAME_UNKNOWN':
    case 'BLOB_UPLOAD_UNKNOWN':
      return 'NOT_FOUND';
    case 'UNAUTHORIZED':
    case 'DENIED':
      return 'UNAUTHORIZED';
    case 'UNSUPPORTED':
      return 'UNSUPPORTED';
    case 'TOOMANYREQUESTS':
      return 'UNAVAILABLE';
    case 'DIGEST_INVALID':
    case 'MANIFEST_INVALID':
    case 'MANIFEST_BLOB_UNKNOWN':
    case 'NAME_INVALID':
    case 'TAG_INVALID':
    case 'SIZE_INVALID':
    case 'BLOB_UPLOAD_INVALID':
      return 'INVALID_ARGUMENT';
    default:
      break;
  }
  if (status === 401 || status === 403) return 'UNAUTHORIZED';
  if (status === 404) return 'NOT_FOUND';
  if (status === 405 || status === 501) return 'UNSUPPORTED';
  if (status === 429 || status >= 500) return 'UNAVAILABLE';
  if (status === 409 || status === 412 || status === 416) return 'FAILED_PRECONDITION';
  if (status === 400 || status === 413 || status === 415) return 'INVALID_ARGUMENT';
  return 'INTERNAL';
}

const MAX_ERRORS = 3;
const MAX_MESSAGE = 300;

function clip(s: string, n: number): string {
  const flat = s.replace(/\s+/g, ' ').trim();
  return flat.length > n ? `${flat.slice(0, n)}…` : flat;
}

/**
 * Read what a registry said from an error body: the distribution `errors[]` list, an OAuth
 * `error_description`, an HTML page's title, or the first line of plain text. Capped.
 */
export function describeErrorBody(body: Buffer, contentType: string | undefined): { text: string; errors: DistributionError[] } {
  const raw = body.toString('utf8');
  const trimmed = raw.trimStart();
  if (trimmed.startsWith('{')) {
    try {
      const json = JSON.parse(raw) as { errors?: unknown; error?: unknown; error_description?: unknown; message?: unknown; details?: unknown };
      if (Array.isArray(json.errors)) {
        const errors: DistributionError[] = json.errors
          .filter((e): e is Record<string, unknown> => typeof e === 'object' && e !== null)
          .map((e) => ({ code: clip(String(e.code ?? ''), 60), message: clip(String(e.message ?? ''), MAX_MESSAGE) }));
        const shown = errors.slice(0, MAX_ERRORS).map((e) => [e.code, e.message].filter(Boolean).join(': '));
        const more = errors.length > MAX_ERRORS ? ` (+${errors.length - MAX_ERRORS} more)` : '';
        return { text: shown.join('; ') + more, errors };
      }
      const msg = json.error_description ?? json.message ?? json.details ?? json.error;
      if (typeof msg === 'string') return { text: clip(msg, MAX_MESSAGE), errors: [] };
    } catch {
      // not JSON after all: fall through
    }
  }
  if (/html/i.test(contentType ?? '') || /^<(!doctype|html)/i.test(trimmed)) {
    const title = /<title[^>]*>([^<]*)<\/title>/i.exec(raw)?.[1] ?? /<h1[^>]*>([^<]*)<\/h1>/i.exec(raw)?.[1];
    return { text: title ? `an HTML page "${clip(title, 120)}"` : 'an HTML page', errors: [] };
  }
  const firstLine = trimmed.split(/\r?\n/, 1)[0] ?? '';
  return { text: clip(firstLine, MAX_MESSAGE), errors: [] };
}

/**
 * A small stand-in for a transport error to keep as `cause`: name, code and (redacted) message,
 * without the request, socket and options objects an HTTP library hangs on its errors.
 */
export function plainError(err: unknown): Error {
  if (err instanceof MyBuildError) return err;
  const e = err as { message?: unknown; code?: unknown; event?: unknown; name?: unknown };
  const out = new Error(redact(typeof e?.message === 'string' ? e.message.trim() : String(err)));
  if (typeof e?.name === 'string') out.name = e.name;
  if (typeof e?.code === 'string') Object.assign(out, { code: e.code });
  if (typeof e?.event === 'string') Object.assign(out, { event: e.event });
  return out;
}
