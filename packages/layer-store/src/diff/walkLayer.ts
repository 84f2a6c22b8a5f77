import { lstatSync, readdirSync, readlinkSync, type Stats } from 'node:fs';
import { resolve } from 'node:path';
import { MyBuildError, errnoCode } from '@mybuild/oci';
import { sys } from '../native.js';
import { WHITEOUT_OPAQUE, WHITEOUT_PREFIX } from '../extract/names.js';
import type { TarHeader } from './tarHeader.js';

/**
 * `overlay-upper`: `dir` is the upper dir of an overlay mount (a RUN step); its whiteouts (0/0
 * character devices) and opaque directories become OCI whiteouts. `plain`: `dir` holds files
 * only (a COPY step); nothing is converted.
 */
export type DiffMode = 'overlay-upper' | 'plain';

export interface WalkLayerOptions {
  mode: DiffMode;
  /** Clamp every mtime to at most this many seconds since the epoch (BuildKit's SOURCE_DATE_EPOCH). */
  sourceDateEpoch?: number;
  /**
   * Namespace of the overlay's own xattrs in the upper dir: `trusted` (default) or `user` (a
   * mount with `userxattr`, as rootless overlay uses).
   */
  overlayXattrs?: 'trusted' | 'user';
}

/** One tar entry of a layer: its header and, for a regular file with data, where to read it. */
export interface LayerEntry {
  header: TarHeader;
  /** Host path of the file whose `header.size` bytes follow the header. */
  source?: string;
}

/** Whether an xattr is layer content. Never the overlay's own, nor labels the host's policy sets. */
export function isLayerXattr(name: string): boolean {
  if (name.startsWith('trusted.overlay.') || name.startsWith('user.overlay.')) return false;
  return (
    name.startsWith('user.') ||
    name.startsWith('trusted.') ||
    name === 'security.capability' ||
    name === 'system.posix_acl_access' ||
    name === 'system.posix_acl_default'
  );
}

/**
 * UTF-8 byte order of two strings: UTF-16 code unit order, except that surrogates (code points
 * above U+FFFF) sort after U+E000–U+FFFF, as their UTF-8 bytes do.
 */
export function compareBytewise(a: string, b: string): number {
  const n = Math.min(a.length, b.length);
  for (let i = 0; i < n; i++) {
    const x = a.charCodeAt(i);
    const y = b.charCodeAt(i);
    if (x === y) continue;
    if (x >= 0xd800 && y >= 0xd800) {
      const sx = x < 0xe000;
      const sy = y < 0xe000;
      if (sx !== sy) return sx ? 1 : -1;
    }
    return x - y;
  }
  return a.length - b.length;
}

interface Child {
  /** name on disk */
  name: string;
  /** name in the tar (`.wh.<name>` for a whiteout) */
  out: string;
  path: string;
  st: Stats;
  whiteout: boolean;
}

const NO_XATTRS: { list: [string, Buffer][]; opaque: boolean } = { list: [], opaque: false };

/**
 * The entries of the layer `dir` describes, in a fixed order: depth first, the children of
 * each directory sorted bytewise by their tar names, a directory before its content and its
 * opaque marker right after it. The root directory itself is not an entry (as docker and
 * BuildKit write layers). Sockets are skipped. A second path to an inode already written becomes
 * a hardlink entry to the first. Reads the tree synchronously (lstat walk), one directory at
 * a time: memory grows with the depth and width of the tree, not its size.
 */
export function* walkLayer(dir: string, opts: WalkLayerOptions): Generator<LayerEntry> {
  yield* new Walker(resolve(dir), opts).entries();
}

class Walker {
  readonly #root: string;
  readonly #overlay: boolean;
  readonly #epoch: number | undefined;
  readonly #prefix: string;
  /**
   * Files with more than one link → the tar name they were first written as: by inode (as a
   * number: no key string per file, and a layer whose files are all linked from elsewhere has
   * 20,000 of them) within the device of the first such file, by `dev:ino` elsewhere.
   */
  readonly #links = new Map<number, string>();
  #linksDev: number | undefined;
  readonly #otherLinks = new Map<string, string>();

  constructor(root: string, opts: WalkLayerOptions) {
    this.#root = root;
    this.#overlay = opts.mode === 'overlay-upper';
    this.#epoch = opts.sourceDateEpoch;
    this.#prefix = `${opts.overlayXattrs ?? 'trusted'}.overlay.`;
  }

