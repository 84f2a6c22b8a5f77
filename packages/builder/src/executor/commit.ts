/**
 * The image a build ends in: config (docker's format, as BuildKit's image exporter writes it)
 * and an OCI manifest, stored, then tagged (or recorded untagged).
 */
import { type ContainerConfig, type Descriptor, type Digest, type HistoryEntry, type ImageConfig, MediaType, MyBuildError, formatReference, parseNormalizedReference, withDefaultTag } from '@mybuild/oci';
import { type Store, putJsonBlob } from '@mybuild/layer-store';
import type { LayerRef } from './types.js';

export interface ImageToCommit {
  os: string;
  architecture: string;
  variant?: string;
  author?: string;
  config: ContainerConfig;
  layers: LayerRef[];
  history: HistoryEntry[];
}

/**
 * BuildKit's normalizeLayersAndHistory: a history entry without a time (a metadata step) takes
 * the time of the first layer made after it when it comes before any, else the one of the
 * layer before it. The config's `created` is the last entry's.
 */
export function fillCreated(history: HistoryEntry[]): HistoryEntry[] {
  let created: string | undefined;
  let sawMissing = false;
  for (const h of history) {
    if (h.created !== undefined) {
      created = h.created;
      if (sawMissing) break;
    } else sawMissing = true;
  }
  sawMissing = false;
  return history.map((h) => {
    if (h.created !== undefined) {
      if (sawMissing) created = h.created;
      return h;
    }
    sawMissing = true;
    return created === undefined ? h : orderHistory({ ...h, created });
  });
}

/** Go's field order for ocispec.History: created, created_by, author, comment, empty_layer. */
function orderHistory(h: HistoryEntry): HistoryEntry {
  const out: HistoryEntry = {};
  if (h.created !== undefined) out.created = h.created;
  if (h.created_by !== undefined) out.created_by = h.created_by;
  if (h.author !== undefined) out.author = h.author;
  if (h.comment !== undefined) out.comment = h.comment;
  if (h.empty_layer) out.empty_layer = true;
  return out;
}

export function imageConfig(img: ImageToCommit): ImageConfig {
  const history = fillCreated(img.history.map(orderHistory));
  const created = [...history].reverse().find((h) => h.created !== undefined)?.created;
  const cfg: ImageConfig = {
    ...(created !== undefined ? { created } : {}),
    ...(img.author ? { author: img.author } : {}),
    architecture: img.architecture,
    os: img.os,
    ...(img.variant ? { variant: img.variant } : {}),
    config: img.config,
    rootfs: { type: 'layers', diff_ids: img.layers.map((l) => l.diffId) },
    history,
  } as ImageConfig;
  return cfg;
}

export interface Committed {
  config: ImageConfig;
  configDesc: Descriptor;
  manifest: Descriptor;
  manifestBytes: Buffer;
}

/** Store the config and the manifest (blobs only; naming is {@link nameImage}). */
export async function writeImage(store: Store, img: ImageToCommit): Promise<Committed> {
  const config = imageConfig(img);
  const configDesc = await putJsonBlob(store.content, config, MediaType.OciConfig);
  const manifestDoc = {
    schemaVersion: 2,
    mediaType: MediaType.OciManifest,
    config: { mediaType: MediaType.OciConfig, digest: configDesc.digest, size: configDesc.size },
    layers: img.layers.map((l) => ({ mediaType: l.desc.mediaType, digest: l.desc.digest, size: l.desc.size })),
  };
  const manifestBytes = Buffer.from(JSON.stringify(manifestDoc), 'utf8');
  const info = await store.content.putBytes(manifestBytes);
  const manifest: Descriptor = { mediaType: MediaType.OciManifest, digest: info.digest, size: info.size };
  return { config, configDesc, manifest, manifestBytes };
}

/** `-t` names, checked before the build starts: a name with a tag (default `latest`), no digest. */
export function checkTags(tags: readonly string[]): string[] {
  return tags.map((t) => {
    let ref;
    try {
      ref = parseNormalizedReference(t);
    } catch (err) {
      throw new MyBuildError('INVALID_ARGUMENT', `invalid tag ${JSON.stringify(t)}: ${(err as Error).message}`, { hint: 'a tag looks like name[:tag] or registry.example.com/team/app:1.2' });
    }
    if (ref.digest !== undefined) throw new MyBuildError('INVALID_ARGUMENT', `invalid tag ${JSON.stringify(t)}: a tag cannot name a digest`);
    return formatReference(withDefaultTag(ref));
  });
}

/** Tag the manifest with each name, or record it untagged (docker's dangling image). */
export async function nameImage(store: Store, manifest: Descriptor, tags: readonly string[]): Promise<void> {
  if (tags.length === 0) await store.images.add(manifest);
  for (const t of tags) await store.images.tag(t, manifest);
}

export type { Digest };
