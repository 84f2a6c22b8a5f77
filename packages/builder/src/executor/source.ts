/**
 * Where COPY/ADD and `RUN --mount=type=bind` read files from: the build context (with
 * `.dockerignore` applied: an excluded path does not exist), or a root filesystem (a stage's
 * or an image's, mounted read-only). Directory listings are synchronous lstat walks, sorted,
 * and remembered, so hashing a source for the cache key and copying it walk the disk once.
 */
import { closeSync, lstatSync, openSync, readSync, readdirSync, readlinkSync, realpathSync, type Stats } from 'node:fs';
import { createHash, errnoCode, MyBuildError } from '@mybuild/oci';
import { sys } from '@mybuild/layer-store';
import type { IgnoreMatcher } from '../frontend/dockerignore.js';
import { rootPath } from '../sandbox/rootPath.js';
import { goMatch, splitWildcards } from './gomatch.js';
import type { StatCache } from './statCache.js';

export interface SourceChild {
  name: string;
  st: Stats;
}

/** Files are read through one reused buffer of this size. */
const WHOLE_READ = 1 << 20;

/** A tree to copy from. Paths are root-relative, `/`-separated, '' for the root. */
export class FileSource {
  /** Host path of the root (resolved). */
  readonly root: string;
  /** Files from the build context are owned by 0:0, whatever they are on the host (as BuildKit's context transfer). */
  readonly resetOwner: boolean;
  readonly #ignore: IgnoreMatcher | undefined;
  readonly #statCache: StatCache | undefined;
  readonly #children = new Map<string, SourceChild[]>();
  readonly #hashes = new Map<string, string>();
  /** Hash files while they are copied (see {@link wantsHash}). */
  hashOnCopy = false;
  /** files hashed and bytes read for hashing (progress) */
  filesHashed = 0;
  bytesHashed = 0;

  constructor(root: string, opts: { ignore?: IgnoreMatcher; statCache?: StatCache; resetOwner?: boolean } = {}) {
    this.root = realpathSync(root);
    this.#ignore = opts.ignore && opts.ignore.patterns.length > 0 ? opts.ignore : undefined;
    this.#statCache = opts.statCache;
    this.resetOwner = opts.resetOwner ?? false;
  }

  host(rel: string): string {
    return rel === '' ? this.root : `${this.root}/${rel}`;
  }

  /** Whether `rel` is hidden by `.dockerignore`. */
  excluded(rel: string): boolean {
    return rel !== '' && this.#ignore !== undefined && this.#ignore.matches(rel);
  }

  /** lstat of `rel`, or undefined when it does not exist (or is excluded). */
  lstat(rel: string): Stats | undefined {
    if (this.excluded(rel)) return undefined;
    try {
      return lstatSync(this.host(rel));
    } catch (err) {
      const code = errnoCode(err);
      if (code === 'ENOENT' || code === 'ENOTDIR') return undefined;
      throw err;
    }
  }

  /**
   * Resolve `path` (as written in the Dockerfile; relative to the root, `..` cannot leave it)
   * following symlinks inside the root, as BuildKit's `FollowSymlinks` does for a source path.
   */
  follow(path: string): string {
    return rootPath(this.root, `/${path}`);
  }

  /**
   * fsutil's ResolveWildcards: `[path]` when `path` has no wildcard; else every path (root-
   * relative) below the wildcard-free prefix whose relative path matches the rest, a matching
   * directory not being entered.
   */
  resolveWildcards(path: string): string[] {
    const [prefix, pattern] = splitWildcards(path);
    if (pattern === '') return [prefix];
    const base = this.follow(prefix);
    const st = this.lstat(base);
    if (!st?.isDirectory()) return [];
    const out: string[] = [];
    const walk = (relDir: string, fromBase: string): void => {
      for (const c of this.children(relDir)) {
        const rel = relDir === '' ? c.name : `${relDir}/${c.name}`;
        const sub = fromBase === '' ? c.name : `${fromBase}/${c.name}`;
        if (goMatch(pattern, sub)) {
          out.push(rel);
          continue; // filepath.SkipDir on a matched directory
        }
        if (c.st.isDirectory()) walk(rel, sub);
      }
    };
    walk(base, '');
    return out;
  }

