import { pipeline, type Readable } from 'node:stream';
import { type Compression, MyBuildError, sniffCompression } from '@mybuild/oci';
import { zlib, zstdBinding as zstd } from '../lazy.js';


export interface PlainStream {
  compression: Compression;
  /** The uncompressed bytes, pulled on demand: nothing is produced faster than it is consumed. */
  chunks: AsyncIterable<Buffer>;
}

/** gunzip output buffer: large enough that per-chunk overhead does not matter for big layers. */
const GUNZIP_CHUNK = 256 * 1024;

/**
 * Decompress `input` (gzip, zstd or none; sniffed from the first bytes unless given).
 * Every decompressor here is pull-driven, so the consumer can stop a decompression bomb after
 * any chunk: gzip through zlib's own backpressure, zstd through {@link zstdChunks} (zstd-napi's
 * DecompressStream would expand a whole input chunk — gigabytes for a crafted frame — in one go).
 */
export async function openPlain(input: Readable, compression: Compression | undefined, what: string, opts: { maxBytes?: number } = {}): Promise<PlainStream> {
  const plain = await openDecompressed(input, compression, what);
  return opts.maxBytes === undefined ? plain : { compression: plain.compression, chunks: bounded(plain.chunks, opts.maxBytes, what) };
}

/** Fails as soon as more than `maxBytes` uncompressed bytes come out (a decompression bomb). */
async function* bounded(chunks: AsyncIterable<Buffer>, maxBytes: number, what: string): AsyncGenerator<Buffer> {
  let bytes = 0;
  for await (const chunk of chunks) {
    bytes += chunk.length;
    if (bytes > maxBytes) {
      throw new MyBuildError('SIZE_EXCEEDED', `layer expands to more than ${maxBytes} bytes`, {
        where: what,
        hint: 'the layer is a decompression bomb or larger than the configured bound',
      });
    }
    yield chunk;
  }
}

async function openDecompressed(input: Readable, compression: Compression | undefined, what: string): Promise<PlainStream> {
  const it = input[Symbol.asyncIterator]() as AsyncIterator<Buffer>;
  const head: Buffer[] = [];
  let have = 0;
  let ended = false;
  if (compression === undefined) {
    while (have < 4) {
      const r = await it.next();
      if (r.done) {
        ended = true;
        break;
      }
      const b = toBuffer(r.value);
      head.push(b);
      have += b.length;
    }
    compression = sniffCompression(head.length === 1 ? head[0]! : Buffer.concat(head));
  }
  async function* raw(): AsyncGenerator<Buffer> {
    try {
      for (const b of head) yield b;
      head.length = 0;
      if (ended) return;
      for (;;) {
        const r = await it.next();
        if (r.done) return;
        yield toBuffer(r.value);
      }
    } finally {
      // Stopping early (an error downstream) must release the source too.
      if (!input.readableEnded) input.destroy();
    }
  }
  if (compression === 'none') return { compression, chunks: raw() };
  if (compression === 'zstd') return { compression, chunks: zstdChunks(raw(), what) };
  return { compression, chunks: gunzipChunks(raw(), what) };
}

function toBuffer(v: unknown): Buffer {
  if (Buffer.isBuffer(v)) return v;
  if (v instanceof Uint8Array) return Buffer.from(v.buffer, v.byteOffset, v.byteLength);
  if (typeof v === 'string') return Buffer.from(v);
  throw new MyBuildError('INVALID_ARGUMENT', 'layer stream must yield bytes');
}

async function* gunzipChunks(src: AsyncGenerator<Buffer>, what: string): AsyncGenerator<Buffer> {
  const z = zlib().createGunzip({ chunkSize: GUNZIP_CHUNK });
  // pipeline pulls from the generator only as fast as zlib drains; errors on either side
  // destroy both, and surface through the iteration below.
  pipeline(src, z, () => {});
  try {
    for await (const chunk of z) yield chunk as Buffer;
  } catch (err) {
    throw corrupt('gzip', err, what);
  } finally {
    z.destroy();
  }
}

async function* zstdChunks(src: AsyncGenerator<Buffer>, what: string): AsyncGenerator<Buffer> {
  const dctx = new (zstd().DCtx)();
  const outSize = Math.max(zstd().dStreamOutSize(), 128 * 1024);
  let inFrame = false;
  let sawInput = false;
  for await (const chunk of src) {
    let rest: Buffer = chunk;
    if (rest.length > 0) sawInput = true;
    while (rest.length > 0) {
      const out = Buffer.allocUnsafe(outSize);
      let ret: number;
      let produced: number;
      let consumed: number;
      try {
        [ret, produced, consumed] = dctx.decompressStream(out, rest);
      } catch (err) {
        throw corrupt('zstd', err, what);
      }
      rest = rest.subarray(consumed);
      inFrame = ret !== 0;
      // One output buffer at a time: the consumer decides whether we may go on.
      if (produced > 0) yield out.subarray(0, produced);
      // The decoder may hold more output for the input it already took.
      if (rest.length === 0 && produced === out.length) {
        for (;;) {
          const more = Buffer.allocUnsafe(outSize);
          let r2: number;
          let p2: number;
          try {
            [r2, p2] = dctx.decompressStream(more, Buffer.alloc(0));
          } catch (err) {
            throw corrupt('zstd', err, what);
          }
          inFrame = r2 !== 0;
          if (p2 > 0) yield more.subarray(0, p2);
          if (p2 < more.length) break;
        }
      }
    }
  }
  if (inFrame || !sawInput) {
    throw new MyBuildError('INVALID_ARGUMENT', 'zstd stream is truncated', { where: what, hint: 'the layer blob is incomplete' });
  }
}

/** Label the decoder's own errors; errors from the source (size, digest, I/O) pass unchanged. */
function corrupt(kind: string, err: unknown, what: string): unknown {
  if (err instanceof MyBuildError) return err;
  const code = err && typeof err === 'object' && 'code' in err ? String((err as { code: unknown }).code) : '';
  if (kind === 'gzip' && !code.startsWith('Z_')) return err;
  const msg = err instanceof Error ? err.message : String(err);
  return new MyBuildError('INVALID_ARGUMENT', `${kind} stream is corrupt: ${msg}`, { where: what, cause: err });
}
