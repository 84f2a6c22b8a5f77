/**
 * Donor records: what the last run of a COPY from the build context placed, so that the next
 * run of the same COPY (same parent, same instruction, some file changed) can link the files
 * that did not change instead of copying them again (see Copier's `donor` option).
 *
 * A record is keyed by the step's "slot" — its cache key without the content part — and names
 * the committed snapshot of that run and the content hash of each regular file in it. It is
 * only a hint: a missing, damaged or stale record (snapshot pruned) means a plain copy.
 *
 * Binary, so that 20,000 entries load in a few milliseconds and little memory: `MBDR`,
 * version, count, chain length; the chain ID; count × 32 bytes of sha256; the paths,
 * NUL-separated.
 */
import { type Stats, mkdirSync, readFileSync, realpathSync } from 'node:fs';
import { join } from 'node:path';
import { type StorePaths, writeFileAtomic } from '@mybuild/layer-store';
import { listDir } from './source.js';

const MAGIC = 0x5244424d; // "MBDR" little-endian
const VERSION = 1;
const HEADER = 16;

/** An earlier result of the same COPY: its upper directory and the content hash of each file in it. */
export class Donor {
  /** Host path of that snapshot's upper directory (committed: never written again). */
  readonly root: string;
  readonly #index: Map<string, number>;
  readonly #hashes: Buffer;

  constructor(root: string, index: Map<string, number>, hashes: Buffer) {
    this.root = root;
    this.#index = index;
    this.#hashes = hashes;
  }

  /** Whether the donor's record names `rel` (root-relative). */
  has(rel: string): boolean {
    return this.#index.has(rel);
  }

  #listed: string | undefined;
  #entries: Map<string, Stats> | undefined;

  /**
   * The lstat of the donor's file at `rel`, from a listing of its directory (one scandir per
   * directory: a copy places a directory's files one after another; only the last listing is kept).
   */
  stat(rel: string): Stats | undefined {
    const slash = rel.lastIndexOf('/');
    const dir = slash < 0 ? '' : rel.slice(0, slash);
    if (dir !== this.#listed || this.#entries === undefined) {
      this.#listed = dir;
      const path = dir === '' ? this.root : `${this.root}/${dir}`;
      // a symlink on the way (the donor's tree is not this copy's) lists nothing: nothing is linked from outside it
      let real: string | undefined;
      try {
        real = realpathSync(path);
      } catch {
        real = undefined;
      }
      this.#entries = real === path ? new Map(listDir(path).map((c) => [c.name, c.st])) : new Map();
    }
    return this.#entries.get(rel.slice(slash + 1));
  }

  hashOf(rel: string): string | undefined {
    const i = this.#index.get(rel);
    return i === undefined ? undefined : this.#hashes.toString('hex', i * 32, i * 32 + 32);
  }
}

function recordFile(paths: StorePaths, slot: string): string {
  return join(paths.cache, 'build', 'donors', slot);
}

/** The donor for `slot`, when its record is readable and its snapshot still there. */
export function loadDonor(paths: StorePaths, slot: string, snapshotDir: (chain: string) => string | undefined): Donor | undefined {
  let buf: Buffer;
  try {
    buf = readFileSync(recordFile(paths, slot));
  } catch {
    return undefined;
  }
  if (buf.length < HEADER || buf.readUInt32LE(0) !== MAGIC || buf.readUInt32LE(4) !== VERSION) return undefined;
  const count = buf.readUInt32LE(8);
  const chainLen = buf.readUInt32LE(12);
  const hashesAt = HEADER + chainLen;
  const pathsAt = hashesAt + count * 32;
  if (buf.length < pathsAt) return undefined;
  const dir = snapshotDir(buf.toString('utf8', HEADER, hashesAt));
  if (dir === undefined) return undefined;
  let root: string;
  try {
    root = realpathSync(dir); // (the listings below compare against real paths)
  } catch {
    return undefined;
  }
  const names = count === 0 ? [] : buf.toString('utf8', pathsAt).split('\0');
  if (names.length !== count) return undefined;
  const index = new Map<string, number>();
  for (let i = 0; i < count; i++) index.set(names[i]!, i);
  return new Donor(root, index, buf.subarray(hashesAt, pathsAt));
}

/** What a COPY placed, encoded for its donor record (native memory, not a 20,000-entry Map kept through the build). */
export interface PlacedFiles {
  count: number;
  /** count × 32 bytes of sha256 */
  hashes: Buffer;
  /** the root-relative paths, NUL-separated */
  names: Buffer;
}

/** Encode `files` (root-relative path → sha256 hex). */
export function encodePlaced(files: Map<string, string>): PlacedFiles {
  const hashes = Buffer.alloc(files.size * 32);
  let i = 0;
  for (const hash of files.values()) hashes.write(hash, 32 * i++, 'hex');
  return { count: files.size, hashes, names: Buffer.from([...files.keys()].join('\0'), 'utf8') };
}

/** Record what a COPY placed in snapshot `chain`, for the next run of the same COPY. */
export async function saveDonor(paths: StorePaths, slot: string, chain: string, files: PlacedFiles): Promise<void> {
  const chainBytes = Buffer.from(chain, 'utf8');
  const header = Buffer.alloc(HEADER);
  header.writeUInt32LE(MAGIC, 0);
  header.writeUInt32LE(VERSION, 4);
  header.writeUInt32LE(files.count, 8);
  header.writeUInt32LE(chainBytes.length, 12);
  mkdirSync(join(paths.cache, 'build', 'donors'), { recursive: true });
  await writeFileAtomic(recordFile(paths, slot), Buffer.concat([header, chainBytes, files.hashes, files.names]));
}
