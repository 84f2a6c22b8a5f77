/**
 * The build context's stat cache: content hashes of files keyed by their path, remembered
 * with the file's size, mtime, ctime and inode. A file whose lstat still shows the same four
 * is not read again; any change (even `touch`) makes it be read and hashed again, and the same
 * content gives the same hash, so COPY stays cached. Persisted per context directory.
 *
 * "Racy" entries — files whose mtime is within {@link RACY_MS} of the moment the cache is
 * saved — are saved without their hash: a second write in the same timestamp tick would not
 * show in the stat, so those are read again next time (git's racy-index rule). A content
 * change with the mtime set back afterwards still shows in the ctime.
 *
 * The file is binary so that loading 20,000 entries costs a few milliseconds (a cached
 * rebuild's budget is a few hundred): `MBSC`, version, count; then count × 4 float64 (size,
 * mtimeMs, ctimeMs, ino); count × 32 bytes of sha256 (zeros: none); the paths, NUL-separated.
 * A save keeps the entries this build used (looked up or set), so the file does not grow with
 * files long gone.
 */
import { mkdirSync, readFileSync } from 'node:fs';
import type { Stats } from 'node:fs';
import { dirname } from 'node:path';
import { writeFileAtomic } from '@mybuild/layer-store';

const MAGIC = 0x4353424d; // "MBSC" little-endian
const VERSION = 2;
const HEADER = 12;
const RACY_MS = 2000;
const NO_HASH = '0'.repeat(64);

/** [size, mtimeMs, ctimeMs, ino, sha256 hex ('' = none)] */
type Entry = [number, number, number, number, string];

export class StatCache {
  readonly #file: string | undefined;
  /** entries as loaded: path → index into the arrays below */
  readonly #index: Map<string, number>;
  readonly #nums: Float64Array;
  readonly #hashes: Buffer;
  /** entries set by this build, or loaded ones found stale (what a save keeps, with {@link #used}) */
  readonly #live = new Map<string, Entry>();
  /** loaded entries this build found valid (by index): kept by a save unless {@link #live} has the path */
  readonly #used: Uint8Array;
  #dirty = false;
  /** how many lookups were answered from the cache, and how many missed */
  hits = 0;
  misses = 0;

  private constructor(file: string | undefined, index: Map<string, number>, nums: Float64Array, hashes: Buffer) {
    this.#file = file;
    this.#index = index;
    this.#nums = nums;
    this.#hashes = hashes;
    this.#used = new Uint8Array(nums.length / 4);
  }

  /** An empty cache that is never saved (`--no-cache`, tests). */
  static memory(): StatCache {
    return new StatCache(undefined, new Map(), new Float64Array(0), Buffer.alloc(0));
  }

  /** Load the cache at `file`; a missing or unreadable file is an empty cache. */
  static load(file: string): StatCache {
    try {
      const buf = readFileSync(file);
      if (buf.length >= HEADER && buf.readUInt32LE(0) === MAGIC && buf.readUInt32LE(4) === VERSION) {
        const count = buf.readUInt32LE(8);
        const numsEnd = HEADER + count * 32;
        const hashesEnd = numsEnd + count * 32;
        if (buf.length >= hashesEnd) {
          // copy into an aligned array (the file buffer may not be 8-byte aligned)
          const nums = new Float64Array(count * 4);
          Buffer.from(nums.buffer).set(buf.subarray(HEADER, numsEnd));
          const paths = count === 0 ? [] : buf.toString('utf8', hashesEnd).split('\0');
          if (paths.length === count) {
            const index = new Map<string, number>();
            for (let i = 0; i < count; i++) index.set(paths[i]!, i);
            return new StatCache(file, index, nums, buf.subarray(numsEnd, hashesEnd));
          }
        }
      }
    } catch {
      // absent or damaged: start afresh
    }
    return new StatCache(file, new Map(), new Float64Array(0), Buffer.alloc(0));
  }

  /** The hash remembered for `rel` when `st` still matches, else undefined. */
  lookup(rel: string, st: Stats): string | undefined {
    const live = this.#live.get(rel);
    if (live !== undefined) {
      if (live[4] !== '' && live[0] === st.size && live[1] === st.mtimeMs && live[2] === st.ctimeMs && live[3] === st.ino) {
        this.hits++;
        return live[4];
      }
      this.misses++;
      return undefined;
    }
    const i = this.#index.get(rel);
    if (i !== undefined) {
      const n = this.#nums;
      const o = i * 4;
      // (no Buffer or entry made per hit: a cached rebuild looks up every file of the context)
      if (n[o] === st.size && n[o + 1] === st.mtimeMs && n[o + 2] === st.ctimeMs && n[o + 3] === st.ino) {
        const hash = this.#hashes.toString('hex', i * 32, i * 32 + 32);
        if (hash !== NO_HASH) {
          this.#used[i] = 1;
          this.hits++;
          return hash;
        }
      }
      this.#dirty = true; // a stale entry: drop it on save
    }
    this.misses++;
    return undefined;
  }

  set(rel: string, st: Stats, hash: string): void {
    this.#live.set(rel, [st.size, st.mtimeMs, st.ctimeMs, st.ino, hash]);
    this.#dirty = true;
  }

  /** Write the cache (atomically) when it changed. */
  async save(now = Date.now()): Promise<void> {
    if (!this.#file || !this.#dirty) return;
    const entries = [...this.#live];
    for (const [rel, i] of this.#index) {
      if (this.#used[i] === 1 && !this.#live.has(rel)) {
        const n = this.#nums;
        entries.push([rel, [n[i * 4]!, n[i * 4 + 1]!, n[i * 4 + 2]!, n[i * 4 + 3]!, this.#hashes.toString('hex', i * 32, i * 32 + 32)]]);
      }
    }
    const count = entries.length;
    const nums = new Float64Array(count * 4);
    const hashes = Buffer.alloc(count * 32);
    entries.forEach(([, e], i) => {
      nums.set([e[0], e[1], e[2], e[3]], i * 4);
      if (e[4] !== '' && now - e[1] >= RACY_MS) hashes.write(e[4], i * 32, 'hex');
    });
    const header = Buffer.alloc(HEADER);
    header.writeUInt32LE(MAGIC, 0);
    header.writeUInt32LE(VERSION, 4);
    header.writeUInt32LE(count, 8);
    const paths = Buffer.from(entries.map(([rel]) => rel).join('\0'), 'utf8');
    mkdirSync(dirname(this.#file), { recursive: true });
    await writeFileAtomic(this.#file, Buffer.concat([header, Buffer.from(nums.buffer), hashes, paths]));
    this.#dirty = false;
  }
}
