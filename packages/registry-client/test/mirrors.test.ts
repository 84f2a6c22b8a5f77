/** Mirrors from registries.json: tried first for pulls, origin as the fallback, never for pushes. */
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadRegistriesConfig, RegistryClient } from '@mybuild/registry-client';
import { type FaultProxy, startFaultProxy } from '../../../fixtures/src/fault-proxy.js';
import { startRegistry, type TestRegistry } from '../../../fixtures/src/registry.js';
import { makeImage, MemoryStore } from './helpers.js';

let mirror: TestRegistry;
let origin: TestRegistry;
let mirrorProxy: FaultProxy;
let originProxy: FaultProxy;
let tmp: string;
const noCreds = () => Promise.resolve(undefined);

beforeAll(async () => {
  [mirror, origin] = await Promise.all([startRegistry(), startRegistry()]);
  [mirrorProxy, originProxy] = await Promise.all([startFaultProxy(mirror.url), startFaultProxy(origin.url)]);
  tmp = mkdtempSync(join(tmpdir(), 'mybuild-mirrors-'));
});

afterAll(async () => {
  await Promise.all([mirrorProxy?.stop(), originProxy?.stop()]);
  await Promise.all([mirror?.stop(), origin?.stop()]);
  rmSync(tmp, { recursive: true, force: true });
});

describe('mirrors', () => {
  it('serves Docker Hub names (library/ prefix) from a mirror without touching registry-1.docker.io', async () => {
    const img = makeImage();
    const seed = new RegistryClient({ credentials: noCreds });
    await seed.push(MemoryStore.of(img), img.manifestBytes, `${mirror.host}/library/alpine:latest`);
    seed.close();
    const file = join(tmp, 'registries.json');
    writeFileSync(file, JSON.stringify({ registries: { 'docker.io': { mirrors: [`http://${mirrorProxy.host}`] } } }));
    const lines: string[] = [];
    const c = new RegistryClient({ credentials: noCreds, ...loadRegistriesConfig(file), debug: (l) => lines.push(l) });
    try {
      const sink = new MemoryStore();
      const pulled = await c.pull('alpine', sink);
      expect(pulled.descriptor.digest).toBe(img.descriptor.digest);
      expect(mirrorProxy.requests.some((r) => r.url === '/v2/library/alpine/manifests/latest')).toBe(true);
      expect(lines.join('\n')).not.toContain('registry-1.docker.io');
    } finally {
      c.close();
    }
  });

  it('falls back to the origin when the mirror lacks the image, and pushes to the origin only', async () => {
    const img = makeImage();
    const c = new RegistryClient({ credentials: noCreds, mirrors: { [originProxy.host]: [mirrorProxy.host] } });
    try {
      await c.push(MemoryStore.of(img), img.manifestBytes, `${originProxy.host}/team/app:1`);
      expect(mirrorProxy.requests.some((r) => r.url.startsWith('/v2/team/app'))).toBe(false);
      mirrorProxy.requests.length = 0;
      const sink = new MemoryStore();
      await c.pull(`${originProxy.host}/team/app:1`, sink);
      for (const [d, b] of img.blobs) expect(sink.blobs.get(d)?.equals(b)).toBe(true);
      expect(mirrorProxy.requests.some((r) => r.url === '/v2/team/app/manifests/1' && r.status === 404)).toBe(true);
    } finally {
      c.close();
    }
  });

  it('reads insecure flags and CA files from registries.json, and nothing from a missing file', () => {
    const file = join(tmp, 'r2.json');
    writeFileSync(file, JSON.stringify({ registries: { 'build.local:5000': { insecure: true, caFiles: ['/ca.pem'] } } }));
    expect(loadRegistriesConfig(file)).toEqual({ insecure: ['build.local:5000'], mirrors: {}, registryCaFiles: { 'build.local:5000': ['/ca.pem'] } });
    expect(loadRegistriesConfig(join(tmp, 'absent.json'))).toEqual({ insecure: [], mirrors: {}, registryCaFiles: {} });
    writeFileSync(file, '{not json');
    expect(() => loadRegistriesConfig(file)).toThrow(/cannot read/);
  });
});
