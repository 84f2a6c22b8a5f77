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

/** Symlinks followed while resolving one path: Linux's MAXSYMLINKS (a path needing more cannot be used in the container either). */
const MAX_SYMLINKS = 40;
/**
 * Components walked while resolving one path, symlink targets included. A legitimate path has
 * at most PATH_MAX / 2 components plus a few short symlink targets; without a bound, a chain of
 * long symlinks makes one 512-byte entry cost seconds.
 */
const MAX_STEPS = 16 * 1024;

/** A directory known to be real (no symlink on its path), keyed by name under its parent. */
interface DirNode {
  rel: string;
  parent: DirNode | undefined;
  children: Map<string, DirNode>;
  /** Created by this extraction: everything inside it is known to the caller. */
  fresh: boolean;
}

function newNode(rel: string, parent: DirNode | undefined, fresh: boolean): DirNode {
  return { rel, parent, children: new Map(), fresh };
}

function parentRel(rel: string): string {
  const i = rel.lastIndexOf('/');
  return i < 0 ? '' : rel.slice(0, i);
}

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
 * to traverse a symlink created later. Known directories form a tree, so each step of a walk
 * costs the same however deep it is.
 *
 * Not safe against another process changing the tree at the same time (neither is
 * containerd's); the store only extracts into private temp directories.
 */
export class RootResolver {
  readonly root: string;
  readonly #opts: ResolverOptions;
  readonly #top: DirNode;
  /** Every known directory by its real root-relative path ('' is the root). */
  readonly #byRel = new Map<string, DirNode>();

  constructor(root: string, rootIsEmpty: boolean, opts: ResolverOptions) {
    this.root = root;
    this.#opts = opts;
    this.#top = newNode('', undefined, rootIsEmpty);
    this.#byRel.set('', this.#top);
  }

  host(rel: string): string {
    return rel === '' ? this.root : `${this.root}/${rel}`;
  }

  /** True when `rel` was created by this extraction (so a name in it exists only if we made it). */
  isFresh(rel: string): boolean {
    return this.#byRel.get(rel)?.fresh ?? false;
  }

  /** Record a directory just created (fresh) or verified (not fresh) at a real path. */
  addDir(rel: string, fresh: boolean): void {
    const parent = this.#byRel.get(parentRel(rel));
    if (parent) this.#add(parent, rel.slice(rel.lastIndexOf('/') + 1), fresh);
  }

  /** Drop every cached fact: call after removing a directory (or anything that may be one). */
  forget(): void {
    this.#top.children.clear();
    this.#top.fresh = false;
    this.#byRel.clear();
    this.#byRel.set('', this.#top);
  }

  /**
   * Resolve `parts` (an already cleaned name) as a directory inside the root. Missing
   * components are created when `create`, otherwise the result is undefined.
   * `entry` names the tar entry in errors.
   */
  resolveDir(parts: readonly string[], create: boolean, entry: string): string | undefined {
    const known = this.#byRel.get(parts.join('/'));
    if (known) return known.rel;
    const pending: string[] = [];
    for (let i = parts.length - 1; i >= 0; i--) pending.push(parts[i]!);
    let node = this.#top;
    let links = 0;
    let steps = 0;
    while (pending.length > 0) {
      if (++steps > MAX_STEPS) throw unsafeEntry(entry, 'resolving its parents takes too many steps (symlinks with long targets)', this.#opts.what);
      const c = pending.pop()!;
      if (c === '' || c === '.') continue;
      if (c === '..') {
        node = node.parent ?? node; // clamped: `..` at the root stays at the root
        continue;
      }
      const child = node.children.get(c);
      if (child) {
        node = child;
        continue;
      }
      const rel = node.rel === '' ? c : `${node.rel}/${c}`;
      const host = this.host(rel);
      if (Buffer.byteLength(host) >= PATH_MAX) throw unsafeEntry(entry, `the path is longer than ${PATH_MAX - 1} bytes`, this.#opts.what);
      const st = lstatSync(host, { throwIfNoEntry: false });
      if (st === undefined) {
        if (!create) return undefined;
        node = this.#mkdir(node, c);
      } else if (st.isSymbolicLink()) {
        if (++links > MAX_SYMLINKS) throw unsafeEntry(entry, 'too many levels of symbolic links in its parents', this.#opts.what);
        const target = readlinkSync(host);
        if (target.startsWith('/')) node = this.#top;
        const tparts = target.split('/');
        for (let i = tparts.length - 1; i >= 0; i--) pending.push(tparts[i]!);
      } else if (st.isDirectory()) {
        node = this.#add(node, c, false);
      } else if (create && this.#opts.replaceNonDir?.(rel, st)) {
        node = this.#add(node, c, true);
      } else {
        throw new MyBuildError('INVALID_ARGUMENT', `tar entry ${JSON.stringify(entry)}: parent ${JSON.stringify(rel)} is not a directory`, {
          where: this.#opts.what,
        });
      }
    }
    return node.rel;
  }

  /** Create the missing directory `rel` (its parent exists) with `meta` (default 0755 root). */
  mkdirImplicit(rel: string, meta: DirMeta = { mode: 0o755, uid: 0, gid: 0 }): void {
    const parent = this.#byRel.get(parentRel(rel));
    const name = rel.slice(rel.lastIndexOf('/') + 1);
    if (parent) this.#mkdir(parent, name, meta);
    else this.#create(rel, meta); // parent not cached: create it all the same, uncached
  }

  #add(parent: DirNode, name: string, fresh: boolean): DirNode {
    let node = parent.children.get(name);
    if (!node) {
      node = newNode(parent.rel === '' ? name : `${parent.rel}/${name}`, parent, fresh);
      parent.children.set(name, node);
      this.#byRel.set(node.rel, node);
    } else if (fresh) {
      node.fresh = true;
    }
    return node;
  }

  /** Create the missing directory `name` in `parent` with `given` meta (default: implicitDir's, else 0755 root). */
  #mkdir(parent: DirNode, name: string, given?: DirMeta): DirNode {
    const rel = parent.rel === '' ? name : `${parent.rel}/${name}`;
    this.#create(rel, given);
    return this.#add(parent, name, true);
  }

  #create(rel: string, given?: DirMeta): void {
    const host = this.host(rel);
    const meta = given ?? this.#opts.implicitDir?.(rel) ?? { mode: 0o755, uid: 0, gid: 0 };
    mkdirSync(host, 0o700);
    if (this.#opts.sameOwner) lchownSync(host, meta.uid, meta.gid);
    chmodSync(host, meta.mode & 0o7777); // the umask must not decide
    this.#opts.onCreate?.(rel);
  }
}
