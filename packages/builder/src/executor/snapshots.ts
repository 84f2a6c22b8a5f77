/**
 * Snapshots for build steps: a fresh active snapshot on top of a layer chain, turned into a
 * layer (its upper dir, tarred and hashed in one pass into the content store) and committed
 * under the new chain ID — the upper dir becomes the committed snapshot, no second copy.
 *
 * Every active snapshot a build makes (a step's, a writable bind's) carries a lock for as long
 * as it is in use; a later build removes the ones whose lock nobody holds (a build killed
 * midway), so they do not stay in the store (prune keeps active snapshots). Read-only views are
 * plain mounts of committed layers, with no snapshot of their own.
 */
import { mkdirSync, rmdirSync } from 'node:fs';
import { join } from 'node:path';
import { type Descriptor, type Digest, layerMediaTypeFor, MyBuildError, randomBytes } from '@mybuild/oci';
import { type Lock, type Mount, type Snapshotter, type Store, acquireLock, chainId, hashLayer, writeLayer } from '@mybuild/layer-store';
import { mountAll, unmount } from '../sandbox/mount.js';
import type { LayerRef } from './types.js';

export class Snapshots {
  readonly store: Store;
  readonly sn: Snapshotter;
  readonly #mountDir: string;

  constructor(store: Store, stateDir: string) {
    if (!store.snapshots) throw new MyBuildError('FAILED_PRECONDITION', 'the store has no snapshotter', { hint: 'open the store with the overlay snapshotter' });
    this.store = store;
    this.sn = store.snapshots;
    this.#mountDir = join(stateDir, 'mounts');
  }

  /** Remove the active snapshots (and views, which older builds made) killed builds left (their locks are free). */
  async cleanupStale(): Promise<number> {
    let removed = 0;
    for (const s of await this.sn.list()) {
      if (s.kind === 'committed' || !TEMP_KEY.test(s.name)) continue;
      let lock: Lock;
      try {
        lock = await acquireLock(this.store.paths.locks, lockName(s.name), { noWait: true });
      } catch (err) {
        if (err instanceof MyBuildError && err.code === 'LOCKED') continue; // in use
        throw err;
      }
      try {
        await this.sn.remove(s.name).catch(() => {});
        removed++;
      } finally {
        await lock.release({ removeFile: true });
      }
    }
    return removed;
  }

  #cleaned: Promise<number> | undefined;

  /** A fresh key for an active snapshot, locked until `release`. The first one also cleans up after killed builds. */
  async #newKey(prefix: string): Promise<{ key: string; lock: Lock }> {
    await (this.#cleaned ??= this.cleanupStale());
    const key = `${prefix}-${randomBytes(12).toString('hex')}`;
    return { key, lock: await acquireLock(this.store.paths.locks, lockName(key)) };
  }

  /** Make sure every chain prefix of `layers` is unpacked; the top chain ID (undefined: no layers). */
  async ensure(layers: LayerRef[]): Promise<Digest | undefined> {
    if (layers.length === 0) return undefined;
    return this.sn.unpack(
      layers.map((l) => l.desc),
      layers.map((l) => l.diffId),
      this.store.content,
    );
  }

  /**
   * Prepare an active snapshot on `parent`, let `work` fill it (given the snapshot's mounts
   * and its upper dir), then write its layer and commit it. Whatever fails, the active
   * snapshot is removed.
   */
  async layer(parent: LayerRef[], work: (mounts: Mount[], upper: string) => Promise<void>): Promise<LayerRef> {
    const parentChain = await this.ensure(parent);
    const { key, lock } = await this.#newKey('build');
    let committed = false;
    let mounts: Mount[];
    try {
      mounts = await this.sn.prepare(key, parentChain);
    } catch (err) {
      await lock.release({ removeFile: true });
      throw err;
    }
    try {
      const upper = this.sn.dir(key);
      await work(mounts, upper);
      const mode = parentChain === undefined ? 'plain' : 'overlay-upper';
      const content = this.store.content;
      // The layer is kept as its snapshot (a deferred blob): hashed here, its tar written only
      // where it goes (push, save, export). MYBUILD_DEFERRED_LAYERS=0 writes it at once.
      const defer = content.putDeferred !== undefined && process.env.MYBUILD_DEFERRED_LAYERS !== '0';
      let layer: LayerRef;
      if (defer) {
        const h = await hashLayer(upper, { mode });
        layer = { diffId: h.diffId, desc: { mediaType: layerMediaTypeFor('none', false), digest: h.diffId, size: h.size } };
      } else {
        const w = await writeLayer(upper, { mode, store: content, compression: 'none' });
        layer = { diffId: w.diffId, desc: { mediaType: w.mediaType, digest: w.digest, size: w.size } satisfies Descriptor };
      }
      const name = chainId([...parent.map((l) => l.diffId), layer.diffId])!;
      try {
        await this.sn.commit(name, key);
        committed = true;
      } catch (err) {
        // The same chain committed meanwhile (another build, or unpacked from a pulled image): same
        // content by definition, but not necessarily the same directory: the blob is written.
        if (!(err instanceof MyBuildError && err.code === 'ALREADY_EXISTS')) throw err;
      }
      if (defer && !(await content.has(layer.desc.digest))) {
        if (committed) await content.putDeferred!({ digest: layer.desc.digest, size: layer.desc.size, snapshot: name, mode });
        else {
          const w = await writeLayer(upper, { mode, store: content, compression: 'none' });
          if (w.digest !== layer.desc.digest) throw new MyBuildError('INTERNAL', `layer of ${upper} hashed as ${layer.desc.digest}, written as ${w.digest}`, { hint: 'something changed the files after the step ended' });
        }
      }
      return layer;
    } finally {
      if (!committed) await this.sn.remove(key).catch(() => {});
      await lock.release({ removeFile: true });
    }
  }

