import { type BigIntStats, lstatSync, readdirSync, rmdirSync, unlinkSync } from 'node:fs';
import { join } from 'node:path';
import { errnoCode } from '@mybuild/oci';
import { sys } from '@mybuild/layer-store';
import { rootPath } from './rootPath.js';

/** An existing directory a stub was created in: its times are put back after the stub goes. */
interface Anchor {
  rel: string;
  /** mtime before the run, ns */
  mtimeNs: bigint;
  /** the stubs created directly in it */
  children: string[];
  /** its entries before the run, sorted */
  names: string[];
}

/** A directory above a stub that the overlay copies up when runc creates the stub. */
interface CopyUp {
  rel: string;
  /** It was already in the upper dir before the run: never pruned. */
  inUpper: boolean;
  mode: number;
  uid: number;
  gid: number;
  mtimeNs: bigint;
  xattrs: Map<string, string>;
}

const OVERLAY_XATTR = /^(trusted|user)\.overlay\./;

/**
 * The mount points runc creates in the rootfs (an empty file or directory for every mount
 * destination, the working directory, their missing parents) must not end up in the layer.
 * As BuildKit's MountStubsCleaner does: before the run, record which of those paths do not
 * exist (resolved inside the rootfs as runc resolves them); after it, remove the ones that are
 * still an empty file or an empty directory — a step that wrote something there keeps it —
 * and put back the modification time of the directory they were created in when the step
 * left its entries as they were.
 *
 * For an overlay rootfs, creating a stub also copies its parent directories up into the upper
 * dir; {@link pruneUpper} removes those copies again (after unmount) when they are empty and
 * unchanged, so a step that changed nothing leaves an empty upper dir.
 */
export class MountStubs {
  readonly #rootfs: string;
  /** Missing paths, root-relative. */
  readonly #stubs = new Set<string>();
  readonly #anchors = new Map<string, Anchor>();
  readonly #copyUps = new Map<string, CopyUp>();
  /** root-relative paths removed by {@link removeStubs} */
  readonly removed: string[] = [];

  private constructor(rootfs: string) {
    this.#rootfs = rootfs;
  }

  /**
   * Look at `targets` (container paths, in the order runc mounts them; the working directory
   * last) in the mounted `rootfs` before the run. `upperDir`: the overlay's upper dir, to know
   * which directories are already there.
   */
  static scan(rootfs: string, targets: string[], upperDir?: string): MountStubs {
    const s = new MountStubs(rootfs);
    const earlier: string[] = [];
    for (const t of targets) {
      const rel = rootPath(rootfs, t);
      // A stub inside an earlier mount (a tmpfs, a bind) is made there, not in the rootfs.
      const nested = earlier.some((d) => rel === d || d === '' || rel.startsWith(`${d}/`));
      earlier.push(rel);
      if (!nested && rel !== '') s.#scanOne(rel, upperDir);
    }
    return s;
  }

