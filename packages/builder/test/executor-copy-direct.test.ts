/**
 * A COPY whose destination no lower layer has anything of writes straight into the step's upper
 * directory instead of through the overlay: the layer must be byte for byte the one a copy
 * through the overlay makes (MYBUILD_COPY_DIRECT=0), and a destination a lower layer touches
 * (a directory, a symlink, a whiteout) still goes through the overlay.
 */
import { chmodSync, linkSync, lstatSync, mkdirSync, symlinkSync, writeFileSync } from 'node:fs';
import { createHash } from 'node:crypto';
import { join } from 'node:path';
import type { Digest } from '@mybuild/oci';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { writesOnlyNew } from '../src/executor/steps.js';
import { type TestStore, ageTree, canBuild, runBuild, testStore, unpackRootfs } from './executor-helpers.js';

const DOCKERFILE = `FROM busybox
RUN mkdir -p /srv/data /gone && ln -s /srv/data /linked && echo base > /srv/data/base.txt && touch /gone/old
RUN rm -r /gone
COPY --chown=nobody:nogroup --chmod=0640 app/f1.txt /new-file.txt
COPY app /app/
COPY app/sub /deep/er/dir/
COPY --chown=nobody app/sub/ /owned/
COPY app/f2.txt /srv/data/
COPY app/f3.txt /linked/
COPY app/ /gone/
COPY app/f1.txt /etc/copied.txt
`;

/**
 * A layer tar with the mtime of every directory entry at or after `since` (seconds) zeroed
 * (and its header checksum, which covers it), as a list of hex digests of its 512-byte blocks
 * (a readable diff when two differ).
 */
function normalize(tar: Buffer, since: number): string[] {
  const out = Buffer.from(tar);
  const octal = (b: Buffer) => parseInt(b.toString('latin1').replace(/\0.*$/s, '').trim() || '0', 8);
  let off = 0;
  while (off + 512 <= out.length) {
    const h = out.subarray(off, off + 512);
    if (h.every((x) => x === 0)) break;
    const size = octal(h.subarray(124, 136));
    if (h[156] === 0x35 && octal(h.subarray(136, 148)) >= since) h.fill(0, 136, 156);
    off += 512 + Math.ceil(size / 512) * 512;
  }
  const blocks: string[] = [];
  for (let i = 0; i < off; i += 512) blocks.push(`${i / 512} ${out.toString('latin1', i, i + 100).replace(/\0+$/, '')} ${createHash('sha256').update(out.subarray(i, i + 512)).digest('hex').slice(0, 16)}`);
  return blocks;
}

describe.skipIf(!canBuild)('COPY straight into the upper directory', () => {
  const started = Math.floor(Date.now() / 1000);
  let direct: TestStore;
  let overlay: TestStore;
  let ctx: string;
  beforeAll(async () => {
    direct = await testStore('mybuild-copy-direct-');
    overlay = await testStore('mybuild-copy-overlay-');
    ctx = join(direct.dir, 'ctx');
    mkdirSync(join(ctx, 'app', 'sub', 'deeper'), { recursive: true });
    for (let i = 1; i <= 5; i++) writeFileSync(join(ctx, 'app', `f${i}.txt`), `file ${i}\n`.repeat(i));
    writeFileSync(join(ctx, 'app', 'sub', 'deeper', 'g'), 'deep\n');
    writeFileSync(join(ctx, 'app', 'run.sh'), '#!/bin/sh\n');
    chmodSync(join(ctx, 'app', 'run.sh'), 0o755);
    linkSync(join(ctx, 'app', 'f1.txt'), join(ctx, 'app', 'hard'));
    symlinkSync('f2.txt', join(ctx, 'app', 'sym'));
    ageTree(ctx);
  });
  afterAll(async () => {
    await direct?.cleanup();
    await overlay?.cleanup();
  });

  it('makes the same layers as a copy through the overlay', async () => {
    const a = await runBuild(direct, { contextDir: ctx, dockerfile: DOCKERFILE, tags: ['copy:direct'] });
    const saved = process.env.MYBUILD_COPY_DIRECT;
    process.env.MYBUILD_COPY_DIRECT = '0';
    let b;
    try {
      b = await runBuild(overlay, { contextDir: ctx, dockerfile: DOCKERFILE, tags: ['copy:overlay'] });
    } finally {
      if (saved === undefined) delete process.env.MYBUILD_COPY_DIRECT;
      else process.env.MYBUILD_COPY_DIRECT = saved;
    }
    const ids = (r: typeof a) => r.result.config.rootfs.diff_ids as Digest[];
    expect(ids(a).length).toBe(11);
    // Every COPY layer holds the same entries, bytes and times, but for the directories the copy
    // made or changed (their mtime is the moment of the build): those times are set aside.
    const copyLayers = async (t: TestStore, r: typeof a) => Promise.all(ids(r).slice(3).map(async (d) => normalize(await t.store.content.readBytes(d, 64 << 20), started)));
    expect(await copyLayers(direct, a)).toEqual(await copyLayers(overlay, b));
    // (and some of them are byte for byte the same)
    expect(ids(a)[3]).toBe(ids(b)[3]);

    const root = await unpackRootfs(direct, 'copy:direct');
    expect(lstatSync(join(root, 'srv/data/f2.txt')).isFile()).toBe(true);
    expect(lstatSync(join(root, 'srv/data/f3.txt')).isFile()).toBe(true); // through the lower symlink /linked
    expect(lstatSync(join(root, 'linked')).isSymbolicLink()).toBe(true);
    expect(lstatSync(join(root, 'gone/f1.txt')).isFile()).toBe(true);
    expect(() => lstatSync(join(root, 'gone/old'))).toThrow(/ENOENT/); // the copy over a whiteout does not bring it back
    expect(lstatSync(join(root, 'new-file.txt')).mode & 0o777).toBe(0o640);
    expect(lstatSync(join(root, 'new-file.txt')).uid).toBe(65534);
    expect(lstatSync(join(root, 'owned/deeper/g')).uid).toBe(65534);
    expect(lstatSync(join(root, 'app/hard')).ino).toBe(lstatSync(join(root, 'app/f1.txt')).ino);
  });

  it('writesOnlyNew: a destination a lower layer has anything of goes through the overlay', () => {
    const lower = join(direct.dir, 'lower-check');
    mkdirSync(join(lower, 'l1', 'etc'), { recursive: true });
    mkdirSync(join(lower, 'l2'), { recursive: true });
    symlinkSync('/etc', join(lower, 'l2', 'link'));
    const mounts = [{ type: 'overlay', options: [`lowerdir=${join(lower, 'l1')}:${join(lower, 'l2')}`] }];
    expect(writesOnlyNew('/app/x/', mounts)).toBe(true);
    expect(writesOnlyNew('/etc/x', mounts)).toBe(false);
    expect(writesOnlyNew('/link/x', mounts)).toBe(false);
    expect(writesOnlyNew('/', mounts)).toBe(false);
    expect(writesOnlyNew('/app', [{ type: 'bind', options: ['rbind', 'rw'] }])).toBe(true);
    process.env.MYBUILD_COPY_DIRECT = '0';
    try {
      expect(writesOnlyNew('/app/x/', mounts)).toBe(false);
    } finally {
      delete process.env.MYBUILD_COPY_DIRECT;
    }
  });
});
