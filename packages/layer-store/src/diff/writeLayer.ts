import { type Transform, type TransformOptions, type Writable } from 'node:stream';
import { finished, pipeline } from 'node:stream/promises';
import type { ZlibOptions } from 'node:zlib';
import { type Compression, createHash, type Digest, layerMediaTypeFor, MyBuildError, randomUUID } from '@mybuild/oci';
import type { ContentStore, ContentWriter } from '../api.js';
import { type LayerTarOptions, type TarStats, TAR_CHUNK, layerTar } from './layerTar.js';
import { zlib, zstdNapi } from '../lazy.js';
import { nativeSha256 } from '../native.js';

export interface WriteLayerOptions extends LayerTarOptions {
  /** Where the blob goes (through a content writer: checked, fsynced, renamed into blobs/). */
  store: ContentStore;
  /** Default `gzip`. */
  compression?: Compression;
  /** gzip 0–9 (default 6), zstd 1–22 (default 3). */
  level?: number;
  /** Docker media types (`application/vnd.docker.image.rootfs.diff.tar…`) instead of OCI ones. */
  docker?: boolean;
  /** Ingest ref (default: a fresh one per call). */
  ref?: string;
}

/** What {@link writeLayer} stored: enough for a manifest's layer descriptor and the config's diff_ids. */
export interface WrittenLayer {
  /** sha256 of the uncompressed tar (the image config's rootfs.diff_ids entry). */
  diffId: Digest;
  /** Digest of the blob as stored (compressed). */
  digest: Digest;
  /** Bytes of the blob as stored. */
  size: number;
  /** Bytes of the uncompressed tar. */
  uncompressedSize: number;
  mediaType: string;
  compression: Compression;
  /** Tar entries written (whiteouts and hardlinks included). */
  entries: number;
}

const DEFAULT_LEVEL: Record<Compression, number> = { none: 0, gzip: 6, zstd: 3 };
const LEVELS: Record<Compression, [number, number]> = { none: [0, 0], gzip: [0, 9], zstd: [1, 22] };

/** gzip output chunk: larger than zlib's 16 KiB default, so the store sees fewer, bigger writes. */
const GZIP_CHUNK = 256 * 1024;
/**
 * Tar chunks read ahead of the compressor: reading (main thread) and compressing (zlib's thread
 * pool, zstd's worker) overlap, and a slow chunk on either side does not stall the other.
 */
const READ_AHEAD = 4;

/**
 * Turn `dir` into a layer blob in `opts.store`, in one pass: the tar (see {@link layerTar}) is
 * hashed for the diffID and streamed through the compressor into a content writer, which hashes
 * and counts the blob as it writes it. The data is read once and never held whole.
 *
 * Deterministic: the same tree (names, contents, modes, owners, mtimes, xattrs, links) gives
 * the same diffID and, with the same compressor version and level, the same digest.
 */
export async function writeLayer(dir: string, opts: WriteLayerOptions): Promise<WrittenLayer> {
  const compression = opts.compression ?? 'gzip';
  const level = checkOptions(compression, opts);
  const stats: TarStats = { entries: 0, bytes: 0 };
  // Uncompressed, the blob is the tar: the writer's own digest is the diffID.
  const diff = compression === 'none' ? undefined : createHash('sha256');
  const writer = await openWriter(opts.store, opts.ref ?? `layer-${randomUUID()}`);
  try {
    const chunkSize = opts.chunkSize ?? TAR_CHUNK;
    const sink = writer.stream();
    const zip = compression === 'none' ? undefined : layerCompressor(compression, level, READ_AHEAD * chunkSize);
    const out: Writable = zip ?? sink;
    // An error on either side destroys both (and so ends feed's wait).
    const piped = zip && pipeline(zip, sink);
    piped?.catch(() => undefined);
    const reuse: Buffer[] = [];
    await feed(layerTar(dir, opts, stats, reuse), out, reuse, chunkSize, diff);
    await piped;
    const blob = await writer.commit();
    return {
      diffId: diff ? (`sha256:${diff.digest('hex')}` as Digest) : blob.digest,
      digest: blob.digest,
      size: blob.size,
      uncompressedSize: stats.bytes,
      mediaType: layerMediaTypeFor(compression, opts.docker ?? false),
      compression,
      entries: stats.entries,
    };
  } catch (err) {
    await writer.abort().catch(() => {});
    throw err;
  }
}

/**
 * Write the tar's chunks to `out`, at most {@link READ_AHEAD} of them written and not yet taken
 * (reading files on this thread and hashing, compressing and writing elsewhere overlap), and
 * put each whole chunk back into `reuse` once `out` has taken it: the same few buffers carry the
 * whole layer, where a fresh 1 MiB Buffer per chunk would pile up until V8's next GC frees it
 * (~45 MiB of dead buffers on a 300 MB layer). Resolves when `out` has finished.
 */
async function feed(chunks: Iterable<Buffer>, out: Writable, reuse: Buffer[], chunkSize: number, diff: ReturnType<typeof createHash> | undefined): Promise<void> {
  let pending = 0;
  let failed: unknown;
  let wake: (() => void) | undefined;
  const onError = (err: unknown) => {
    failed ??= err;
    wake?.();
  };
  out.on('error', onError);
  try {
    for (const chunk of chunks) {
      if (failed !== undefined) break;
      diff?.update(chunk);
      pending++;
      out.write(chunk, (err) => {
        pending--;
        if (err) failed ??= err;
        else if (chunk.length === chunkSize) reuse.push(chunk);
        wake?.();
      });
      while (pending >= READ_AHEAD && failed === undefined) await new Promise<void>((resolve) => (wake = resolve));
    }
    if (failed !== undefined) throw failed;
    out.end();
    await finished(out);
  } catch (err) {
    out.destroy(err as Error);
    throw err;
  } finally {
    out.off('error', onError);
  }
}

