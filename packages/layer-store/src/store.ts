import type { Digest } from '@mybuild/oci';
import type { Snapshotter, StorePaths } from './api.js';
import { LocalContentStore } from './content/ContentStore.js';
import { du, type DiskUsage, type DuOptions } from './gc/du.js';
import { prune, withImportLease, type PruneOptions, type PruneResult } from './gc/gc.js';
import { LocalImageStore } from './image/ImageStore.js';
import { initLayout, storePaths } from './paths.js';

export interface OpenStoreOptions {
  /**
   * Builds the snapshotter over this store's paths and content (the snapshot/ part of the
   * package provides one); without it `store.snapshots` is undefined and prune leaves
   * snapshots alone.
   */
  snapshotter?: (paths: StorePaths, content: LocalContentStore) => Snapshotter;
  /** Extra GC roots (the build cache), used by `prune()` and `du()`. */
  extraRoots?: () => Promise<Digest[]>;
  /** How long a writer waits for another process's ingest of the same blob (default 10 min). */
  lockTimeoutMs?: number;
}

/** One store root: an OCI image layout with mybuild's extra directories. */
export interface Store {
  readonly paths: StorePaths;
  readonly content: LocalContentStore;
  readonly images: LocalImageStore;
  readonly snapshots: Snapshotter | undefined;
  /** Mark and sweep blobs, ingests and snapshots (see gc/gc.ts). */
  prune(opts?: Omit<PruneOptions, 'snapshots'>): Promise<PruneResult>;
  du(opts?: Omit<DuOptions, 'snapshots'>): Promise<DiskUsage>;
  /** Run an import (blobs first, tag last) so that prune cannot sweep its blobs midway. */
  withImportLease<T>(fn: () => Promise<T>): Promise<T>;
}

/** Open (creating its layout when needed) the store at `root`. */
export async function openStore(root: string, opts: OpenStoreOptions = {}): Promise<Store> {
  const paths = storePaths(root);
  await initLayout(paths);
  const content = new LocalContentStore(paths, opts.lockTimeoutMs === undefined ? {} : { lockTimeoutMs: opts.lockTimeoutMs });
  const images = new LocalImageStore(paths, content);
  const snapshots = opts.snapshotter?.(paths, content);
  const extra = opts.extraRoots ? { extraRoots: opts.extraRoots } : {};
  return {
    paths,
    content,
    images,
    snapshots,
    prune: (o = {}) => prune({ paths, content }, { ...extra, ...o, ...(snapshots ? { snapshots } : {}) }),
    du: (o = {}) => du({ paths, content }, { ...extra, ...o, ...(snapshots ? { snapshots } : {}) }),
    withImportLease: (fn) => withImportLease(paths, fn),
  };
}
