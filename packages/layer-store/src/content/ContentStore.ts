import { existsSync, readFileSync, statSync } from 'node:fs';
import { mkdir, open, opendir, readFile, rename, rm, stat, unlink, writeFile, lstat, type FileHandle } from 'node:fs/promises';
import { join } from 'node:path';
import { Readable, Transform, Writable, type TransformCallback } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import {
  createHash,
  type Digest,
  digestAlgorithm,
  digestHex,
  errnoCode,
  isDigest,
  isoTime,
  MyBuildError,
  sha256Of,
  VerifyingStream,
} from '@mybuild/oci';
import type { BlobInfo, ContentStore, ContentWriter, IngestStatus, StorePaths } from '../api.js';
import { layerTar } from '../diff/layerTar.js';
import { OverlaySnapshotter } from '../snapshot/OverlaySnapshotter.js';
import type { DiffMode } from '../diff/walkLayer.js';
import { acquireLock, type Lock } from '../lock.js';
import { nativeSha256, sys } from '../native.js';
import { writeFileAtomic } from '../paths.js';

const CHUNK = 1 << 20;
/** Reads stream in pieces of this size: large enough for few calls, small enough that many streams at once stay light. */
const READ_CHUNK = 256 << 10;
const HEX = { sha256: /^[a-f0-9]{64}$/, sha512: /^[a-f0-9]{128}$/ } as const;
/** Digest algorithms the store keeps blobs of (`blobs/<alg>/`). */
export const ALGORITHMS = ['sha256', 'sha512'] as const;
type Algorithm = (typeof ALGORITHMS)[number];

export interface ContentStoreOptions {
  /** How long `writer()` waits for another process's ingest of the same ref (default: lock.ts default, 10 min). */
  lockTimeoutMs?: number;
}

export interface WriterOptions {
  /** Digest the blob must have; also picks the hash algorithm (sha256 by default). */
  expected?: Digest;
  /** Size the blob must have; a longer leftover ingest is restarted. */
  size?: number;
  /** Fail with LOCKED at once when another writer holds the ingest. */
  noWait?: boolean;
}

/** Directory name of the ingest for `ref`: sha256(ref) in hex, so any string is a safe ref. */
export function ingestId(ref: string): string {
  return sha256Of(ref).slice('sha256:'.length);
}

/** Lock name (lock.ts) that guards ingest `id`. */
export function ingestLockName(id: string): string {
  return `ingest-${id}`;
}

function notFound(digest: Digest): MyBuildError {
  return new MyBuildError('NOT_FOUND', 'blob not found in the content store', {
    where: digest,
    hint: 'pull or load the image again',
  });
}

/**
 * Content-addressed blobs under `blobs/<alg>/<hex>`, written through `ingest/<id>/`
 * (`data`, `ref`, `startedat`), checked, fsynced and renamed, or (bytes in memory, `putBytes`)
 * through a temp file `<hex>.<12 hex>.tmp` beside the blob: no blob name is ever partial or
 * unverified.
 */
export class LocalContentStore implements ContentStore {
  readonly paths: StorePaths;
  readonly #opts: ContentStoreOptions;

  constructor(paths: StorePaths, opts: ContentStoreOptions = {}) {
    this.paths = paths;
    this.#opts = opts;
  }

  path(digest: Digest): string {
    return join(this.paths.root, 'blobs', digestAlgorithm(digest), digestHex(digest));
  }

  // info() and has() are called for every layer of every cached step and tag: plain stat and
  // read calls (a few microseconds each), not one thread-pool round trip per call.
  async info(digest: Digest): Promise<BlobInfo> {
    const st = statSync(this.path(digest), { throwIfNoEntry: false });
    if (st) return { digest, size: st.size };
    const d = this.#usableDeferred(digest);
    if (!d) throw notFound(digest);
    return { digest, size: d.size, deferredFrom: d.snapshot };
  }

  async has(digest: Digest): Promise<boolean> {
    return this.#hasFile(digest) || this.#usableDeferred(digest) !== undefined;
  }

