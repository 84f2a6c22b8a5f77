/**
 * Build outputs besides the store (`--output`, `--push`). Build layers are kept uncompressed in
 * the store (as BuildKit keeps them in its cache and docker in its image store: a build, a
 * cached rebuild and a rebuild after a change never pay for compression); an export compresses
 * them — gzip by default, zstd on request — once: the compressed blob goes into the store and
 * is remembered by diffID, so the next export or push of that layer reuses it.
 *
 *  - `type=oci,dest=DIR`: an OCI image layout directory (skopeo `oci:DIR`)
 *  - `type=docker,dest=FILE`: a docker-archive (`docker load`, skopeo `docker-archive:`)
 *  - `type=registry` (`--push`): the image pushed to each name
 *  - `type=local,dest=DIR`: the image's root filesystem, unpacked
 */
import { copyFileSync, createWriteStream, existsSync, mkdirSync, readdirSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { join, dirname } from 'node:path';
import { pipeline } from 'node:stream/promises';
import {
  type Compression,
  type Descriptor,
  type Digest,
  formatReference,
  type ImageConfig,
  layerCompression,
  layerMediaTypeFor,
  MediaType,
  MyBuildError,
  parseNormalizedReference,
  randomBytes,
  REF_NAME_ANNOTATION,
  withDefaultTag,
} from '@mybuild/oci';
import { type ResolvedImage, type Store, contentBlobSource, layerCompressor, saveArchiveFile, unpackImage } from '@mybuild/layer-store';
import type { RegistryClient } from '@mybuild/registry-client';
import { BuildCache } from './cache.js';

export type OutputType = 'oci' | 'docker' | 'registry' | 'local' | 'image';

export interface OutputSpec {
  type: OutputType;
  dest?: string;
  /** names (registry, oci, docker); default: the build's -t names */
  names?: string[];
  compression?: Compression;
  /** compression level */
  level?: number;
}

/**
 * Parse `--output` as docker buildx does: `type=oci,dest=DIR`, `type=docker,dest=FILE`,
 * `type=registry`, `type=local,dest=DIR`, `type=image`; a bare path means `type=local,dest=PATH`.
 */
export function parseOutput(spec: string): OutputSpec {
  if (!spec.includes('=')) return { type: 'local', dest: spec };
  const out: OutputSpec = { type: 'image' };
  let typeSeen = false;
  for (const field of spec.split(',')) {
    const eq = field.indexOf('=');
    if (eq < 0) throw bad(spec, `${JSON.stringify(field)} is not key=value`);
    const key = field.slice(0, eq).trim().toLowerCase();
    const value = field.slice(eq + 1);
    switch (key) {
      case 'type':
        if (!['oci', 'docker', 'registry', 'local', 'image'].includes(value)) throw bad(spec, `unsupported type ${JSON.stringify(value)} (oci, docker, registry, local or image)`);
        out.type = value as OutputType;
        typeSeen = true;
        break;
      case 'dest':
        out.dest = value;
        break;
      case 'name':
        out.names = value.split(/[,\s]+/).filter((n) => n !== '');
        break;
      case 'push':
        if (value === 'true') out.type = 'registry';
        break;
      case 'compression':
        if (value !== 'gzip' && value !== 'zstd' && value !== 'uncompressed') throw bad(spec, `unsupported compression ${JSON.stringify(value)} (gzip, zstd or uncompressed)`);
        out.compression = value === 'uncompressed' ? 'none' : value;
        break;
      case 'compression-level': {
        const n = Number(value);
        if (!Number.isInteger(n)) throw bad(spec, `compression-level ${JSON.stringify(value)} is not a number`);
        out.level = n;
        break;
      }
      case 'oci-mediatypes':
      case 'force-compression':
        break;
      default:
        throw bad(spec, `unknown key ${JSON.stringify(key)}`);
    }
  }
  if (!typeSeen) throw bad(spec, 'type= is missing');
  if ((out.type === 'oci' || out.type === 'docker' || out.type === 'local') && !out.dest) throw bad(spec, `type=${out.type} needs dest=`);
  return out;
}

function bad(spec: string, why: string): MyBuildError {
  return new MyBuildError('INVALID_ARGUMENT', `--output ${JSON.stringify(spec)}: ${why}`, {
    hint: 'e.g. type=oci,dest=DIR | type=docker,dest=FILE.tar | type=registry | type=local,dest=DIR',
  });
}

export interface ExportInput {
  store: Store;
  /** the built image, as stored */
  manifest: Descriptor;
  /** -t names */
  tags: string[];
  registry?: RegistryClient | (() => Promise<RegistryClient>);
  onStatus?: (text: string) => void;
}

export interface ExportResult {
  /** for registry outputs: the pushed manifest's descriptor per name */
  pushed: { name: string; digest: Digest; size: number }[];
}

export async function exportImage(input: ExportInput, out: OutputSpec): Promise<ExportResult> {
  const { store } = input;
  const result: ExportResult = { pushed: [] };
  return store.withImportLease(async () => {
    const img = await store.images.resolve(input.manifest.digest);
    const names = out.names ?? input.tags;
    switch (out.type) {
      case 'image':
        break;
      case 'docker': {
        // a docker-archive holds uncompressed layers, as `docker save` writes them
        const refs = names.length > 0 ? names : [img.id];
        mkdirSync(dirname(out.dest!), { recursive: true });
        await saveArchiveFile(store, refs, out.dest!, { format: 'docker' });
        input.onStatus?.(`exporting to docker-archive ${out.dest} done`);
        break;
      }
      case 'oci': {
        const exp = await compressedManifest(store, img.manifest.layers, img.configDescriptor, img.config, out);
        await writeOciLayout(store, out.dest!, exp, names[0]);
        input.onStatus?.(`exporting to oci layout ${out.dest} done`);
        break;
      }
      case 'local': {
        const dest = out.dest!;
        if (existsSync(dest) && readdirSync(dest).length > 0) throw new MyBuildError('FAILED_PRECONDITION', `--output type=local: ${dest} is not empty`, { hint: 'give an empty or new directory' });
        mkdirSync(dest, { recursive: true });
        await unpackImage(img.manifest.layers, store.content, dest, { diffIds: img.config.rootfs.diff_ids });
        input.onStatus?.(`copying files to ${dest} done`);
        break;
      }
      case 'registry': {
        if (names.length === 0) throw new MyBuildError('INVALID_ARGUMENT', 'nothing to push to: give the image a name with -t (or name= in --output)');
        if (!input.registry) throw new MyBuildError('FAILED_PRECONDITION', 'pushing needs a registry client');
        const client = typeof input.registry === 'function' ? await input.registry() : input.registry;
        const exp = await compressedManifest(store, img.manifest.layers, img.configDescriptor, img.config, out);
        for (const name of names) {
          const ref = withDefaultTag(parseNormalizedReference(name));
          input.onStatus?.(`pushing ${formatReference(ref)}`);
          const desc = await client.push(contentBlobSource(store.content, { verify: false }), exp.bytes, ref, { mediaType: MediaType.OciManifest });
          input.onStatus?.(`pushing ${formatReference(ref)} ${desc.digest} done`);
          result.pushed.push({ name: formatReference(ref), digest: desc.digest, size: desc.size });
        }
        break;
      }
    }
    return result;
  });
}

/**
 * What `mybuild push` sends for a stored image, as `docker push` does: an image whose layers
 * are all compressed goes as stored (same digests); one with uncompressed layers (a build
 * result, a docker-archive load) gets a manifest with those layers compressed once (the
 * compressed blobs are remembered by diff ID). Returns undefined when nothing needs compressing.
 */
export async function pushableManifest(
  store: Store,
  img: ResolvedImage,
  compression: Compression = 'gzip',
): Promise<{ bytes: Buffer; desc: Descriptor } | undefined> {
  if (compression === 'none' || img.manifest.layers.every((l) => layerCompression(l.mediaType) !== 'none')) return undefined;
  return store.withImportLease(async () => {
    const exp = await compressedManifest(store, img.manifest.layers, img.configDescriptor, img.config, { type: 'registry', compression });
    return { bytes: exp.bytes, desc: exp.desc };
  });
}

interface ExportManifest {
  bytes: Buffer;
  desc: Descriptor;
  blobs: Descriptor[];
}

/** The manifest of the image with its uncompressed layers compressed (stored compressed blobs reused). */
async function compressedManifest(store: Store, layers: Descriptor[], configDesc: Descriptor, config: ImageConfig, out: OutputSpec): Promise<ExportManifest> {
  const compression = out.compression ?? 'gzip';
  const cache = new BuildCache(store.paths, store.content);
  const outLayers: Descriptor[] = [];
  for (const [i, layer] of layers.entries()) {
    const have = layerCompression(layer.mediaType);
    if (have !== 'none' || compression === 'none') {
      outLayers.push({ mediaType: layer.mediaType, digest: layer.digest, size: layer.size });
      continue;
    }
    const diffId = config.rootfs.diff_ids[i]!;
    let desc = out.level === undefined ? await cache.getCompressed(diffId, compression) : undefined;
    if (!desc) {
      desc = await compressBlob(store, layer, compression, out.level);
      if (out.level === undefined) await cache.putCompressed(diffId, compression, desc);
    }
    outLayers.push(desc);
  }
  const doc = {
    schemaVersion: 2,
    mediaType: MediaType.OciManifest,
    config: { mediaType: MediaType.OciConfig, digest: configDesc.digest, size: configDesc.size },
    layers: outLayers,
  };
  const bytes = Buffer.from(JSON.stringify(doc), 'utf8');
  const info = await store.content.putBytes(bytes);
  return { bytes, desc: { mediaType: MediaType.OciManifest, digest: info.digest, size: info.size }, blobs: [doc.config as Descriptor, ...outLayers] };
}

/** Compress a stored uncompressed blob into a new stored blob (one pass: read → compress → hash → store). */
async function compressBlob(store: Store, layer: Descriptor, compression: 'gzip' | 'zstd', level?: number): Promise<Descriptor> {
  const input = await store.content.read(layer.digest, { verify: true });
  const compressor = layerCompressor(compression, level);
  const w = await store.content.writer(`export-${layer.digest}-${compression}-${randomBytes(4).toString('hex')}`);
  try {
    await pipeline(input, compressor, w.stream());
    const info = await w.commit();
    return { mediaType: layerMediaTypeFor(compression, false), digest: info.digest, size: info.size };
  } catch (err) {
    await w.abort().catch(() => {});
    throw err;
  }
}

/** Write an OCI image layout at `dest` (blobs copied from the store), atomically replacing its index.json. */
async function writeOciLayout(store: Store, dest: string, exp: ExportManifest, name: string | undefined): Promise<void> {
  const blobsDir = join(dest, 'blobs', 'sha256');
  mkdirSync(blobsDir, { recursive: true });
  writeFileSync(join(dest, 'oci-layout'), '{"imageLayoutVersion":"1.0.0"}');
  for (const d of [...exp.blobs, exp.desc]) {
    const target = join(blobsDir, d.digest.slice('sha256:'.length));
    if (existsSync(target)) continue;
    const tmp = `${target}.${randomBytes(4).toString('hex')}.tmp`;
    try {
      // A deferred blob (an uncompressed layer of a build, kept as its snapshot) is made here.
      if ((await store.content.info(d.digest)).deferredFrom === undefined) copyFileSync(store.content.path(d.digest), tmp);
      else await pipeline(await store.content.read(d.digest), createWriteStream(tmp, { flags: 'wx' }));
    } catch (err) {
      rmSync(tmp, { force: true });
      throw err;
    }
    renameSync(tmp, target);
  }
  const annotations: Record<string, string> = {};
  if (name !== undefined) {
    const ref = withDefaultTag(parseNormalizedReference(name));
    annotations['io.containerd.image.name'] = formatReference(ref);
    annotations[REF_NAME_ANNOTATION] = ref.tag ?? 'latest';
  }
  const index = {
    schemaVersion: 2,
    mediaType: MediaType.OciIndex,
    manifests: [{ ...exp.desc, ...(Object.keys(annotations).length > 0 ? { annotations } : {}) }],
  };
  const tmp = join(dest, `index.json.${randomBytes(4).toString('hex')}.tmp`);
  writeFileSync(tmp, JSON.stringify(index));
  renameSync(tmp, join(dest, 'index.json'));
}
