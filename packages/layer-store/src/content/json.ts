import { type Descriptor, MediaType } from '@mybuild/oci';
import type { ContentStore } from '../api.js';

/** Largest manifest, index or config the store reads into memory. */
export const MAX_JSON_BLOB = 4 << 20;

/**
 * Serialise `value` once, store the bytes, and return the descriptor naming exactly those
 * bytes (the digest is of this serialisation; never re-serialise a stored manifest).
 */
export async function putJsonBlob(
  content: ContentStore,
  value: unknown,
  mediaType: string = MediaType.OciManifest,
  annotations?: Record<string, string>,
): Promise<Descriptor> {
  const bytes = Buffer.from(JSON.stringify(value), 'utf8');
  const info = await content.putBytes(bytes);
  return { mediaType, digest: info.digest, size: info.size, ...(annotations ? { annotations } : {}) };
}
