import { createWriteStream } from 'node:fs';
import { rename, unlink } from 'node:fs/promises';
import { Readable, type Writable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import type * as tar from 'tar-stream';
import { tarStream } from '../lazy.js';
import {
  type Descriptor,
  type Digest,
  digestHex,
  formatReference,
  type ImageIndex,
  type ImageManifest,
  isIndexMediaType,
  isManifestMediaType,
  layerCompression,
  MediaType,
  MyBuildError,
  parseReference,
  randomBytes,
  REF_NAME_ANNOTATION,
  withDefaultTag,
} from '@mybuild/oci';
import type { ContentStore, ResolvedImage } from '../api.js';
import type { Store } from '../store.js';
import { openPlain } from '../extract/decompress.js';

export type ArchiveFormat = 'docker' | 'oci';

export interface SaveOptions {
  format?: ArchiveFormat;
  /** called as each blob is written */
  onProgress?: (event: { digest: Digest; bytes: number }) => void;
}

const MAX_JSON = 8 * 1024 * 1024;
const EPOCH = new Date(0);

interface Saved {
  /** the name the user asked for (familiar), undefined when saved by ID */
  name: string | undefined;
  image: ResolvedImage;
}

/** Save images to `file` atomically (temp file + rename); `-` writes to stdout. */
export async function saveArchiveFile(store: Store, refs: string[], file: string, opts: SaveOptions = {}): Promise<void> {
  if (file === '-') {
    await saveArchive(store, refs, process.stdout, opts);
    return;
  }
  const tmp = `${file}.${randomBytes(6).toString('hex')}.tmp`;
  try {
    await saveArchive(store, refs, createWriteStream(tmp, { mode: 0o644 }), opts);
    await rename(tmp, file);
  } catch (err) {
    await unlink(tmp).catch(() => {});
    throw err;
  }
}

/**
 * Write a docker-archive (loadable by `docker load`, `podman load`, skopeo's
 * docker-archive:, layers uncompressed as docker writes them) or an OCI image layout
 * archive (blobs as stored) to `out`.
 */
export async function saveArchive(store: Store, refs: string[], out: Writable, opts: SaveOptions = {}): Promise<void> {
  if (refs.length === 0) throw new MyBuildError('INVALID_ARGUMENT', 'no image to save', { hint: 'name at least one image' });
  const saved: Saved[] = [];
  for (const ref of refs) {
    const image = await store.images.resolve(ref);
    const isName = !/^(sha256:)?[a-f0-9]{4,64}$/.test(ref);
    saved.push({ name: isName ? nameOf(ref) : undefined, image });
  }
  const pack = (await tarStream()).pack();
  const done = pipeline(pack as unknown as Readable, out);
  try {
    if ((opts.format ?? 'docker') === 'docker') await writeDocker(store.content, saved, pack, opts);
    else await writeOci(store.content, saved, pack, opts);
    pack.finalize();
  } catch (err) {
    pack.destroy(err as Error);
    await done.catch(() => {});
    throw err;
  }
  await done;
}

function nameOf(ref: string): string {
  return formatReference(withDefaultTag(parseReference(ref)));
}

function familiar(ref: string): string {
  const r = withDefaultTag(parseReference(ref));
  const repo = r.domain === 'docker.io' ? (r.path.startsWith('library/') ? r.path.slice(8) : r.path) : `${r.domain}/${r.path}`;
  return `${repo}:${r.tag ?? 'latest'}`;
}

function addBytes(pack: tar.Pack, name: string, data: Buffer): Promise<void> {
  return new Promise((resolve, reject) => {
    pack.entry({ name, size: data.length, mode: 0o644, mtime: EPOCH, uid: 0, gid: 0 }, data, (err) => (err ? reject(err) : resolve()));
  });
}

async function addStream(pack: tar.Pack, name: string, size: number, data: Readable): Promise<void> {
  let sink: Writable | undefined;
  const entryDone = new Promise<void>((resolve, reject) => {
    sink = pack.entry({ name, size, mode: 0o644, mtime: EPOCH, uid: 0, gid: 0 }, (err) => (err ? reject(err) : resolve())) as unknown as Writable;
  });
  await pipeline(data, sink!);
  await entryDone;
}

async function writeOci(content: ContentStore, saved: Saved[], pack: tar.Pack, opts: SaveOptions): Promise<void> {
  await addBytes(pack, 'oci-layout', Buffer.from('{"imageLayoutVersion":"1.0.0"}'));
  const written = new Set<string>();
  const manifests: Descriptor[] = [];
  for (const s of saved) {
    const target = s.image.index?.descriptor ?? s.image.manifestDescriptor;
    await writeTree(content, target, pack, written, opts, 0);
    const d: Descriptor = { mediaType: target.mediaType, digest: target.digest, size: target.size };
    if (s.name) d.annotations = { 'io.containerd.image.name': s.name, [REF_NAME_ANNOTATION]: familiar(s.name) };
    manifests.push(d);
  }
  const index: ImageIndex = { schemaVersion: 2, mediaType: MediaType.OciIndex, manifests };
  await addBytes(pack, 'index.json', Buffer.from(JSON.stringify(index)));
}

/** Write a manifest or index and every blob it reaches that the store has (an index may name platforms never pulled). */
async function writeTree(content: ContentStore, d: Descriptor, pack: tar.Pack, written: Set<string>, opts: SaveOptions, depth: number): Promise<void> {
  if (depth > 4) throw new MyBuildError('INVALID_ARGUMENT', 'indexes nested too deeply', { where: d.digest });
  if (isIndexMediaType(d.mediaType)) {
    const idx = JSON.parse((await content.readBytes(d.digest, MAX_JSON)).toString('utf8')) as ImageIndex;
    for (const m of idx.manifests ?? []) {
      if (await content.has(m.digest)) await writeTree(content, m, pack, written, opts, depth + 1);
    }
  } else if (isManifestMediaType(d.mediaType)) {
    const m = JSON.parse((await content.readBytes(d.digest, MAX_JSON)).toString('utf8')) as ImageManifest;
    await writeBlob(content, m.config, pack, written, opts);
    for (const l of m.layers) {
      if (l.urls?.length && !(await content.has(l.digest))) continue;
      await writeBlob(content, l, pack, written, opts);
    }
  }
  await writeBlob(content, d, pack, written, opts);
}

async function writeBlob(content: ContentStore, d: Descriptor, pack: tar.Pack, written: Set<string>, opts: SaveOptions): Promise<void> {
  const name = `blobs/${d.digest.replace(':', '/')}`;
  if (written.has(name)) return;
  written.add(name);
  const info = await content.info(d.digest);
  await addStream(pack, name, info.size, await content.read(d.digest, { verify: true }));
  opts.onProgress?.({ digest: d.digest, bytes: info.size });
}

async function writeDocker(content: ContentStore, saved: Saved[], pack: tar.Pack, opts: SaveOptions): Promise<void> {
  const written = new Set<string>();
  const entries: { Config: string; RepoTags: string[] | null; Layers: string[] }[] = [];
  const byConfig = new Map<string, { Config: string; RepoTags: string[] | null; Layers: string[] }>();
  for (const s of saved) {
    const { manifest, config } = s.image;
    const configName = `${digestHex(manifest.config.digest)}.json`;
    let entry = byConfig.get(configName);
    if (!entry) {
      if (!written.has(configName)) {
        written.add(configName);
        await addBytes(pack, configName, await content.readBytes(manifest.config.digest, MAX_JSON));
      }
      const layers: string[] = [];
      for (const [i, l] of manifest.layers.entries()) {
        const diffId = config.rootfs.diff_ids[i];
        if (!diffId) throw new MyBuildError('INVALID_ARGUMENT', `config has fewer diff_ids than the manifest has layers`, { where: s.image.configDescriptor.digest });
        const name = `${digestHex(diffId)}.tar`;
        layers.push(name);
        if (written.has(name)) continue;
        written.add(name);
        await writeUncompressedLayer(content, l, name, pack);
        opts.onProgress?.({ digest: l.digest, bytes: l.size });
      }
      entry = { Config: configName, RepoTags: null, Layers: layers };
      byConfig.set(configName, entry);
      entries.push(entry);
    }
    if (s.name) (entry.RepoTags ??= []).push(familiar(s.name));
  }
  await addBytes(pack, 'manifest.json', Buffer.from(JSON.stringify(entries)));
}

/**
 * docker-archive layers are plain tars named by diff ID. A compressed layer is
 * decompressed twice: once to learn its size for the tar header, once to write it.
 */
async function writeUncompressedLayer(content: ContentStore, l: Descriptor, name: string, pack: tar.Pack): Promise<void> {
  const compression = layerCompression(l.mediaType) ?? 'none';
  if (compression === 'none') {
    await addStream(pack, name, l.size, await content.read(l.digest, { verify: true }));
    return;
  }
  let size = 0;
  for await (const c of (await openPlain(await content.read(l.digest, { verify: true }), compression, l.digest)).chunks) size += c.length;
  const plain = Readable.from((await openPlain(await content.read(l.digest), compression, l.digest)).chunks, { objectMode: false });
  await addStream(pack, name, size, plain);
}
