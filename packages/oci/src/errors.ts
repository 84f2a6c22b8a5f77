/**
 * Error categories shared by every mybuild package, in the manner of containerd's errdefs:
 * callers test a category with a predicate, never by matching message text.
 */
export type ErrorCode =
  | 'NOT_FOUND'
  | 'ALREADY_EXISTS'
  | 'INVALID_ARGUMENT'
  | 'FAILED_PRECONDITION'
  | 'UNAVAILABLE'
  | 'UNAUTHORIZED'
  | 'DIGEST_MISMATCH'
  | 'SIZE_EXCEEDED'
  | 'UNSAFE_PATH'
  | 'UNSUPPORTED'
  | 'LOCKED'
  | 'INTERNAL';

export interface MyBuildErrorOptions {
  /** Where the problem is: a file:line, a reference, a path inside an archive. */
  where?: string;
  /** What the user can do about it. */
  hint?: string;
  cause?: unknown;
}

export class MyBuildError extends Error {
  override readonly name: string = 'MyBuildError';
  readonly code: ErrorCode;
  readonly where: string | undefined;
  readonly hint: string | undefined;

  constructor(code: ErrorCode, message: string, options: MyBuildErrorOptions = {}) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause });
    this.code = code;
    this.where = options.where;
    this.hint = options.hint;
  }

  /** The one line a user sees: `where: message (hint)`. */
  oneLine(): string {
    const head = this.where ? `${this.where}: ${this.message}` : this.message;
    return this.hint ? `${head} (hint: ${this.hint})` : head;
  }
}

const has = (code: ErrorCode) => (err: unknown): boolean =>
  err instanceof MyBuildError ? err.code === code : false;

export const isNotFound = has('NOT_FOUND');
export const isAlreadyExists = has('ALREADY_EXISTS');
export const isInvalidArgument = has('INVALID_ARGUMENT');
export const isFailedPrecondition = has('FAILED_PRECONDITION');
export const isUnavailable = has('UNAVAILABLE');
export const isUnauthorized = has('UNAUTHORIZED');
export const isDigestMismatch = has('DIGEST_MISMATCH');
export const isSizeExceeded = has('SIZE_EXCEEDED');
export const isUnsafePath = has('UNSAFE_PATH');
export const isUnsupported = has('UNSUPPORTED');

/** Node's errno errors (ENOENT, EEXIST, ...) carry a string `code`. */
export function errnoCode(err: unknown): string | undefined {
  if (err && typeof err === 'object' && 'code' in err && typeof (err as { code: unknown }).code === 'string') {
    return (err as { code: string }).code;
  }
  return undefined;
}