  /** The blob's file exists (a deferred record does not count). */
  #hasFile(digest: Digest): boolean {
    // ENOENT is "absent"; any other error is reported, as an async stat's was
    return statSync(this.path(digest), { throwIfNoEntry: false }) !== undefined;
  }

  /**
   * A deferred blob's record for has() and info(): a damaged one counts as absent there, so
   * that prune and du go on and the next build or pull writes the blob again (read() still
   * reports it).
   */
  #usableDeferred(digest: Digest): DeferredBlob | undefined {
    try {
      return this.#deferredSync(digest);
    } catch (err) {
      if (err instanceof MyBuildError && err.code === 'FAILED_PRECONDITION') return undefined;
      throw err;
    }
  }

  /** Path of the record of a deferred blob (`deferred/<alg>/<hex>`). */
  #deferredPath(digest: Digest): string {
    return join(this.paths.root, 'deferred', digestAlgorithm(digest), digestHex(digest));
  }

  /**
   * Record an uncompressed layer blob that is not written: its bytes are the layer tar of the
   * committed snapshot `snapshot` (see {@link hashLayer}), made again whenever the blob is read
   * (and checked against `digest` and `size` as they are). A build's layers are kept this way,
   * as BuildKit keeps them: the snapshot holds the files, and the tar is written only where it
   * goes (a push, a save, an export), compressed there as a rule. The snapshot must stay as it
   * is: prune keeps the snapshots of the deferred blobs it keeps.
   */
  async putDeferred(rec: DeferredBlob): Promise<BlobInfo> {
    checkDeferred(rec, rec.digest);
    const target = this.#deferredPath(rec.digest);
    await mkdir(join(target, '..'), { recursive: true, mode: 0o755 });
    const body: DeferredBlob = { digest: rec.digest, size: rec.size, snapshot: rec.snapshot, mode: rec.mode };
    await writeFileAtomic(target, `${JSON.stringify(body)}\n`);
    return { digest: rec.digest, size: rec.size, deferredFrom: rec.snapshot };
  }

  /** The record of a deferred blob (undefined when there is none; a damaged one is an error). */
  async deferred(digest: Digest): Promise<DeferredBlob | undefined> {
    return this.#deferredSync(digest);
  }

  #deferredSync(digest: Digest): DeferredBlob | undefined {
    let text: string;
    try {
      text = readFileSync(this.#deferredPath(digest), 'utf8');
    } catch (err) {
      if (errnoCode(err) === 'ENOENT' || errnoCode(err) === 'ENOTDIR') return undefined;
      throw err;
    }
    let rec: DeferredBlob;
    try {
      rec = JSON.parse(text) as DeferredBlob;
      checkDeferred(rec, digest);
    } catch (err) {
      throw new MyBuildError('FAILED_PRECONDITION', `the record of deferred blob ${digest} is damaged: ${(err as Error).message}`, {
        where: this.#deferredPath(digest),
        hint: 'build the image again (its steps run again) or pull it; `mybuild prune` removes the record once no image needs it',
      });
    }
    return rec;
  }

  /**
   * The tar of a deferred blob, made from its snapshot and checked as it streams (always: the
   * check is what tells a snapshot changed since the build from the layer it was).
   */
  #readDeferred(rec: DeferredBlob): Readable {
    const fs = OverlaySnapshotter.committedFs(this.paths, rec.snapshot);
    if (fs === undefined) {
      throw new MyBuildError('NOT_FOUND', `layer ${rec.digest} is kept as snapshot ${rec.snapshot}, which is missing`, {
        where: rec.snapshot,
        hint: 'build the image again (with --no-cache) or pull it',
      });
    }
    const tar = layerTar(fs, { mode: rec.mode });
    const changed = (detail: string) =>
      new MyBuildError('DIGEST_MISMATCH', `layer ${rec.digest}: snapshot ${rec.snapshot} changed since the build (${detail})`, {
        where: fs,
        hint: 'something wrote into the store; build the image again with --no-cache',
      });
    const hash = createHash('sha256');
    let size = 0;
    return new Readable({
      read() {
        let next: IteratorResult<Buffer>;
        try {
          next = tar.next();
        } catch (err) {
          this.destroy(changed((err as Error).message));
          return;
        }
        if (next.done) {
          const actual = `sha256:${hash.digest('hex')}`;
          if (size !== rec.size) this.destroy(changed(`its tar has ${size} bytes, not ${rec.size}`));
          else if (actual !== rec.digest) this.destroy(changed(`its tar has digest ${actual}`));
          else this.push(null);
          return;
        }
        size += next.value.length;
        if (size > rec.size) {
          this.destroy(changed(`its tar has more than ${rec.size} bytes`));
          return;
        }
        hash.update(next.value);
        this.push(next.value);
      },
      destroy(err, cb) {
        tar.return(undefined);
        cb(err);
      },
    });
  }

  /**
   * Write a deferred blob's file (its tar, made and checked) and drop its record: the blob no
   * longer needs its snapshot. No-op for a blob that is a file already.
   */
  async materialize(digest: Digest): Promise<BlobInfo> {
    if (!this.#hasFile(digest)) {
      const rec = await this.deferred(digest);
      if (!rec) throw notFound(digest);
      await this.put(this.#readDeferred(rec), { digest, size: rec.size });
    }
    await unlink(this.#deferredPath(digest)).catch((err: unknown) => {
      if (errnoCode(err) !== 'ENOENT') throw err;
    });
    return this.info(digest);
  }

  /** The blob's file (open) and size, else its deferred record and size. */
  async #openBlob(digest: Digest): Promise<{ size: number; file: FileHandle; deferred?: undefined } | { size: number; file?: undefined; deferred: DeferredBlob }> {
    let file: FileHandle;
    try {
      file = await open(this.path(digest), 'r');
    } catch (err) {
      if (errnoCode(err) !== 'ENOENT') throw err;
      const deferred = await this.deferred(digest);
      if (!deferred) throw notFound(digest);
      return { size: deferred.size, deferred };
    }
    try {
      return { size: (await file.stat()).size, file };
    } catch (err) {
      await file.close();
      throw err;
    }
  }

  /**
   * Stream a blob from `start`. With `verify`, the whole blob is hashed (the bytes before
   * `start` too) and the stream fails with DIGEST_MISMATCH at its end when the file was altered.
   * A deferred blob is always checked as it is made.
   */
  async read(digest: Digest, opts: { verify?: boolean; start?: number } = {}): Promise<Readable> {
    const start = opts.start ?? 0;
    if (!Number.isSafeInteger(start) || start < 0) {
      throw new MyBuildError('INVALID_ARGUMENT', `bad read offset ${start}`, { where: digest });
    }
    const blob = await this.#openBlob(digest);
    if (start > blob.size) {
      await blob.file?.close();
      throw new MyBuildError('INVALID_ARGUMENT', `read offset ${start} is past the blob's end (${blob.size} bytes)`, { where: digest });
    }
    let whole: Readable;
    if (blob.file) {
      if (!opts.verify) return blob.file.createReadStream({ start, highWaterMark: READ_CHUNK });
      const verifier = new VerifyingStream({ digest, size: blob.size, what: `blob ${digest}` });
      // pipeline destroys every stream with the first error, so the consumer of the last one sees it.
      pipeline(blob.file.createReadStream({ start: 0, highWaterMark: READ_CHUNK }), verifier).catch(() => {});
      whole = verifier;
    } else whole = this.#readDeferred(blob.deferred);
    if (start === 0) return whole;
    const skip = new SkipBytes(start);
    pipeline(whole, skip).catch(() => {});
    return skip;
  }

  async readBytes(digest: Digest, maxSize: number): Promise<Buffer> {
    const blob = await this.#openBlob(digest);
    try {
      if (blob.size > maxSize) {
        throw new MyBuildError('SIZE_EXCEEDED', `blob has ${blob.size} bytes, more than the ${maxSize} allowed for it`, {
          where: digest,
          hint: 'manifests and configs are small; this blob is not one',
        });
      }
      if (!blob.file) {
        const parts: Buffer[] = [];
        for await (const b of this.#readDeferred(blob.deferred)) parts.push(b as Buffer);
        return Buffer.concat(parts);
      }
      const data = await blob.file.readFile();
      const actual = `${digestAlgorithm(digest)}:${createHash(digestAlgorithm(digest)).update(data).digest('hex')}`;
      if (actual !== digest) {
        throw new MyBuildError('DIGEST_MISMATCH', `blob on disk has digest ${actual}`, {
          where: digest,
          hint: 'the store is damaged; remove the image and pull it again',
        });
      }
      return data;
    } finally {
      await blob.file?.close();
    }
  }

  writer(ref: string, opts: WriterOptions = {}): Promise<LocalContentWriter> {
    return LocalContentWriter.open(this, ref, opts, this.#opts.lockTimeoutMs);
  }

  async put(data: Readable, expected: { digest?: Digest; size?: number } = {}): Promise<BlobInfo> {
    // A deferred record does not count: the file, once written, needs no snapshot.
    if (expected.digest !== undefined && this.#hasFile(expected.digest)) {
      data.destroy();
      return this.info(expected.digest);
    }
    const w =
      expected.digest !== undefined
        ? await this.writer(`put-${expected.digest}`, { expected: expected.digest, ...(expected.size === undefined ? {} : { size: expected.size }) })
        : await this.#anonymousWriter(expected.size);
    try {
      // Another process may have committed the blob while this one waited for the ingest lock.
      if (expected.digest !== undefined && this.#hasFile(expected.digest)) {
        data.destroy();
        await w.abort();
        return this.info(expected.digest);
      }
      if (w.offset > 0) await w.reset(); // `data` starts at byte 0
      await pipeline(data, w.stream());
      return await w.commit();
    } catch (err) {
      if (!data.destroyed) data.destroy();
      await w.abort();
      throw err;
    }
  }

  /** Puts without a known digest share a small pool of ingest slots, taken without waiting. */
  async #anonymousWriter(size: number | undefined): Promise<LocalContentWriter> {
    for (let slot = 0; ; slot++) {
      try {
        return await this.writer(`put-anonymous-${slot}`, { noWait: true, ...(size === undefined ? {} : { size }) });
      } catch (err) {
        if (!(err instanceof MyBuildError && err.code === 'LOCKED') || slot >= 4096) throw err;
      }
    }
  }

  /**
   * Put bytes held in memory (configs, manifests, indexes). The digest is known before a byte is
   * written, so no ingest (lock, ref, resumable data) is needed: the bytes are written to a temp
   * file beside the blob and renamed to its name (writeFileAtomic, mode 0444). Two writers of
   * the same bytes rename the same content; a temp file a crash left is skipped by `list` and
   * removed by prune once an hour old.
   */
  async putBytes(data: Uint8Array, expected?: Digest): Promise<BlobInfo> {
    if (expected !== undefined && !isDigest(expected)) {
      throw new MyBuildError('INVALID_ARGUMENT', `expected digest ${JSON.stringify(String(expected).slice(0, 100))} is not a digest`);
    }
    const algorithm = expected === undefined ? 'sha256' : digestAlgorithm(expected);
    const digest = `${algorithm}:${createHash(algorithm).update(data).digest('hex')}` as Digest;
    if (expected !== undefined && digest !== expected) {
      throw new MyBuildError('DIGEST_MISMATCH', `data has digest ${digest}`, { where: expected });
    }
    if (this.#hasFile(digest)) return this.info(digest);
    const target = this.path(digest);
    await mkdir(target.slice(0, target.lastIndexOf('/')), { recursive: true, mode: 0o755 });
    await writeFileAtomic(target, data, 0o444);
    return { digest, size: data.byteLength };
  }

  async delete(digest: Digest): Promise<void> {
    let found = false;
    for (const path of [this.path(digest), this.#deferredPath(digest)]) {
      try {
        await unlink(path);
        found = true;
      } catch (err) {
        if (errnoCode(err) !== 'ENOENT' && errnoCode(err) !== 'ENOTDIR') throw err;
      }
    }
    if (!found) throw notFound(digest);
  }

  /** Every committed blob; names that are not a digest's hex (temp files, junk) are skipped. */
  async *list(): AsyncIterable<BlobInfo> {
    for (const algorithm of ALGORITHMS) {
      const dir = join(this.paths.root, 'blobs', algorithm);
      let handle;
      try {
        handle = await opendir(dir, { bufferSize: 256 });
      } catch (err) {
        if (errnoCode(err) === 'ENOENT') continue;
        throw err;
      }
      for await (const entry of handle) {
        if (!entry.isFile() || !HEX[algorithm].test(entry.name)) continue;
        try {
          const st = await lstat(join(dir, entry.name));
          yield { digest: `${algorithm}:${entry.name}` as Digest, size: st.size };
        } catch (err) {
          if (errnoCode(err) !== 'ENOENT') throw err; // deleted meanwhile
        }
      }
    }
    yield* this.#listDeferred();
  }

  /** Deferred blobs (those whose file was not written meanwhile); a damaged record is listed with size 0. */
  async *#listDeferred(): AsyncIterable<BlobInfo> {
    let handle;
    try {
      handle = await opendir(join(this.paths.root, 'deferred', 'sha256'), { bufferSize: 256 });
    } catch (err) {
      if (errnoCode(err) === 'ENOENT') return;
      throw err;
    }
    for await (const entry of handle) {
      if (!entry.isFile() || !HEX.sha256.test(entry.name)) continue;
      const digest = `sha256:${entry.name}` as Digest;
      if (this.#hasFile(digest)) continue; // listed above
      let rec: DeferredBlob | undefined;
      try {
        rec = await this.deferred(digest);
      } catch {
        yield { digest, size: 0 };
        continue;
      }
      if (rec) yield { digest, size: rec.size, deferredFrom: rec.snapshot };
    }
  }

  async ingests(): Promise<IngestStatus[]> {
    const out: IngestStatus[] = [];
    for (const id of await listIngestIds(this.paths)) {
      const status = await readIngestStatus(this.paths, id);
      if (status) out.push(status);
    }
    return out;
  }
}

/** Directory names under ingest/ that look like ingest ids. */
export async function listIngestIds(paths: StorePaths): Promise<string[]> {
  const out: string[] = [];
  const dir = await opendir(paths.ingest);
  for await (const entry of dir) {
    if (entry.isDirectory() && HEX.sha256.test(entry.name)) out.push(entry.name);
  }
  return out;
}

/** Status of one ingest, or undefined when it vanished or is incomplete. */
export async function readIngestStatus(paths: StorePaths, id: string): Promise<IngestStatus | undefined> {
  const dir = join(paths.ingest, id);
  try {
    const [ref, started, data] = await Promise.all([
      readFile(join(dir, 'ref'), 'utf8'),
      readFile(join(dir, 'startedat'), 'utf8').catch(() => ''),
      stat(join(dir, 'data')).catch(() => undefined),
    ]);
    const dirStat = data ?? (await stat(dir));
    const startedAt = new Date(started.trim());
    return {
      ref,
      offset: data?.size ?? 0,
      startedAt: Number.isNaN(startedAt.getTime()) ? dirStat.birthtime : startedAt,
      updatedAt: dirStat.mtime,
    };
  } catch (err) {
    if (errnoCode(err) === 'ENOENT') return undefined;
    throw err;
  }
}

/** A ContentWriter on `ingest/<id>/data`, holding the ingest's lock until commit, abort or close. */
export class LocalContentWriter implements ContentWriter {
  readonly ref: string;
  readonly #store: LocalContentStore;
  readonly #dir: string;
  readonly #opts: WriterOptions;
  readonly #algorithm: Algorithm;
  #lock: Lock | undefined;
  #fh: FileHandle | undefined;
  #hash: IngestHash;
  #offset = 0;
  #stream: IngestStream | undefined;

  private constructor(store: LocalContentStore, ref: string, opts: WriterOptions, lock: Lock) {
    this.ref = ref;
    this.#store = store;
    this.#dir = join(store.paths.ingest, ingestId(ref));
    this.#opts = opts;
    this.#algorithm = opts.expected === undefined ? 'sha256' : digestAlgorithm(opts.expected);
    this.#hash = ingestHash(this.#algorithm);
    this.#lock = lock;
  }

  /** Take the ingest's lock, then create or resume its data file (re-hashing what is there). */
  static async open(store: LocalContentStore, ref: string, opts: WriterOptions, lockTimeoutMs?: number): Promise<LocalContentWriter> {
    if (opts.expected !== undefined && !isDigest(opts.expected)) {
      throw new MyBuildError('INVALID_ARGUMENT', 'expected digest is not a digest', { where: ref });
    }
    if (opts.size !== undefined && (!Number.isSafeInteger(opts.size) || opts.size < 0)) {
      throw new MyBuildError('INVALID_ARGUMENT', `expected size ${opts.size} is not a size`, { where: ref });
    }
    const lock = await acquireLock(store.paths.locks, ingestLockName(ingestId(ref)), {
      ...(opts.noWait ? { noWait: true } : {}),
      ...(lockTimeoutMs === undefined ? {} : { timeoutMs: lockTimeoutMs }),
    });
    const w = new LocalContentWriter(store, ref, opts, lock);
    try {
      await w.#init();
    } catch (err) {
      await w.#release();
      throw err;
    }
    return w;
  }

  async #init(): Promise<void> {
    await mkdir(this.#dir, { recursive: true, mode: 0o700 });
    const refFile = join(this.#dir, 'ref');
    let known: string | undefined;
    try {
      known = await readFile(refFile, 'utf8');
    } catch (err) {
      if (errnoCode(err) !== 'ENOENT') throw err;
    }
    const dataPath = join(this.#dir, 'data');
    if (known !== this.ref) {
      // A fresh ingest, or one whose metadata was never completed: start over.
      await rm(dataPath, { force: true });
      await writeFile(refFile, this.ref);
      await writeFile(join(this.#dir, 'startedat'), isoTime());
    }
    this.#fh = await open(dataPath, 'a+', 0o600);
    const size = (await this.#fh.stat()).size;
    if (this.#opts.size !== undefined && size > this.#opts.size) {
      await this.reset();
      return;
    }
    await this.#rehash(size);
  }

  /** Restore the hash state from the bytes already written. */
  async #rehash(size: number): Promise<void> {
    const fh = this.#fh!;
    const buf = Buffer.allocUnsafe(Math.min(CHUNK * 4, Math.max(size, 1)));
    let pos = 0;
    while (pos < size) {
      const { bytesRead } = await fh.read(buf, 0, Math.min(buf.length, size - pos), pos);
      if (bytesRead === 0) break;
      this.#hash.update(buf.subarray(0, bytesRead));
      pos += bytesRead;
    }
    this.#offset = pos;
    if (pos !== size) await fh.truncate(pos);
  }

  get offset(): number {
    return this.#offset;
  }

  #check(what: string): FileHandle {
    if (!this.#fh) throw new MyBuildError('FAILED_PRECONDITION', `${what} on a closed content writer`, { where: this.ref });
    return this.#fh;
  }

  /** Discard what the ingest holds and start at byte 0. */
  async reset(): Promise<void> {
    const fh = this.#check('reset');
    if (this.#stream) throw new MyBuildError('FAILED_PRECONDITION', 'reset after writing started', { where: this.ref });
    await fh.truncate(0);
    this.#hash = ingestHash(this.#algorithm);
    this.#offset = 0;
  }

  stream(): Writable {
    const fh = this.#check('stream');
    if (this.#stream) throw new MyBuildError('FAILED_PRECONDITION', 'stream() called twice on one content writer', { where: this.ref });
    this.#stream = new IngestStream(fh, this.#hash);
    return this.#stream;
  }

  async commit(expected: { size?: number; digest?: Digest } = {}): Promise<BlobInfo> {
    const fh = this.#check('commit');
    const s = this.#stream;
    if (s && (s.errored || !s.writableFinished)) {
      throw new MyBuildError('FAILED_PRECONDITION', s.errored ? 'commit after a failed write' : 'commit before the stream finished', {
        where: this.ref,
        hint: 'await the end of the write (stream/promises.pipeline) before commit',
      });
    }
    const wantSize = expected.size ?? this.#opts.size;
    const wantDigest = expected.digest ?? this.#opts.expected;
    if (wantDigest !== undefined && digestAlgorithm(wantDigest) !== this.#algorithm) {
      throw new MyBuildError('INVALID_ARGUMENT', `expected ${wantDigest} but the writer hashes with ${this.#algorithm}`, { where: this.ref });
    }
    await fh.sync();
    const size = (await fh.stat()).size;
    if (size !== this.#offset + (s?.bytes ?? 0)) {
      throw new MyBuildError('INTERNAL', `ingest has ${size} bytes, the writer wrote ${this.#offset + (s?.bytes ?? 0)}`, { where: this.ref });
    }
    if (wantSize !== undefined && size < wantSize) {
      // Incomplete: keep the ingest so a later writer on the same ref resumes.
      await this.close();
      throw new MyBuildError('FAILED_PRECONDITION', `blob is incomplete: ${size} of ${wantSize} bytes written`, {
        where: this.ref,
        hint: 'write the rest, then commit',
      });
    }
    if (wantSize !== undefined && size > wantSize) {
      await this.abort();
      throw new MyBuildError('SIZE_EXCEEDED', `blob has ${size} bytes, expected ${wantSize}`, { where: this.ref });
    }
    const digest = `${this.#algorithm}:${this.#hash.digest()}` as Digest;
    if (wantDigest !== undefined && digest !== wantDigest) {
      await this.abort();
      throw new MyBuildError('DIGEST_MISMATCH', `blob has digest ${digest}, expected ${wantDigest}`, {
        where: this.ref,
        hint: 'the source sent different content than its descriptor names',
      });
    }
    await fh.chmod(0o444);
    await fh.close();
    this.#fh = undefined;
    const target = this.#store.path(digest);
    const blobDir = target.slice(0, target.lastIndexOf('/'));
    try {
      // A deferred record of the same blob does not stop the file: the file needs no snapshot.
      if (!existsSync(target)) {
        await mkdir(blobDir, { recursive: true, mode: 0o755 });
        await rename(join(this.#dir, 'data'), target);
        sys().fsyncdir(blobDir);
      }
    } finally {
      await rm(this.#dir, { recursive: true, force: true });
      await this.#release(true);
    }
    return { digest, size };
  }

  /** Drop the ingest and release its lock. */
  async abort(): Promise<void> {
    if (!this.#lock) return;
    await this.#closeFile();
    try {
      await rm(this.#dir, { recursive: true, force: true });
    } finally {
      await this.#release(true);
    }
  }

  /** Release the writer but keep the ingest, so a later `writer(ref)` resumes it. */
  async close(): Promise<void> {
    if (!this.#lock) return;
    await this.#release();
  }

  /** Stop the stream, wait for the append it may have running (see IngestStream), close the file. */
  async #closeFile(): Promise<void> {
    this.#stream?.destroy();
    await this.#stream?.settled();
    await this.#fh?.close().catch(() => {});
    this.#fh = undefined;
  }

  /** `removeFile` when the ingest is gone: its lock file goes too, so locks/ does not grow forever. */
  async #release(removeFile = false): Promise<void> {
    const lock = this.#lock;
    this.#lock = undefined;
    await this.#closeFile();
    await lock?.release({ removeFile });
  }
}

/**
 * The running hash of an ingest, fed by {@link IngestHash.append} as the bytes are written.
 * sha256 uses the OpenSSL inside Node through the addon, on the thread pool: writing and hashing
 * a buffer happen there together, so a pull or load keeps its JavaScript thread for the network
 * and parsing (on 2 cores this is the difference between one core hashing while the other idles
 * and both working). Other algorithms, or a Node without those symbols
 * (or MYBUILD_NATIVE_HASH=0), hash with node:crypto here and write with writev.
 */
interface IngestHash {
  /** Feed bytes already in the file (a resumed ingest). */
  update(buf: Buffer): void;
  /** Append `bufs` to the O_APPEND file and feed them to the hash; resolves when all are written. */
  append(fh: FileHandle, bufs: Buffer[]): Promise<number>;
  digest(): string;
}

/** Start writing back to disk after this many unsynced bytes, so that commit's fsync is short. */
const WRITEBACK_BYTES = 8 << 20;
/** Most buffers in one native append (the addon's limit). */
const APPEND_MAX_BUFFERS = 1024;

function ingestHash(algorithm: string): IngestHash {
  const sha = algorithm === 'sha256' ? nativeSha256() : undefined;
  if (sha) {
    const { native, h } = sha;
    let unsynced = 0;
    return {
      update: (buf) => native.sha256Update(h, buf),
      async append(fh, bufs) {
        let written = 0;
        for (let i = 0; i < bufs.length; i += APPEND_MAX_BUFFERS) {
          const part = bufs.slice(i, i + APPEND_MAX_BUFFERS);
          const bytes = part.reduce((n, b) => n + b.length, 0);
          unsynced += bytes;
          const kick = unsynced >= WRITEBACK_BYTES;
          if (kick) unsynced = 0;
          written += await native.appendHashed(fh.fd, h, part, kick);
        }
        return written;
      },
      digest: () => native.sha256Digest(h),
    };
  }
  const hash = createHash(algorithm);
  return {
    update: (buf) => void hash.update(buf),
    async append(fh, bufs) {
      for (const b of bufs) hash.update(b);
      let written = 0;
      let pending = bufs;
      while (pending.length > 0) {
        // The file is opened O_APPEND: every write goes to its end.
        const { bytesWritten } = await fh.writev(pending);
        written += bytesWritten;
        let n = bytesWritten;
        while (n > 0 && pending.length > 0) {
          const head = pending[0]!;
          if (n >= head.length) {
            n -= head.length;
            pending = pending.slice(1);
          } else {
            pending = [head.subarray(n), ...pending.slice(1)];
            n = 0;
          }
        }
      }
      return written;
    },
    digest: () => hash.digest('hex'),
  };
}

/**
 * Appends to the ingest file and feeds the hash; what is buffered goes out in one append. The
 * native append writes to the raw fd, which FileHandle.close() does not wait for: the writer
 * waits for {@link settled} before it closes the file, so a write can never land on a closed
 * (or by then reused) descriptor. Destroying the stream also waits for the append in flight.
 */
class IngestStream extends Writable {
  bytes = 0;
  readonly #fh: FileHandle;
  readonly #hash: IngestHash;
  #inflight: Promise<void> | undefined;

  constructor(fh: FileHandle, hash: IngestHash) {
    super({ highWaterMark: CHUNK });
    this.#fh = fh;
    this.#hash = hash;
  }

  override _write(chunk: Buffer, _enc: BufferEncoding, cb: (err?: Error | null) => void): void {
    this.#append([chunk]).then(() => cb(), cb);
  }

  override _writev(chunks: { chunk: Buffer }[], cb: (err?: Error | null) => void): void {
    this.#append(chunks.map((c) => c.chunk)).then(() => cb(), cb);
  }

  override _destroy(err: Error | null, cb: (err?: Error | null) => void): void {
    void this.settled().then(() => cb(err));
  }

  /** Resolves when no append is running (whether the last one failed or not). */
  settled(): Promise<void> {
    return this.#inflight ?? Promise.resolve();
  }

  #append(bufs: Buffer[]): Promise<void> {
    const nonEmpty = bufs.filter((b) => b.length > 0);
    if (nonEmpty.length === 0) return Promise.resolve();
    const p = this.#hash.append(this.#fh, nonEmpty).then((n) => {
      this.bytes += n;
    });
    this.#inflight = p.then(
      () => undefined,
      () => undefined,
    );
    return p;
  }
}

/** Drops the first `n` bytes. */
class SkipBytes extends Transform {
  #left: number;
  constructor(n: number) {
    super();
    this.#left = n;
  }
  override _transform(chunk: Buffer, _enc: BufferEncoding, cb: TransformCallback): void {
    if (this.#left >= chunk.length) {
      this.#left -= chunk.length;
      cb();
      return;
    }
    const out = chunk.subarray(this.#left);
    this.#left = 0;
    cb(null, out);
  }
}

/** A deferred blob (see {@link LocalContentStore.putDeferred}). */
export interface DeferredBlob {
  /** sha256 of the layer tar (its diffID). */
  digest: Digest;
  /** Bytes of the tar. */
  size: number;
  /** Chain ID of the committed snapshot whose files make the tar. */
  snapshot: string;
  /** How the snapshot's directory reads as a layer (its upper dir over parents, or plain). */
  mode: DiffMode;
}

function checkDeferred(rec: DeferredBlob, digest: Digest): void {
  if (typeof rec !== 'object' || rec === null) throw new Error('not an object');
  if (rec.digest !== digest || !isDigest(rec.digest) || digestAlgorithm(rec.digest) !== 'sha256') throw new Error(`digest ${JSON.stringify(rec.digest)} is not ${digest}`);
  if (!Number.isSafeInteger(rec.size) || rec.size < 0) throw new Error(`bad size ${JSON.stringify(rec.size)}`);
  if (typeof rec.snapshot !== 'string' || !/^sha256:[a-f0-9]{64}$/.test(rec.snapshot)) throw new Error(`bad snapshot ${JSON.stringify(rec.snapshot)}`);
  if (rec.mode !== 'overlay-upper' && rec.mode !== 'plain') throw new Error(`bad mode ${JSON.stringify(rec.mode)}`);
}
