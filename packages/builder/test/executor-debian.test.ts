/**
 * A real userland: a Debian (bookworm, minbase) root filesystem made with debootstrap — once
 * per machine, kept as a tar under .cache/ — as the base image, and a RUN step doing a real
 * `apt-get install` over the host network. Needs root, debootstrap and access to the Debian
 * mirror (apt); MYBUILD_TEST_DEBIAN=0 skips it.
 */
import { execFileSync } from 'node:child_process';
import { createReadStream, existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, renameSync, rmSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { MediaType } from '@mybuild/oci';
import { putJsonBlob } from '@mybuild/layer-store';
import { type TestStore, canBuild, describePath, runBuild, testStore, unpackRootfs } from './executor-helpers.js';

const CACHE = fileURLToPath(new URL('../../../.cache/', import.meta.url));
const ROOTFS_TAR = join(CACHE, 'debian-bookworm-minbase.tar');
const MIRROR = process.env['MYBUILD_DEBIAN_MIRROR'] ?? 'http://deb.debian.org/debian';
const enabled = canBuild && existsSync('/usr/sbin/debootstrap') && process.env['MYBUILD_TEST_DEBIAN'] !== '0';

/** The minbase rootfs as an uncompressed tar (debootstrap once, then reused). */
function debianRootfsTar(): string {
  if (existsSync(ROOTFS_TAR)) return ROOTFS_TAR;
  mkdirSync(CACHE, { recursive: true });
  const work = mkdtempSync(join(CACHE, 'debootstrap-'));
  try {
    const rootfs = join(work, 'rootfs');
    execFileSync('/usr/sbin/debootstrap', ['--variant=minbase', 'bookworm', rootfs, MIRROR], { stdio: 'ignore', timeout: 600_000 });
    const tmp = join(work, 'rootfs.tar');
    execFileSync('tar', ['--numeric-owner', '--xattrs', '-C', rootfs, '-cf', tmp, ...readdirSync(rootfs)], { stdio: 'ignore' });
    renameSync(tmp, ROOTFS_TAR);
  } finally {
    rmSync(work, { recursive: true, force: true });
  }
  return ROOTFS_TAR;
}

describe.skipIf(!enabled)('a Debian base image and apt-get', () => {
  let t: TestStore;
  beforeAll(async () => {
    t = await testStore('mybuild-debian-');
    const tar = debianRootfsTar();
    const { size } = statSync(tar);
    const layer = await t.store.content.put(createReadStream(tar), { size });
    const config = await putJsonBlob(
      t.store.content,
      {
        architecture: process.arch === 'x64' ? 'amd64' : process.arch,
        os: 'linux',
        config: { Env: ['PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin'], Cmd: ['bash'] },
        rootfs: { type: 'layers', diff_ids: [layer.digest] },
        history: [{ created_by: 'debootstrap --variant=minbase bookworm' }],
      },
      MediaType.OciConfig,
    );
    const manifest = await putJsonBlob(t.store.content, {
      schemaVersion: 2,
      mediaType: MediaType.OciManifest,
      config: { mediaType: config.mediaType, digest: config.digest, size: config.size },
      layers: [{ mediaType: MediaType.OciLayer, digest: layer.digest, size: layer.size }],
    });
    await t.store.images.tag('debian-test:bookworm', manifest);
  }, 900_000);
  afterAll(async () => {
    await t?.cleanup();
  });

  it('installs a package with apt-get over the host network', async () => {
    const dockerfile = `FROM debian-test:bookworm
ENV DEBIAN_FRONTEND=noninteractive
RUN apt-get update -qq && apt-get install -y -qq --no-install-recommends hello > /dev/null && rm -rf /var/lib/apt/lists/*
RUN hello > /greeting && useradd -m builder
USER builder
RUN whoami > /home/builder/me
`;
    const ctx = mkdtempSync(join(t.dir, 'ctx-'));
    const { result } = await runBuild(t, { contextDir: ctx, dockerfile, tags: ['debian-hello:1'] });
    expect(result.stepsRun).toBe(3);
    const rootfs = await unpackRootfs(t, 'debian-hello:1');
    expect(describePath(rootfs, '/usr/bin/hello')?.type).toBe('file');
    expect(readFileSync(join(rootfs, 'greeting'), 'utf8')).toBe('Hello, world!\n');
    expect(describePath(rootfs, '/home/builder/me')).toMatchObject({ owner: '1000:1000', text: 'builder\n' });
    expect(result.config.config?.User).toBe('builder');
  }, 600_000);
});
