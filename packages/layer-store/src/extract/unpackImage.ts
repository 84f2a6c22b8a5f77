import { existsSync, mkdirSync, readdirSync } from 'node:fs';
import { pipeline } from 'node:stream';
import { type Descriptor, type Digest, MyBuildError, VerifyingStream, isLayerMediaType, layerCompression } from '@mybuild/oci';
import type { ContentStore } from '../api.js';
import { type ApplyLayerResult, applyLayer } from './applyLayer.js';

export interface UnpackImageOptions {
  /** The config's rootfs.diff_ids: each layer's uncompressed digest is checked against them. */
  diffIds?: Digest[];
  /** Bound on each layer's uncompressed size. */
  maxBytes?: number;
  /** lchown to the tar's owners (default: when running as root). */
  sameOwner?: boolean;
  /** Called after each layer. */
  onLayer?: (index: number, desc: Descriptor, result: ApplyLayerResult) => void;
}

/**
 * Flatten an image's layers into `targetDir` (absent or empty), bottom layer first, through the
 * same safe extraction as the snapshotter, with whiteouts applied as deletions — the rootfs
 * `umoci raw unpack` produces. Each blob is verified against its descriptor (size, digest)
 * while it streams. On error the directory's content is undefined: remove it.
 */
export async function unpackImage(layers: Descriptor[], content: ContentStore, targetDir: string, opts: UnpackImageOptions = {}): Promise<void> {
  if (opts.diffIds !== undefined && opts.diffIds.length !== layers.length) {
    throw new MyBuildError('INVALID_ARGUMENT', `image has ${layers.length} layers but ${opts.diffIds.length} diff_ids`);
  }
  if (existsSync(targetDir) && readdirSync(targetDir).length > 0) {
    throw new MyBuildError('FAILED_PRECONDITION', `${targetDir} is not empty`, { hint: 'unpack into a new or empty directory' });
  }
  mkdirSync(targetDir, { recursive: true, mode: 0o755 });
  for (const [i, desc] of layers.entries()) {
    if (!isLayerMediaType(desc.mediaType)) {
      throw new MyBuildError('UNSUPPORTED', `layer ${i} has media type ${desc.mediaType}, not a layer tar`, { where: desc.digest });
    }
    const what = `layer ${desc.digest}`;
    const raw = await content.read(desc.digest, { verify: false });
    const verified = new VerifyingStream({ digest: desc.digest, size: desc.size, what });
    pipeline(raw, verified, () => {});
    const result = await applyLayer(verified, targetDir, {
      mode: 'flatten',
      compression: layerCompression(desc.mediaType),
      what,
      ...(opts.diffIds ? { diffId: opts.diffIds[i]! } : {}),
      ...(opts.maxBytes !== undefined ? { maxBytes: opts.maxBytes } : {}),
      ...(opts.sameOwner !== undefined ? { sameOwner: opts.sameOwner } : {}),
    });
    opts.onLayer?.(i, desc, result);
  }
}
