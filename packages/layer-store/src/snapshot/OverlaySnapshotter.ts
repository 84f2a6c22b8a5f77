import { chmodSync, existsSync, mkdirSync, readFileSync, readdirSync, renameSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { pipeline } from 'node:stream';
import {
  createHash,
  type Descriptor,
  type Digest,
  digestHex,
  errnoCode,
  isLayerMediaType,
  isoTime,
  layerCompression,
  MyBuildError,
  randomBytes,
  VerifyingStream,
} from '@mybuild/oci';
import type { ContentStore, Mount, SnapshotInfo, SnapshotKind, Snapshotter, StorePaths } from '../api.js';
import { applyLayer } from '../extract/applyLayer.js';
import { acquireLock, withLock, type Lock } from '../lock.js';
import { storePaths, writeFileAtomic } from '../paths.js';
import { chainIds } from '../chain.js';

export interface OverlaySnapshotterOptions {
  /** Bound on each layer's uncompressed size while unpacking (default 64 GiB). */
  maxLayerBytes?: number;
}

/** snapshots/<id>/info.json */
interface InfoFile {
  name: string;
  kind: SnapshotKind;
  parent?: string;
  created: string;
  /** The active key a committed snapshot came from (lets a crash mid-commit be recognised). */
  key?: string;
}

interface Found {
  id: string;
  info: InfoFile;
}

/**
 * The overlay mount options BuildKit's differ relies on, stated rather than taken from the
 * module defaults: with metacopy an upper file may hold no data, with redirect_dir a renamed
 * directory is a pointer into a lower layer — either would make the upper dir stop being the diff.
 */
export const OVERLAY_OPTIONS = ['index=off', 'redirect_dir=off', 'metacopy=off'] as const;

/** Legacy mount(2) copies at most one page of option data, NUL included. */
export const MOUNT_DATA_MAX = 4095;

const COMMITTED_NAME = /^sha256:[a-f0-9]{64}$/;

/** `dir/info.json`, or undefined when the directory or the file is not there. */
function readInfoFile(dir: string): InfoFile | undefined {
  let text: string;
  try {
    text = readFileSync(join(dir, 'info.json'), 'utf8');
  } catch (err) {
    if (errnoCode(err) === 'ENOENT' || errnoCode(err) === 'ENOTDIR') return undefined;
    throw err;
  }
  return JSON.parse(text) as InfoFile;
}

function sha256Hex(s: string): string {
  return createHash('sha256').update(s).digest('hex');
}

/**
 * containerd's overlay snapshotter, on the store's disk layout:
 *
 * ```
 * snapshots/<id>/fs         the snapshot's own files (upper dir of an active one)
 * snapshots/<id>/work       overlay workdir
 * snapshots/<id>/info.json  name, kind, parent, created (written atomically)
 * ```
 *
 * A committed snapshot named by a chain ID lives in the chain ID's hex (other names: `n-` +
 * sha256 of the name); active snapshots and views in `k-` + sha256 of their key. Directories
 * are built under `tmp-<random>` and renamed into place; removal renames to `rm-<random>`
 * first, so a snapshot is either complete or absent.
 *
 * Full 64-hex ids keep the layout collision-free but make lowerdir lists long: with the
 * default root, about 40 layers fit in the one page of mount data the kernel accepts;
 * {@link OverlaySnapshotter.mounts} fails with UNSUPPORTED beyond that.
 */
export class OverlaySnapshotter implements Snapshotter {
  readonly paths: StorePaths;
  readonly #opts: OverlaySnapshotterOptions;
  #ready: Promise<void> | undefined;

  constructor(root: string | StorePaths, opts: OverlaySnapshotterOptions = {}) {
    this.paths = typeof root === 'string' ? storePaths(root) : root;
    this.#opts = opts;
  }

  /** Directory id of the committed snapshot `name`. */
  static committedId(name: string): string {
    return COMMITTED_NAME.test(name) ? name.slice('sha256:'.length) : `n-${sha256Hex(name)}`;
  }

  /**
   * The files of committed snapshot `name` in the store at `paths` (its `fs` directory), or
   * undefined when there is no such committed snapshot. For readers that hold no snapshotter
   * (the content store's deferred blobs).
   */
  static committedFs(paths: StorePaths, name: string): string | undefined {
    const dir = join(paths.snapshots, OverlaySnapshotter.committedId(name));
    const info = readInfoFile(dir);
    return info?.kind === 'committed' && info.name === name ? join(dir, 'fs') : undefined;
  }

  /** Directory id of the active snapshot or view `key`. */
  static activeId(key: string): string {
    return `k-${sha256Hex(key)}`;
  }

  async stat(name: string): Promise<SnapshotInfo> {
    return toSnapshotInfo(this.#mustFind(name).info);
  }

  prepare(key: string, parent?: string): Promise<Mount[]> {
    return this.#create(key, parent, 'active');
  }

  view(key: string, parent?: string): Promise<Mount[]> {
    return this.#create(key, parent, 'view');
  }

  async mounts(key: string): Promise<Mount[]> {
    const f = this.#mustFind(key);
    if (f.info.kind === 'committed') {
      throw new MyBuildError('FAILED_PRECONDITION', `snapshot ${key} is committed; mounts exist only for active snapshots and views`, {
        hint: 'prepare or view a new snapshot on top of it',
      });
    }
    const lowers = f.info.parent === undefined ? [] : this.#chain(f.info.parent);
    return this.#mountsFor(f.id, f.info.kind, lowers);
  }

  async commit(name: string, key: string): Promise<void> {
    await this.#init();
    const srcId = OverlaySnapshotter.activeId(key);
    const info = this.#readInfo(srcId);
    if (!info) throw new MyBuildError('NOT_FOUND', `active snapshot ${key} not found`);
    if (info.kind !== 'active') throw new MyBuildError('FAILED_PRECONDITION', `snapshot ${key} is a ${info.kind}, only active snapshots can be committed`);
    const dstId = OverlaySnapshotter.committedId(name);
    if (this.#readInfo(dstId)) throw new MyBuildError('ALREADY_EXISTS', `snapshot ${name} already exists`);
    const src = this.#dir(srcId);
    const created = isoTime();
    await writeFileAtomic(join(src, 'info.json'), json({ name, kind: 'committed', ...(info.parent ? { parent: info.parent } : {}), created, key }));
    try {
      renameSync(src, this.#dir(dstId));
    } catch (err) {
      await writeFileAtomic(join(src, 'info.json'), json(info));
      if (errnoCode(err) === 'ENOTEMPTY' || errnoCode(err) === 'EEXIST') {
        throw new MyBuildError('ALREADY_EXISTS', `snapshot ${name} already exists`);
      }
      throw err;
    }
  }

  async remove(nameOrKey: string): Promise<void> {
    await this.#init();
    const f = this.#mustFind(nameOrKey);
    if (f.info.kind === 'committed') {
      const children = (await this.list()).filter((s) => s.parent === f.info.name);
      if (children.length > 0) {
        throw new MyBuildError('FAILED_PRECONDITION', `snapshot ${nameOrKey} has ${children.length} child snapshot(s)`, {
          hint: `remove ${children[0]!.name} first`,
        });
      }
    }
    const doomed = join(this.paths.snapshots, `rm-${randomBytes(8).toString('hex')}`);
    renameSync(this.#dir(f.id), doomed);
    rmSync(doomed, { recursive: true, force: true });
  }

  async list(): Promise<SnapshotInfo[]> {
    if (!existsSync(this.paths.snapshots)) return [];
    const out: SnapshotInfo[] = [];
    for (const id of readdirSync(this.paths.snapshots)) {
      if (id.startsWith('tmp-') || id.startsWith('rm-')) continue;
      const info = this.#readInfo(id);
      if (info) out.push(toSnapshotInfo(info));
    }
    return out;
  }

  dir(nameOrKey: string): string {
    const committed = this.#dir(OverlaySnapshotter.committedId(nameOrKey));
    if (existsSync(join(committed, 'info.json'))) return join(committed, 'fs');
    return join(this.#dir(OverlaySnapshotter.activeId(nameOrKey)), 'fs');
  }

  async unpack(layers: Descriptor[], diffIds: Digest[], content: ContentStore): Promise<Digest> {
    if (layers.length === 0) throw new MyBuildError('INVALID_ARGUMENT', 'image has no layers to unpack');
    if (layers.length !== diffIds.length) {
      throw new MyBuildError('INVALID_ARGUMENT', `image has ${layers.length} layers but ${diffIds.length} diff_ids`);
    }
    await this.#init();
    const chain = chainIds(diffIds);
    for (const [i, name] of chain.entries()) {
      const id = OverlaySnapshotter.committedId(name);
      if (this.#isCommitted(id)) continue;
      await withLock(this.paths.locks, `snapshot-${digestHex(name)}`, async () => {
        if (this.#isCommitted(id)) return; // another process unpacked it while we waited
        const lowers = chain
          .slice(0, i)
          .reverse()
          .map((c) => join(this.#dir(OverlaySnapshotter.committedId(c)), 'fs'));
        await this.#unpackLayer(layers[i]!, diffIds[i]!, name, chain[i - 1], lowers, content);
      });
    }
    return chain[chain.length - 1]!;
  }

  async #unpackLayer(desc: Descriptor, diffId: Digest, name: Digest, parent: Digest | undefined, lowers: string[], content: ContentStore): Promise<void> {
    if (!isLayerMediaType(desc.mediaType)) {
      throw new MyBuildError('UNSUPPORTED', `media type ${desc.mediaType} is not a layer tar`, { where: desc.digest });
    }
    const what = `layer ${desc.digest}`;
    const { dir: tmp, lock } = await this.#newTemp();
    try {
      const raw = await content.read(desc.digest, { verify: false });
      const verified = new VerifyingStream({ digest: desc.digest, size: desc.size, what });
      pipeline(raw, verified, () => {});
      await applyLayer(verified, join(tmp, 'fs'), {
        mode: 'overlay',
        compression: layerCompression(desc.mediaType),
        diffId,
        lowerDirs: lowers,
        what,
        ...(this.#opts.maxLayerBytes !== undefined ? { maxBytes: this.#opts.maxLayerBytes } : {}),
      });
      const info: InfoFile = { name, kind: 'committed', ...(parent ? { parent } : {}), created: isoTime() };
      await writeFileAtomic(join(tmp, 'info.json'), json(info));
      try {
        renameSync(tmp, this.#dir(OverlaySnapshotter.committedId(name)));
      } catch (err) {
        // Committed meanwhile by someone not holding our lock (commit()): same content by definition.
        if (errnoCode(err) !== 'ENOTEMPTY' && errnoCode(err) !== 'EEXIST') throw err;
        rmSync(tmp, { recursive: true, force: true });
      }
    } catch (err) {
      rmSync(tmp, { recursive: true, force: true });
      throw err;
    } finally {
      await lock.release({ removeFile: true });
    }
  }

  async #create(key: string, parent: string | undefined, kind: 'active' | 'view'): Promise<Mount[]> {
    await this.#init();
    if (this.#find(key)) throw new MyBuildError('ALREADY_EXISTS', `snapshot ${key} already exists`);
    const lowers = parent === undefined ? [] : this.#chain(parent);
    const id = OverlaySnapshotter.activeId(key);
    const mounts = this.#mountsFor(id, kind, lowers); // fail before creating anything
    const { dir: tmp, lock } = await this.#newTemp();
    try {
      const info: InfoFile = { name: key, kind, ...(parent !== undefined ? { parent } : {}), created: isoTime() };
      await writeFileAtomic(join(tmp, 'info.json'), json(info));
      renameSync(tmp, this.#dir(id));
    } catch (err) {
      rmSync(tmp, { recursive: true, force: true });
      if (errnoCode(err) === 'ENOTEMPTY' || errnoCode(err) === 'EEXIST') throw new MyBuildError('ALREADY_EXISTS', `snapshot ${key} already exists`);
      throw err;
    } finally {
      await lock.release({ removeFile: true });
    }
    return mounts;
  }

  viewMounts(parent: string): Mount[] {
    const lowers = this.#chain(parent);
    if (lowers.length === 0) throw new MyBuildError('INTERNAL', `snapshot ${parent} has no layers to view`);
    return this.#mountsFor(OverlaySnapshotter.activeId(parent), 'view', lowers);
  }

  #mountsFor(id: string, kind: SnapshotKind, lowers: string[]): Mount[] {
    const dir = this.#dir(id);
    const lowerDirs = lowers.map((l) => join(this.#dir(l), 'fs'));
    if (kind === 'active') {
      if (lowerDirs.length === 0) return [{ type: 'bind', source: join(dir, 'fs'), options: ['rbind', 'rw'] }];
      return [this.#overlay([...OVERLAY_OPTIONS, `workdir=${join(dir, 'work')}`, `upperdir=${join(dir, 'fs')}`, `lowerdir=${lowerDirs.join(':')}`], lowerDirs.length)];
    }
    if (lowerDirs.length === 0) return [{ type: 'bind', source: join(dir, 'fs'), options: ['rbind', 'ro'] }];
    // overlayfs needs two lower layers when there is no upper one.
    if (lowerDirs.length === 1) return [{ type: 'bind', source: lowerDirs[0]!, options: ['rbind', 'ro'] }];
    return [this.#overlay(['ro', ...OVERLAY_OPTIONS, `lowerdir=${lowerDirs.join(':')}`], lowerDirs.length)];
  }

  #overlay(options: string[], layers: number): Mount {
    if (/[,:\\]/.test(this.paths.snapshots)) {
      throw new MyBuildError('INVALID_ARGUMENT', `store root ${this.paths.root} contains ',', ':' or '\\', which overlay mount options cannot carry`, {
        hint: 'use a store root (--root) without those characters',
      });
    }
    const size = options.join(',').length;
    if (size > MOUNT_DATA_MAX) {
      throw new MyBuildError('UNSUPPORTED', `overlay mount options for ${layers} layers are ${size} bytes, more than the kernel's ${MOUNT_DATA_MAX}`, {
        hint: 'use a shorter store root (--root) or an image with fewer layers',
      });
    }
    return { type: 'overlay', source: 'overlay', options };
  }

  /** Committed ids of `name` and its ancestors, top first. */
  #chain(name: string): string[] {
    const out: string[] = [];
    const seen = new Set<string>();
    let cur: string | undefined = name;
    while (cur !== undefined) {
      const id = OverlaySnapshotter.committedId(cur);
      const info = this.#readInfo(id);
      if (!info) {
        if (cur === name && this.#readInfo(OverlaySnapshotter.activeId(cur))) {
          throw new MyBuildError('FAILED_PRECONDITION', `parent snapshot ${cur} is not committed`);
        }
        throw new MyBuildError('NOT_FOUND', `parent snapshot ${cur} not found`);
      }
      if (seen.has(id)) throw new MyBuildError('INTERNAL', `snapshot parent chain loops at ${cur}`);
      seen.add(id);
      out.push(id);
      cur = info.parent;
    }
    return out;
  }

  #find(nameOrKey: string): Found | undefined {
    for (const id of [OverlaySnapshotter.committedId(nameOrKey), OverlaySnapshotter.activeId(nameOrKey)]) {
      const info = this.#readInfo(id);
      if (info) return { id, info };
    }
    return undefined;
  }

  #mustFind(nameOrKey: string): Found {
    const f = this.#find(nameOrKey);
    if (!f) throw new MyBuildError('NOT_FOUND', `snapshot ${nameOrKey} not found`);
    return f;
  }

  #isCommitted(id: string): boolean {
    return this.#readInfo(id)?.kind === 'committed';
  }

  /** Read info.json; an active directory holding a committed info is a commit cut short: still active. */
  #readInfo(id: string): InfoFile | undefined {
    const info = readInfoFile(this.#dir(id));
    if (!info) return undefined;
    if (id.startsWith('k-') && info.kind === 'committed') {
      return { name: info.key ?? info.name, kind: 'active', ...(info.parent ? { parent: info.parent } : {}), created: info.created };
    }
    if (!id.startsWith('k-') && info.kind !== 'committed') return undefined;
    return info;
  }

  #dir(id: string): string {
    return join(this.paths.snapshots, id);
  }

  /**
   * A temp dir to build a snapshot in, with a lock held for as long as it is in use, so that
   * {@link cleanup} can tell a live temp dir from one a killed process left behind.
   */
  async #newTemp(): Promise<{ dir: string; lock: Lock }> {
    const id = `tmp-${randomBytes(8).toString('hex')}`;
    const lock = await acquireLock(this.paths.locks, `snapshot-${id}`);
    const tmp = join(this.paths.snapshots, id);
    try {
      mkdirSync(tmp, { mode: 0o700 });
      mkdirSync(join(tmp, 'fs'));
      chmodSync(join(tmp, 'fs'), 0o755);
      mkdirSync(join(tmp, 'work'), { mode: 0o700 });
    } catch (err) {
      await lock.release({ removeFile: true });
      throw err;
    }
    return { dir: tmp, lock };
  }

  /**
   * Remove what crashed processes left: `rm-*` dirs (always dead) and `tmp-*` dirs whose
   * lock nobody holds. Returns how many directories were removed.
   */
  async cleanup(): Promise<number> {
    if (!existsSync(this.paths.snapshots)) return 0;
    let removed = 0;
    for (const id of readdirSync(this.paths.snapshots)) {
      if (id.startsWith('rm-')) {
        rmSync(join(this.paths.snapshots, id), { recursive: true, force: true });
        removed++;
      } else if (id.startsWith('tmp-')) {
        let lock: Lock;
        try {
          lock = await acquireLock(this.paths.locks, `snapshot-${id}`, { noWait: true });
        } catch (err) {
          if (err instanceof MyBuildError && err.code === 'LOCKED') continue; // in use
          throw err;
        }
        try {
          rmSync(join(this.paths.snapshots, id), { recursive: true, force: true });
          removed++;
        } finally {
          await lock.release({ removeFile: true });
        }
      }
    }
    return removed;
  }

  #init(): Promise<void> {
    this.#ready ??= (async () => {
      mkdirSync(this.paths.snapshots, { recursive: true, mode: 0o700 });
      mkdirSync(this.paths.locks, { recursive: true, mode: 0o755 });
    })();
    return this.#ready;
  }
}

function json(v: unknown): string {
  return `${JSON.stringify(v, null, 2)}\n`;
}

function toSnapshotInfo(info: InfoFile): SnapshotInfo {
  return { name: info.name, kind: info.kind, parent: info.parent, createdAt: info.created };
}
