import { existsSync } from 'node:fs';
import { lstat, readdir, rm, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { type Digest, MyBuildError, digestHex } from '@mybuild/oci';
import type { ContentStore, SnapshotKind, StorePaths } from '../api.js';
import { chainIds } from '../chain.js';
import { ALGORITHMS, ingestLockName, listIngestIds, readIngestStatus } from '../content/ContentStore.js';
import { INDEX_LOCK, readIndexFile } from '../image/indexFile.js';
import { acquireLock, withLock, type LockOptions } from '../lock.js';
import { isTempOf } from '../paths.js';
import { sys } from '../native.js';
import { treeUsage } from './diskUsage.js';
import { Marker, type Root } from './mark.js';

/** Lock between prune (exclusive) and imports (shared): blobs committed for an import are not swept before it tags them. */
export const GC_LOCK = 'gc';

/** What prune needs of a snapshotter; the store's Snapshotter fits. */
export interface SnapshotLister {
  list(): Promise<{ name: string; kind?: SnapshotKind; parent?: string | undefined }[]>;
  remove(name: string): Promise<void>;
  /** the snapshot's directory, to count the bytes freed */
  dir?(name: string): string;
  /** remove what crashed processes left behind (temp dirs); returns how many */
  cleanup?(): Promise<number>;
}

/** The parts of a store prune and du work on. */
export interface GcStore {
  paths: StorePaths;
  content: ContentStore;
}

export interface PruneOptions {
  /** Remove ingests untouched for at least this long (default 0: every ingest no live process holds). */
  ingestMaxAgeMs?: number;
  /** More roots besides index.json (the build cache's layers, configs, manifests). */
  extraRoots?: () => Promise<Digest[]>;
  /** Remove committed snapshots no reachable image's chain IDs need. */
  snapshots?: SnapshotLister;
  /** How long to wait for running imports (the `gc` lock) and the `index` lock; default 10 minutes. */
  lockTimeoutMs?: number;
}

export interface PruneResult {
  blobsRemoved: number;
  blobBytesFreed: number;
  blobsKept: number;
  ingestsRemoved: number;
  ingestBytesFreed: number;
  snapshotsRemoved: number;
  snapshotBytesFreed: number;
  /** all of the above bytes */
  bytesFreed: number;
}

/**
 * Hold the `gc` lock shared while `fn` runs: an import (load, pull, build) that commits
 * blobs first and tags them last wraps both in a lease, so a concurrent prune cannot sweep
 * the blobs in between. Leases do not exclude each other.
 */
export function withImportLease<T>(paths: StorePaths, fn: () => Promise<T>, opts: Pick<LockOptions, 'timeoutMs'> = {}): Promise<T> {
  return withLock(paths.locks, GC_LOCK, fn, { ...opts, shared: true });
}

/**
 * Mark and sweep. Roots: every index.json entry (tagged or not) and `extraRoots`; marking
 * follows indexes → manifests → config and layers. Runs under the `gc` lock (exclusive:
 * waits for imports holding leases) and the `index` lock (no tag can point at a blob
 * while it is being deleted). Also removes ingests no live process holds and committed
 * snapshots whose chain IDs no reachable image has (active ones and their parents stay).
 */
export async function prune(store: GcStore, opts: PruneOptions = {}): Promise<PruneResult> {
  const { paths, content } = store;
  const lockOpts = opts.lockTimeoutMs === undefined ? {} : { timeoutMs: opts.lockTimeoutMs };
  return withLock(paths.locks, GC_LOCK, () =>
    withLock(paths.locks, INDEX_LOCK, async () => {
      const result: PruneResult = {
        blobsRemoved: 0,
        blobBytesFreed: 0,
        blobsKept: 0,
        ingestsRemoved: 0,
        ingestBytesFreed: 0,
        snapshotsRemoved: 0,
        snapshotBytesFreed: 0,
        bytesFreed: 0,
      };
      const index = await readIndexFile(paths);
      const roots: Root[] = index.manifests.map((d) => ({ digest: d.digest, mediaType: d.mediaType }));
      for (const d of (await opts.extraRoots?.()) ?? []) roots.push({ digest: d });
      const marker = new Marker(content, { strict: true });
      const reachable = await marker.reach(roots);

      // Deferred blobs kept: their bytes are made from their snapshots (see below).
      const deferred: { digest: Digest; chain: string }[] = [];
      for await (const blob of content.list()) {
        if (reachable.has(blob.digest)) {
          result.blobsKept++;
          if (blob.deferredFrom !== undefined) deferred.push({ digest: blob.digest, chain: blob.deferredFrom });
          continue;
        }
        try {
          await content.delete(blob.digest);
          result.blobsRemoved++;
          if (blob.deferredFrom === undefined) result.blobBytesFreed += blob.size;
        } catch (err) {
          if (!(err instanceof MyBuildError && err.code === 'NOT_FOUND')) throw err;
        }
      }
      if (result.blobsRemoved > 0) sys().fsyncdir(paths.blobs);

      await removeIndexTemps(paths);
      await removeBlobTemps(paths);
      await pruneIngests(paths, opts.ingestMaxAgeMs ?? 0, result);
      if (opts.snapshots) {
        const keep = new Set<string>();
        for (const diffIds of await marker.diffIdStacks(reachable)) {
          for (const id of chainIds(diffIds)) {
            keep.add(id);
            keep.add(digestHex(id));
          }
        }
        // A deferred blob whose snapshot no reachable image needs (the layer is kept by the
        // build cache only, or by an image on another parent) is written out, so that its
        // snapshot and the ones below go; without a way to write it, the snapshot stays.
        for (const d of deferred) {
          if (keep.has(d.chain)) continue;
          if (content.materialize) await content.materialize(d.digest);
          else {
            keep.add(d.chain);
            keep.add(digestHex(d.chain as Digest));
          }
        }
        await pruneSnapshots(opts.snapshots, keep, result);
        await opts.snapshots.cleanup?.();
      }
      result.bytesFreed = result.blobBytesFreed + result.ingestBytesFreed + result.snapshotBytesFreed;
      return result;
    }, lockOpts),
  lockOpts);
}

/** Temp files of index.json writes that died before their rename (safe: we hold the index lock). */
async function removeIndexTemps(paths: StorePaths): Promise<void> {
  for (const name of await readdir(paths.root)) {
    if (isTempOf(name, /^index\.json$/)) await rm(join(paths.root, name), { force: true });
  }
}

/**
 * Temp files of `putBytes` (writeFileAtomic's `<hex>.<12 hex>.tmp` beside the blobs) that a
 * crash left: removed after an hour (a writer outside any lease may still be on a fresh one).
 */
async function removeBlobTemps(paths: StorePaths): Promise<void> {
  const now = Date.now();
  for (const algorithm of ALGORITHMS) {
    const dir = join(paths.root, 'blobs', algorithm);
    let names: string[];
    try {
      names = await readdir(dir);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') continue;
      throw err;
    }
    for (const name of names) {
      if (!isTempOf(name, /^[a-f0-9]{64,128}$/)) continue;
      const st = await lstat(join(dir, name)).catch(() => undefined);
      if (st?.isFile() && now - st.mtimeMs > 3600e3) await rm(join(dir, name), { force: true });
    }
  }
}

async function pruneIngests(paths: StorePaths, maxAgeMs: number, result: PruneResult): Promise<void> {
  const now = Date.now();
  for (const id of await listIngestIds(paths)) {
    let lock;
    try {
      lock = await acquireLock(paths.locks, ingestLockName(id), { noWait: true });
    } catch (err) {
      if (err instanceof MyBuildError && err.code === 'LOCKED') continue; // a live writer
      throw err;
    }
    let removed = false;
    try {
      const dir = join(paths.ingest, id);
      // Committed or aborted by its writer between the listing and our lock: nothing to remove.
      if (!existsSync(dir)) continue;
      if (maxAgeMs > 0) {
        const status = await readIngestStatus(paths, id);
        const updated = status?.updatedAt ?? (await stat(dir).catch(() => undefined))?.mtime;
        if (updated && now - updated.getTime() < maxAgeMs) continue;
      }
      const usage = await treeUsage(dir);
      await rm(dir, { recursive: true, force: true });
      result.ingestsRemoved++;
      result.ingestBytesFreed += usage.bytes;
      removed = true;
    } finally {
      await lock.release({ removeFile: removed });
    }
  }
}

async function pruneSnapshots(snapshots: SnapshotLister, keepChains: Set<string>, result: PruneResult): Promise<void> {
  const all = await snapshots.list();
  const byName = new Map(all.map((s) => [s.name, s]));
  const keep = new Set<string>();
  const keepWithParents = (name: string | undefined): void => {
    for (let n = name, hops = 0; n !== undefined && !keep.has(n) && hops < 10_000; hops++) {
      keep.add(n);
      n = byName.get(n)?.parent;
    }
  };
  for (const s of all) {
    const committed = s.kind === undefined || s.kind === 'committed';
    if (!committed || keepChains.has(s.name)) keepWithParents(s.name);
  }
  const depth = (name: string): number => {
    let d = 0;
    for (let n = byName.get(name)?.parent; n !== undefined && d < 10_000; n = byName.get(n)?.parent) d++;
    return d;
  };
  // children before their parents
  const doomed = all.filter((s) => !keep.has(s.name)).sort((a, b) => depth(b.name) - depth(a.name));
  for (const s of doomed) {
    const bytes = snapshots.dir ? (await treeUsage(snapshots.dir(s.name))).bytes : 0;
    try {
      await snapshots.remove(s.name);
    } catch (err) {
      if (err instanceof MyBuildError && (err.code === 'NOT_FOUND' || err.code === 'FAILED_PRECONDITION')) continue;
      throw err;
    }
    result.snapshotsRemoved++;
    result.snapshotBytesFreed += bytes;
  }
}
