/** Push, pull, copy, tags, delete and referrers against a real plain-http docker-registry. */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type Descriptor, type Digest, isUnsupported, MediaType, parseReference, sha256Of } from '@mybuild/oci';
import { mkdtempSync, readFileSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileSchemeMemo, type ProgressEvent, RegistryClient } from '@mybuild/registry-client';
import { startFaultProxy, type FaultProxy } from '../../../fixtures/src/fault-proxy.js';
import { startRegistry, type TestRegistry } from '../../../fixtures/src/registry.js';
import { makeImage, makeIndex, MemoryStore } from './helpers.js';

let reg: TestRegistry;
let regDel: TestRegistry;
let client: RegistryClient;

beforeAll(async () => {
  [reg, regDel] = await Promise.all([startRegistry(), startRegistry({ deleteEnabled: true, relativeUrls: true })]);
  client = new RegistryClient({ credentials: () => Promise.resolve(undefined) });
});

afterAll(async () => {
  client?.close();
  await Promise.all([reg?.stop(), regDel?.stop()]);
});

describe('push and pull on plain http', () => {
  it('round-trips an image with exact digests, then skips what exists', async () => {
    const img = makeImage({ layers: [2048, 300_000, 10] });
    const events: ProgressEvent[] = [];
    const pushed = await client.push(MemoryStore.of(img), img.manifestBytes, `${reg.host}/team/app:1.0`, { onProgress: (e) => events.push(e) });
    expect(pushed).toEqual(img.descriptor);
    expect(events.filter((e) => e.status === 'done').map((e) => e.digest).sort()).toEqual([...img.blobs.keys()].sort());
    const big = [...img.blobs.entries()].find(([, b]) => b.length > 100_000)!;
    expect(events.some((e) => e.digest === big[0] && e.status === 'progress' && e.total === big[1].length)).toBe(true);

    const fetched = await client.getManifest(`${reg.host}/team/app:1.0`);
    expect(fetched.bytes.equals(img.manifestBytes)).toBe(true);
    expect(fetched.descriptor).toEqual(img.descriptor);

    const sink = new MemoryStore();
    const pulled = await client.pull(`${reg.host}/team/app:1.0`, sink);
    expect(pulled.descriptor.digest).toBe(img.descriptor.digest);
    for (const [d, b] of img.blobs) expect(sink.blobs.get(d)?.equals(b)).toBe(true);
    expect(sink.blobs.get(img.descriptor.digest)?.equals(img.manifestBytes)).toBe(true);

    // Second pull: nothing is fetched again.
    const pullEvents: ProgressEvent[] = [];
    const before = sink.written.length;
    await client.pull(`${reg.host}/team/app:1.0`, sink, { onProgress: (e) => pullEvents.push(e) });
    expect(sink.written.length).toBe(before);
    expect(pullEvents.every((e) => e.status === 'exists')).toBe(true);

    // Second push: every blob exists (HEAD), nothing is opened.
    const src = MemoryStore.of(img);
    const again: ProgressEvent[] = [];
    await client.push(src, img.manifestBytes, `${reg.host}/team/app:1.1`, { onProgress: (e) => again.push(e) });
    expect(src.opened).toEqual([]);
    expect(again.filter((e) => e.status === 'exists')).toHaveLength(img.blobs.size);
  });

  it('pushes Docker media types and a zero-byte blob', async () => {
    const img = makeImage({ layers: [0, 5], docker: true });
    await client.push(MemoryStore.of(img), img.manifestBytes, `${reg.host}/team/docker:v2`);
    const m = await client.getManifest(`${reg.host}/team/docker:v2`);
    expect(m.descriptor.mediaType).toBe(MediaType.DockerManifest);
    expect(m.descriptor.digest).toBe(img.descriptor.digest);
  });

  it('streams a 24 MiB layer both ways', async () => {
    const img = makeImage({ layers: [24 << 20] });
    await client.push(MemoryStore.of(img), img.manifestBytes, `${reg.host}/team/big:1`);
    const sink = new MemoryStore();
    await client.pull(`${reg.host}/team/big:1`, sink);
    for (const [d, b] of img.blobs) expect(sink.blobs.get(d)?.equals(b)).toBe(true);
  });

  it('pulls by digest and refuses a digest that does not match', async () => {
    const img = makeImage();
    await client.push(MemoryStore.of(img), img.manifestBytes, `${reg.host}/team/bydigest:x`);
    const byDigest = await client.getManifest(`${reg.host}/team/bydigest@${img.descriptor.digest}`);
    expect(byDigest.bytes.equals(img.manifestBytes)).toBe(true);
    await expect(client.getManifest(`${reg.host}/team/bydigest@${sha256Of('other')}`)).rejects.toMatchObject({ code: 'NOT_FOUND' });
  });

  it('refuses to push a manifest over 4 MiB before sending anything', async () => {
    const img = makeImage();
    const huge = Buffer.from(JSON.stringify({ ...img.manifest, annotations: { pad: 'x'.repeat(4 << 20) } }));
    await expect(client.push(MemoryStore.of(img), huge, `${reg.host}/team/huge:1`)).rejects.toMatchObject({ code: 'SIZE_EXCEEDED' });
    await expect(client.blobExists(`${reg.host}/team/huge`, img.manifest.config.digest)).resolves.toBe(false);
  });

  it('fails with the real cause when a blob cannot be read, and never pushes the manifest then', async () => {
    const img = makeImage({ layers: [1000, 2000, 3000, 4000, 5000] });
    const src = MemoryStore.of(img);
    src.blobs.delete(img.manifest.layers[0]!.digest);
    const c = new RegistryClient({ credentials: () => Promise.resolve(undefined), concurrency: 1 });
    try {
      await expect(c.push(src, img.manifestBytes, `${reg.host}/team/partial:1`)).rejects.toMatchObject({ code: 'NOT_FOUND', message: expect.stringContaining('not in the store') });
      await expect(c.getManifest(`${reg.host}/team/partial:1`)).rejects.toMatchObject({ code: 'NOT_FOUND' });
      // concurrency 1 and fail-fast: the blobs queued behind the failure were never opened.
      expect(src.opened.length).toBeLessThan(img.blobs.size - 1);
    } finally {
      c.close();
    }
  });

  it('names registry and reference in a not-found error', async () => {
    const err = await client.getManifest(`${reg.host}/team/missing:nope`).catch((e: unknown) => e);
    expect(err).toMatchObject({ code: 'NOT_FOUND', status: 404 });
    const line = (err as { oneLine(): string }).oneLine();
    expect(line).toContain(`${reg.host}/team/missing:nope`);
    expect(line).toContain('MANIFEST_UNKNOWN');
    expect(line.split('\n')).toHaveLength(1);
  });
});

