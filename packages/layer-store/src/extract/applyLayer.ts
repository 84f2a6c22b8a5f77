import {
  chmodSync,
  closeSync,
  constants,
  fchmodSync,
  fchownSync,
  lchownSync,
  linkSync,
  lstatSync,
  mkdirSync,
  openSync,
  readdirSync,
  realpathSync,
  rmSync,
  symlinkSync,
  unlinkSync,
  writeSync,
  type Stats,
} from 'node:fs';
import type { Readable } from 'node:stream';
import type { Header } from 'tar-stream';
import { type Compression, createHash, type Digest, digestAlgorithm, errnoCode, MyBuildError } from '@mybuild/oci';
import { sys } from '../native.js';
import { openPlain } from './decompress.js';
import {
  PATH_MAX,
  WHITEOUT_META_PREFIX,
  WHITEOUT_OPAQUE,
  WHITEOUT_PREFIX,
  cleanEntryName,
  unsafeEntry,
} from './names.js';
import { type DirMeta, RootResolver } from './resolver.js';
import { type PaxRecords, createTarReader } from './tarReader.js';

export type ApplyMode = 'overlay' | 'flatten';

export interface ApplyLayerOptions {
  /**
   * `overlay`: targetDir is one layer's own directory (an overlay lowerdir/upperdir); OCI
   * whiteouts become overlay whiteouts (0/0 character device, opaque xattr).
   * `flatten`: targetDir already holds the lower layers; whiteouts delete what they name, like
   * `umoci raw unpack` and docker's applyLayer.
   */
  mode: ApplyMode;
  /** Compression of the input; sniffed from its first bytes when absent. */
  compression?: Compression;
  /** Bound on the uncompressed bytes (default {@link DEFAULT_MAX_LAYER_BYTES}); exceeding it is SIZE_EXCEEDED. */
  maxBytes?: number;
  /** Expected digest of the uncompressed tar (diffID); a mismatch is DIGEST_MISMATCH after extraction. */
  diffId?: Digest;
  /** overlay mode: the lower layers' directories, top first, to copy owner and mode of parent directories the tar does not contain (as containerd's WithParents). */
  lowerDirs?: string[];
  /** lchown entries to the tar's uid/gid (default: when running as root). */
  sameOwner?: boolean;
  /** Names the layer in errors (e.g. its digest). */
  what?: string;
  /** xattr marking an opaque directory in overlay mode (default trusted.overlay.opaque; user.overlay.opaque for userxattr mounts). */
  opaqueXattr?: string;
}

export interface ApplyLayerResult {
  /** Digest of the uncompressed tar stream. */
  diffId: Digest;
  /** Uncompressed bytes read. */
  size: number;
  compression: Compression;
  /** Tar entries processed. */
  entries: number;
}

/** Default bound on one layer's uncompressed size: 64 GiB. */
export const DEFAULT_MAX_LAYER_BYTES = 64 * 1024 ** 3;

const S_IFCHR = 0o020000;
const S_IFBLK = 0o060000;
const S_IFIFO = 0o010000;
const OPEN_NEW = constants.O_WRONLY | constants.O_CREAT | constants.O_EXCL | constants.O_NOFOLLOW; // libuv adds O_CLOEXEC

/**
 * xattrs a layer may not set: overlayfs' own (`trusted.overlay.redirect` is followed even with
 * redirect_dir=off, `metacopy` would make a file's data come from elsewhere); opaque directories
 * are expressed with the OCI marker only. security.selinux belongs to the host's policy.
 */
function forbiddenXattr(name: string): boolean {
  return name.startsWith('trusted.overlay.') || name.startsWith('user.overlay.') || name === 'security.selinux';
}

/**
 * Extract one layer tar (compressed or not) into `targetDir`, safely: no entry can create or
 * change anything outside it (see {@link RootResolver}). Returns the uncompressed digest.
 *
 * The caller verifies the compressed bytes (wrap `stream` in a VerifyingStream with the
 * descriptor's size and digest). On error the target's content is undefined: discard it.
 */
