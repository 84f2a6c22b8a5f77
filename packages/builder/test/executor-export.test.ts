/**
 * A base image from a registry on loopback (Debian's docker-registry; busybox pushed with
 * skopeo), and the outputs checked by peers: `skopeo inspect` reads `type=oci`, `skopeo copy`
 * reads `type=docker`, a pushed image reads back with the digest the push reported.
 */
import { execFile } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type Digest, MediaType } from '@mybuild/oci';
import { INDEX_LOCK, OverlaySnapshotter, acquireLock, openStore, type Store } from '@mybuild/layer-store';
import { RegistryClient } from '@mybuild/registry-client';
import { type BuildResult, build, exportImage, parseOutput } from '@mybuild/builder';
import { writeBusyboxImage } from '@mybuild/fixtures/images.mjs';
import { REGISTRY_BINARY, startRegistry, type TestRegistry } from '@mybuild/fixtures/registry.js';
import { canBuild } from './executor-helpers.js';

const execFileP = promisify(execFile);
const canRun = canBuild && existsSync(REGISTRY_BINARY) && existsSync('/usr/bin/skopeo');

async function skopeo(...args: string[]): Promise<string> {
  const { stdout } = await execFileP('skopeo', ['--insecure-policy', ...args], { maxBuffer: 64 << 20 });
  return stdout;
}

