/**
 * Images a build refers to (FROM, `COPY --from=image`, `RUN --mount=from=image`): taken from
 * the store, else (or with `--pull`) pulled through the registry client into the store and
 * tagged there, as `mybuild pull` would.
 */
import { contentBlobSink, type ResolvedImage, type Store } from '@mybuild/layer-store';
import { type Descriptor, type ImageConfig, MyBuildError, familiarName, parseNormalizedReference } from '@mybuild/oci';
import type { RegistryClient } from '@mybuild/registry-client';
import { formatPlatform, type PlatformSpec } from '../frontend/platform.js';
import type { LayerRef } from './types.js';

export interface BaseImage {
  ref: string;
  platform: PlatformSpec;
  manifest: Descriptor;
  config: ImageConfig;
  layers: LayerRef[];
  /** The registry was asked (pulled, or checked with --pull). */
  pulled: boolean;
}

export interface ResolveImageOptions {
  pull: boolean;
  registry: RegistryClient | (() => Promise<RegistryClient>) | undefined;
  /** Status lines while pulling. */
  onStatus?: (text: string) => void;
  /**
   * A pulled image is named in the store (its tag written to index.json) while the build goes
   * on: the promise of that goes here, and the caller waits for it before it ends.
   */
  naming?: (done: Promise<void>) => void;
}

/** Find (or pull) `ref` for `platform`. */
export async function resolveImage(store: Store, ref: string, platform: PlatformSpec, opts: ResolveImageOptions): Promise<BaseImage> {
  const plat = formatPlatform(platform);
  let img: ResolvedImage | undefined;
  if (!opts.pull) img = await fromStore(store, ref, plat);
  let pulled = false;
  if (!img) {
    if (!opts.registry) {
      throw new MyBuildError('NOT_FOUND', `image ${JSON.stringify(ref)} (${plat}) is not in the store`, {
        hint: `load it (mybuild load) or pull it (mybuild pull ${ref}) first`,
      });
    }
    const client = typeof opts.registry === 'function' ? await opts.registry() : opts.registry;
    img = await pullImage(store, client, ref, platform, opts.onStatus, opts.naming);
    pulled = true;
  }
  const diffIds = img.config.rootfs?.diff_ids ?? [];
  if (diffIds.length !== img.manifest.layers.length) {
    throw new MyBuildError('INVALID_ARGUMENT', `image ${ref} has ${img.manifest.layers.length} layers but ${diffIds.length} diff_ids`, { where: img.manifestDescriptor.digest });
  }
  return {
    ref,
    platform,
    manifest: img.manifestDescriptor,
    config: img.config,
    layers: img.manifest.layers.map((desc, i) => ({ desc, diffId: diffIds[i]! })),
    pulled,
  };
}

async function fromStore(store: Store, ref: string, platform: string): Promise<ResolvedImage | undefined> {
  try {
    return await store.images.resolve(ref, { platform });
  } catch (err) {
    if (err instanceof MyBuildError && err.code === 'NOT_FOUND') return undefined;
    throw err;
  }
}

async function pullImage(
  store: Store,
  client: RegistryClient,
  ref: string,
  platform: PlatformSpec,
  onStatus?: (text: string) => void,
  naming?: (done: Promise<void>) => void,
): Promise<ResolvedImage> {
  const parsed = parseNormalizedReference(ref);
  const sink = contentBlobSink(store.content);
  let layers = 0;
  const result = await client.pull(parsed, sink, {
    platform: formatPlatform(platform),
    onProgress: (e) => {
      if (e.status === 'done' && !/config/.test(e.mediaType)) onStatus?.(`${e.digest.slice(0, 19)} pulled ${e.total} bytes (${++layers})`);
    },
  });
  const entry = result.index?.manifests.find((d) => d.digest === result.manifestDescriptor.digest);
  const chosen: Descriptor = { ...result.manifestDescriptor, ...(entry?.platform ? { platform: entry.platform } : {}) };
  const named = parsed.digest !== undefined ? store.images.add(chosen) : store.images.tag(`${familiarName(parsed)}:${parsed.tag ?? 'latest'}`, chosen);
  if (naming) naming(named);
  else await named;
  return store.images.load(chosen, { platform: formatPlatform(platform) });
}