export async function applyLayer(stream: Readable, targetDir: string, opts: ApplyLayerOptions): Promise<ApplyLayerResult> {
  const what = opts.what ?? 'layer';
  const maxBytes = opts.maxBytes ?? DEFAULT_MAX_LAYER_BYTES;
  let first: unknown;
  const fail = (err: unknown): void => {
    if (first === undefined) first = err;
  };
  let bytes = 0;
  const hash = createHash(opts.diffId ? digestAlgorithm(opts.diffId) : 'sha256');
  let compression: Compression = opts.compression ?? 'none';
  let entries = 0;
  try {
    mkdirSync(targetDir, { recursive: true });
    const root = realpathSync(targetDir);
    const extraction = new Extraction(root, readdirSync(root).length === 0, opts, what);
    const plain = await openPlain(stream, opts.compression, what, { maxBytes });
    compression = plain.compression;
    const { extract, recordsFor } = await createTarReader(what);
    const sink = extract as unknown as Sink;

    const feeding = (async () => {
      try {
        for await (const chunk of plain.chunks) {
          bytes += chunk.length;
          hash.update(chunk);
          if (sink.destroyed) return;
          if (!sink.write(chunk)) await drained(sink);
        }
        sink.end();
      } catch (err) {
        fail(err);
        sink.destroy(err as Error);
      }
    })();

    try {
      for await (const entry of extract) {
        entries++;
        await extraction.apply(entry.header, recordsFor(entry.header), entry as unknown as EntryBody);
      }
    } catch (err) {
      fail(tarError(err, what));
      stream.destroy();
    }
    await feeding;
    if (first !== undefined) throw first;
    extraction.finish();
  } catch (err) {
    if (!stream.destroyed) stream.destroy();
    throw first ?? err;
  }
  const diffId = `${opts.diffId ? digestAlgorithm(opts.diffId) : 'sha256'}:${hash.digest('hex')}` as Digest;
  if (opts.diffId !== undefined && diffId !== opts.diffId) {
    throw new MyBuildError('DIGEST_MISMATCH', `uncompressed layer has digest ${diffId}, expected diffID ${opts.diffId}`, {
      where: what,
      hint: "the image config's rootfs.diff_ids do not describe this layer",
    });
  }
  return { diffId, size: bytes, compression, entries };
}

/** The writable side of tar-stream's (streamx) extractor, as used here. */
interface Sink {
  write(chunk: Buffer): boolean;
  end(): void;
  destroy(err?: Error): void;
  readonly destroyed: boolean;
  once(ev: string, fn: () => void): unknown;
  off(ev: string, fn: () => void): unknown;
}

/** Wait until a streamx writable drains, or fail if it is destroyed meanwhile. */
function drained(w: Sink): Promise<void> {
  return new Promise((resolve, reject) => {
    const done = (): void => {
      w.off('drain', done);
      w.off('close', closed);
      resolve();
    };
    const closed = (): void => {
      w.off('drain', done);
      reject(new MyBuildError('INTERNAL', 'tar reader closed'));
    };
    w.once('drain', done);
    w.once('close', closed);
  });
}

/** tar-stream's errors are plain Errors; give them a category and the layer's name. */
function tarError(err: unknown, what: string): unknown {
  if (err instanceof MyBuildError) return err;
  const msg = err instanceof Error ? err.message : String(err);
  if (errnoCode(err) !== undefined) return err;
  return new MyBuildError('INVALID_ARGUMENT', `layer tar is corrupt: ${msg}`, {
    where: what,
    hint: 'the layer blob is truncated or not a tar archive',
    cause: err,
  });
}

/** A file time with nanoseconds (PAX times carry up to 9 decimals; Node's utimes keeps microseconds). */
interface Time {
  sec: number;
  nsec: number;
}

interface EntryMeta {
  mode: number;
  uid: number;
  gid: number;
  atime: Time;
  mtime: Time;
  xattrs: Map<string, Buffer>;
}

interface PendingDir {
  ino: number;
  atime: Time;
  mtime: Time;
}

/** Set times on a path without following a symlink (nanoseconds, as PAX headers carry them). */
function setTimes(host: string, atime: Time, mtime: Time): void {
  sys().lutimens(host, atime.sec, atime.nsec, mtime.sec, mtime.nsec);
}

function setFdTimes(fd: number, atime: Time, mtime: Time): void {
  sys().futimens(fd, atime.sec, atime.nsec, mtime.sec, mtime.nsec);
}

interface EntryBody {
  [Symbol.asyncIterator](): AsyncIterator<Buffer>;
}

