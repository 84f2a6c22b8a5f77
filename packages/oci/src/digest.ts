import { createHash, type Hasher } from './crypto.js';
import { Transform, type TransformCallback } from 'node:stream';
import { MyBuildError } from './errors.js';

/** A content digest `sha256:<64 hex>` that went through {@link parseDigest}. */
export type Digest = string & { readonly __brand: 'Digest' };

const SHA256 = /^sha256:[a-f0-9]{64}$/;
const SHA512 = /^sha512:[a-f0-9]{128}$/;

/** The one parser of digests: anything else is refused. */
export function parseDigest(value: string, where?: string): Digest {
  if (SHA256.test(value) || SHA512.test(value)) return value as Digest;
  throw new MyBuildError('INVALID_ARGUMENT', `invalid digest ${JSON.stringify(value.slice(0, 140))}`, {
    ...(where === undefined ? {} : { where }),
    hint: 'a digest looks like sha256:<64 lowercase hex digits>',
  });
}

export function isDigest(value: unknown): value is Digest {
  return typeof value === 'string' && (SHA256.test(value) || SHA512.test(value));
}

export function digestAlgorithm(d: Digest): 'sha256' | 'sha512' {
  return d.slice(0, d.indexOf(':')) as 'sha256' | 'sha512';
}

export function digestHex(d: Digest): string {
  return d.slice(d.indexOf(':') + 1);
}

/** First 12 hex digits, as `docker images` shows an image ID. */
export function shortId(d: Digest): string {
  return digestHex(d).slice(0, 12);
}

export function sha256Of(data: Uint8Array | string): Digest {
  return `sha256:${createHash('sha256').update(data).digest('hex')}` as Digest;
}

export function newHasher(algorithm: 'sha256' | 'sha512' = 'sha256'): { hash: Hasher; digest(): Digest } {
  const hash = createHash(algorithm);
  return { hash, digest: () => `${algorithm}:${hash.digest('hex')}` as Digest };
}

export interface VerifyOptions {
  /** Expected digest, checked at end of stream. */
  digest?: Digest;
  /** Expected exact size; the stream fails as soon as more arrives. */
  size?: number;
  /** Upper bound on bytes when no exact size is known. */
  maxSize?: number;
  /** Used in error messages. */
  what?: string;
}

/**
 * A pass-through stream that hashes and counts what flows through it and fails
 * (before passing on the excess) when it exceeds the expected size, and at the end when
 * the size or digest differ. `digest` and `size` are readable after 'finish'.
 */
export class VerifyingStream extends Transform {
  readonly #hash: Hasher;
  readonly #algorithm: 'sha256' | 'sha512';
  readonly #opts: VerifyOptions;
  bytes = 0;
  #digest: Digest | undefined;

  constructor(opts: VerifyOptions = {}) {
    super();
    this.#opts = opts;
    this.#algorithm = opts.digest ? digestAlgorithm(opts.digest) : 'sha256';
    this.#hash = createHash(this.#algorithm);
  }

  get digest(): Digest {
    if (!this.#digest) throw new MyBuildError('INTERNAL', 'digest read before the stream ended');
    return this.#digest;
  }

  override _transform(chunk: Buffer, _enc: BufferEncoding, cb: TransformCallback): void {
    this.bytes += chunk.length;
    const limit = this.#opts.size ?? this.#opts.maxSize;
    if (limit !== undefined && this.bytes > limit) {
      cb(
        new MyBuildError('SIZE_EXCEEDED', `${this.#opts.what ?? 'blob'} is larger than the expected ${limit} bytes`, {
          hint: 'the source sent more data than its descriptor declares',
        }),
      );
      return;
    }
    this.#hash.update(chunk);
    cb(null, chunk);
  }

  override _flush(cb: TransformCallback): void {
    this.#digest = `${this.#algorithm}:${this.#hash.digest('hex')}` as Digest;
    const what = this.#opts.what ?? 'blob';
    if (this.#opts.size !== undefined && this.bytes !== this.#opts.size) {
      cb(new MyBuildError('SIZE_EXCEEDED', `${what} has ${this.bytes} bytes, expected ${this.#opts.size}`));
      return;
    }
    if (this.#opts.digest !== undefined && this.#digest !== this.#opts.digest) {
      cb(new MyBuildError('DIGEST_MISMATCH', `${what} has digest ${this.#digest}, expected ${this.#opts.digest}`));
      return;
    }
    cb();
  }
}
