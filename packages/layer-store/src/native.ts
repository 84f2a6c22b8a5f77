import { createRequire } from 'node:module';
import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import type { BinaryToTextEncoding } from 'node:crypto';
import { type Hasher, useCryptoProviders } from '@mybuild/oci';

/** System calls Node lacks, from the package's own small N-API addon (native/sys.c). */
export interface NativeSys {
  mknod(path: string, mode: number, major: number, minor: number): void;
  lsetxattr(path: string, name: string, value: Buffer): void;
  /** null when the attribute is absent or the filesystem has none. */
  lgetxattr(path: string, name: string): Buffer | null;
  llistxattr(path: string): string[];
  lremovexattr(path: string, name: string): void;
  /** Returns false when `wait` is false and another holder has the lock. */
  flock(fd: number, exclusive: boolean, wait: boolean): boolean;
  funlock(fd: number): void;
  fsyncdir(path: string): void;
  devnums(rdev: number): [number, number];
  /** utimensat(AT_SYMLINK_NOFOLLOW) with nanoseconds (Node's lutimes rounds to microseconds). */
  lutimens(path: string, atimeSec: number, atimeNsec: number, mtimeSec: number, mtimeNsec: number): void;
  futimens(fd: number, atimeSec: number, atimeNsec: number, mtimeSec: number, mtimeNsec: number): void;
  /** A sha256 context from the OpenSSL inside Node; null when this Node does not export it. */
  sha256Create(): NativeSha256 | null;
  sha256Update(h: NativeSha256, data: Buffer): void;
  /** Lowercase hex; the context cannot be used after it. */
  sha256Digest(h: NativeSha256): string;
  /**
   * On the thread pool: append `buffers` (1 to 1024) to `fd` (opened O_APPEND), then feed them
   * to `h`; with `kick`, start writing the file back to disk without waiting. Resolves to the
   * bytes written. One call per context at a time.
   */
  appendHashed(fd: number, h: NativeSha256, buffers: Buffer[], kick: boolean): Promise<number>;
  /** On the thread pool: feed `buffers` (1 to 1024) to `h`; resolves to their byte count. One call per context at a time. */
  sha256UpdateAsync(h: NativeSha256, buffers: Buffer[]): Promise<number>;
  /**
   * On the thread pool: ask the kernel to start reading each file (up to 65536), whole, into the
   * page cache (POSIX_FADV_WILLNEED, 128 KB at a time: one advice reads no more than the
   * device's readahead window or largest request), without waiting for the data. Symlinks are not followed; files
   * that cannot be opened are skipped. Resolves to the number of files advised.
   */
  prefetch(paths: string[]): Promise<number>;
  /**
   * The entries of directory `path` (not `.` and `..`, in directory order), each lstat-ed (not
   * followed): `names` joined by NUL, and 18 numbers per entry in `stats`:
   * dev, mode, nlink, uid, gid, rdev, blksize, ino, size, blocks, then atime, mtime, ctime and
   * birthtime as (seconds, nanoseconds) pairs — Node's own fs.Stats fields, so `sec * 1e3 +
   * nsec / 1e6` is exactly lstatSync's `*Ms`. An entry removed before its lstat is left out; one
   * whose lstat failed otherwise has mode -1. Throws (code: errno name, syscall 'scandir') when
   * the directory cannot be opened or read.
   */
  scandir(path: string): [names: string, stats: Float64Array];
  /**
   * mount(2) on the thread pool; '' for `source`, `fstype` or `data` passes NULL. `data` must be
   * shorter than 4096 bytes (the kernel copies one page). Rejects with the errno name as `code`.
   */
  mount(source: string, target: string, fstype: string, flags: number, data: string): Promise<void>;
  /** umount2(2) on the thread pool (unmounting an overlay syncs its upper filesystem). */
  umount(target: string, flags: number): Promise<void>;
  /** syncfs(2) on the thread pool: write back everything dirty on the filesystem holding `path`. */
  syncfs(path: string): Promise<void>;
  /**
   * On the thread pool, in one work item: create `tmp` (exclusively, with `mode` exactly), write
   * `data`, fsync, close, rename to `path`, fsync the directory of `path`. A failure before the
   * rename removes `tmp`. Rejects with the errno name as `code` and the failed call as `syscall`.
   */
  writeFileAtomic(path: string, tmp: string, data: Uint8Array, mode: number): Promise<void>;
  /** `size` (1 to 256) bytes from getrandom(2). */
  randomBytes(size: number): Buffer;
}

/** An opaque native sha256 context. */
export type NativeSha256 = { readonly __brand: 'NativeSha256' };

let cached: NativeSys | undefined;

/** Load the addon: beside a bundle (`sys.node`), or from the package's build/ folder. */
export function sys(): NativeSys {
  if (cached) return cached;
  const candidates = [
    process.env.MYBUILD_NATIVE,
    fileURLToPath(new URL('./sys.node', import.meta.url)),
    fileURLToPath(new URL('../build/sys.node', import.meta.url)),
  ].filter((p): p is string => typeof p === 'string' && p.length > 0);
  const found = candidates.find((p) => existsSync(p));
  if (!found) {
    throw new Error(`mybuild native addon not found (looked in ${candidates.join(', ')}); run the build (make build)`);
  }
  cached = createRequire(import.meta.url)(found) as NativeSys;
  return cached;
}

/**
 * A native sha256 context and the addon, or undefined when this Node's OpenSSL does not export
 * the functions or MYBUILD_NATIVE_HASH=0 asks for node:crypto (A/B measurements).
 */
export function nativeSha256(): { native: NativeSys; h: NativeSha256 } | undefined {
  if (process.env.MYBUILD_NATIVE_HASH === '0') return undefined;
  const native = sys();
  const h = native.sha256Create();
  return h ? { native, h } : undefined;
}

/** A sha256 hash with node:crypto's update/digest, on the addon's context (OpenSSL's SHA256_*). */
class NativeSha256Hash implements Hasher {
  readonly #native: NativeSys;
  readonly #h: NativeSha256;

  constructor(native: NativeSys, h: NativeSha256) {
    this.#native = native;
    this.#h = h;
  }

  update(data: string | Uint8Array, inputEncoding?: BufferEncoding): this {
    const buf = typeof data === 'string' ? Buffer.from(data, inputEncoding) : Buffer.isBuffer(data) ? data : Buffer.from(data.buffer, data.byteOffset, data.byteLength);
    this.#native.sha256Update(this.#h, buf);
    return this;
  }

  digest(): Buffer;
  digest(encoding: BinaryToTextEncoding): string;
  digest(encoding?: BinaryToTextEncoding): Buffer | string {
    const hex = this.#native.sha256Digest(this.#h);
    if (encoding === 'hex') return hex;
    const bytes = Buffer.from(hex, 'hex');
    return encoding === undefined ? bytes : bytes.toString(encoding);
  }
}

// sha256 and random bytes for every package (@mybuild/oci's createHash and randomBytes) from the
// addon, which a store command loads anyway: node:crypto, 3-5 ms to load, is then never needed
// by a fully cached build. When the addon or OpenSSL's symbols are missing, node:crypto serves.
useCryptoProviders({
  sha256: () => {
    const n = nativeSha256();
    return n ? new NativeSha256Hash(n.native, n.h) : undefined;
  },
  randomBytes: (size) => (size >= 1 && size <= 256 ? sys().randomBytes(size) : undefined),
});