describe.skipIf(!canRun)('registry base images and outputs', () => {
  let dir: string;
  let reg: TestRegistry;
  let store: Store;
  let client: RegistryClient;
  let result: BuildResult;
  let base: string;

  beforeAll(async () => {
    dir = mkdtempSync(join(tmpdir(), 'mybuild-export-'));
    reg = await startRegistry();
    base = `${reg.host}/library/busybox:1.36`;
    const archive = join(dir, 'busybox.oci.tar');
    await writeBusyboxImage('oci-archive', archive, { tag: 'busybox:1.36' });
    await skopeo('copy', '--quiet', '--dest-tls-verify=false', `oci-archive:${archive}`, `docker://${base}`);
    store = await openStore(join(dir, 'store'), { snapshotter: (paths) => new OverlaySnapshotter(paths) });
    client = new RegistryClient({ insecure: [reg.host] });
    const ctx = join(dir, 'ctx');
    mkdirSync(ctx);
    writeFileSync(join(ctx, 'app.txt'), 'app\n');
    const built = await build({
      store,
      contextDir: ctx,
      dockerfile: `FROM ${base}\nRUN echo built > /built\nCOPY app.txt /app/\nCMD ["cat", "/app/app.txt"]\n`,
      tags: ['exported:1'],
      registry: client,
      sandbox: { stateDir: join(dir, 'state') },
    });
    result = built;
  });

  afterAll(async () => {
    client?.close();
    await reg?.stop();
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  it('pulled the base image into the store and tagged it', async () => {
    const img = await store.images.resolve(base);
    expect(img.names).toContain(`${reg.host}/library/busybox:1.36`);
    expect(result.config.config?.Cmd).toEqual(['cat', '/app/app.txt']);
    expect(result.config.rootfs.diff_ids.length).toBe(3);
  });

  it('a build that fails after pulling its base names the base in the store before it fails', async () => {
    const other = `${reg.host}/library/busybox-failing:1`;
    await skopeo('copy', '--quiet', '--src-tls-verify=false', '--dest-tls-verify=false', `docker://${base}`, `docker://${other}`);
    const ctx = join(dir, 'ctx-failing');
    mkdirSync(ctx);
    // the index lock held elsewhere: the base cannot be named until it is released
    const held = await acquireLock(store.paths.locks, INDEX_LOCK);
    let settled = false;
    const failing = build({ store, contextDir: ctx, dockerfile: `FROM ${other}\nRUN exit 3\n`, tags: ['failing:1'], registry: client, sandbox: { stateDir: join(dir, 'state') } });
    failing.then(
      () => void (settled = true),
      () => void (settled = true),
    );
    try {
      await new Promise((r) => setTimeout(r, 2000)); // the RUN has failed by now; the build waits for the naming
      expect(settled).toBe(false);
    } finally {
      await held.release();
    }
    await expect(failing).rejects.toThrow(/exit code 3|exited with 3|code: 3/);
    expect((await store.images.resolve(other)).names).toContain(other);
    await expect(store.images.resolve('failing:1')).rejects.toThrow();
  });

  it('writes an OCI layout skopeo reads, gzip layers, same config', async () => {
    const dest = join(dir, 'oci');
    await exportImage({ store, manifest: result.manifest, tags: result.tags }, parseOutput(`type=oci,dest=${dest}`));
    const info = JSON.parse(await skopeo('inspect', `oci:${dest}`)) as { Digest: string; Layers: string[] };
    expect(info.Layers.length).toBe(3);
    const index = JSON.parse(readFileSync(join(dest, 'index.json'), 'utf8')) as { manifests: { digest: string; annotations: Record<string, string> }[] };
    expect(info.Digest).toBe(index.manifests[0]!.digest);
    expect(index.manifests[0]!.annotations['org.opencontainers.image.ref.name']).toBe('1');
    const manifest = JSON.parse(await skopeo('inspect', '--raw', `oci:${dest}`)) as { config: { digest: string }; layers: { mediaType: string }[] };
    expect(manifest.config.digest).toBe(result.imageId);
    expect(manifest.layers.every((l) => l.mediaType === MediaType.OciLayerGzip)).toBe(true);
    // a second export reuses the compressed blobs (same manifest)
    const dest2 = join(dir, 'oci2');
    await exportImage({ store, manifest: result.manifest, tags: result.tags }, parseOutput(`type=oci,dest=${dest2}`));
    expect(JSON.parse(await skopeo('inspect', `oci:${dest2}`)).Digest).toBe(info.Digest);
  });

  it('writes uncompressed layers into an OCI layout from the build’s snapshots; skopeo copies it, digests checked', async () => {
    const dest = join(dir, 'oci-plain');
    await exportImage({ store, manifest: result.manifest, tags: result.tags }, parseOutput(`type=oci,dest=${dest},compression=uncompressed`));
    const manifest = JSON.parse(await skopeo('inspect', '--raw', `oci:${dest}`)) as { layers: { mediaType: string; digest: string }[] };
    // the build's own layers are kept as snapshots (deferred blobs): the export made their tars
    const built = manifest.layers.filter((l) => l.mediaType === MediaType.OciLayer);
    expect(built.length).toBeGreaterThan(0);
    for (const l of built) expect((await store.content.info(l.digest as Digest)).deferredFrom).toMatch(/^sha256:/);
    // skopeo checks every blob's digest as it copies
    const out = join(dir, 'oci-plain-copy');
    await skopeo('copy', '--quiet', `oci:${dest}`, `dir:${out}`);
    for (const l of built) expect(existsSync(join(out, l.digest.slice('sha256:'.length)))).toBe(true);
  });

  it('writes a docker-archive skopeo copies', async () => {
    const file = join(dir, 'app.docker.tar');
    await exportImage({ store, manifest: result.manifest, tags: result.tags }, parseOutput(`type=docker,dest=${file}`));
    const out = join(dir, 'from-archive');
    await skopeo('copy', '--quiet', `docker-archive:${file}`, `oci:${out}:app`);
    const info = JSON.parse(await skopeo('inspect', `oci:${out}:app`)) as { Layers: string[]; Env: string[] };
    expect(info.Layers.length).toBe(3);
    const cfg = JSON.parse(await skopeo('inspect', '--config', `docker-archive:${file}`)) as { rootfs: { diff_ids: string[] } };
    expect(cfg.rootfs.diff_ids).toEqual(result.config.rootfs.diff_ids);
  });

  it('pushes; skopeo reads the image back with the digest the push reported (gzip and zstd)', async () => {
    const name = `${reg.host}/team/app:1`;
    const pushed = await exportImage({ store, manifest: result.manifest, tags: [name], registry: client }, { type: 'registry' });
    expect(pushed.pushed).toHaveLength(1);
    const info = JSON.parse(await skopeo('inspect', '--tls-verify=false', `docker://${name}`)) as { Digest: string };
    expect(info.Digest).toBe(pushed.pushed[0]!.digest);
    const cfg = JSON.parse(await skopeo('inspect', '--tls-verify=false', '--config', `docker://${name}`)) as { rootfs: { diff_ids: string[] } };
    expect(cfg.rootfs.diff_ids).toEqual(result.config.rootfs.diff_ids);

    const zname = `${reg.host}/team/app:zstd`;
    const z = await exportImage({ store, manifest: result.manifest, tags: [zname], registry: client }, { type: 'registry', compression: 'zstd' });
    const raw = JSON.parse(await skopeo('inspect', '--tls-verify=false', '--raw', `docker://${zname}`)) as { layers: { mediaType: string }[] };
    // the base layer was pulled compressed and stays as it is; build layers are zstd
    expect(raw.layers.slice(1).every((l) => l.mediaType === MediaType.OciLayerZstd)).toBe(true);
    expect(z.pushed[0]!.digest).not.toBe(pushed.pushed[0]!.digest);
  });

  it('exports the root filesystem (type=local)', async () => {
    const dest = join(dir, 'rootfs');
    await exportImage({ store, manifest: result.manifest, tags: result.tags }, parseOutput(dest));
    expect(readFileSync(join(dest, 'built'), 'utf8')).toBe('built\n');
    expect(readFileSync(join(dest, 'app', 'app.txt'), 'utf8')).toBe('app\n');
  });

  it('parses --output like buildx and refuses what it does not know', () => {
    expect(parseOutput('type=oci,dest=out')).toEqual({ type: 'oci', dest: 'out' });
    expect(parseOutput('type=image,name=a:1,push=true')).toEqual({ type: 'registry', names: ['a:1'] });
    expect(parseOutput('type=registry,compression=zstd')).toEqual({ type: 'registry', compression: 'zstd' });
    expect(() => parseOutput('type=tar,dest=x')).toThrow(/unsupported type/);
    expect(() => parseOutput('type=oci')).toThrow(/needs dest=/);
    expect(() => parseOutput('dest=x,foo=1')).toThrow(/unknown key/);
  });
});