  /**
   * The entries of directory `rel`, sorted by name (bytewise), excluded ones left out. A
   * directory `.dockerignore` excludes is still listed when an exception (`!pattern`) may
   * re-include something inside it and something inside it is included.
   */
  children(rel: string): SourceChild[] {
    let kids = this.#children.get(rel);
    if (kids) return kids;
    kids = [];
    for (const kid of listDir(this.host(rel))) {
      const childRel = rel === '' ? kid.name : `${rel}/${kid.name}`;
      if (this.#ignore !== undefined && this.#ignore.matches(childRel)) {
        if (!kid.st.isDirectory() || this.#ignore.canSkipDir(childRel)) continue;
        if (!this.#hasIncluded(childRel)) continue;
      }
      kids.push(kid);
    }
    this.#children.set(rel, kids);
    return kids;
  }

  #hasIncluded(rel: string): boolean {
    for (const c of this.children(rel)) {
      const childRel = `${rel}/${c.name}`;
      if (!this.#ignore!.matches(childRel)) return true;
      if (c.st.isDirectory() && this.children(childRel).length > 0) return true;
    }
    return false;
  }

  /** sha256 (hex) of a regular file's content, through the stat cache. */
  fileHash(rel: string, st: Stats): string {
    const known = this.#hashes.get(rel);
    if (known !== undefined) return known;
    let hash = this.#statCache?.lookup(rel, st);
    if (hash === undefined) {
      hash = hashFile(this.host(rel), st.size);
      this.filesHashed++;
      this.bytesHashed += st.size;
      this.#statCache?.set(rel, st, hash);
    }
    this.#hashes.set(rel, hash);
    return hash;
  }

  /** Whether a copy of `rel` should hash its content on the way ({@link hashOnCopy} and not known yet). */
  wantsHash(rel: string, st: Stats): boolean {
    if (!this.hashOnCopy || this.#hashes.has(rel)) return false;
    const cached = this.#statCache?.lookup(rel, st);
    if (cached !== undefined) {
      this.#hashes.set(rel, cached);
      return false;
    }
    return true;
  }

  /** The content hash of `rel`, found while copying it. */
  setHash(rel: string, st: Stats, hash: string): void {
    this.#hashes.set(rel, hash);
    this.filesHashed++;
    this.bytesHashed += st.size;
    this.#statCache?.set(rel, st, hash);
  }

  /**
   * Bytes of regular files under `rel` whose hash neither this build nor the stat cache knows
   * (stops counting past `limit`): what computing {@link treeHash} would have to read.
   */
  unhashedBytes(rel: string, limit: number): number {
    let total = 0;
    const visit = (path: string, st: Stats): boolean => {
      if (st.isFile() && !this.#hashes.has(path)) {
        const cached = this.#statCache?.lookup(path, st);
        // known now: treeHash (which follows) takes it from #hashes without asking the cache again
        if (cached !== undefined) this.#hashes.set(path, cached);
        else total += st.size;
      }
      return total > limit;
    };
    const root = this.lstat(rel);
    if (!root) return 0;
    if (visit(rel, root)) return total;
    if (!root.isDirectory()) return total;
    const walk = (dir: string): boolean => {
      for (const c of this.children(dir)) {
        const path = dir === '' ? c.name : `${dir}/${c.name}`;
        if (visit(path, c.st)) return true;
        if (c.st.isDirectory() && walk(path)) return true;
      }
      return false;
    };
    walk(rel);
    return total;
  }

  /**
   * A digest of what copying `rel` brings along: names, types, permission bits, owners (unless
   * reset), file contents and link targets — not times. `exclude` drops paths (relative to
   * `rel`) as `COPY --exclude` does; `include` keeps only matching ones (`COPY --parents`).
   */
  treeHash(rel: string, exclude?: IgnoreMatcher, include?: IgnoreMatcher): string {
    const h = createHash('sha256');
    const st = this.lstat(rel);
    if (!st) return 'absent';
    // Lines are gathered and hashed a few KiB at a time (one hash call per line was a fifth of
    // a cached 20,000-file rebuild's walk).
    let pending = '';
    const line = (name: string, s: Stats, path: string): void => {
      const owner = this.resetOwner ? '' : ` ${s.uid}:${s.gid}`;
      let what = '';
      if (s.isFile()) what = `f ${s.size} ${this.fileHash(path, s)}`;
      else if (s.isDirectory()) what = 'd';
      else if (s.isSymbolicLink()) what = `l ${readlinkSafe(this.host(path))}`;
      else what = `o ${s.mode & 0o170000} ${s.rdev}`;
      pending += `${name}\u0000${(s.mode & 0o7777).toString(8)}${owner} ${what}\n`;
      if (pending.length >= 16384) {
        h.update(pending);
        pending = '';
      }
    };
    line('.', st, rel);
    if (st.isDirectory()) {
      const walk = (dir: string, sub: string): void => {
        for (const c of this.children(dir)) {
          const path = dir === '' ? c.name : `${dir}/${c.name}`;
          const s = sub === '' ? c.name : `${sub}/${c.name}`;
          if (exclude?.matches(s) && (!c.st.isDirectory() || exclude.canSkipDir(s))) continue;
          if (!include || include.matches(s)) line(s, c.st, path);
          else if (!c.st.isDirectory()) continue;
          if (c.st.isDirectory()) walk(path, s);
        }
      };
      walk(rel, '');
    }
    h.update(pending);
    return h.digest('hex');
  }
}

/**
 * The entries of directory `host` with their lstat, sorted (bytewise); a missing directory (or
 * a non-directory) has none, an entry removed while listing is left out. Through the addon's
 * `scandir`: Node's lstatSync makes a full Stats (four Dates) per entry, which
 * on a cached rebuild of a 20,000-file context was most of the time spent listing it. Any
 * failure other than ENOENT/ENOTDIR is reported by Node's own calls, as before.
 */
export function listDir(host: string): SourceChild[] {
  let listed: [string, Float64Array] | undefined;
  try {
    listed = sys().scandir(host);
  } catch (err) {
    const code = errnoCode(err);
    if (code === 'ENOENT' || code === 'ENOTDIR') return [];
    // anything else: readdirSync below throws Node's own error for it
  }
  if (listed !== undefined) {
    const [joined, nums] = listed;
    const count = nums.length / SCAN_FIELDS;
    if (count === 0) return [];
    const names = joined.split('\0');
    const index = new Map<string, number>();
    for (let i = 0; i < count; i++) index.set(names[i]!, i);
    // the default order is bytewise()'s (UTF-16 code units), without a JS call per comparison
    names.sort();
    // A name that is not valid UTF-8 reads as U+FFFD (as readdirSync gives it); Node's lstat of
    // that (other) name decides, as before.
    const lossy = joined.includes('\uFFFD');
    const out: SourceChild[] = [];
    for (const name of names) {
      const o = index.get(name)! * SCAN_FIELDS;
      if (nums[o + 1]! >= 0 && !(lossy && name.includes('\uFFFD'))) {
        out.push({ name, st: new ScanStats(nums, o) });
        continue;
      }
      // its lstat failed (not ENOENT), or its name is lossy: lstatSync decides, as before
      const st = lstatOrGone(`${host}/${name}`);
      if (st !== undefined) out.push({ name, st });
    }
    return out;
  }
  let names: string[];
  try {
    names = readdirSync(host);
  } catch (err) {
    const code = errnoCode(err);
    if (code === 'ENOENT' || code === 'ENOTDIR') return [];
    throw err;
  }
  names.sort(bytewise);
  const out: SourceChild[] = [];
  for (const name of names) {
    const st = lstatOrGone(`${host}/${name}`);
    if (st !== undefined) out.push({ name, st });
  }
  return out;
}

function lstatOrGone(path: string): Stats | undefined {
  try {
    return lstatSync(path);
  } catch (err) {
    if (errnoCode(err) === 'ENOENT') return undefined; // removed meanwhile
    throw err;
  }
}

/** Numbers per entry in the addon's `scandir` stats (Node's own Stats binding layout). */
const SCAN_FIELDS = 18;
const S_IFMT = 0o170000;

/**
 * An lstat result from `scandir`, read from the listing's numbers: the same values as the
 * fs.Stats lstatSync gives (times in ms computed as Node does), without making the object
 * (with four Dates) per entry that keeps a big context's listing costly to collect.
 */
export class ScanStats implements Stats {
  readonly #f: Float64Array;
  readonly #o: number;

  constructor(f: Float64Array, o: number) {
    this.#f = f;
    this.#o = o;
  }

  get dev(): number {
    return this.#f[this.#o]!;
  }
  get mode(): number {
    return this.#f[this.#o + 1]!;
  }
  get nlink(): number {
    return this.#f[this.#o + 2]!;
  }
  get uid(): number {
    return this.#f[this.#o + 3]!;
  }
  get gid(): number {
    return this.#f[this.#o + 4]!;
  }
  get rdev(): number {
    return this.#f[this.#o + 5]!;
  }
  get blksize(): number {
    return this.#f[this.#o + 6]!;
  }
  get ino(): number {
    return this.#f[this.#o + 7]!;
  }
  get size(): number {
    return this.#f[this.#o + 8]!;
  }
  get blocks(): number {
    return this.#f[this.#o + 9]!;
  }
  // Node's msFromTimeSpec (sec * 1e3 + nsec / 1e6), to the bit
  get atimeMs(): number {
    return this.#f[this.#o + 10]! * 1000 + this.#f[this.#o + 11]! / 1e6;
  }
  get mtimeMs(): number {
    return this.#f[this.#o + 12]! * 1000 + this.#f[this.#o + 13]! / 1e6;
  }
  /** The mtime as lstat gave it: seconds and nanoseconds. */
  mtimeSpec(): [number, number] {
    return [this.#f[this.#o + 12]!, this.#f[this.#o + 13]!];
  }
  get ctimeMs(): number {
    return this.#f[this.#o + 14]! * 1000 + this.#f[this.#o + 15]! / 1e6;
  }
  get birthtimeMs(): number {
    return this.#f[this.#o + 16]! * 1000 + this.#f[this.#o + 17]! / 1e6;
  }

  get atime(): Date {
    return new Date(Math.round(this.atimeMs));
  }
  get mtime(): Date {
    return new Date(Math.round(this.mtimeMs));
  }
  get ctime(): Date {
    return new Date(Math.round(this.ctimeMs));
  }
  get birthtime(): Date {
    return new Date(Math.round(this.birthtimeMs));
  }

  isFile(): boolean {
    return (this.mode & S_IFMT) === 0o100000;
  }
  isDirectory(): boolean {
    return (this.mode & S_IFMT) === 0o040000;
  }
  isSymbolicLink(): boolean {
    return (this.mode & S_IFMT) === 0o120000;
  }
  isBlockDevice(): boolean {
    return (this.mode & S_IFMT) === 0o060000;
  }
  isCharacterDevice(): boolean {
    return (this.mode & S_IFMT) === 0o020000;
  }
  isFIFO(): boolean {
    return (this.mode & S_IFMT) === 0o010000;
  }
  isSocket(): boolean {
    return (this.mode & S_IFMT) === 0o140000;
  }
}

let hashBuffer: Buffer | undefined;

function hashFile(path: string, size: number): string {
  const h = createHash('sha256');
  if (size === 0) return h.digest('hex');
  const fd = openSync(path, 'r');
  try {
    const buf = (hashBuffer ??= Buffer.allocUnsafe(WHOLE_READ));
    for (;;) {
      const n = readSync(fd, buf, 0, buf.length, null);
      if (n === 0) break;
      h.update(buf.subarray(0, n));
    }
  } finally {
    closeSync(fd);
  }
  return h.digest('hex');
}

function readlinkSafe(path: string): string {
  try {
    return readlinkSync(path);
  } catch (err) {
    throw new MyBuildError('FAILED_PRECONDITION', `cannot read symlink ${path}: ${(err as Error).message}`);
  }
}

/** Bytewise (UTF-8) order of names, as Go sorts them. */
export function bytewise(a: string, b: string): number {
  return a < b ? -1 : a > b ? 1 : 0;
}