  *entries(): Generator<LayerEntry> {
    let st: Stats;
    try {
      st = lstatSync(this.#root);
    } catch (err) {
      throw this.#ioError(err, '.');
    }
    if (!st.isDirectory()) {
      throw new MyBuildError('INVALID_ARGUMENT', 'the layer source is not a directory', { where: this.#root });
    }
    // The root is no entry, but an opaque root hides every lower file.
    const { opaque } = this.#xattrs(this.#root, '.');
    if (opaque) yield { header: this.#marker(WHITEOUT_OPAQUE, st, st.mode & 0o777) };
    yield* this.#children('', this.#root);
  }

  *#children(rel: string, host: string): Generator<LayerEntry> {
    let names: string[];
    try {
      names = readdirSync(host);
    } catch (err) {
      throw this.#ioError(err, rel || '.');
    }
    const kids: Child[] = [];
    for (const name of names) {
      const path = `${host}/${name}`;
      const shown = rel === '' ? name : `${rel}/${name}`;
      if (name.includes('\uFFFD')) this.#checkUtf8Name(host, name, shown);
      let st: Stats;
      try {
        st = lstatSync(path);
      } catch (err) {
        throw this.#ioError(err, shown);
      }
      if (st.isSocket()) continue;
      const whiteout = this.#overlay && st.isCharacterDevice() && st.rdev === 0;
      if (!whiteout && name.startsWith(WHITEOUT_PREFIX)) {
        throw new MyBuildError('UNSUPPORTED', `file name ${JSON.stringify(shown)} is reserved: layers use the ${WHITEOUT_PREFIX} prefix for deletions`, {
          where: this.#root,
          hint: `rename the file; every tool that unpacks the layer would take it for a whiteout`,
        });
      }
      kids.push({ name, out: whiteout ? `${WHITEOUT_PREFIX}${name}` : name, path, st, whiteout });
    }
    kids.sort((a, b) => compareBytewise(a.out, b.out));

    for (const k of kids) {
      const name = rel === '' ? k.out : `${rel}/${k.out}`;
      const st = k.st;
      if (k.whiteout) {
        // Overlay links every whiteout to one shared inode: never a hardlink entry.
        yield { header: this.#marker(name, st, 0o600) };
        continue;
      }
      const { list, opaque } = this.#xattrs(k.path, name);
      const header: TarHeader = {
        name,
        type: 'file',
        mode: st.mode & 0o7777,
        uid: st.uid,
        gid: st.gid,
        size: 0,
        mtime: this.#mtime(st),
        ...(list.length > 0 ? { xattrs: list } : {}),
      };
      if (st.isDirectory()) {
        header.type = 'dir';
        yield { header };
        if (opaque) yield { header: this.#marker(`${name}/${WHITEOUT_OPAQUE}`, st, st.mode & 0o777) };
        yield* this.#children(name, k.path);
        continue;
      }
      if (st.nlink > 1) {
        this.#linksDev ??= st.dev;
        const key = st.dev === this.#linksDev ? undefined : `${st.dev}:${st.ino}`;
        const first = key === undefined ? this.#links.get(st.ino) : this.#otherLinks.get(key);
        if (first !== undefined) {
          yield { header: { name, type: 'link', mode: header.mode, uid: st.uid, gid: st.gid, size: 0, mtime: header.mtime, linkname: first } };
          continue;
        }
        if (key === undefined) this.#links.set(st.ino, name);
        else this.#otherLinks.set(key, name);
      }
      if (st.isFile()) {
        header.size = st.size;
        yield st.size > 0 ? { header, source: k.path } : { header };
      } else if (st.isSymbolicLink()) {
        header.type = 'symlink';
        header.linkname = this.#readlink(k.path, name);
        yield { header };
      } else if (st.isCharacterDevice() || st.isBlockDevice()) {
        header.type = st.isCharacterDevice() ? 'char' : 'block';
        const [major, minor] = sys().devnums(st.rdev);
        header.devmajor = major;
        header.devminor = minor;
        yield { header };
      } else if (st.isFIFO()) {
        header.type = 'fifo';
        yield { header };
      }
    }
  }

  /** A whiteout file (`.wh.x` or the opaque marker): empty, regular, owned like what it stands for. */
  #marker(name: string, st: Stats, mode: number): TarHeader {
    return { name, type: 'file', mode, uid: st.uid, gid: st.gid, size: 0, mtime: this.#mtime(st) };
  }

  #mtime(st: Stats): number {
    const s = Math.floor(st.mtimeMs / 1000);
    return this.#epoch !== undefined && s > this.#epoch ? this.#epoch : s;
  }

  /** The xattrs the entry keeps (sorted), and whether the overlay marked the directory opaque. */
  #xattrs(path: string, name: string): { list: [string, Buffer][]; opaque: boolean } {
    const s = sys();
    let names: string[];
    try {
      names = s.llistxattr(path);
    } catch (err) {
      throw this.#ioError(err, name);
    }
    if (names.length === 0) return NO_XATTRS;
    const list: [string, Buffer][] = [];
    let opaque = false;
    for (const n of names) {
      if (this.#overlay && n.startsWith(this.#prefix)) {
        const what = n.slice(this.#prefix.length);
        if (what === 'redirect' || what === 'metacopy') throw this.#notADiff(n, name);
        // "y": opaque; "x" (kernel 6.7+) only says the directory holds xwhiteouts.
        if (what === 'opaque') opaque = this.#get(path, n, name)?.toString('latin1') === 'y';
        continue;
      }
      if (!isLayerXattr(n)) continue;
      if (n.includes('=')) {
        throw new MyBuildError('UNSUPPORTED', `${JSON.stringify(name)} has an xattr whose name contains "=", which a PAX record cannot hold: ${JSON.stringify(n)}`, {
          where: this.#root,
        });
      }
      const v = this.#get(path, n, name);
      if (v !== null) list.push([n, v]);
    }
    if (list.length > 1) list.sort((a, b) => compareBytewise(a[0], b[0]));
    return list.length === 0 && !opaque ? NO_XATTRS : { list, opaque };
  }

  #get(path: string, xattr: string, name: string): Buffer | null {
    try {
      return sys().lgetxattr(path, xattr);
    } catch (err) {
      throw this.#ioError(err, name);
    }
  }

  #notADiff(xattr: string, name: string): MyBuildError {
    const option = xattr.endsWith('redirect') ? 'redirect_dir=off' : 'metacopy=off';
    return new MyBuildError('FAILED_PRECONDITION', `${JSON.stringify(name)} has the overlay xattr ${xattr}: the upper dir is not a diff (it points into a lower layer)`, {
      where: this.#root,
      hint: `the overlay was mounted without ${option}; mount with index=off,redirect_dir=off,metacopy=off and run the step again`,
    });
  }

  #readlink(path: string, name: string): string {
    let target: string;
    try {
      target = readlinkSync(path);
    } catch (err) {
      throw this.#ioError(err, name);
    }
    if (target.includes('\uFFFD') && !Buffer.from(target).equals(readlinkSync(path, { encoding: 'buffer' }))) {
      throw new MyBuildError('UNSUPPORTED', `the target of symlink ${JSON.stringify(name)} is not valid UTF-8`, {
        where: this.#root,
        hint: 'layer paths are UTF-8 (PAX); point the link at a UTF-8 name',
      });
    }
    return target;
  }

  /** readdir decodes names as UTF-8: a U+FFFD may stand for bytes that are not UTF-8 at all. */
  #checkUtf8Name(host: string, name: string, shown: string): void {
    const raw = readdirSync(host, { encoding: 'buffer' });
    const exact = Buffer.from(name);
    if (raw.some((b) => b.equals(exact))) return;
    throw new MyBuildError('UNSUPPORTED', `file name ${JSON.stringify(shown)} is not valid UTF-8`, {
      where: this.#root,
      hint: 'layer paths are UTF-8 (PAX); rename the file',
    });
  }

  #ioError(err: unknown, name: string): unknown {
    const code = errnoCode(err);
    if (code === undefined || err instanceof MyBuildError) return err;
    const msg = err instanceof Error ? err.message : String(err);
    if (code === 'ENOENT' || code === 'ENOTDIR') {
      return new MyBuildError('FAILED_PRECONDITION', `${JSON.stringify(name)} changed while the layer was written: ${msg}`, {
        where: this.#root,
        hint: 'nothing may write to the directory while its layer is made (stop the container first)',
        cause: err,
      });
    }
    if (code === 'EACCES' || code === 'EPERM') {
      return new MyBuildError('FAILED_PRECONDITION', `cannot read ${JSON.stringify(name)}: ${msg}`, { where: this.#root, hint: 'run as root or as the owner of the files', cause: err });
    }
    return new MyBuildError('INTERNAL', `reading ${JSON.stringify(name)}: ${msg}`, { where: this.#root, cause: err });
  }
}
