/**
 * COPY/ADD's file copy with the semantics of BuildKit's file op (tonistiigi/fsutil copy, as
 * dockerfile2llb calls it: follow symlinks of the source path, copy a directory's contents,
 * create the destination path): see {@link Copier.copy}. Writes go to `destRoot`, a mounted
 * snapshot; every destination path is resolved inside it (symlinks followed with the root as
 * `/`), and nothing below is followed, so no write can land outside it.
 */
import { closeSync, constants, fchmodSync, fchownSync, linkSync, lchownSync, lstatSync, mkdirSync, openSync, readSync, readlinkSync, symlinkSync, unlinkSync, chmodSync, writeSync, type Stats } from 'node:fs';
import { posix } from 'node:path';
import { createHash, errnoCode, MyBuildError } from '@mybuild/oci';
import { isLayerXattr, sys } from '@mybuild/layer-store';
import type { IgnoreMatcher } from '../frontend/dockerignore.js';
import { goClean } from '../frontend/gopath.js';
import { rootPath } from '../sandbox/rootPath.js';
import type { Donor } from './donor.js';
import { type FileSource, ScanStats, type SourceChild } from './source.js';

export interface Owner {
  uid: number;
  gid: number;
}

export interface CopyOptions {
  /** `--chown`, resolved: owner of everything copied and of the directories created. */
  chown?: Owner;
  /** `--chmod`: permission bits of everything copied (symlinks aside) and of the directories created. */
  chmod?: number;
  /** `--exclude` patterns, matched against paths relative to each copied directory. */
  exclude?: IgnoreMatcher;
  /**
   * `COPY --parents`: only paths (relative to the copied directory) matching these are copied,
   * each with the directories above it, made as in the source when first needed.
   */
  include?: IgnoreMatcher;
  /**
   * The files this same COPY placed last time (a committed snapshot, see donor.ts): a regular
   * file that would come out the same — content (by hash), size, owner, mode, mtime, no
   * extended attributes — is hard-linked from there instead of written again. Only for a copy
   * into a fresh upper directory (nothing below it to copy up or white out); committed
   * snapshots are never written, so the shared inode never changes.
   */
  donor?: Donor;
  /** Keep {@link Copier.placed}: the content hash of each regular file placed (a donor record for next time). */
  record?: boolean;
}

/** A directory not copied yet: made when something below it is. */
interface PendingDir {
  srcRel: string;
  st: Stats;
  targetRel: string;
  created: boolean;
}

const DEFAULT_DIR_MODE = 0o755;
const OPEN_SRC = constants.O_RDONLY | constants.O_NOFOLLOW;
const OPEN_DST = constants.O_WRONLY | constants.O_CREAT | constants.O_EXCL | constants.O_NOFOLLOW;
/** One read buffer for every copy: small files are read and written in one call each, nothing is allocated per file. */
let copyBuffer: Buffer | undefined;

/** Counts of what a copy wrote (progress). */
export interface CopyStats {
  files: number;
  bytes: number;
}

export class Copier {
  readonly #root: string;
  readonly #opts: CopyOptions;
  /** source `dev:ino` of files with several links → the first destination path written */
  readonly #inodes = new Map<string, string>();
  readonly stats: CopyStats = { files: 0, bytes: 0 };
  readonly #pending: PendingDir[] = [];
  #readahead: Readahead | undefined;
  /** with `record`: root-relative path → sha256 hex of each regular file placed */
  readonly placed: Map<string, string> | undefined;
  /** files linked from the donor */
  linked = 0;
  /** donor inodes linked so far: two targets on one inode would make the layer a hard link */
  readonly #donorInodes = new Set<number>();

  /** `destRoot`: host path of the mounted destination root filesystem. */
  constructor(destRoot: string, opts: CopyOptions = {}) {
    this.#root = destRoot;
    this.#opts = opts;
    this.placed = opts.record ? new Map() : undefined;
  }

  /** The `--chown` owner, if any. */
  get owner(): Owner | undefined {
    return this.#opts.chown;
  }