  /** Paths (root-relative) that did not exist before the run. */
  get stubs(): string[] {
    return [...this.#stubs];
  }

  #scanOne(rel: string, upperDir: string | undefined): void {
    const parts = rel.split('/');
    let i = parts.length;
    let top: string | undefined;
    for (; i > 0; i--) {
      const p = parts.slice(0, i).join('/');
      if (lstatOrUndefined(join(this.#rootfs, p)) !== undefined) break;
      this.#stubs.add(p);
      top = p;
    }
    if (top === undefined) return; // the target exists
    const anchor = parts.slice(0, i).join('/');
    const st = lstatOrUndefined(join(this.#rootfs, anchor));
    if (!st?.isDirectory()) return; // runc will fail to create the stub
    const a = this.#anchors.get(anchor) ?? { rel: anchor, mtimeNs: st.mtimeNs, children: [], names: readdirSync(join(this.#rootfs, anchor)).sort() };
    if (!a.children.includes(top)) a.children.push(top);
    this.#anchors.set(anchor, a);
    if (upperDir === undefined) return;
    for (let j = i; j > 0; j--) {
      const p = parts.slice(0, j).join('/');
      if (this.#copyUps.has(p)) break;
      const dst = lstatOrUndefined(join(this.#rootfs, p));
      if (!dst?.isDirectory()) break;
      this.#copyUps.set(p, {
        rel: p,
        inUpper: plainDir(upperDir, p) !== undefined,
        mode: Number(dst.mode),
        uid: Number(dst.uid),
        gid: Number(dst.gid),
        mtimeNs: dst.mtimeNs,
        xattrs: xattrsOf(join(this.#rootfs, p)),
      });
    }
  }

  /**
   * After the run, with the rootfs still mounted: remove the stubs that are still empty,
   * deepest first, and put back their anchor directories' modification times unless the
   * step changed what those directories hold.
   */
  removeStubs(): void {
    const before = new Map<string, bigint>();
    for (const a of this.#anchors.values()) {
      const st = plainDir(this.#rootfs, a.rel);
      if (st) before.set(a.rel, st.mtimeNs);
    }
    const deepestFirst = [...this.#stubs].sort((x, y) => depth(y) - depth(x));
    for (const rel of deepestFirst) {
      const st = plainPath(this.#rootfs, rel);
      if (!st) continue;
      const host = join(this.#rootfs, rel);
      try {
        if (st.isDirectory()) {
          if (readdirSync(host).length > 0) continue;
          rmdirSync(host);
        } else if (st.isFile() && st.size === 0n) {
          unlinkSync(host);
        } else continue;
      } catch (err) {
        if (errnoCode(err) === 'ENOTEMPTY' || errnoCode(err) === 'EBUSY') continue;
        throw err;
      }
      this.removed.push(rel);
    }
    for (const a of this.#anchors.values()) {
      const mtimeNs = before.get(a.rel);
      if (mtimeNs === undefined || !a.children.some((c) => this.removed.includes(c))) continue;
      const st = plainDir(this.#rootfs, a.rel);
      if (!st) continue;
      // Same entries as before the run: the step did not change it, its old time is right.
      // Otherwise keep the time the step left (removing the stubs is no change of the step's).
      const same = sameNames(readdirSync(join(this.#rootfs, a.rel)), a.names);
      setTimes(join(this.#rootfs, a.rel), st.atimeNs, same ? a.mtimeNs : mtimeNs);
    }
  }

  /**
   * After unmount: remove from the overlay's upper dir the directories that creating the
   * stubs copied up, when they are still empty there and their owner, mode, mtime and xattrs
   * are what the lower layers have (the overlay then shows the lower ones, unchanged).
   */
  pruneUpper(upperDir: string): string[] {
    const pruned: string[] = [];
    const deepestFirst = [...this.#copyUps.values()].sort((x, y) => depth(y.rel) - depth(x.rel));
    for (const c of deepestFirst) {
      if (c.inUpper) continue;
      const st = plainDir(upperDir, c.rel);
      if (!st) continue;
      const host = join(upperDir, c.rel);
      if (Number(st.mode) !== c.mode || Number(st.uid) !== c.uid || Number(st.gid) !== c.gid || st.mtimeNs !== c.mtimeNs) continue;
      if (readdirSync(host).length > 0) continue;
      const names = sys().llistxattr(host);
      if (names.some((n) => n === 'trusted.overlay.opaque' || n === 'user.overlay.opaque')) continue;
      if (!sameXattrs(xattrsOf(host), c.xattrs)) continue;
      rmdirSync(host);
      pruned.push(c.rel);
    }
    return pruned;
  }
}

function depth(rel: string): number {
  return rel.split('/').length;
}

function sameNames(now: string[], before: string[]): boolean {
  if (now.length !== before.length) return false;
  const sorted = [...now].sort();
  return sorted.every((n, i) => n === before[i]);
}

function lstatOrUndefined(path: string): BigIntStats | undefined {
  try {
    return lstatSync(path, { bigint: true });
  } catch (err) {
    if (errnoCode(err) === 'ENOENT' || errnoCode(err) === 'ENOTDIR') return undefined;
    throw err;
  }
}

/**
 * lstat `rel` under `root` when every component above it is a real directory (no symlink):
 * after the run the step may have replaced a parent with a symlink pointing anywhere.
 */
function plainPath(root: string, rel: string): BigIntStats | undefined {
  const parts = rel === '' ? [] : rel.split('/');
  for (let i = 1; i < parts.length; i++) {
    if (!lstatOrUndefined(join(root, ...parts.slice(0, i)))?.isDirectory()) return undefined;
  }
  return lstatOrUndefined(join(root, ...parts));
}

function plainDir(root: string, rel: string): BigIntStats | undefined {
  const st = plainPath(root, rel);
  return st?.isDirectory() ? st : undefined;
}

/** xattrs that are content (the overlay's own are not), name → value in hex. */
function xattrsOf(path: string): Map<string, string> {
  const out = new Map<string, string>();
  for (const name of sys().llistxattr(path)) {
    if (OVERLAY_XATTR.test(name)) continue;
    const v = sys().lgetxattr(path, name);
    if (v) out.set(name, v.toString('hex'));
  }
  return out;
}

function sameXattrs(a: Map<string, string>, b: Map<string, string>): boolean {
  if (a.size !== b.size) return false;
  for (const [k, v] of a) if (b.get(k) !== v) return false;
  return true;
}

const NS = 1_000_000_000n;

function setTimes(path: string, atimeNs: bigint, mtimeNs: bigint): void {
  sys().lutimens(path, Number(atimeNs / NS), Number(atimeNs % NS), Number(mtimeNs / NS), Number(mtimeNs % NS));
}
