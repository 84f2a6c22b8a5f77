/**
 * Test images made by a real peer: umoci builds an OCI layout from directories we fill,
 * skopeo turns it into docker-archive and OCI archives. Nothing here uses mybuild's own code.
 */
import { copyFile, mkdir, symlink, writeFile, link, chmod, chown } from 'node:fs/promises';
import { createWriteStream } from 'node:fs';
import { randomBytes } from 'node:crypto';
import { join } from 'node:path';
import { run } from './helpers.js';

export interface UmociImage {
  layout: string;
  tag: string;
}

/** Write `mb` MiB of random bytes to `file`, 1 MiB at a time. */
export async function randomFile(file: string, mb: number): Promise<void> {
  const ws = createWriteStream(file);
  for (let i = 0; i < mb; i++) {
    if (!ws.write(randomBytes(1024 * 1024))) await new Promise<void>((r) => ws.once('drain', () => r()));
  }
  ws.end();
  await new Promise<void>((resolve, reject) => ws.once('finish', resolve).once('error', reject));
}

/**
 * A layout `dir/layout` with tag `base` (busybox layer) and tag `full` (base + a layer
 * with a random file of `mb` MiB, a setuid file, a hardlink, a fifo, a device and an xattr),
 * and tag `other` (base + a different small layer): `full` and `other` share the base layer.
 */
export async function makeUmociImages(dir: string, mb = 1): Promise<UmociImage> {
  const layout = join(dir, 'layout');
  const bundle = join(dir, 'bundle');
  await run('umoci', ['init', '--layout', layout]);
  await run('umoci', ['new', '--image', `${layout}:base`]);
  await run('umoci', ['unpack', '--image', `${layout}:base`, bundle]);
  const rootfs = join(bundle, 'rootfs');
  for (const d of ['bin', 'etc', 'tmp', 'root']) await mkdir(join(rootfs, d), { recursive: true });
  await chmod(join(rootfs, 'tmp'), 0o1777);
  await copyFile('/bin/busybox', join(rootfs, 'bin', 'busybox'));
  await chmod(join(rootfs, 'bin', 'busybox'), 0o755);
  for (const applet of ['sh', 'ls', 'cat', 'echo']) await symlink('busybox', join(rootfs, 'bin', applet));
  await writeFile(join(rootfs, 'etc', 'passwd'), 'root:x:0:0:root:/root:/bin/sh\napp:x:1000:1000::/home/app:/bin/sh\n');
  await run('umoci', ['repack', '--image', `${layout}:base`, bundle]);
  await run('umoci', ['config', '--image', `${layout}:base`, '--config.cmd', '/bin/sh', '--config.env', 'PATH=/bin', '--tag', 'base']);

  // full = base + data layer
  await run('rm', ['-rf', bundle]);
  await run('umoci', ['unpack', '--image', `${layout}:base`, bundle]);
  const data = join(rootfs, 'data');
  await mkdir(data, { recursive: true });
  await randomFile(join(data, 'random.bin'), mb);
  await writeFile(join(data, 'hello.txt'), 'hello\n');
  await link(join(data, 'hello.txt'), join(data, 'hello-link.txt'));
  await copyFile('/bin/busybox', join(data, 'suid'));
  await chmod(join(data, 'suid'), 0o4755);
  await writeFile(join(data, 'owned'), 'owned\n');
  await chown(join(data, 'owned'), 1234, 5678);
  await run('mkfifo', [join(data, 'fifo')]);
  await run('mknod', [join(data, 'null'), 'c', '1', '3']);
  await run('setfattr', ['-n', 'user.mybuild', '-v', 'yes', join(data, 'hello.txt')]);
  await symlink('../bin/busybox', join(data, 'link-to-busybox'));
  await run('rm', ['-f', join(rootfs, 'bin', 'echo')]); // a whiteout in the layer
  await run('umoci', ['repack', '--image', `${layout}:full`, bundle]);

  await run('rm', ['-rf', bundle]);
  await run('umoci', ['unpack', '--image', `${layout}:base`, bundle]);
  await writeFile(join(rootfs, 'other.txt'), 'other\n');
  await run('umoci', ['repack', '--image', `${layout}:other`, bundle]);
  await run('rm', ['-rf', bundle]);
  return { layout, tag: 'full' };
}

/** skopeo copy, for archives made by a peer. */
export async function skopeoCopy(src: string, dst: string): Promise<void> {
  await run('skopeo', ['copy', '--quiet', src, dst]);
}

export async function skopeoInspect(target: string): Promise<{ Digest: string; Layers: string[] }> {
  return JSON.parse(await run('skopeo', ['inspect', target])) as { Digest: string; Layers: string[] };
}
