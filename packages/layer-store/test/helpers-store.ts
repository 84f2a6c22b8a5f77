import { createHash } from 'node:crypto';
import { mkdir, mkdtemp, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Writable, type Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { type Descriptor, type Digest, type ImageConfig, type ImageManifest, type Platform, MediaType, MyBuildError } from '@mybuild/oci';
import { openStore, putJsonBlob, type SnapshotKind, type SnapshotLister, type Store } from '@mybuild/layer-store';

/** A fresh store in a temp dir; `cleanup` removes it. */
export async function tempStore(): Promise<{ store: Store; root: string; cleanup: () => Promise<void> }> {
  const root = await mkdtemp(join(tmpdir(), 'mybuild-store-'));
  const store = await openStore(root);
  return { store, root, cleanup: () => rm(root, { recursive: true, force: true }) };
}

export function sha256(data: Uint8Array | string): Digest {
  return `sha256:${createHash('sha256').update(data).digest('hex')}` as Digest;
}

/** Deterministic pseudo-random bytes (fast, no crypto), so tests can rebuild the same content. */
export function pattern(size: number, seed = 1): Buffer {
  const buf = Buffer.allocUnsafe(size);
  let x = seed >>> 0 || 1;
  for (let i = 0; i < size; i += 4) {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    x >>>= 0;
    if (i + 4 <= size) buf.writeUInt32LE(x, i);
    else for (let j = i; j < size; j++) buf[j] = (x >>> ((j - i) * 8)) & 0xff;
  }
  return buf;
}

/** Names under blobs/sha256 (committed blobs, plus any junk a test put there). */
export async function blobNames(root: string): Promise<string[]> {
  return (await readdir(join(root, 'blobs', 'sha256'))).sort();
}

/** Read a stream to its end; rejects with the stream's error. */
export async function drain(stream: Readable): Promise<Buffer> {
  const chunks: Buffer[] = [];
  await pipeline(
    stream,
    new Writable({
      write(chunk: Buffer, _enc, cb) {
        chunks.push(chunk);
        cb();
      },
    }),
  );
  return Buffer.concat(chunks);
}

/** The error a promise rejects with (fails the test when it resolves). */
export async function rejection(p: Promise<unknown>): Promise<MyBuildError> {
  try {
    await p;
  } catch (err) {
    if (err instanceof MyBuildError) return err;
    throw new Error(`expected a MyBuildError, got ${String(err)}`, { cause: err });
  }
  throw new Error('expected a rejection, the promise resolved');
}

export interface TestImage {
  manifest: Descriptor;
  config: Descriptor;
  layers: Descriptor[];
  diffIds: Digest[];
}

/**
 * Store an image whose layers are the given bytes (uncompressed, so diffID = digest), with
 * a config and a manifest; `docker` uses Docker v2 media types. `label` makes configs differ.
 */
export async function makeImage(
  store: Store,
  opts: { layers: Buffer[]; platform?: Platform; docker?: boolean; label?: string } = { layers: [] },
): Promise<TestImage> {
  const docker = opts.docker ?? false;
  const layers: Descriptor[] = [];
  for (const data of opts.layers) {
    const info = await store.content.putBytes(data);
    layers.push({ mediaType: docker ? MediaType.DockerLayer : MediaType.OciLayer, digest: info.digest, size: info.size });
  }
  const diffIds = layers.map((l) => l.digest);
  const platform = opts.platform ?? { os: 'linux', architecture: 'amd64' };
  const config: ImageConfig = {
    architecture: platform.architecture,
    os: platform.os,
    ...(platform.variant ? { variant: platform.variant } : {}),
    config: { Env: ['PATH=/bin'], Labels: { test: opts.label ?? '' } },
    rootfs: { type: 'layers', diff_ids: diffIds },
  };
  const configDesc = await putJsonBlob(store.content, config, docker ? MediaType.DockerConfig : MediaType.OciConfig);
  const manifest: ImageManifest = {
    schemaVersion: 2,
    mediaType: docker ? MediaType.DockerManifest : MediaType.OciManifest,
    config: configDesc,
    layers,
  };
  const manifestDesc = await putJsonBlob(store.content, manifest, manifest.mediaType);
  return { manifest: manifestDesc, config: configDesc, layers, diffIds };
}

/** Store an index over `manifests` (each with its platform). */
export async function makeIndex(store: Store, manifests: Descriptor[], docker = false): Promise<Descriptor> {
  const mediaType = docker ? MediaType.DockerManifestList : MediaType.OciIndex;
  return putJsonBlob(store.content, { schemaVersion: 2, mediaType, manifests }, mediaType);
}

/** sha256 of a file, for checking that a blob's name is its content's digest. */
export async function fileDigest(path: string): Promise<Digest> {
  return sha256(await readFile(path));
}

/**
 * A minimal directory-backed snapshot set for prune tests (the overlay snapshotter needs
 * layer tars to make snapshots): snapshots/<name>/{fs/, meta.json}, meta = {kind, parent}.
 */
export function dirSnapshots(paths: { snapshots: string }): SnapshotLister & { create(name: string, kind: SnapshotKind, parent?: string, bytes?: number): Promise<void> } {
  const dir = (name: string) => join(paths.snapshots, name);
  return {
    dir,
    async create(name, kind, parent, bytes = 0) {
      await mkdir(join(dir(name), 'fs'), { recursive: true });
      await writeFile(join(dir(name), 'meta.json'), JSON.stringify({ kind, parent }));
      if (bytes) await writeFile(join(dir(name), 'fs', 'data'), pattern(bytes));
    },
    async list() {
      const out = [];
      for (const name of await readdir(paths.snapshots)) {
        const meta = JSON.parse(await readFile(join(dir(name), 'meta.json'), 'utf8')) as { kind: SnapshotKind; parent?: string };
        out.push({ name, kind: meta.kind, parent: meta.parent });
      }
      return out;
    },
    async remove(name) {
      const children = (await this.list()).filter((x) => x.parent === name);
      if (children.length) throw new Error(`snapshot ${name} has children ${children.map((c) => c.name).join(',')}`);
      await rm(dir(name), { recursive: true });
    },
  };
}


/** Add entries to index.json directly, as another tool (or damage) would: no checks. */
export async function rawTag(root: string, name: string, desc: Descriptor): Promise<void> {
  const path = join(root, 'index.json');
  const index = JSON.parse(await readFile(path, 'utf8')) as { manifests: Descriptor[] };
  index.manifests.push({ ...desc, annotations: { 'org.opencontainers.image.ref.name': name } });
  await writeFile(path, JSON.stringify(index));
}
