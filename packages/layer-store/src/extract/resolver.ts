import { type Stats, chmodSync, lchownSync, lstatSync, mkdirSync, readlinkSync } from 'node:fs';
import { MyBuildError } from '@mybuild/oci';
import { PATH_MAX, unsafeEntry } from './names.js';

/** Owner and permission bits for a directory the archive needs but does not contain. */
export interface DirMeta {
  mode: number;
  uid: number;
  gid: number;
}

export interface ResolverOptions {
  /** Metadata for a missing parent directory (e.g. copied from a lower layer); default 0755 root. */
  implicitDir?: (rel: string) => DirMeta | undefined;
  /** lchown implicit directories (needs root). */
  sameOwner: boolean;
  /** Called for every directory the resolver creates. */
  onCreate?: (rel: string) => void;
  /**
   * A parent component exists but is not a directory: return true after replacing it with
   * a directory (overlay mode turns a whiteout into an opaque directory), false to fail.
   */
  replaceNonDir?: (rel: string, st: Stats) => boolean;
  /** For error messages. */
  what: string;
}

/** securejoin's bound on symlinks followed while resolving one path. */
const MAX_SYMLINKS = 255;

/**
 * Resolves archive paths to directories inside one root, the way securejoin / containerd's
 * fs.RootPath do: symlinks met on the way are followed, but their targets are interpreted
 * with the root as `/` and `..` never climbs above it, so the result is always a real
 * directory inside the root. Only the parent of an entry is resolved; the entry's own name
 * is then created with no-follow calls (O_EXCL|O_NOFOLLOW, mkdir, symlink, mknod, lchown).
 *
 * Paths returned are "real" root-relative paths: every component is a directory, not a
 * symlink, at the time of resolution. That makes them cacheable: {@link forget} must be
 * called whenever a directory inside the root is removed, so a cached path can never come
 * to traverse a symlink created later.
 *
 * Not safe against another process changing the tree at the same time (neither is
 * containerd's); the store only extracts into private temp directories.
 */
export class RootResolver {
  readonly root: string;
  readonly #opts: ResolverOptions;
  /** Real root-relative paths known to be directories ('' is the root). */
  readonly #dirs = new Set<string>(['']);
  /** Directories created by this extraction: everything inside them is known to the caller. */
  readonly #fresh = new Set<string>();

  constructor(root: string, rootIsEmpty: boolean, opts: ResolverOptions) {
    this.root = root;
    this.#opts = opts;
    if (rootIsEmpty) this.#fresh.add('');
  }

  host(rel: string): string {
    return rel === '' ? this.root : `${this.root}/${rel}`;
  }

  /** True when `rel` was created by this extraction (so a name in it exists only if we made it). */
  isFresh(rel: string): boolean {
    return this.#fresh.has(rel);
  }

  /** Record a directory just created (fresh) or verified (not fresh) at a real path. */
  addDir(rel: string, fresh: boolean): void {
    this.#dirs.add(rel);
    if (fresh) this.#fresh.add(rel);
  }

  /** Drop every cached fact: call after removing a directory (or anything that may be one). */
  forget(): void {
    this.#dirs.clear();
    this.#dirs.add('');
    this.#fresh.clear();
  }

  /**
   * Resolve `parts` (an already cleaned name) as a directory inside the root. Missing
   * components are created when `create`, otherwise the result is undefined.
   * `entry` names the tar entry in errors.
   */
  resolveDir(parts: readonly string[], create: boolean, entry: string): string | undefined {
    const joined = parts.join('/');
    if (this.#dirs.has(joined)) return joined;
    const pending: string[] = [];
    for (let i = parts.length - 1; i >= 0; i--) pending.push(parts[i]!);
    const stack: string[] = [];
    let cur = '';
    let links = 0;
    while (pending.length > 0) {
      const c = pending.pop()!;
      if (c === '' || c === '.') continue;
      if (c === '..') {
        stack.pop(); // clamped: `..` at the root stays at the root
        cur = stack.join('/');
        continue;
      }
      const rel = cur === '' ? c : `${cur}/${c}`;
      if (!this.#dirs.has(rel)) {
        const host = this.host(rel);
        if (host.length >= PATH_MAX) throw unsafeEntry(entry, `the path is longer than ${PATH_MAX - 1} bytes`, this.#opts.what);
        const st = lstatSync(host, { throwIfNoEntry: false });
        if (st === undefined) {
          if (!create) return undefined;
          this.#mkdir(rel);
        } else if (st.isSymbolicLink()) {
          if (++links > MAX_SYMLINKS) throw unsafeEntry(entry, 'too many levels of symbolic links in its parents', this.#opts.what);
          const target = readlinkSync(host);
          if (target.startsWith('/')) {
            stack.length = 0;
            cur = '';
          }
          const tparts = target.split('/');
          for (let i = tparts.length - 1; i >= 0; i--) pending.push(tparts[i]!);
          continue;
        } else if (st.isDirectory()) {
          this.#dirs.add(rel);
        } else if (create && this.#opts.replaceNonDir?.(rel, st)) {
          this.#dirs.add(rel);
          this.#fresh.add(rel);
        } else {
          throw new MyBuildError('INVALID_ARGUMENT', `tar entry ${JSON.stringify(entry)}: parent ${JSON.stringify(rel)} is not a directory`, {
            where: this.#opts.what,
          });
        }
      }
      stack.push(c);
      cur = rel;
    }
    return cur;
  }

  /** Create the missing directory `rel` (its parent exists) with `meta` (default 0755 root). */
  mkdirImplicit(rel: string, meta: DirMeta = { mode: 0o755, uid: 0, gid: 0 }): void {
    this.#mkdir(rel, meta);
  }

  #mkdir(rel: string, given?: DirMeta): void {
    const host = this.host(rel);
    const meta = given ?? this.#opts.implicitDir?.(rel) ?? { mode: 0o755, uid: 0, gid: 0 };
    mkdirSync(host, 0o700);
    if (this.#opts.sameOwner) lchownSync(host, meta.uid, meta.gid);
    chmodSync(host, meta.mode & 0o7777); // the umask must not decide
    this.#dirs.add(rel);
    this.#fresh.add(rel);
    this.#opts.onCreate?.(rel);
  }
}
