import { closeSync, constants, openSync, readSync } from 'node:fs';
import { MyBuildError, errnoCode } from '@mybuild/oci';
import { BLOCK, TypeFlag, type TarHeader, encodeUstar, padding, paxHeaderName, paxRecordsFor } from './tarHeader.js';
import { type LayerEntry, type WalkLayerOptions, walkLayer } from './walkLayer.js';

/** Default size of the chunks the tar comes out in (PERF-NOTES: ≥ 1 MiB writes). */
export const TAR_CHUNK = 1 << 20;

const OPEN_READ = constants.O_RDONLY | constants.O_NOFOLLOW; // libuv adds O_CLOEXEC

export interface LayerTarOptions extends WalkLayerOptions {
  /** Size of the chunks yielded (a multiple of 512; default {@link TAR_CHUNK}). */
  chunkSize?: number;
}

/** Counts of what a {@link TarPacker} wrote so far. */
export interface TarStats {
  entries: number;
  bytes: number;
}

/**
 * The layer tar of `dir` (see {@link walkLayer} for what it holds and in which order), as
 * chunks of `chunkSize` bytes (the last one shorter). Each chunk is a fresh Buffer the consumer
 * may keep — unless `reuse` is given: then a new chunk is taken from that array when it holds
 * one (the consumer puts back whole chunks it is done with). Files are read synchronously
 * straight into the chunk being filled — a small file in one read(2), a large one a chunk at a
 * time — so nothing but the current chunk is held.
 */
export function* layerTar(dir: string, opts: LayerTarOptions, stats?: TarStats, reuse?: Buffer[]): Generator<Buffer> {
  const packer = new TarPacker(dir, opts.chunkSize ?? TAR_CHUNK, stats, reuse);
  yield* packer.pack(walkLayer(dir, opts));
}

class TarPacker {
  readonly #where: string;
  readonly #chunk: number;
  readonly #stats: TarStats;
  readonly #reuse: Buffer[] | undefined;
  #buf: Buffer;
  #off = 0;

  constructor(where: string, chunk: number, stats: TarStats = { entries: 0, bytes: 0 }, reuse?: Buffer[]) {
    if (!Number.isSafeInteger(chunk) || chunk < BLOCK || chunk % BLOCK !== 0) {
      throw new MyBuildError('INVALID_ARGUMENT', `tar chunk size ${chunk} is not a positive multiple of ${BLOCK}`);
    }
    this.#where = where;
    this.#chunk = chunk;
    this.#stats = stats;
    this.#reuse = reuse;
    this.#buf = this.#fresh();
  }

  #fresh(): Buffer {
    const b = this.#reuse?.pop();
    return b !== undefined && b.length === this.#chunk ? b : Buffer.allocUnsafe(this.#chunk);
  }

  *pack(entries: Iterable<LayerEntry>): Generator<Buffer> {
    for (const e of entries) {
      this.#stats.entries++;
      yield* this.#entry(e);
    }
    yield* this.#zeros(2 * BLOCK); // end of archive
    if (this.#off > 0) yield this.#take(true);
  }

  *#entry(e: LayerEntry): Generator<Buffer> {
    const h = e.header;
    const name = h.type === 'dir' ? `${h.name}/` : h.name;
    const pax = paxRecordsFor(h);
    if (pax.length > 0) {
      const data = pax.length === 1 ? pax[0]! : Buffer.concat(pax);
      yield* this.#header({ name: paxHeaderName(h.name), typeflag: TypeFlag.pax, mode: 0, uid: 0, gid: 0, size: data.length, mtime: 0 });
      yield* this.#copy(data);
      yield* this.#zeros(padding(data.length));
    }
    yield* this.#header({
      name,
      typeflag: TypeFlag[h.type],
      mode: h.mode,
      uid: h.uid,
      gid: h.gid,
      size: h.size,
      mtime: h.mtime,
      linkname: h.linkname,
      devmajor: h.devmajor,
      devminor: h.devminor,
    });
    if (h.size > 0) {
      if (e.source === undefined) throw new MyBuildError('INTERNAL', `tar entry ${JSON.stringify(h.name)} has a size but no source`);
      yield* this.#file(e.source, h);
      yield* this.#zeros(padding(h.size));
    }
  }

  *#header(f: Parameters<typeof encodeUstar>[2]): Generator<Buffer> {
    // Everything before a header ends on a block boundary, and chunks are whole blocks.
    if (this.#off === this.#buf.length) yield this.#take();
    encodeUstar(this.#buf, this.#off, f);
    this.#off += BLOCK;
  }

  /** Read exactly `h.size` bytes of `path` into the chunks. */
  *#file(path: string, h: TarHeader): Generator<Buffer> {
    let fd: number;
    try {
      fd = openSync(path, OPEN_READ);
    } catch (err) {
      throw this.#ioError(err, h.name);
    }
    try {
      let left = h.size;
      while (left > 0) {
        if (this.#off === this.#buf.length) yield this.#take();
        const room = this.#buf.length - this.#off;
        const want = left < room ? left : room;
        // On the last read, ask for one byte more when there is room: a file that grew since its
        // lstat fails instead of being cut silently. (The extra byte is overwritten later.)
        const ask = want === left && room > want ? want + 1 : want;
        let n: number;
        try {
          n = readSync(fd, this.#buf, this.#off, ask, null);
        } catch (err) {
          throw this.#ioError(err, h.name);
        }
        if (n === 0 || n > left) throw this.#changed(h.name, n === 0 ? 'shrank' : 'grew');
        this.#off += n;
        left -= n;
      }
    } finally {
      closeSync(fd);
    }
  }

  *#copy(data: Buffer): Generator<Buffer> {
    let p = 0;
    while (p < data.length) {
      if (this.#off === this.#buf.length) yield this.#take();
      const n = Math.min(data.length - p, this.#buf.length - this.#off);
      data.copy(this.#buf, this.#off, p, p + n);
      this.#off += n;
      p += n;
    }
  }

  *#zeros(count: number): Generator<Buffer> {
    let left = count;
    while (left > 0) {
      if (this.#off === this.#buf.length) yield this.#take();
      const n = Math.min(left, this.#buf.length - this.#off);
      this.#buf.fill(0, this.#off, this.#off + n);
      this.#off += n;
      left -= n;
    }
  }

  /** Hand out the filled part of the current chunk and start a new one. */
  #take(last = false): Buffer {
    const out = this.#off === this.#buf.length ? this.#buf : this.#buf.subarray(0, this.#off);
    this.#stats.bytes += out.length;
    this.#buf = last ? Buffer.alloc(0) : this.#fresh();
    this.#off = 0;
    return out;
  }

  #changed(name: string, how: string): MyBuildError {
    return new MyBuildError('FAILED_PRECONDITION', `${JSON.stringify(name)} ${how} while the layer was written`, {
      where: this.#where,
      hint: 'nothing may write to the directory while its layer is made (stop the container first)',
    });
  }

  #ioError(err: unknown, name: string): unknown {
    const code = errnoCode(err);
    if (code === undefined) return err;
    const msg = err instanceof Error ? err.message : String(err);
    if (code === 'ENOENT' || code === 'ELOOP') return this.#changed(name, `was replaced (${code})`);
    if (code === 'EACCES' || code === 'EPERM') {
      return new MyBuildError('FAILED_PRECONDITION', `cannot read ${JSON.stringify(name)}: ${msg}`, { where: this.#where, hint: 'run as root or as the owner of the files', cause: err });
    }
    return new MyBuildError('INTERNAL', `reading ${JSON.stringify(name)}: ${msg}`, { where: this.#where, cause: err });
  }
}
