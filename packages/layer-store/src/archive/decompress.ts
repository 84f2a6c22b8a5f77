import { PassThrough, Readable, type Transform } from 'node:stream';
import { createGunzip } from 'node:zlib';
import { DecompressStream } from 'zstd-napi';
import { type Compression, MyBuildError, sniffCompression } from '@mybuild/oci';

/** A decompressing transform for `c`, or a pass-through for 'none'. */
export function decompressor(c: Compression): Transform {
  if (c === 'gzip') return createGunzip({ chunkSize: 256 * 1024 });
  if (c === 'zstd') return new DecompressStream() as unknown as Transform;
  return new PassThrough({ highWaterMark: 1024 * 1024 });
}

/**
 * Look at the first bytes of `input` and return the compression plus a stream that
 * still yields every byte (nothing is consumed).
 */
export async function sniff(input: Readable): Promise<{ compression: Compression; stream: Readable }> {
  const head: Buffer[] = [];
  let have = 0;
  const it = input[Symbol.asyncIterator]();
  while (have < 4) {
    const r = await it.next();
    if (r.done) break;
    const b = Buffer.isBuffer(r.value) ? r.value : Buffer.from(r.value as Uint8Array);
    head.push(b);
    have += b.length;
  }
  const first = Buffer.concat(head);
  const compression = sniffCompression(first);
  async function* all(): AsyncGenerator<Buffer> {
    if (first.length) yield first;
    for (;;) {
      const r = await it.next();
      if (r.done) return;
      yield Buffer.isBuffer(r.value) ? r.value : Buffer.from(r.value as Uint8Array);
    }
  }
  return { compression, stream: Readable.from(all(), { objectMode: false, highWaterMark: 1024 * 1024 }) };
}

/** Sniff, then decompress: the plain bytes of a maybe-compressed stream. */
export async function autoDecompress(input: Readable): Promise<{ compression: Compression; stream: Readable }> {
  const { compression, stream } = await sniff(input);
  if (compression === 'none') return { compression, stream };
  const d = decompressor(compression);
  stream.on('error', (e) => d.destroy(e));
  d.on('error', () => stream.destroy());
  return { compression, stream: stream.pipe(d) };
}

export function archiveError(file: string, message: string, hint?: string): MyBuildError {
  return new MyBuildError('INVALID_ARGUMENT', message, { where: file, ...(hint ? { hint } : {}) });
}
