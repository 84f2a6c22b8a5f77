/** Test images built in memory (real tar + gzip layers), and an in-memory blob store. */
import { randomBytes } from 'node:crypto';
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { gzipSync } from 'node:zlib';
import {
  type BlobSink,
  type BlobSource,
  type Descriptor,
  type Digest,
  digestHex,
  type ImageIndex,
  type ImageManifest,
  MediaType,
  MyBuildError,
  type Platform,
  REF_NAME_ANNOTATION,
  sha256Of,
  VerifyingStream,
} from '@mybuild/oci';

/** A minimal ustar archive of regular files. */
export function tarOf(files: { name: string; content: Buffer }[]): Buffer {
  const parts: Buffer[] = [];
  for (const f of files) {
    const h = Buffer.alloc(512);
    h.write(f.name, 0, 100, 'utf8');
    h.write('0000644\0', 100, 'ascii');
    h.write('0000000\0', 108, 'ascii');
    h.write('0000000\0', 116, 'ascii');
    h.write(`${f.content.length.toString(8).padStart(11, '0')}\0`, 124, 'ascii');
    h.write('14000000000\0', 136, 'ascii');
    h.write('        ', 148, 'ascii');
    h.write('0', 156, 'ascii');
    h.write('ustar\0', 257, 'ascii');
    h.write('00', 263, 'ascii');
    let sum = 0;
    for (const b of h) sum += b;
    h.write(`${sum.toString(8).padStart(6, '0')}\0 `, 148, 'ascii');
    parts.push(h, f.content, Buffer.alloc((512 - (f.content.length % 512)) % 512));
  }
  parts.push(Buffer.alloc(1024));
  return Buffer.concat(parts);
}

export interface TestImage {
  manifest: ImageManifest;
  manifestBytes: Buffer;
  descriptor: Descriptor;
  /** config + layers */
  blobs: Map<Digest, Buffer>;
}

export interface TestImageOptions {
  /** Sizes of random file content per layer (default one 1 KiB layer). */
  layers?: number[];
  platform?: Platform;
  docker?: boolean;
}

/** An image with gzip layers of random content (so every call yields new digests). */
export function makeImage(opts: TestImageOptions = {}): TestImage {
  const platform = opts.platform ?? { os: 'linux', architecture: 'amd64' };
  const blobs = new Map<Digest, Buffer>();
  const layers: Descriptor[] = [];
  const diffIds: Digest[] = [];
  (opts.layers ?? [1024]).forEach((size, i) => {
    // Half random, half zeros: compresses a little, stays unique.
    const content = Buffer.concat([randomBytes(Math.ceil(size / 2)), Buffer.alloc(Math.floor(size / 2))]);
    const tar = tarOf([{ name: `file${i}.bin`, content }]);
    const gz = gzipSync(tar, { level: 1 });
    const digest = sha256Of(gz);
    blobs.set(digest, gz);
    diffIds.push(sha256Of(tar));
    layers.push({ mediaType: opts.docker ? MediaType.DockerLayerGzip : MediaType.OciLayerGzip, digest, size: gz.length });
  });
  const config = Buffer.from(
    JSON.stringify({
      architecture: platform.architecture,
      os: platform.os,
      ...(platform.variant ? { variant: platform.variant } : {}),
      config: { Cmd: ['/bin/sh'] },
      rootfs: { type: 'layers', diff_ids: diffIds },
    }),
  );
  const configDigest = sha256Of(config);
  blobs.set(configDigest, config);
  const manifest: ImageManifest = {
    schemaVersion: 2,
    mediaType: opts.docker ? MediaType.DockerManifest : MediaType.OciManifest,
    config: { mediaType: opts.docker ? MediaType.DockerConfig : MediaType.OciConfig, digest: configDigest, size: config.length },
    layers,
  };
  const manifestBytes = Buffer.from(JSON.stringify(manifest, null, 2));
  return { manifest, manifestBytes, descriptor: { mediaType: manifest.mediaType!, digest: sha256Of(manifestBytes), size: manifestBytes.length }, blobs };
}

export interface TestIndex {
  index: ImageIndex;
  indexBytes: Buffer;
  descriptor: Descriptor;
  images: TestImage[];
}

export function makeIndex(platforms: Platform[], opts: Omit<TestImageOptions, 'platform'> = {}): TestIndex {
  const images = platforms.map((platform) => makeImage({ ...opts, platform }));
  const index: ImageIndex = {
    schemaVersion: 2,
    mediaType: opts.docker ? MediaType.DockerManifestList : MediaType.OciIndex,
    manifests: images.map((img, i) => ({ ...img.descriptor, platform: platforms[i]! })),
  };
  const indexBytes = Buffer.from(JSON.stringify(index));
  return { index, indexBytes, descriptor: { mediaType: index.mediaType!, digest: sha256Of(indexBytes), size: indexBytes.length }, images };
}

/** A BlobSink and BlobSource in memory; verifies what it takes in, counts what goes through. */
export class MemoryStore implements BlobSink, BlobSource {
  readonly blobs = new Map<Digest, Buffer>();
  readonly opened: Digest[] = [];
  readonly written: Digest[] = [];

  static of(...images: (TestImage | TestIndex)[]): MemoryStore {
    const s = new MemoryStore();
    for (const img of images) s.add(img);
    return s;
  }

  add(img: TestImage | TestIndex): this {
    if ('images' in img) {
      this.blobs.set(img.descriptor.digest, img.indexBytes);
      for (const i of img.images) this.add(i);
    } else {
      this.blobs.set(img.descriptor.digest, img.manifestBytes);
      for (const [d, b] of img.blobs) this.blobs.set(d, b);
    }
    return this;
  }

  has(digest: Digest): Promise<boolean> {
    return Promise.resolve(this.blobs.has(digest));
  }

  async put(desc: Descriptor, data: Readable): Promise<void> {
    const verify = new VerifyingStream({ digest: desc.digest, size: desc.size });
    const chunks: Buffer[] = [];
    for await (const c of data.pipe(verify) as AsyncIterable<Buffer>) chunks.push(c);
    this.written.push(desc.digest);
    this.blobs.set(desc.digest, Buffer.concat(chunks));
  }

  open(desc: Descriptor): Promise<Readable> {
    const b = this.blobs.get(desc.digest);
    if (!b) return Promise.reject(new MyBuildError('NOT_FOUND', `blob ${desc.digest} not in the store`));
    this.opened.push(desc.digest);
    // Several chunks, like a file stream.
    const chunks: Buffer[] = [];
    for (let i = 0; i < b.length; i += 64 * 1024) chunks.push(b.subarray(i, i + 64 * 1024));
    return Promise.resolve(Readable.from(chunks.length > 0 ? chunks : [Buffer.alloc(0)]));
  }
}

/** Write images as an OCI image layout (for skopeo to read). */
export function writeOciLayout(dir: string, entries: { tag: string; image: TestImage | TestIndex }[]): void {
  mkdirSync(join(dir, 'blobs', 'sha256'), { recursive: true });
  writeFileSync(join(dir, 'oci-layout'), JSON.stringify({ imageLayoutVersion: '1.0.0' }));
  const store = new MemoryStore();
  for (const e of entries) store.add(e.image);
  for (const [d, b] of store.blobs) writeFileSync(join(dir, 'blobs', 'sha256', digestHex(d)), b);
  const index = {
    schemaVersion: 2,
    manifests: entries.map((e) => ({ ...e.image.descriptor, annotations: { [REF_NAME_ANNOTATION]: e.tag } })),
  };
  writeFileSync(join(dir, 'index.json'), JSON.stringify(index));
}
