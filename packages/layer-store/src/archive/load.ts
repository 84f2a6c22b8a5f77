import { open } from 'node:fs/promises';
import { posix } from 'node:path';
import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import {
  type Compression,
  createHash,
  type Descriptor,
  type Digest,
  errnoCode,
  familiarReference,
  type ImageConfig,
  type ImageIndex,
  type ImageManifest,
  isIndexMediaType,
  layerMediaTypeFor,
  MediaType,
  MyBuildError,
  parseDigest,
  parseReference,
  REF_NAME_ANNOTATION,
  sniffCompression,
  withDefaultTag,
} from '@mybuild/oci';
import type { BlobInfo, ContentStore } from '../api.js';
import type { Store } from '../store.js';
import { withImportLease } from '../gc/gc.js';
import { openPlain } from '../extract/decompress.js';
import { createTarReader } from '../extract/tarReader.js';
import { DEFAULT_MAX_LAYER_BYTES } from '../extract/applyLayer.js';

/** Cap on the small JSON files of an archive (manifest.json, index.json, configs). */
const MAX_JSON = 8 * 1024 * 1024;
const MAX_LINK_HOPS = 16;
/** Non-metadata members up to this size are kept in memory (64 MiB in all at most). */
const SMALL_MEMBER = 64 * 1024;
const MAX_IN_MEMORY = 64 * 1024 * 1024;

export interface LoadedImage {
  /** tag given to the image, familiar form; undefined for an untagged image */
  name: string | undefined;
  /** descriptor of the manifest or index stored in index.json */
  descriptor: Descriptor;
}

export interface LoadOptions {
  /** called after each archive member is stored */
  onProgress?: (event: { member: string; bytes: number }) => void;
  /** Bound on what a docker-archive layer may expand to while its diffID is computed (default {@link DEFAULT_MAX_LAYER_BYTES}). */
  maxLayerBytes?: number;
}

interface Member {
  kind: 'blob' | 'json';
  blob?: BlobInfo;
  json?: Buffer;
}

/** Read a docker-archive (`docker save`) or OCI archive, plain or compressed, from a file. */
export async function loadArchiveFile(store: Store, file: string, opts: LoadOptions = {}): Promise<LoadedImage[]> {
  let fh;
  try {
    fh = await open(file, 'r');
  } catch (err) {
    throw new MyBuildError(errnoCode(err) === 'ENOENT' ? 'NOT_FOUND' : 'INVALID_ARGUMENT', `cannot open archive: ${(err as Error).message.replace(/^[A-Z]+: /, '').split(',')[0]}`, { where: file });
  }
  return loadArchive(store, fh.createReadStream({ highWaterMark: 1024 * 1024 }), file, opts);
}

/**
 * Import an archive: every member is streamed into the content store (verified when its
 * name is a digest), small JSON files are kept in memory; then the images are assembled,
 * checked against the blobs they name, and tagged last — a crash before the tag leaves
 * only unreferenced blobs that `prune` removes.
 */
