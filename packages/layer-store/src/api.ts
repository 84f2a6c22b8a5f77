/**
 * The layer store's public contracts. Implementations live beside this file:
 * content/ (blobs), image/ (index.json tags), snapshot/ (unpacked layers), gc/ (prune, du).
 */
import type { Readable, Writable } from 'node:stream';
import type { Descriptor, Digest, ImageConfig, ImageIndex, ImageManifest } from '@mybuild/oci';

/** Layout under the store root (an OCI image layout itself). */
export interface StorePaths {
  root: string;
  /** blobs/sha256 */
  blobs: string;
  /** ingest/ — in-progress writes, one directory per ingest ref */
  ingest: string;
  /** snapshots/ */
  snapshots: string;
  /** cache/ — build cache records (builder) */
  cache: string;
  /** locks/ — lock files (flock) */
  locks: string;
  /** tmp/ — scratch space on the same filesystem, for temp + rename */
  tmp: string;
}

export interface BlobInfo {
  digest: Digest;
  size: number;
  /**
   * Set for a deferred blob (a build's uncompressed layer kept as its snapshot, not written):
   * the chain ID of that snapshot. Its bytes take no room of their own.
   */
  deferredFrom?: string;
}

export interface IngestStatus {
  ref: string;
  /** bytes already written (a resumed writer continues from here) */
  offset: number;
  startedAt: Date;
  updatedAt: Date;
}

/** A writer for one blob: hashes as it writes; `commit` makes it visible. */
export interface ContentWriter {
  /** Bytes already present (resume point). Write only what follows. */
  readonly offset: number;
  /** Stream to write the (rest of the) blob to. */
  stream(): Writable;
  /**
   * fsync, check size and digest (when given), rename into blobs/, make read-only.
   * An already-present blob is success. Returns the blob's info.
   */
  commit(expected?: { size?: number; digest?: Digest }): Promise<BlobInfo>;
  /** Drop the ingest. */
  abort(): Promise<void>;
}

export interface ContentStore {
  info(digest: Digest): Promise<BlobInfo>; // NOT_FOUND when absent
  has(digest: Digest): Promise<boolean>;
  /** Read a blob; verifies digest while streaming when `verify` is true. */
  read(digest: Digest, opts?: { verify?: boolean; start?: number }): Promise<Readable>;
  readBytes(digest: Digest, maxSize: number): Promise<Buffer>;
  /** Open (or resume) an ingest named `ref` (any string; same ref = same ingest). Takes the ingest's lock. */
  writer(ref: string, opts?: { expected?: Digest; size?: number }): Promise<ContentWriter>;
  /** Convenience: stream `data` in, verify, commit. No-op (data drained/destroyed) when present. */
  put(data: Readable, expected?: { digest?: Digest; size?: number }): Promise<BlobInfo>;
  putBytes(data: Uint8Array, expected?: Digest): Promise<BlobInfo>;
  delete(digest: Digest): Promise<void>;
  list(): AsyncIterable<BlobInfo>;
  ingests(): Promise<IngestStatus[]>;
  /** Path of a committed blob (read-only file). A deferred blob has none: read it. */
  path(digest: Digest): string;
  /**
   * Record a deferred blob: an uncompressed layer whose bytes are the layer tar of a committed
   * snapshot, made again (and checked) whenever it is read. Stores without it write the blob.
   */
  putDeferred?(rec: { digest: Digest; size: number; snapshot: string; mode: 'overlay-upper' | 'plain' }): Promise<BlobInfo>;
  /** Write a deferred blob's file from its snapshot and drop the record (no-op for a file). */
  materialize?(digest: Digest): Promise<BlobInfo>;
}

export interface ImageRecord {
  /** tag name as stored in org.opencontainers.image.ref.name (familiar form, e.g. `app:1.2`) */
  name: string;
  /** descriptor in index.json (manifest or index) */
  target: Descriptor;
}

export interface ResolvedImage {
  /** the manifest (after platform selection when the target is an index) */
  manifestDescriptor: Descriptor;
  manifest: ImageManifest;
  config: ImageConfig;
  configDescriptor: Descriptor;
  /** image ID = config digest, as docker shows it */
  id: Digest;
  /** the index when the tag points to one */
  index?: { descriptor: Descriptor; index: ImageIndex };
  /** names that point at this target */
  names: string[];
}

export interface ImageStore {
  list(): Promise<ImageRecord[]>;
  /** Resolve a tag (`app`, `app:1.2`, `docker.io/library/app:1.2`), a digest, an image ID or a short ID prefix. */
  resolve(refOrId: string, opts?: { platform?: string }): Promise<ResolvedImage>;
  /** Point `name` at `target` (replacing what it pointed at); blobs must already be in the content store. */
  tag(name: string, target: Descriptor): Promise<void>;
  /** Remove a tag; returns the descriptor it pointed at. */
  untag(name: string): Promise<Descriptor>;
}

/** containerd's snapshotter vocabulary. */
export interface Mount {
  type: 'overlay' | 'bind';
  source: string;
  target?: string;
  options: string[];
}

export type SnapshotKind = 'committed' | 'active' | 'view';

export interface SnapshotInfo {
  /** key (active/view) or name (committed) */
  name: string;
  kind: SnapshotKind;
  parent: string | undefined;
  createdAt: string;
}

export interface Snapshotter {
  stat(name: string): Promise<SnapshotInfo>;
  /** Active snapshot `key` on top of committed `parent`; returns mounts to mount. */
  prepare(key: string, parent?: string): Promise<Mount[]>;
  /** Read-only view. */
  view(key: string, parent?: string): Promise<Mount[]>;
  /**
   * The mounts of a read-only view of committed `parent`, without a snapshot of its own to
   * create and remove: for a caller that keeps `parent` from being pruned meanwhile (a build
   * holds the store's import lease, which prune waits for).
   */
  viewMounts(parent: string): Mount[];
  mounts(key: string): Promise<Mount[]>;
  /** Commit active `key` as `name`. */
  commit(name: string, key: string): Promise<void>;
  remove(nameOrKey: string): Promise<void>;
  list(): Promise<SnapshotInfo[]>;
  /** Directory holding the snapshot's own files (upper dir for active ones). */
  dir(nameOrKey: string): string;
  /**
   * Unpack the image's layers: one committed snapshot per chain ID (name = chain ID),
   * each layer extracted once. Returns the top chain ID.
   */
  unpack(layers: Descriptor[], diffIds: Digest[], content: ContentStore): Promise<Digest>;
}

export type { Descriptor };