/** The state of one extraction: what this layer created, and directory times to set at the end. */
class Extraction {
  readonly #what: string;
  readonly #flatten: boolean;
  readonly #sameOwner: boolean;
  readonly #opaqueXattr: string;
  readonly #r: RootResolver;
  /** Paths this layer extracted, and their ancestors (umoci's upperPaths): whiteouts spare them. */
  readonly #upper = new Set<string>();
  /** Every path this extraction created (entries, implicit dirs, whiteouts). */
  readonly #made = new Set<string>();
  readonly #dirTimes = new Map<string, PendingDir>();
  /**
   * flatten: directories #purge already walked. Below them only paths of this layer remain
   * (nothing of the lower layers comes back), so a repeated whiteout or opaque marker there has
   * nothing left to delete: without this, each costs a walk of the layer's whole tree.
   */
  readonly #purged = new Set<string>();

  constructor(root: string, rootIsEmpty: boolean, opts: ApplyLayerOptions, what: string) {
    this.#what = what;
    this.#flatten = opts.mode === 'flatten';
    this.#sameOwner = opts.sameOwner ?? process.getuid?.() === 0;
    this.#opaqueXattr = opts.opaqueXattr ?? 'trusted.overlay.opaque';
    const lowers = opts.mode === 'overlay' ? (opts.lowerDirs ?? []) : [];
    this.#r = new RootResolver(root, rootIsEmpty, {
      sameOwner: this.#sameOwner,
      what,
      // A directory the layer's paths needed (also one met only inside a symlink's target)
      // is the layer's own, as its entries are: whiteouts spare it.
      onCreate: (rel) => {
        this.#made.add(rel);
        this.#addUpper(rel);
      },
      replaceNonDir: (rel, st) => {
        // overlay: a path under a whited-out name recreates it as a directory hiding the lower one
        if (this.#flatten || !isWhiteoutDevice(st)) return false;
        unlinkSync(this.#r.host(rel));
        this.#r.mkdirImplicit(rel); // not the lower one's owner and mode: that one is deleted
        this.#markOpaque(rel);
        return true;
      },
      ...(lowers.length > 0 ? { implicitDir: (rel: string) => lowerDirMeta(lowers, rel, this.#opaqueXattr) } : {}),
    });
  }

  async apply(h: Header, rec: PaxRecords, body: EntryBody): Promise<void> {
    let consumed = false;
    try {
      consumed = await this.#entry(h, rec, body);
    } catch (err) {
      throw this.#wrap(err, h.name);
    }
    // tar-stream streams the body of every type but directories; it must be read to go on.
    if (!consumed && h.type !== 'directory' && h.size > 0) for await (const _ of body);
  }

  /** Set directory times last: creating children changed them. */
  finish(): void {
    for (const [rel, d] of this.#dirTimes) {
      let real: string | undefined;
      try {
        real = this.#r.resolveDir(rel === '' ? [] : rel.split('/'), false, rel);
      } catch {
        continue;
      }
      // Only the same directory, reached the same way (no symlink on the path since).
      if (real !== rel) continue;
      const host = this.#r.host(rel);
      const st = lstatSync(host, { throwIfNoEntry: false });
      if (st?.isDirectory() && st.ino === d.ino) setTimes(host, d.atime, d.mtime);
    }
  }

  async #entry(h: Header, rec: PaxRecords, body: EntryBody): Promise<boolean> {
    const name = h.name;
    const what = this.#what;
    const parts = cleanEntryName(name, what);
    // AUFS metadata directories (.wh..wh.plnk etc.) are not content.
    if (parts.length > 0 && parts[0]!.startsWith(WHITEOUT_META_PREFIX) && parts[0] !== WHITEOUT_OPAQUE) return false;
    const base = parts.length > 0 ? parts[parts.length - 1]! : '';
    if (base.startsWith(WHITEOUT_PREFIX)) {
      this.#whiteout(name, parts, base, h, rec);
      return false;
    }
    const type = h.type as Header['type'] | null;
    if (parts.length === 0) {
      if (type !== 'directory') throw unsafeEntry(name, `a ${type ?? 'unknown'} entry cannot replace the root directory`, what);
      this.#directory('', this.#r.root, true, this.#meta(h, rec));
      return false;
    }
    if (type !== 'file' && type !== 'contiguous-file' && type !== 'directory' && type !== 'symlink' && type !== 'link' && type !== 'character-device' && type !== 'block-device' && type !== 'fifo') {
      throw new MyBuildError('UNSUPPORTED', `tar entry ${JSON.stringify(name)} has an unsupported type (typeflag not handled)`, {
        where: what,
        hint: 'GNU sparse files, volume headers and other extensions are not supported in layers',
      });
    }
    // A hardlink's target is resolved before anything at the entry's own path is removed.
    let linkTarget: string | undefined;
    if (type === 'link') linkTarget = this.#hardlinkTarget(name, h.linkname ?? '');

    const parentRel = this.#r.resolveDir(parts.slice(0, -1), true, name)!;
    const rel = parentRel === '' ? base : `${parentRel}/${base}`;
    const host = this.#r.host(rel);
    if (Buffer.byteLength(host) >= PATH_MAX) throw unsafeEntry(name, `the path is longer than ${PATH_MAX - 1} bytes`, what);

    if (type === 'link' && linkTarget === rel) {
      this.#addUpper(rel);
      return false; // a hardlink to itself: nothing to do
    }
    const existing = this.#r.isFresh(parentRel) && !this.#made.has(rel) ? undefined : lstatSync(host, { throwIfNoEntry: false });
    let merge = false;
    // overlay: a directory replacing a whiteout must hide the lower directory it deleted
    const opaque = type === 'directory' && !this.#flatten && existing !== undefined && isWhiteoutDevice(existing);
    if (existing) {
      if (existing.isDirectory() && type === 'directory') merge = true;
      else this.#remove(host, existing);
    }
    let consumed = false;
    switch (type) {
      case 'file':
      case 'contiguous-file':
        await this.#file(host, h.size, this.#meta(h, rec), body);
        consumed = true;
        break;
      case 'directory':
        this.#directory(rel, host, merge, this.#meta(h, rec));
        if (opaque) this.#markOpaque(rel);
        break;
      case 'symlink': {
        const target = h.linkname ?? '';
        if (target === '') throw new MyBuildError('INVALID_ARGUMENT', `tar entry ${JSON.stringify(name)} is a symlink with an empty target`, { where: what });
        if (target.includes('\0')) throw unsafeEntry(name, 'the symlink target contains a NUL byte', what);
        const meta = this.#meta(h, rec);
        symlinkSync(target, host);
        if (this.#sameOwner) lchownSync(host, meta.uid, meta.gid);
        this.#setXattrs(host, meta.xattrs, false);
        setTimes(host, meta.atime, meta.mtime);
        break;
      }
      case 'link':
        linkSync(this.#r.host(linkTarget!), host);
        break;
      default: {
        const meta = this.#meta(h, rec);
        const kind = type === 'character-device' ? S_IFCHR : type === 'block-device' ? S_IFBLK : S_IFIFO;
        const [major, minor] = type === 'fifo' ? [0, 0] : [h.devmajor, h.devminor];
        for (const v of [major, minor]) {
          if (typeof v !== 'number' || !Number.isSafeInteger(v) || v < 0 || v > 0xffffffff) {
            throw new MyBuildError('INVALID_ARGUMENT', `tar entry ${JSON.stringify(name)} has an invalid device number ${String(v)}`, { where: what });
          }
        }
        sys().mknod(host, kind | (meta.mode & 0o777), major!, minor!);
        if (this.#sameOwner) lchownSync(host, meta.uid, meta.gid);
        chmodSync(host, meta.mode); // a node we just made: no symlink to follow
        this.#setXattrs(host, meta.xattrs, false);
        setTimes(host, meta.atime, meta.mtime);
      }
    }
    this.#made.add(rel);
    this.#addUpper(rel);
    return consumed;
  }

  async #file(host: string, size: number, meta: EntryMeta, body: EntryBody): Promise<void> {
    const fd = openSync(host, OPEN_NEW, 0o600);
    try {
      if (size > 0) {
        for await (const chunk of body) writeAll(fd, chunk);
      }
      // Owner before mode (chown clears setuid/setgid), xattrs after owner (chown clears
      // security.capability), times last.
      if (this.#sameOwner) fchownSync(fd, meta.uid, meta.gid);
      fchmodSync(fd, meta.mode);
      this.#setXattrs(host, meta.xattrs, false);
      setFdTimes(fd, meta.atime, meta.mtime);
    } finally {
      closeSync(fd);
    }
  }

  #directory(rel: string, host: string, merge: boolean, meta: EntryMeta): void {
    if (!merge) {
      mkdirSync(host, 0o700);
      this.#r.addDir(rel, true);
    }
    if (this.#sameOwner) lchownSync(host, meta.uid, meta.gid);
    chmodSync(host, meta.mode); // a directory we created or lstat'ed just now
    this.#setXattrs(host, meta.xattrs, merge);
    const st = lstatSync(host);
    this.#dirTimes.set(rel, { ino: st.ino, atime: meta.atime, mtime: meta.mtime });
  }

  #hardlinkTarget(name: string, linkname: string): string {
    const what = this.#what;
    if (linkname === '') throw new MyBuildError('INVALID_ARGUMENT', `tar entry ${JSON.stringify(name)} is a hardlink with an empty target`, { where: what });
    let tparts: string[];
    try {
      tparts = cleanEntryName(linkname, what);
    } catch {
      throw unsafeEntry(name, `its hardlink target ${JSON.stringify(linkname.slice(0, 200))} is outside the root`, what);
    }
    if (tparts.length === 0) throw unsafeEntry(name, 'it is a hardlink to the root directory', what);
    // The target's parents are resolved inside the root like any path; its last component is
    // not followed (a hardlink to a symlink links the symlink, as link(2) does).
    const tparent = this.#r.resolveDir(tparts.slice(0, -1), false, name);
    const trel = tparent === undefined ? undefined : tparent === '' ? tparts[tparts.length - 1]! : `${tparent}/${tparts[tparts.length - 1]!}`;
    const st = trel === undefined ? undefined : lstatSync(this.#r.host(trel), { throwIfNoEntry: false });
    if (trel === undefined || st === undefined) {
      throw new MyBuildError('INVALID_ARGUMENT', `tar entry ${JSON.stringify(name)}: hardlink target ${JSON.stringify(linkname.slice(0, 200))} does not exist in the layer`, {
        where: what,
        hint: 'a hardlink must name a file that comes earlier in the same layer',
      });
    }
    if (st.isDirectory()) throw unsafeEntry(name, 'it is a hardlink to a directory', what);
    return trel;
  }

  #whiteout(name: string, parts: string[], base: string, h: Header, rec: PaxRecords): void {
    const what = this.#what;
    const dirParts = parts.slice(0, -1);
    if (base === WHITEOUT_OPAQUE) {
      if (this.#flatten) {
        const dirRel = this.#r.resolveDir(dirParts, false, name);
        if (dirRel !== undefined) this.#purge(dirRel, true);
      } else {
        const dirRel = this.#r.resolveDir(dirParts, true, name)!;
        this.#markOpaque(dirRel);
        this.#addUpper(dirRel);
      }
      return;
    }
    if (base.startsWith(WHITEOUT_META_PREFIX)) return; // other AUFS metadata
    const victim = base.slice(WHITEOUT_PREFIX.length);
    if (victim === '' || victim === '.' || victim === '..') throw unsafeEntry(name, `a whiteout must name an entry, not ${JSON.stringify(victim)}`, what);
    if (this.#flatten) {
      const parentRel = this.#r.resolveDir(dirParts, false, name);
      if (parentRel === undefined) return; // nothing there to delete
      this.#purge(parentRel === '' ? victim : `${parentRel}/${victim}`, false);
      return;
    }
    const parentRel = this.#r.resolveDir(dirParts, true, name)!;
    const rel = parentRel === '' ? victim : `${parentRel}/${victim}`;
    const host = this.#r.host(rel);
    // The spec: a whiteout applies to lower layers only; what this layer wrote stays. A
    // directory this layer wrote into becomes opaque: its lower content is deleted (as flatten
    // mode deletes every lower child this layer did not write).
    if (this.#upper.has(rel)) {
      if (lstatSync(host, { throwIfNoEntry: false })?.isDirectory()) this.#markOpaque(rel);
      return;
    }
    if (Buffer.byteLength(host) >= PATH_MAX) throw unsafeEntry(name, `the path is longer than ${PATH_MAX - 1} bytes`, what);
    const existing = this.#r.isFresh(parentRel) && !this.#made.has(rel) ? undefined : lstatSync(host, { throwIfNoEntry: false });
    if (existing) this.#remove(host, existing);
    sys().mknod(host, S_IFCHR, 0, 0);
    if (this.#sameOwner) {
      const meta = this.#meta(h, rec);
      lchownSync(host, meta.uid, meta.gid);
    }
    this.#made.add(rel);
  }

  /**
   * Flatten-mode whiteout (umoci's semantics): delete `rel` — or only its children when
   * `opaque` — except paths this layer extracted and their ancestors.
   */
  #purge(rel: string, opaque: boolean): void {
    for (let a = rel; ; a = a.slice(0, Math.max(a.lastIndexOf('/'), 0))) {
      if (this.#purged.has(a)) return;
      if (a === '') break;
    }
    this.#purgeWalk(rel, opaque);
  }

  #purgeWalk(rel: string, opaque: boolean): void {
    const host = this.#r.host(rel);
    const st = lstatSync(host, { throwIfNoEntry: false });
    if (!st) return;
    if (!this.#upper.has(rel) && !opaque) {
      this.#remove(host, st);
      return;
    }
    if (!st.isDirectory()) return;
    for (const child of readdirSync(host)) {
      const crel = rel === '' ? child : `${rel}/${child}`;
      this.#purgeWalk(crel, false);
    }
    this.#purged.add(rel);
  }

  #remove(host: string, st: Stats): void {
    if (st.isDirectory()) {
      // rm does not follow symlinks inside the tree; `host` itself has real parents.
      rmSync(host, { recursive: true, force: true });
      this.#r.forget();
    } else {
      unlinkSync(host);
    }
  }

  #markOpaque(rel: string): void {
    sys().lsetxattr(this.#r.host(rel), this.#opaqueXattr, Buffer.from('y'));
  }

  #addUpper(rel: string): void {
    if (this.#upper.has(rel)) return;
    this.#upper.add(rel);
    for (let i = rel.lastIndexOf('/'); i > 0; i = rel.lastIndexOf('/', i - 1)) {
      const a = rel.slice(0, i);
      if (this.#upper.has(a)) break;
      this.#upper.add(a);
    }
  }

  #meta(h: Header, rec: PaxRecords): EntryMeta {
    const uid = paxInt(rec, 'uid') ?? h.uid;
    const gid = paxInt(rec, 'gid') ?? h.gid;
    for (const [k, v] of [['uid', uid], ['gid', gid]] as const) {
      if (!Number.isSafeInteger(v) || v < 0 || v > 0xfffffffe) {
        throw new MyBuildError('INVALID_ARGUMENT', `tar entry ${JSON.stringify(h.name)} has an invalid ${k} ${v}`, { where: this.#what });
      }
    }
    const mtime = paxTime(rec, 'mtime') ?? { sec: Math.floor(h.mtime.getTime() / 1000), nsec: 0 };
    const atime = paxTime(rec, 'atime') ?? mtime;
    const xattrs = new Map<string, Buffer>();
    for (const [k, v] of rec) {
      if (k.startsWith('SCHILY.xattr.')) xattrs.set(k.slice('SCHILY.xattr.'.length), v);
      else if (k.startsWith('LIBARCHIVE.xattr.')) {
        let xname: string;
        try {
          xname = decodeURIComponent(k.slice('LIBARCHIVE.xattr.'.length));
        } catch {
          continue;
        }
        if (!xattrs.has(xname)) xattrs.set(xname, Buffer.from(v.toString('latin1'), 'base64'));
      }
    }
    return { mode: h.mode & 0o7777, uid, gid, atime, mtime, xattrs };
  }

  /** Apply xattrs; with `replace`, also drop ones the entry does not have (an existing directory). */
  #setXattrs(host: string, xattrs: Map<string, Buffer>, replace: boolean): void {
    const s = sys();
    if (replace) {
      for (const n of s.llistxattr(host)) {
        if (!xattrs.has(n) && !forbiddenXattr(n) && n !== this.#opaqueXattr) s.lremovexattr(host, n);
      }
    }
    for (const [n, v] of xattrs) {
      // A NUL would end the name in C: "security.selinux\0x" must not pass as another name.
      if (n === '' || n.includes('\0') || Buffer.byteLength(n) > 255) {
        throw new MyBuildError('INVALID_ARGUMENT', `invalid xattr name ${JSON.stringify(n.slice(0, 80))}`, { where: this.#what });
      }
      if (forbiddenXattr(n) || n === this.#opaqueXattr) continue;
      try {
        s.lsetxattr(host, n, v);
      } catch (err) {
        if (errnoCode(err) === 'ENOTSUP') continue; // the filesystem has no such namespace
        throw err;
      }
    }
  }

  #wrap(err: unknown, name: string): unknown {
    if (err instanceof MyBuildError) return err;
    const code = errnoCode(err);
    const shown = JSON.stringify(name.length > 200 ? `${name.slice(0, 200)}…` : name);
    const msg = err instanceof Error ? err.message : String(err);
    if (code === 'ENAMETOOLONG') return unsafeEntry(name, 'the name is too long', this.#what);
    if (code === 'ELOOP') return unsafeEntry(name, 'too many levels of symbolic links', this.#what);
    if (code === 'ENOSPC' || code === 'EDQUOT') {
      return new MyBuildError('UNAVAILABLE', `extracting tar entry ${shown}: no space left`, { where: this.#what, hint: 'free disk space under the store root', cause: err });
    }
    if (code === 'ENOTDIR' || code === 'EEXIST' || code === 'ENOENT' || code === 'EISDIR' || code === 'ERR_INVALID_ARG_VALUE') {
      return new MyBuildError('INVALID_ARGUMENT', `tar entry ${shown}: ${msg}`, { where: this.#what, cause: err });
    }
    if (code === 'EPERM' || code === 'EACCES') {
      return new MyBuildError('FAILED_PRECONDITION', `extracting tar entry ${shown}: ${msg}`, {
        where: this.#what,
        hint: 'device nodes, ownership and trusted.* xattrs need root',
        cause: err,
      });
    }
    if (code !== undefined) return new MyBuildError('INTERNAL', `extracting tar entry ${shown}: ${msg}`, { where: this.#what, cause: err });
    return err;
  }
}

/** An overlay whiteout: a 0/0 character device. */
function isWhiteoutDevice(st: Stats): boolean {
  return st.isCharacterDevice() && st.rdev === 0;
}

function writeAll(fd: number, chunk: Buffer): void {
  let off = 0;
  while (off < chunk.length) off += writeSync(fd, chunk, off, chunk.length - off);
}

function paxInt(rec: PaxRecords, key: string): number | undefined {
  const v = rec.get(key);
  if (v === undefined) return undefined;
  const s = v.toString('latin1');
  return /^[0-9]{1,16}$/.test(s) ? Number(s) : Number.NaN;
}

/** A PAX time `[-]seconds[.fraction]`, exactly (no float rounding); undefined when malformed. */
function paxTime(rec: PaxRecords, key: string): Time | undefined {
  const v = rec.get(key);
  if (v === undefined) return undefined;
  const m = /^(-?)([0-9]{1,15})(?:\.([0-9]{1,9})[0-9]*)?$/.exec(v.toString('latin1'));
  if (!m) return undefined;
  const sec = Number(m[2]);
  const nsec = m[3] ? Number(m[3].padEnd(9, '0')) : 0;
  if (m[1] !== '-') return { sec, nsec };
  return nsec === 0 ? { sec: -sec, nsec: 0 } : { sec: -sec - 1, nsec: 1e9 - nsec };
}

/**
 * Owner and mode of `rel` as a directory in the merged view of `lowers` (top first), for a
 * parent directory the layer needs but does not contain. Walks without following symlinks;
 * stops at whiteouts, non-directories and opaque directories like overlayfs does.
 */
export function lowerDirMeta(lowers: readonly string[], rel: string, opaqueXattr: string): DirMeta | undefined {
  const parts = rel.split('/');
  for (const lower of lowers) {
    let host = lower;
    let opaqueAbove = false;
    let found: Stats | undefined;
    for (let i = 0; i < parts.length; i++) {
      host = `${host}/${parts[i]!}`;
      const st = lstatSync(host, { throwIfNoEntry: false });
      if (st === undefined) break;
      if (!st.isDirectory()) return undefined; // a whiteout, file or symlink hides the lower ones
      if (i === parts.length - 1) found = st;
      else if (sys().lgetxattr(host, opaqueXattr)?.toString() === 'y') opaqueAbove = true;
    }
    if (found) return { mode: found.mode & 0o7777, uid: found.uid, gid: found.gid };
    if (opaqueAbove) return undefined;
  }
  return undefined;
}
