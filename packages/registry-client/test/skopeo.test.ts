/**
 * Interop with skopeo (a real peer): what we push, skopeo reads with the same digests; what
 * skopeo pushes from an OCI layout written here, we pull with the same digests.
 */
import { execFile } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { digestHex, MediaType } from '@mybuild/oci';
import { RegistryClient } from '@mybuild/registry-client';
import { startRegistry, type TestRegistry } from '../../../fixtures/src/registry.js';
import { makeImage, makeIndex, MemoryStore, writeOciLayout } from './helpers.js';

const run = promisify(execFile);
let reg: TestRegistry;
let tmp: string;
let client: RegistryClient;

async function skopeo(...args: string[]): Promise<Buffer> {
  const { stdout } = await run('skopeo', ['--insecure-policy', ...args], { encoding: 'buffer', maxBuffer: 64 << 20 });
  return stdout;
}

const sha = (b: Buffer) => `sha256:${createHash('sha256').update(b).digest('hex')}`;

beforeAll(async () => {
  reg = await startRegistry();
  tmp = mkdtempSync(join(tmpdir(), 'mybuild-skopeo-'));
  client = new RegistryClient({ credentials: () => Promise.resolve(undefined) });
});

afterAll(async () => {
  client?.close();
  await reg?.stop();
  rmSync(tmp, { recursive: true, force: true });
});

describe('skopeo reads what we push', () => {
  it('sees the same manifest and blob digests (OCI and Docker types)', async () => {
    for (const docker of [false, true]) {
      const img = makeImage({ layers: [3000, 70_000], docker });
      const ref = `${reg.host}/interop/ours:${docker ? 'docker' : 'oci'}`;
      await client.push(MemoryStore.of(img), img.manifestBytes, ref);
      const raw = await skopeo('inspect', '--tls-verify=false', '--raw', `docker://${ref}`);
      expect(sha(raw)).toBe(img.descriptor.digest);
      const info = JSON.parse((await skopeo('inspect', '--tls-verify=false', `docker://${ref}`)).toString()) as { Digest: string; Layers: string[] };
      expect(info.Digest).toBe(img.descriptor.digest);
      expect(info.Layers).toEqual(img.manifest.layers.map((l) => l.digest));
      // skopeo verifies every blob it copies.
      const out = join(tmp, `ours-${docker}`);
      await skopeo('copy', '--src-tls-verify=false', `docker://${ref}`, `dir:${out}`);
      for (const l of img.manifest.layers) expect(existsSync(join(out, digestHex(l.digest)))).toBe(true);
    }
  });

  it('sees our multi-arch index with its digest, also after our copy', async () => {
    const idx = makeIndex([
      { os: 'linux', architecture: 'amd64' },
      { os: 'linux', architecture: 'arm64', variant: 'v8' },
    ]);
    await client.push(MemoryStore.of(idx), idx.indexBytes, `${reg.host}/interop/multi:1`);
    await client.copy(`${reg.host}/interop/multi:1`, `${reg.host}/interop/multi-copy:1`);
    for (const repo of ['multi', 'multi-copy']) {
      const raw = await skopeo('inspect', '--tls-verify=false', '--raw', `docker://${reg.host}/interop/${repo}:1`);
      expect(sha(raw)).toBe(idx.descriptor.digest);
    }
    const arm = JSON.parse((await skopeo('inspect', '--tls-verify=false', '--override-arch', 'arm64', `docker://${reg.host}/interop/multi-copy:1`)).toString()) as { Layers: string[] };
    expect(arm.Layers).toEqual(idx.images[1]!.manifest.layers.map((l) => l.digest));
  });
});

describe('we read what skopeo pushes', () => {
  it('pulls an image skopeo copied from an OCI layout, digests unchanged', async () => {
    const img = makeImage({ layers: [5000, 200_000] });
    const layout = join(tmp, 'layout-one');
    writeOciLayout(layout, [{ tag: 'v1', image: img }]);
    await skopeo('copy', '--dest-tls-verify=false', '--preserve-digests', `oci:${layout}:v1`, `docker://${reg.host}/interop/theirs:v1`);
    const m = await client.getManifest(`${reg.host}/interop/theirs:v1`);
    expect(m.descriptor.digest).toBe(img.descriptor.digest);
    expect(m.descriptor.mediaType).toBe(MediaType.OciManifest);
    const sink = new MemoryStore();
    await client.pull(`${reg.host}/interop/theirs:v1`, sink);
    for (const [d, b] of img.blobs) expect(sink.blobs.get(d)?.equals(b)).toBe(true);
  });

  it('pulls the right platform of an index skopeo pushed with --all', async () => {
    const idx = makeIndex([
      { os: 'linux', architecture: 'amd64' },
      { os: 'linux', architecture: 'arm64', variant: 'v8' },
      { os: 'linux', architecture: 'arm', variant: 'v7' },
    ]);
    const layout = join(tmp, 'layout-multi');
    writeOciLayout(layout, [{ tag: 'multi', image: idx }]);
    await skopeo('copy', '--all', '--dest-tls-verify=false', '--preserve-digests', `oci:${layout}:multi`, `docker://${reg.host}/interop/theirs-multi:1`);
    const sink = new MemoryStore();
    const pulled = await client.pull(`${reg.host}/interop/theirs-multi:1`, sink, { platform: 'linux/arm/v7' });
    expect(pulled.descriptor.digest).toBe(idx.descriptor.digest);
    expect(pulled.manifestDescriptor.digest).toBe(idx.images[2]!.descriptor.digest);
    for (const [d, b] of idx.images[2]!.blobs) expect(sink.blobs.get(d)?.equals(b)).toBe(true);
    const copied = await client.copy(`${reg.host}/interop/theirs-multi:1`, `${reg.host}/interop/theirs-multi-copy:1`);
    expect(copied.digest).toBe(idx.descriptor.digest);
  });
});