  #host(rel: string): string {
    return rel === '' ? this.#root : `${this.#root}/${rel}`;
  }

  /**
   * Copy `srcPath` (one source, wildcards already resolved; relative to the source's root) to
   * `dest` (an absolute container path; a trailing `/` means a directory), as fsutil's Copy:
   * the directory part of `dest` (all of it with a trailing `/`) is created; a file goes into
   * `dest` when that is an existing directory, else becomes `dest`; a directory's contents go
   * into `dest`. Existing directories keep their owner and mode at the top, nested ones take
   * the source's; files replace files; a file never replaces a directory.
   */
  copy(src: FileSource, srcPath: string, dest: string): void {
    const perm = this.#opts.chmod ?? DEFAULT_DIR_MODE;
    const ensure = dest.endsWith('/') ? dest : posix.dirname(dest);
    if (ensure !== '' && goClean(ensure) !== '/') this.mkdirAll(rootPath(this.#root, ensure), perm, this.#opts.chown);
    const srcRel = src.follow(srcPath);
    const fiSrc = src.lstat(srcRel);
    if (!fiSrc) throw new MyBuildError('NOT_FOUND', `${JSON.stringify(srcPath)}: not found`);
    let destRel = rootPath(this.#root, goClean(dest));
    const fiDest = lstatOrUndefined(this.#host(destRel));
    if (!fiSrc.isDirectory() && fiDest?.isDirectory()) destRel = join(destRel, posix.basename(goClean(`/${srcPath}`)));
    let target = posix.dirname(`/${destRel}`).slice(1);
    if (fiSrc.isDirectory() && fiDest === undefined) target = destRel;
    this.mkdirAll(target, perm, this.#opts.chown);
    this.#readahead = fiSrc.isDirectory() ? new Readahead(src, srcRel, this.#opts.exclude) : undefined;
    try {
      this.#entry(src, srcRel, fiSrc, '', destRel, false, false);
    } finally {
      this.#readahead = undefined;
    }
  }

  /**
   * fsutil's MkdirAll: create the missing directories of `rel` (root-relative, already
   * resolved) with `mode` and `owner` (root when absent). An existing non-directory is an error.
   */
  mkdirAll(rel: string, mode: number, owner?: Owner): string[] {
    const created: string[] = [];
    if (rel === '') return created;
    let cur = '';
    for (const part of rel.split('/')) {
      cur = cur === '' ? part : `${cur}/${part}`;
      const host = this.#host(cur);
      const st = lstatOrUndefined(host);
      if (st?.isDirectory()) continue;
      if (st) throw new MyBuildError('FAILED_PRECONDITION', `cannot create directory /${cur}: a file of that name exists`, { where: `/${cur}` });
      mkdirSync(host);
      chmodSync(host, mode);
      if (owner && (owner.uid !== 0 || owner.gid !== 0)) lchownSync(host, owner.uid, owner.gid);
      else lchownSync(host, 0, 0);
      created.push(cur);
    }
    return created;
  }

  #entry(src: FileSource, srcRel: string, st: Stats, comps: string, targetRel: string, overwrite: boolean, fresh: boolean): void {
    if (comps !== '' && excluded(this.#opts.exclude, comps, st)) return;
    const include = this.#opts.include;
    if (comps !== '' && include && !include.matches(comps)) {
      if (!st.isDirectory()) return;
      // a directory on the way to what --parents copies: made only when needed
      this.#pending.push({ srcRel, st, targetRel, created: false });
      try {
        for (const c of src.children(srcRel)) {
          const childSrc = srcRel === '' ? c.name : `${srcRel}/${c.name}`;
          this.#entry(src, childSrc, c.st, `${comps}/${c.name}`, join(targetRel, c.name), true, false);
        }
      } finally {
        const p = this.#pending.pop()!;
        if (p.created) this.#setInfo(src, p.srcRel, p.st, this.#host(p.targetRel));
      }
      return;
    }
    for (const p of this.#pending) {
      if (p.created) continue;
      const host = this.#host(p.targetRel);
      const have = lstatOrUndefined(host);
      if (!have) mkdirSync(host, { mode: 0o700 });
      else if (!have.isDirectory()) throw new MyBuildError('FAILED_PRECONDITION', `cannot copy a directory over the non-directory /${p.targetRel}`, { where: `/${p.targetRel}` });
      p.created = true;
    }
    const target = this.#host(targetRel);
    const targetSt = fresh ? undefined : lstatOrUndefined(target);
    const srcHost = src.host(srcRel);
    if (!st.isDirectory() && targetSt) {
      if (targetSt.isDirectory()) throw new MyBuildError('FAILED_PRECONDITION', `cannot replace directory /${targetRel} with a file`, { where: `/${targetRel}` });
      unlinkSync(target);
    }
    let copyInfo = true;
    let restoreTimes = false;
    if (st.isDirectory()) {
      let created = false;
      if (!targetSt) {
        mkdirSync(target, { mode: 0o700 });
        created = true;
      } else if (!targetSt.isDirectory()) {
        throw new MyBuildError('FAILED_PRECONDITION', `cannot copy a directory over the non-directory /${targetRel}`, { where: `/${targetRel}` });
      } else if (overwrite) {
        chmodSync(target, this.#mode(st));
      }
      for (const c of src.children(srcRel)) {
        const childSrc = srcRel === '' ? c.name : `${srcRel}/${c.name}`;
        this.#entry(src, childSrc, c.st, comps === '' ? c.name : `${comps}/${c.name}`, join(targetRel, c.name), true, created);
      }
      if (!overwrite) {
        copyInfo = created;
        restoreTimes = !created;
      }
    } else if (st.isFile()) {
      const key = st.nlink > 1 ? `${st.dev}:${st.ino}` : undefined;
      const first = key === undefined ? undefined : this.#inodes.get(key);
      this.placed?.delete(targetRel);
      if (first !== undefined) {
        linkSync(this.#host(first), target);
      } else {
        const donated = key === undefined ? this.#fromDonor(src, srcRel, st, targetRel) : undefined;
        let linked = false;
        if (donated !== undefined) {
          // the donor's file has this owner, mode and times already: nothing to set
          try {
            linkSync(donated, target);
            linked = true;
            this.linked++;
          } catch (err) {
            // too many links, another filesystem, not allowed: copied as if there were no donor
            if (!['EMLINK', 'EXDEV', 'EPERM', 'ENOENT'].includes(errnoCode(err) ?? '')) throw err;
          }
        }
        if (!linked) this.#copyFile(src, srcRel, st, target);
        if (key === undefined && this.placed) this.placed.set(targetRel, src.fileHash(srcRel, st));
        this.#readahead?.consumed(st.size);
        if (linked) {
          this.stats.files++;
          this.stats.bytes += st.size;
          return;
        }
        if (key !== undefined) this.#inodes.set(key, targetRel);
        this.stats.files++;
        this.stats.bytes += st.size;
        // owner, mode and times were set on the open file
        copyXattrs(srcHost, target);
        return;
      }
    } else if (st.isSymbolicLink()) {
      symlinkSync(readlinkSync(srcHost), target);
    } else {
      const [major, minor] = sys().devnums(st.rdev);
      if (st.isCharacterDevice() && major === 0 && minor === 0) {
        // what overlayfs takes for a deletion marker: through the overlay mknod fails (EPERM),
        // written straight into a layer directory it would turn into one
        throw new MyBuildError('UNSUPPORTED', `cannot copy /${srcRel}: a 0:0 character device is how a layer marks a deleted file`, {
          where: `/${targetRel}`,
          hint: 'leave it out of the context (.dockerignore)',
        });
      }
      sys().mknod(target, st.mode, major, minor);
    }

    if (copyInfo) {
      this.#setInfo(src, srcRel, st, target);
    } else if (restoreTimes) {
      setTimes(target, st);
    }
  }

  /**
   * The donor's path of this very file when it would come out the same: same content (by
   * hash), size, owner, mode, mtime (to the nanosecond this copy would set), no extended
   * attributes on either side, fewer than {@link MAX_DONOR_LINKS} links, not linked once already.
   * Anything uncertain: undefined (the file is copied).
   */
  #fromDonor(src: FileSource, srcRel: string, st: Stats, targetRel: string): string | undefined {
    const donor = this.#opts.donor;
    if (!donor || !donor.has(targetRel)) return undefined;
    const d = donor.stat(targetRel);
    if (!(d instanceof ScanStats) || !d.isFile() || d.size !== st.size || d.nlink >= MAX_DONOR_LINKS || this.#donorInodes.has(d.ino)) return undefined;
    const owner = this.#owner(src, st);
    if ((d.mode & 0o7777) !== this.#mode(st) || d.uid !== owner.uid || d.gid !== owner.gid) return undefined;
    const [ms, mns] = split(st.mtimeMs);
    const [ds, dns] = d.mtimeSpec();
    if (ds !== ms || dns !== mns) return undefined;
    const path = `${donor.root}/${targetRel}`;
    if (src.fileHash(srcRel, st) !== donor.hashOf(targetRel) || hasLayerXattrs(src.host(srcRel)) || hasLayerXattrs(path)) return undefined;
    this.#donorInodes.add(d.ino);
    return path;
  }

  #owner(src: FileSource, st: Stats): Owner {
    return this.#opts.chown ?? (src.resetOwner ? { uid: 0, gid: 0 } : { uid: st.uid, gid: st.gid });
  }

  /**
   * Copy a regular file's data through one reused buffer, then set its owner, mode (after the
   * owner: chown clears setuid bits) and times on the open file. The content is hashed on the
   * way when the source wants it (a build context on a cold stat cache: read once, not twice).
   */
  #copyFile(src: FileSource, srcRel: string, st: Stats, target: string): void {
    const buf = (copyBuffer ??= Buffer.allocUnsafe(1 << 20));
    const hash = src.wantsHash(srcRel, st) ? createHash('sha256') : undefined;
    const sfd = openSync(src.host(srcRel), OPEN_SRC);
    try {
      const dfd = openSync(target, OPEN_DST, 0o600);
      try {
        for (;;) {
          const n = readSync(sfd, buf, 0, buf.length, null);
          if (n === 0) break;
          hash?.update(buf.subarray(0, n));
          let off = 0;
          while (off < n) off += writeSync(dfd, buf, off, n - off);
        }
        const owner = this.#owner(src, st);
        fchownSync(dfd, owner.uid, owner.gid);
        fchmodSync(dfd, this.#mode(st));
        const [as, ans] = split(st.atimeMs);
        const [ms, mns] = split(st.mtimeMs);
        sys().futimens(dfd, as, ans, ms, mns);
      } finally {
        closeSync(dfd);
      }
    } finally {
      closeSync(sfd);
    }
    if (hash) src.setHash(srcRel, st, hash.digest('hex'));
  }

  /** Owner, mode (not for symlinks), xattrs and times of a copied entry. */
  #setInfo(src: FileSource, srcRel: string, st: Stats, target: string): void {
    const owner = this.#opts.chown ?? (src.resetOwner ? { uid: 0, gid: 0 } : { uid: st.uid, gid: st.gid });
    lchownSync(target, owner.uid, owner.gid);
    if (!st.isSymbolicLink()) chmodSync(target, this.#mode(st));
    copyXattrs(src.host(srcRel), target);
    setTimes(target, st);
  }

  /** The mode a copied entry gets: `--chmod` (with its setuid/setgid/sticky bits) or the source's. */
  #mode(st: Stats): number {
    return this.#opts.chmod !== undefined ? this.#opts.chmod & 0o7777 : st.mode & 0o7777;
  }
}

/** How far (in bytes of file data) reading ahead may run before the copy. */
const READAHEAD_WINDOW = 64 << 20;
/** Files per readahead request (one thread-pool job each; several run at once). */
const READAHEAD_BATCH = 128;

/**
 * Starts the reading of a directory copy's files before the copy reaches them. The copy reads
 * one small file after another, synchronously: from a cold cache each read would wait on the
 * disk alone. Here the files ahead (in the copy's own order: names sorted, depth first) are
 * handed to the kernel in batches on the thread pool (POSIX_FADV_WILLNEED), so several reads
 * are in flight while the copy goes on, at most {@link READAHEAD_WINDOW} ahead of it.
 */
class Readahead {
  readonly #src: FileSource;
  readonly #exclude: IgnoreMatcher | undefined;
  /** directories still to read ahead in: source path, path below the copied directory, entries */
  readonly #stack: { rel: string; comps: string; kids: SourceChild[]; i: number }[];
  #issued = 0;
  #copied = 0;

  constructor(src: FileSource, rootRel: string, exclude: IgnoreMatcher | undefined) {
    this.#src = src;
    this.#exclude = exclude;
    this.#stack = [];
    this.#enter(rootRel, '');
    this.#fill();
  }

  /** The copy has read `bytes` more. */
  consumed(bytes: number): void {
    this.#copied += bytes;
    if (this.#issued - this.#copied < READAHEAD_WINDOW / 2) this.#fill();
  }

  /** Queue a directory's entries. Only a hint: one that cannot be listed is left to the copy. */
  #enter(rel: string, comps: string): void {
    try {
      this.#stack.push({ rel, comps, kids: this.#src.children(rel), i: 0 });
    } catch {
      // the copy itself will list it (and report what is wrong), or skip it
    }
  }

  #fill(): void {
    while (this.#stack.length > 0 && this.#issued - this.#copied < READAHEAD_WINDOW) {
      const paths: string[] = [];
      while (this.#stack.length > 0 && paths.length < READAHEAD_BATCH) {
        const top = this.#stack[this.#stack.length - 1]!;
        if (top.i >= top.kids.length) {
          this.#stack.pop();
          continue;
        }
        const c = top.kids[top.i++]!;
        const rel = top.rel === '' ? c.name : `${top.rel}/${c.name}`;
        const comps = top.comps === '' ? c.name : `${top.comps}/${c.name}`;
        if (excluded(this.#exclude, comps, c.st)) continue; // what the copy skips, this skips too
        if (c.st.isDirectory()) this.#enter(rel, comps);
        else if (c.st.isFile() && c.st.size > 0 && c.st.nlink === 1) {
          // (a file with more links may be copied as a link to one copied before: not counted)
          paths.push(this.#src.host(rel));
          this.#issued += c.st.size;
        }
      }
      // Only a hint: a failure changes nothing but the speed.
      if (paths.length > 0) sys().prefetch(paths).catch(() => undefined);
    }
  }
}

/**
 * Whether COPY --exclude leaves out `comps` (relative to the copied directory); an excluded
 * directory an exception (`!pattern`) may reach into is still gone into.
 */
function excluded(exclude: IgnoreMatcher | undefined, comps: string, st: Stats): boolean {
  return exclude !== undefined && exclude.matches(comps) && (!st.isDirectory() || exclude.canSkipDir(comps));
}

function join(dir: string, name: string): string {
  return dir === '' ? name : `${dir}/${name}`;
}

export function lstatOrUndefined(path: string): Stats | undefined {
  try {
    return lstatSync(path);
  } catch (err) {
    const code = errnoCode(err);
    if (code === 'ENOENT' || code === 'ENOTDIR') return undefined;
    throw err;
  }
}

/** atime and mtime of `st` on `path` (not following a symlink), to the nanosecond the Stats carry. */
export function setTimes(path: string, st: Stats): void {
  const [as, ans] = split(st.atimeMs);
  const [ms, mns] = split(st.mtimeMs);
  sys().lutimens(path, as, ans, ms, mns);
}

/** ext4 allows 65,000 links to an inode; a donor file past this is copied, not linked again. */
const MAX_DONOR_LINKS = 60_000;

function hasLayerXattrs(path: string): boolean {
  try {
    return sys().llistxattr(path).some(isLayerXattr);
  } catch {
    return true;
  }
}

function split(ms: number): [number, number] {
  const sec = Math.floor(ms / 1000);
  const nsec = Math.min(999_999_999, Math.max(0, Math.round((ms - sec * 1000) * 1e6)));
  return [sec, nsec];
}

function copyXattrs(src: string, dst: string): void {
  const s = sys();
  let names: string[];
  try {
    names = s.llistxattr(src);
  } catch {
    return;
  }
  for (const name of names) {
    if (!isLayerXattr(name)) continue;
    const value = s.lgetxattr(src, name);
    if (value !== null) s.lsetxattr(dst, name, value);
  }
}
