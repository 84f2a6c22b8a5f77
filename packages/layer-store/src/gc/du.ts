import { readdir } from 'node:fs/promises';
import type { Digest } from '@mybuild/oci';
import { entryName, readIndexFile } from '../image/indexFile.js';
import { treeUsage } from './diskUsage.js';
import type { GcStore, SnapshotLister } from './gc.js';
import { Marker, type Root } from './mark.js';

export interface ImageUsage {
  /** the tag (familiar form), `''` for an untagged index.json entry */
  name: string;
  /** digest of the manifest or index the tag points at */
  target: Digest;
  /** image ID (config digest) when the target is a single manifest */
  id: Digest | undefined;
  /** bytes of every blob of the image present in the store (index, manifests, configs, layers) */
  sizeBytes: number;
  /** bytes of those blobs that another image (a different target) uses too */
  sharedBytes: number;
  /** sizeBytes − sharedBytes */
  uniqueBytes: number;
  blobs: number;
}

export interface DiskUsage {
  blobs: {
    count: number;
    bytes: number;
    /** blobs no root reaches: what prune would remove */
    reclaimableCount: number;
    reclaimableBytes: number;
  };
  /** unpacked layers: on-disk bytes, hardlinks counted once */
  snapshots: { count: number; bytes: number };
  /** build cache records */
  cache: { entries: number; bytes: number };
  /** in-progress and abandoned writes */
  ingest: { count: number; bytes: number };
  /** one row per index.json entry, as `docker system df -v` lists images */
  images: ImageUsage[];
  totalBytes: number;
}

export interface DuOptions {
  /** the same extra roots prune uses, for `reclaimable` */
  extraRoots?: () => Promise<Digest[]>;
  /** counts snapshots through the snapshotter instead of the directories under snapshots/ */
  snapshots?: Pick<SnapshotLister, 'list'>;
}

/**
 * Disk usage of a store. Takes no lock: figures are a snapshot of a moving store. Image
 * sizes are content sizes; the store's blob bytes are those of the blob files (a deferred blob
 * has none); snapshots, cache and ingests are measured on disk.
 */
export async function du(store: GcStore, opts: DuOptions = {}): Promise<DiskUsage> {
  const { paths, content } = store;
  const sizes = new Map<Digest, number>();
  // A deferred blob (a built layer kept as its snapshot) has a content size and no bytes of its own on disk.
  const deferred = new Set<Digest>();
  for await (const b of content.list()) {
    sizes.set(b.digest, b.size);
    if (b.deferredFrom !== undefined) deferred.add(b.digest);
  }

  const index = await readIndexFile(paths);
  const marker = new Marker(content, { strict: false });
  const perEntry = await Promise.all(
    index.manifests.map(async (d) => {
      const root: Root = { digest: d.digest, mediaType: d.mediaType };
      return { d, set: await marker.reach([root]), config: await marker.configOf(root) };
    }),
  );
  // shared = used by more than one image; several tags of one target are one image
  const users = new Map<Digest, Set<Digest>>();
  for (const { d, set } of perEntry) {
    for (const b of set) {
      let u = users.get(b);
      if (!u) users.set(b, (u = new Set()));
      u.add(d.digest);
    }
  }
  const images: ImageUsage[] = perEntry.map(({ d, set, config }) => {
    let sizeBytes = 0;
    let sharedBytes = 0;
    for (const b of set) {
      const size = sizes.get(b) ?? 0;
      sizeBytes += size;
      if ((users.get(b)?.size ?? 0) > 1) sharedBytes += size;
    }
    return { name: entryName(d) ?? '', target: d.digest, id: config, sizeBytes, sharedBytes, uniqueBytes: sizeBytes - sharedBytes, blobs: set.size };
  });

  const roots: Root[] = index.manifests.map((d) => ({ digest: d.digest, mediaType: d.mediaType }));
  for (const d of (await opts.extraRoots?.()) ?? []) roots.push({ digest: d });
  const reachable = await marker.reach(roots);
  let bytes = 0;
  let reclaimableCount = 0;
  let reclaimableBytes = 0;
  for (const [digest, contentSize] of sizes) {
    const size = deferred.has(digest) ? 0 : contentSize;
    bytes += size;
    if (!reachable.has(digest)) {
      reclaimableCount++;
      reclaimableBytes += size;
    }
  }

  const seen = new Set<string>();
  const snap = await treeUsage(paths.snapshots, seen);
  const snapCount = opts.snapshots
    ? (await opts.snapshots.list()).length
    : (await readdir(paths.snapshots, { withFileTypes: true })).filter((e) => e.isDirectory()).length;
  const cache = await treeUsage(paths.cache, seen);
  const ingestNames = (await readdir(paths.ingest, { withFileTypes: true })).filter((e) => e.isDirectory());
  const ingest = await treeUsage(paths.ingest, seen);

  return {
    blobs: { count: sizes.size, bytes, reclaimableCount, reclaimableBytes },
    snapshots: { count: snapCount, bytes: snap.bytes },
    cache: { entries: cache.entries, bytes: cache.bytes },
    ingest: { count: ingestNames.length, bytes: ingest.bytes },
    images,
    totalBytes: bytes + snap.bytes + cache.bytes + ingest.bytes,
  };
}