/**
 * The compressor of layer blobs (writeLayer's, and the builder's for exports and pushes: the
 * same settings give the same digests). `buffered`: its stream buffer size, in bytes.
 */
export function layerCompressor(compression: 'gzip' | 'zstd', level: number = DEFAULT_LEVEL[compression], buffered?: number): Transform {
  if (compression === 'gzip') {
    // zlib hands its options to Transform too: highWaterMark sizes its buffers.
    const options: ZlibOptions & TransformOptions = { level, chunkSize: GZIP_CHUNK, ...(buffered === undefined ? {} : { highWaterMark: buffered }) };
    return zlib().createGzip(options);
  }
  return new (zstdNapi().CompressStream)({
    compressionLevel: level,
    // A checksum in the frame (as the zstd CLI writes) lets `zstd -t` check a blob on its own.
    checksumFlag: true,
    // Compress on zstd's own thread while this one reads files. The output is the same for any
    // nbWorkers ≥ 1 (it differs from nbWorkers = 0): fixed here, so digests do not depend on the
    // machine's core count.
    nbWorkers: 1,
  });
}

/** A writer at offset 0: a leftover ingest under the same ref is dropped, the tar starts at byte 0. */
async function openWriter(store: ContentStore, ref: string): Promise<ContentWriter> {
  const w = await store.writer(ref);
  if (w.offset === 0) return w;
  await w.abort();
  const fresh = await store.writer(ref);
  if (fresh.offset !== 0) {
    await fresh.abort();
    throw new MyBuildError('FAILED_PRECONDITION', `ingest ${JSON.stringify(ref)} is not empty after it was dropped`, { hint: 'use another ref' });
  }
  return fresh;
}

function checkOptions(compression: Compression, opts: WriteLayerOptions): number {
  const range = LEVELS[compression];
  if (range === undefined) {
    throw new MyBuildError('INVALID_ARGUMENT', `unknown layer compression ${JSON.stringify(compression)}`, { hint: 'use none, gzip or zstd' });
  }
  const level = opts.level ?? DEFAULT_LEVEL[compression];
  if (compression !== 'none' && (!Number.isInteger(level) || level < range[0] || level > range[1])) {
    throw new MyBuildError('INVALID_ARGUMENT', `${compression} level ${level} is out of range`, { hint: `use ${range[0]}–${range[1]}` });
  }
  const epoch = opts.sourceDateEpoch;
  if (epoch !== undefined && (!Number.isSafeInteger(epoch) || epoch < 0)) {
    throw new MyBuildError('INVALID_ARGUMENT', `SOURCE_DATE_EPOCH ${epoch} is not a number of seconds since 1970`);
  }
  if (opts.mode !== 'overlay-upper' && opts.mode !== 'plain') {
    throw new MyBuildError('INVALID_ARGUMENT', `unknown diff mode ${JSON.stringify(opts.mode)}`, { hint: 'use overlay-upper or plain' });
  }
  return level;
}

/** What {@link hashLayer} found: the layer's tar, described without being stored. */
export interface HashedLayer {
  /** sha256 of the tar (its diffID, and its digest as an uncompressed blob). */
  diffId: Digest;
  /** Bytes of the tar. */
  size: number;
  /** Tar entries (whiteouts and hardlinks included). */
  entries: number;
}

/**
 * The diffID and size of `dir`'s layer tar (the bytes {@link layerTar} makes, as
 * {@link writeLayer} would store them uncompressed), without writing them anywhere: the tar is
 * made chunk by chunk and hashed on the thread pool (Node's own OpenSSL through the addon,
 * node:crypto when that is absent) while the next chunk is read. The store's deferred blobs
 * (`ContentStore.putDeferred`) are made this way: the build hashes the snapshot's layer and
 * makes the bytes again only when something reads them.
 */
export async function hashLayer(dir: string, opts: LayerTarOptions): Promise<HashedLayer> {
  const stats: TarStats = { entries: 0, bytes: 0 };
  const chunkSize = opts.chunkSize ?? TAR_CHUNK;
  const sha = nativeSha256();
  if (!sha) {
    const hash = createHash('sha256');
    const reuse: Buffer[] = [];
    for (const chunk of layerTar(dir, opts, stats, reuse)) {
      hash.update(chunk);
      if (chunk.length === chunkSize) reuse.push(chunk);
    }
    return { diffId: `sha256:${hash.digest('hex')}` as Digest, size: stats.bytes, entries: stats.entries };
  }
  // One hash call at a time per context: the chunks made while one runs go in the next call.
  const { native, h } = sha;
  const reuse: Buffer[] = [];
  let queued: Buffer[] = [];
  let running: Promise<void> | undefined;
  const submit = (): Promise<void> => {
    const batch = queued;
    queued = [];
    return native.sha256UpdateAsync(h, batch).then(() => {
      for (const b of batch) if (b.length === chunkSize) reuse.push(b);
    });
  };
  for (const chunk of layerTar(dir, opts, stats, reuse)) {
    queued.push(chunk);
    if (queued.length >= READ_AHEAD) {
      await running;
      running = submit();
    }
  }
  await running;
  if (queued.length > 0) await submit();
  return { diffId: `sha256:${native.sha256Digest(h)}` as Digest, size: stats.bytes, entries: stats.entries };
}