  /** Mount `mounts` on a fresh directory for the duration of `fn`; a single bind is used in place. */
  async withMounted<T>(mounts: Mount[], fn: (root: string) => Promise<T>): Promise<T> {
    const m = await this.#mountAt(mounts, async () => {});
    try {
      return await fn(m.root);
    } finally {
      await m.release();
    }
  }

  /**
   * A read-only view of `layers`, mounted until `release` (an empty directory for no layers).
   * Used for `COPY --from` and `RUN --mount=from=`.
   */
  async mountView(layers: LayerRef[]): Promise<Mounted> {
    const top = await this.ensure(layers);
    if (top === undefined) {
      const dir = join(this.#mountDir, `empty-${randomBytes(8).toString('hex')}`);
      mkdirSync(dir, { recursive: true, mode: 0o755 });
      return { root: dir, release: async () => rmdirSync(dir) };
    }
    // The build holds the store's import lease: no prune can remove the chain while it is
    // mounted, so the view needs no snapshot (lock, directory, info.json) of its own.
    return this.#mountAt(this.sn.viewMounts(top), async () => {});
  }

  /** A writable copy-on-write view of `layers` (`RUN --mount=type=bind,rw`): writes go to a throw-away snapshot. */
  async mountScratch(layers: LayerRef[]): Promise<Mounted> {
    const top = await this.ensure(layers);
    const { key, lock } = await this.#newKey('scratch');
    let mounts: Mount[];
    try {
      mounts = await this.sn.prepare(key, top);
    } catch (err) {
      await lock.release({ removeFile: true });
      throw err;
    }
    return this.#mountAt(mounts, async () => {
      await this.sn.remove(key).catch(() => {});
      await lock.release({ removeFile: true });
    });
  }

  async withView<T>(layers: LayerRef[], fn: (root: string) => Promise<T>): Promise<T> {
    const m = await this.mountView(layers);
    try {
      return await fn(m.root);
    } finally {
      await m.release();
    }
  }

  /** `mounts` mounted on a fresh directory (a single bind used in place) until `release`, which then calls `cleanup`; so does a failed mount. */
  async #mountAt(mounts: Mount[], cleanup: () => Promise<void>): Promise<Mounted> {
    if (mounts.length === 1 && mounts[0]!.type === 'bind' && mounts[0]!.target === undefined) {
      return { root: mounts[0]!.source, release: cleanup };
    }
    const dir = join(this.#mountDir, randomBytes(8).toString('hex'));
    mkdirSync(dir, { recursive: true, mode: 0o700 });
    try {
      await mountAll(mounts, dir);
    } catch (err) {
      removeMountDir(dir);
      await cleanup();
      throw err;
    }
    return {
      root: dir,
      release: async () => {
        try {
          await unmount(dir);
          removeMountDir(dir);
        } finally {
          await cleanup();
        }
      },
    };
  }
}

function removeMountDir(dir: string): void {
  try {
    rmdirSync(dir);
  } catch {
    // still mounted (lazy unmount): leave the empty directory
  }
}

/** Keys of the snapshots builds make for a while (steps, views, throw-away binds). */
const TEMP_KEY = /^(build|view|scratch)-[0-9a-f]{24}$/; // view-: left by builds before views had no snapshot

function lockName(key: string): string {
  return `build-snapshot-${key}`;
}

/** A mounted tree, until `release`. */
export interface Mounted {
  root: string;
  release(): Promise<void>;
}
