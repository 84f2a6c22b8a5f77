import type { Readable } from 'node:stream';
import type { Descriptor } from './types.js';
import type { Digest } from './digest.js';

/**
 * Where blobs can be read from: a registry, a store, an archive.
 * Every `open` returns a stream the caller must consume or destroy; implementations
 * verify size and digest while it streams.
 */
export interface BlobSource {
  /** Open a blob; fails with NOT_FOUND when absent. */
  open(desc: Descriptor): Promise<Readable>;
}

/** Where blobs can be written to. `put` verifies size and digest and is a no-op when present. */
export interface BlobSink {
  has(digest: Digest): Promise<boolean>;
  put(desc: Descriptor, data: Readable): Promise<void>;
  /**
   * Optional: put bytes already in memory (manifests and indexes, which a pull holds whole),
   * verified like `put`; a sink without it gets them through `put` as a stream.
   */
  putBytes?(desc: Descriptor, data: Uint8Array): Promise<void>;
}