describe('protocol probe', () => {
  it('a fresh client finds out once that a loopback registry speaks plain http, even with concurrent first requests', async () => {
    const img = makeImage({ layers: [1000, 2000, 3000, 4000] });
    await client.push(MemoryStore.of(img), img.manifestBytes, `${reg.host}/team/probe:1`);
    const lines: string[] = [];
    const fresh = new RegistryClient({ credentials: () => Promise.resolve(undefined), debug: (l) => lines.push(l) });
    try {
      // a pull's blob downloads start together: only one of them may try TLS
      await fresh.pull(`${reg.host}/team/probe:1`, new MemoryStore());
      const fresh2 = new RegistryClient({ credentials: () => Promise.resolve(undefined), debug: (l) => lines.push(l) });
      await Promise.all([1, 2, 3, 4].map(() => fresh2.blobExists(`${reg.host}/team/probe:1`, img.descriptor.digest)));
      fresh2.close();
    } finally {
      fresh.close();
    }
    expect(lines.filter((l) => l.includes('does not speak TLS'))).toHaveLength(2);
  });

  it('with a scheme memo (a file), the next client starts in plain http: no TLS attempt', async () => {
    const img = makeImage({ layers: [1000, 2000] });
    await client.push(MemoryStore.of(img), img.manifestBytes, `${reg.host}/team/memo:1`);
    const dir = mkdtempSync(join(tmpdir(), 'mybuild-schemes-'));
    const file = join(dir, 'sub', 'registries-http.json');
    const run = async () => {
      const lines: string[] = [];
      const c = new RegistryClient({ credentials: () => Promise.resolve(undefined), debug: (l) => lines.push(l), schemes: fileSchemeMemo(file) });
      try {
        await c.pull(`${reg.host}/team/memo:1`, new MemoryStore());
      } finally {
        c.close();
      }
      return lines;
    };
    try {
      const first = await run();
      expect(first.filter((l) => l.includes('does not speak TLS'))).toHaveLength(1);
      expect(JSON.parse(readFileSync(file, 'utf8')).http[reg.host]).toBeGreaterThan(Date.now() - 60_000);
      expect(statSync(file).mode & 0o777).toBe(0o600);

      const second = await run();
      expect(second.some((l) => l.includes('does not speak TLS') || l.includes('https://'))).toBe(false);
      expect(second.filter((l) => l.startsWith(`GET http://${reg.host}/`)).length).toBeGreaterThan(0);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe('multi-arch', () => {
  it('pulls the requested platform from an index and copies the index with its digest', async () => {
    const idx = makeIndex([
      { os: 'linux', architecture: 'amd64' },
      { os: 'linux', architecture: 'arm64', variant: 'v8' },
      { os: 'linux', architecture: 'arm', variant: 'v7' },
    ]);
    const top = await client.push(MemoryStore.of(idx), idx.indexBytes, `${reg.host}/multi/app:1`);
    expect(top).toEqual(idx.descriptor);

    const sink = new MemoryStore();
    const arm = await client.pull(`${reg.host}/multi/app:1`, sink, { platform: 'linux/arm64' });
    expect(arm.descriptor.digest).toBe(idx.descriptor.digest);
    expect(arm.manifestDescriptor.digest).toBe(idx.images[1]!.descriptor.digest);
    for (const d of idx.images[1]!.blobs.keys()) expect(sink.blobs.has(d)).toBe(true);
    for (const d of idx.images[0]!.blobs.keys()) expect(sink.blobs.has(d)).toBe(false);
    expect(sink.blobs.has(idx.descriptor.digest)).toBe(true);

    // a sink that takes bytes in memory gets the manifest and the index that way, the rest streamed
    const byBytes: Digest[] = [];
    const bytesSink = Object.assign(new MemoryStore(), {
      async putBytes(this: MemoryStore, desc: Descriptor, data: Uint8Array): Promise<void> {
        expect(sha256Of(data)).toBe(desc.digest);
        byBytes.push(desc.digest);
        this.blobs.set(desc.digest, Buffer.from(data));
      },
    });
    await client.pull(`${reg.host}/multi/app:1`, bytesSink, { platform: 'linux/arm64' });
    expect(byBytes).toEqual([idx.images[1]!.descriptor.digest, idx.descriptor.digest]);
    expect(bytesSink.written.sort()).toEqual([...idx.images[1]!.blobs.keys()].sort());

    const armv7 = await client.pull(`${reg.host}/multi/app:1`, new MemoryStore(), { platform: { os: 'linux', architecture: 'arm' } });
    expect(armv7.manifestDescriptor.digest).toBe(idx.images[2]!.descriptor.digest);

    await expect(client.pull(`${reg.host}/multi/app:1`, new MemoryStore(), { platform: 'linux/s390x' })).rejects.toMatchObject({
      code: 'NOT_FOUND',
      hint: expect.stringContaining('linux/arm64/v8'),
    });

    const all = new MemoryStore();
    const everything = await client.pull(`${reg.host}/multi/app:1`, all, { platform: 'all' });
    expect(everything.manifests).toHaveLength(3);
    for (const img of idx.images) for (const d of img.blobs.keys()) expect(all.blobs.has(d)).toBe(true);

    // Copy to another registry keeps the index digest; to the same registry it mounts.
    const copied = await client.copy(`${reg.host}/multi/app:1`, `${regDel.host}/copied/app:1`);
    expect(copied.digest).toBe(idx.descriptor.digest);
    expect((await client.getManifest(`${regDel.host}/copied/app:1`)).descriptor.digest).toBe(idx.descriptor.digest);
  });

  it('copies within one registry by mounting blobs, and one platform on request', async () => {
    const proxy: FaultProxy = await startFaultProxy(reg.url);
    try {
      const idx = makeIndex([
        { os: 'linux', architecture: 'amd64' },
        { os: 'linux', architecture: 'arm64' },
      ]);
      await client.push(MemoryStore.of(idx), idx.indexBytes, `${proxy.host}/src/app:1`);
      proxy.requests.length = 0;
      const copied = await client.copy(`${proxy.host}/src/app:1`, `${proxy.host}/dst/app:1`);
      expect(copied.digest).toBe(idx.descriptor.digest);
      const mounts = proxy.requests.filter((r) => r.method === 'POST' && r.url.includes('mount='));
      expect(mounts.length).toBe(4);
      expect(mounts.every((r) => r.status === 201)).toBe(true);
      expect(proxy.requests.some((r) => r.method === 'GET' && r.url.includes('/blobs/'))).toBe(false);

      const one = await client.copy(`${proxy.host}/src/app:1`, `${proxy.host}/dst/one:1`, { platform: 'linux/arm64' });
      expect(one.digest).toBe(idx.images[1]!.descriptor.digest);
    } finally {
      await proxy.stop();
    }
  });
});

describe('tags, delete, referrers', () => {
  it('lists tags (distribution 2.8 sends one page; paging is in faults.test.ts)', async () => {
    const img = makeImage();
    const names = ['a', 'b', 'c', 'd', 'e'];
    for (const t of names) await client.push(MemoryStore.of(img), img.manifestBytes, `${reg.host}/team/tags:${t}`);
    expect((await client.listTags(`${reg.host}/team/tags`)).sort()).toEqual(names);
    expect((await client.listTags(`${reg.host}/team/tags`, { pageSize: 2 })).sort()).toEqual(names);
  });

  it('says deletes are unsupported on default distribution, deletes by digest where enabled', async () => {
    const img = makeImage();
    await client.push(MemoryStore.of(img), img.manifestBytes, `${reg.host}/team/del:1`);
    const err = await client.deleteManifest(`${reg.host}/team/del:1`).catch((e: unknown) => e);
    expect(isUnsupported(err)).toBe(true);
    expect((err as Error).message).toContain('does not allow deletes');

    await client.push(MemoryStore.of(img), img.manifestBytes, `${regDel.host}/team/del:1`);
    await client.deleteManifest(`${regDel.host}/team/del:1`);
    await expect(client.getManifest(`${regDel.host}/team/del@${img.descriptor.digest}`)).rejects.toMatchObject({ code: 'NOT_FOUND' });
  });

  it('falls back to the sha256-<hex> tag for referrers', async () => {
    const img = makeImage();
    await client.push(MemoryStore.of(img), img.manifestBytes, `${reg.host}/team/refs:1`);
    const subject = parseReference(`${reg.host}/team/refs@${img.descriptor.digest}`);
    expect(await client.referrers(subject)).toEqual([]);

    const sbom = makeImage();
    const artifact = { ...sbom.manifest, artifactType: 'application/spdx+json', subject: img.descriptor };
    const artifactBytes = Buffer.from(JSON.stringify(artifact));
    const artifactDesc = await client.push(MemoryStore.of(sbom), artifactBytes, `${reg.host}/team/refs@${sha256Of(artifactBytes)}`);
    const fallbackIndex = Buffer.from(
      JSON.stringify({ schemaVersion: 2, mediaType: MediaType.OciIndex, manifests: [{ ...artifactDesc, artifactType: 'application/spdx+json' }] }),
    );
    const hex = img.descriptor.digest.slice('sha256:'.length);
    await client.putManifest(`${reg.host}/team/refs:sha256-${hex}`, fallbackIndex);
    const found = await client.referrers(subject);
    expect(found.map((d) => d.digest)).toEqual([artifactDesc.digest]);
    expect(await client.referrers(subject, { artifactType: 'application/other' })).toEqual([]);
  });
});