export async function loadArchive(store: Store, input: Readable, where: string, opts: LoadOptions = {}): Promise<LoadedImage[]> {
  return withImportLease(store.paths, async () => {
    const members = new Map<string, Member>();
    const links = new Map<string, string>();
    let inMemory = 0;
    const plain = await openPlain(input, undefined, where);
    const stream = Readable.from(plain.chunks, { objectMode: false });
    // The layer reader's framing (as docker reads archives): nothing after the end-of-archive
    // marker, no PAX global headers, no bodies for links; sizes that do not parse are refused.
    const { extract, recordsFor } = await createTarReader(where);
    extract.on('entry', (header, entry, next) => {
      void (async () => {
        recordsFor(header);
        const name = memberName(header.name);
        if (name === undefined) {
          entry.resume();
          return;
        }
        if (header.type === 'symlink' || header.type === 'link') {
          const target = header.type === 'symlink' ? posix.join(posix.dirname(name), header.linkname ?? '') : memberName(header.linkname ?? '');
          if (target !== undefined) links.set(name, posix.normalize(target));
          entry.resume();
          return;
        }
        if (header.type !== 'file' && header.type !== 'contiguous-file') {
          entry.resume();
          return;
        }
        const size = header.size ?? 0;
        const base = posix.basename(name);
        const metadata = base.endsWith('.json') || base === 'repositories' || base === 'oci-layout';
        // Metadata and small legacy members (<id>/json, <id>/VERSION, tiny layers) stay in
        // memory, within one bound for all; a layer among them is stored when an image names
        // it. Beyond the bound, members go to the content store (and are read back from there).
        if (!name.startsWith('blobs/') && (metadata || size <= SMALL_MEMBER) && inMemory + size <= MAX_IN_MEMORY) {
          if (size > MAX_JSON) throw archiveError(where, `${name} is ${size} bytes, more than the ${MAX_JSON} allowed for a metadata file`);
          inMemory += size;
          const chunks: Buffer[] = [];
          for await (const c of entry as AsyncIterable<Buffer>) chunks.push(c);
          members.set(name, { kind: 'json', json: Buffer.concat(chunks) });
        } else {
          let expected: Digest | undefined;
          const m = /^blobs\/(sha256|sha512)\/([a-f0-9]+)$/.exec(name);
          if (m) expected = parseDigest(`${m[1]}:${m[2]}`, `${where}: ${name}`);
          let blob: BlobInfo;
          if (expected && (await store.content.has(expected))) {
            // Already stored: read past the member's bytes (the tar cannot be skipped).
            for await (const chunk of entry as AsyncIterable<Buffer>) void chunk;
            blob = await store.content.info(expected);
          } else {
            blob = await store.content.put(Readable.from(entry as AsyncIterable<Buffer>), { ...(expected ? { digest: expected } : {}), size });
          }
          members.set(name, { kind: 'blob', blob });
          opts.onProgress?.({ member: name, bytes: size });
        }
      })().then(
        () => next(),
        (err: unknown) => next(err as Error),
      );
    });
    try {
      await pipeline(stream, extract);
    } catch (err) {
      if (err instanceof MyBuildError) throw err;
      throw archiveError(where, `cannot read archive: ${(err as Error).message}`, 'the file is truncated or not a tar archive; make archives with `mybuild save`, `docker save` or skopeo');
    }
    const resolve = (name: string): Member | undefined => {
      let n = posix.normalize(name.replace(/^\.\//, ''));
      for (let hop = 0; hop < MAX_LINK_HOPS; hop++) {
        const m = members.get(n);
        if (m) return m;
        const next = links.get(n);
        if (next === undefined) return undefined;
        n = next;
      }
      return undefined;
    };
    if (members.has('manifest.json')) return importDockerArchive(store, where, resolve, opts.maxLayerBytes ?? DEFAULT_MAX_LAYER_BYTES);
    if (members.has('index.json')) return importOciArchive(store, where, resolve);
    throw archiveError(where, 'neither manifest.json (docker-archive) nor index.json (OCI archive) found', 'make the archive with `mybuild save`, `docker save` or skopeo');
  });
}

function archiveError(file: string, message: string, hint?: string): MyBuildError {
  return new MyBuildError('INVALID_ARGUMENT', message, { where: file, ...(hint ? { hint } : {}) });
}

function memberName(raw: string): string | undefined {
  let n = posix.normalize(raw.replace(/\\/g, '/'));
  while (n.startsWith('./')) n = n.slice(2);
  n = n.replace(/\/+$/, '');
  if (n === '' || n === '.' || n.startsWith('/') || n === '..' || n.startsWith('../')) return undefined;
  return n;
}

function parseJson<T>(buf: Buffer | undefined, where: string, what: string): T {
  try {
    return JSON.parse((buf ?? Buffer.alloc(0)).toString('utf8')) as T;
  } catch {
    throw new MyBuildError('INVALID_ARGUMENT', `${what} is not valid JSON`, { where });
  }
}

async function memberJson<T>(content: ContentStore, m: Member | undefined, where: string, what: string): Promise<{ value: T; bytes: Buffer }> {
  if (!m) throw new MyBuildError('INVALID_ARGUMENT', `${what} is missing from the archive`, { where });
  const bytes = m.kind === 'json' ? m.json! : await content.readBytes(m.blob!.digest, MAX_JSON);
  return { value: parseJson<T>(bytes, where, what), bytes };
}

interface DockerArchiveEntry {
  Config?: unknown;
  RepoTags?: unknown;
  Layers?: unknown;
}

async function importDockerArchive(store: Store, where: string, resolve: (n: string) => Member | undefined, maxLayerBytes: number): Promise<LoadedImage[]> {
  const { value: entries } = await memberJson<DockerArchiveEntry[]>(store.content, resolve('manifest.json'), where, 'manifest.json');
  if (!Array.isArray(entries) || entries.length === 0) throw archiveError(where, 'manifest.json lists no images');
  const out: LoadedImage[] = [];
  // Once per blob: manifest.json may name one layer any number of times.
  const layerInfo = new Map<Digest, Promise<{ compression: Compression; diffId: Digest }>>();
  const inspect = (digest: Digest): Promise<{ compression: Compression; diffId: Digest }> => {
    let p = layerInfo.get(digest);
    if (!p) {
      p = (async () => {
        const compression = await blobCompression(store.content, digest);
        const diffId = compression === 'none' ? digest : await uncompressedDigest(store.content, digest, compression, maxLayerBytes);
        return { compression, diffId };
      })();
      layerInfo.set(digest, p);
    }
    return p;
  };
  for (const [i, e] of entries.entries()) {
    const at = `${where}: manifest.json[${i}]`;
    if (typeof e !== 'object' || e === null || typeof e.Config !== 'string' || !Array.isArray(e.Layers) || !e.Layers.every((l) => typeof l === 'string')) {
      throw new MyBuildError('INVALID_ARGUMENT', 'entry needs a Config string and a Layers list', { where: at });
    }
    const tags = Array.isArray(e.RepoTags) ? e.RepoTags.filter((t): t is string => typeof t === 'string') : [];
    const { value: config, bytes: configBytes } = await memberJson<ImageConfig>(store.content, resolve(e.Config), at, `config ${e.Config}`);
    const diffIds = config?.rootfs?.diff_ids;
    if (!Array.isArray(diffIds) || diffIds.length !== e.Layers.length) {
      throw new MyBuildError('INVALID_ARGUMENT', `config lists ${Array.isArray(diffIds) ? diffIds.length : 0} diff_ids but the entry has ${e.Layers.length} layers`, { where: at });
    }
    const configInfo = await store.content.putBytes(configBytes);
    const layers: Descriptor[] = [];
    for (const [j, path] of (e.Layers as string[]).entries()) {
      const m = resolve(path);
      if (!m) throw new MyBuildError('INVALID_ARGUMENT', `layer ${path} is missing from the archive`, { where: at });
      const blob = m.kind === 'blob' ? m.blob! : await store.content.putBytes(m.json!);
      const { compression, diffId } = await inspect(blob.digest);
      const expected = parseDigest(String(diffIds[j]), `${at}: rootfs.diff_ids[${j}]`);
      if (diffId !== expected) {
        throw new MyBuildError('DIGEST_MISMATCH', `layer ${path} has diff ID ${diffId}, config says ${expected}`, { where: at });
      }
      layers.push({ mediaType: layerMediaTypeFor(compression, false), digest: blob.digest, size: blob.size });
    }
    // OCI media types (the config bytes, hence the image ID, and the layer digests are
    // unchanged): the store is an OCI layout that skopeo and umoci read as such.
    const manifest: ImageManifest = {
      schemaVersion: 2,
      mediaType: MediaType.OciManifest,
      config: { mediaType: MediaType.OciConfig, digest: configInfo.digest, size: configInfo.size },
      layers,
    };
    const minfo = await store.content.putBytes(Buffer.from(JSON.stringify(manifest)));
    const descriptor: Descriptor = { mediaType: MediaType.OciManifest, digest: minfo.digest, size: minfo.size };
    if (tags.length === 0) {
      await store.images.add(descriptor);
      out.push({ name: undefined, descriptor });
    }
    for (const t of tags) {
      const name = familiarReference(withDefaultTag(parseReference(t)));
      await store.images.tag(name, descriptor);
      out.push({ name, descriptor });
    }
  }
  return out;
}

async function importOciArchive(store: Store, where: string, resolve: (n: string) => Member | undefined): Promise<LoadedImage[]> {
  const { value: index } = await memberJson<ImageIndex>(store.content, resolve('index.json'), where, 'index.json');
  if (!index || !Array.isArray(index.manifests)) throw archiveError(where, 'index.json has no manifests list');
  const out: LoadedImage[] = [];
  const checked = new Set<string>();
  for (const [i, raw] of index.manifests.entries()) {
    const at = `${where}: index.json manifests[${i}]`;
    const descriptor = checkDescriptor(raw, at);
    await checkReachable(store.content, descriptor, at, 0, checked);
    const annotations = descriptor.annotations ?? {};
    const full = annotations['io.containerd.image.name'];
    const refName = annotations[REF_NAME_ANNOTATION];
    let name: string | undefined;
    const candidate = full ?? (refName && /[:/]/.test(refName) ? refName : undefined);
    if (candidate) name = familiarReference(withDefaultTag(parseReference(candidate)));
    const stored: Descriptor = { mediaType: descriptor.mediaType, digest: descriptor.digest, size: descriptor.size };
    if (descriptor.platform) stored.platform = descriptor.platform;
    if (name) await store.images.tag(name, stored);
    else await store.images.add(stored);
    out.push({ name, descriptor: stored });
  }
  return out;
}

function checkDescriptor(raw: unknown, where: string): Descriptor {
  const d = raw as Partial<Descriptor> | null;
  if (!d || typeof d !== 'object' || typeof d.mediaType !== 'string' || typeof d.size !== 'number' || !Number.isSafeInteger(d.size) || d.size < 0) {
    throw new MyBuildError('INVALID_ARGUMENT', 'bad descriptor (needs mediaType, digest, size)', { where });
  }
  return { ...d, digest: parseDigest(String(d.digest), where) } as Descriptor;
}

/**
 * Every blob a manifest or index names must be in the store (foreign layers with urls excepted).
 * A document is read and walked once (`checked`): indexes naming the same children over and over
 * would otherwise cost fan-out to the power of the depth.
 */
async function checkReachable(content: ContentStore, d: Descriptor, where: string, depth: number, checked: Set<string>): Promise<void> {
  if (depth > 4) throw new MyBuildError('INVALID_ARGUMENT', 'indexes nested too deeply', { where });
  const info = await content.info(d.digest).catch(() => undefined);
  if (!info) {
    if (d.urls?.length) return;
    throw new MyBuildError('INVALID_ARGUMENT', `blob ${d.digest} is missing from the archive`, { where });
  }
  if (info.size !== d.size) throw new MyBuildError('INVALID_ARGUMENT', `blob ${d.digest} has ${info.size} bytes, descriptor says ${d.size}`, { where });
  const key = `${d.mediaType} ${d.digest}`; // the media type decides how the blob is walked
  if (checked.has(key)) return;
  checked.add(key);
  if (isIndexMediaType(d.mediaType)) {
    const idx = parseJson<ImageIndex>(await content.readBytes(d.digest, MAX_JSON), where, `index ${d.digest}`);
    if (!Array.isArray(idx.manifests)) throw new MyBuildError('INVALID_ARGUMENT', `index ${d.digest} has no manifests`, { where });
    for (const [i, m] of idx.manifests.entries()) await checkReachable(content, checkDescriptor(m, `${where} → manifests[${i}]`), `${where} → manifests[${i}]`, depth + 1, checked);
  } else if (d.mediaType === MediaType.OciManifest || d.mediaType === MediaType.DockerManifest) {
    const m = parseJson<ImageManifest>(await content.readBytes(d.digest, MAX_JSON), where, `manifest ${d.digest}`);
    if (!m.config || !Array.isArray(m.layers)) throw new MyBuildError('INVALID_ARGUMENT', `manifest ${d.digest} needs config and layers`, { where });
    await checkReachable(content, checkDescriptor(m.config, `${where} → config`), `${where} → config`, depth + 1, checked);
    for (const [i, l] of m.layers.entries()) await checkReachable(content, checkDescriptor(l, `${where} → layers[${i}]`), `${where} → layers[${i}]`, depth + 1, checked);
  }
}

async function blobCompression(content: ContentStore, digest: Digest) {
  const s = await content.read(digest);
  let head = Buffer.alloc(0);
  for await (const c of s as AsyncIterable<Buffer>) {
    head = Buffer.concat([head, c]);
    if (head.length >= 4) break;
  }
  s.destroy();
  return sniffCompression(head);
}

async function uncompressedDigest(content: ContentStore, digest: Digest, compression: 'gzip' | 'zstd', maxBytes: number): Promise<Digest> {
  const h = createHash('sha256');
  const plain = await openPlain(await content.read(digest), compression, digest, { maxBytes });
  for await (const c of plain.chunks) h.update(c);
  return `sha256:${h.digest('hex')}` as Digest;
}
