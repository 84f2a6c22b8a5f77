/**
 * A COPY from the context that runs again after a change links the files that did not change
 * from its previous result (same content, owner, mode, times) instead of copying them: the layer
 * must come out byte for byte as a plain copy's, and anything uncertain is copied.
 */
import { chmodSync, constants, lstatSync, mkdirSync, readFileSync, rmSync, symlinkSync, utimesSync, writeFileSync, linkSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Digest } from '@mybuild/oci';
import { OverlaySnapshotter, chainIds, sys } from '@mybuild/layer-store';
import type { BuildEvent, BuildResult } from '@mybuild/builder';
import { type TestStore, ageTree, canBuild, failBuild, runBuild, testStore, unpackRootfs } from './executor-helpers.js';

const DOCKERFILE = `FROM busybox
COPY app /app
RUN find /app | sort | xargs ls -ld | wc -l > /count
`;

function linkedStatus(events: BuildEvent[]): string | undefined {
  return events.find((e): e is Extract<BuildEvent, { type: 'status' }> => e.type === 'status' && / linked from the previous build/.test(e.text))?.text;
}

/**
 * The base and COPY layers are the same (the RUN layer above holds a file written at build
 * time: its tar mtime, in seconds, differs between builds a second apart).
 */
function sameLayers(a: string[], b: string[]): void {
  expect(a.slice(0, 2)).toEqual(b.slice(0, 2));
}

describe.skipIf(!canBuild)('COPY links unchanged files from its previous result', () => {
  let t: TestStore;
  let plain: TestStore;
  let ctx: string;
  let sn: OverlaySnapshotter;
  beforeAll(async () => {
    t = await testStore('mybuild-donor-');
    plain = await testStore('mybuild-donor-plain-');
    sn = new OverlaySnapshotter(t.store.paths);
    ctx = join(t.dir, 'ctx');
    mkdirSync(join(ctx, 'app', 'sub', 'deeper'), { recursive: true });
    for (let i = 0; i < 60; i++) writeFileSync(join(ctx, 'app', `f${i}.txt`), `file ${i}\n`.repeat(i + 1));
    for (let i = 0; i < 10; i++) writeFileSync(join(ctx, 'app', 'sub', 'deeper', `g${i}`), `deep ${i}\n`);
    writeFileSync(join(ctx, 'app', 'run.sh'), '#!/bin/sh\necho hi\n');
    chmodSync(join(ctx, 'app', 'run.sh'), 0o755);
    writeFileSync(join(ctx, 'app', 'a-link-target'), 'shared inode\n');
    linkSync(join(ctx, 'app', 'a-link-target'), join(ctx, 'app', 'b-hardlink'));
    symlinkSync('f1.txt', join(ctx, 'app', 'symlink'));
    writeFileSync(join(ctx, 'app', 'empty'), '');
    ageTree(ctx);
  });
  afterAll(async () => {
    await t?.cleanup();
    await plain?.cleanup();
  });

  const build = (store: TestStore, noCache = false) => runBuild(store, { contextDir: ctx, dockerfile: DOCKERFILE, tags: ['donor:latest'], ...(noCache ? { noCache } : {}) });
  /** The upper directory of the COPY layer's snapshot. */
  const copyDir = (r: BuildResult) => sn.dir(chainIds(r.config.rootfs.diff_ids)[1]! as Digest);
  const ino = (dir: string, rel: string) => lstatSync(join(dir, rel)).ino;
  /** The same context built with a plain copy (another store, --no-cache): the reference. */
  const reference = async () => (await build(plain, true)).result;

  it('links what did not change; the layer is the one a plain copy makes', async () => {
    const first = await build(t);
    expect(linkedStatus(first.events)).toBeUndefined();
    const before = copyDir(first.result);

    writeFileSync(join(ctx, 'app', 'f7.txt'), 'changed\n');
    const second = await build(t);
    expect(second.result.stepsRun).toBe(2);
    expect(linkedStatus(second.events)).toMatch(/^\d+ unchanged file\(s\) linked/);
    const after = copyDir(second.result);
    expect(after).not.toBe(before);
    expect(ino(after, 'app/f8.txt')).toBe(ino(before, 'app/f8.txt'));
    expect(ino(after, 'app/sub/deeper/g3')).toBe(ino(before, 'app/sub/deeper/g3'));
    expect(ino(after, 'app/run.sh')).toBe(ino(before, 'app/run.sh'));
    expect(ino(after, 'app/f7.txt')).not.toBe(ino(before, 'app/f7.txt'));
    // a hardlink pair of the source stays one pair of its own, never tied to the old layer
    expect(ino(after, 'app/b-hardlink')).toBe(ino(after, 'app/a-link-target'));
    expect(ino(after, 'app/a-link-target')).not.toBe(ino(before, 'app/a-link-target'));

    const ref = await reference();
    sameLayers(second.result.config.rootfs.diff_ids, ref.config.rootfs.diff_ids);
    expect(second.result.imageId).not.toBe(first.result.imageId);
    // both COPY layers are kept as their snapshots (deferred blobs): the old one, whose files the
    // new one now shares, still reads back with its digest (links change no byte of its tar)
    for (const r of [first.result, second.result]) {
      const layer = r.config.rootfs.diff_ids[1]! as Digest;
      expect((await t.store.content.info(layer)).deferredFrom).toBeDefined();
      const tar = await t.store.content.readBytes(layer, 64 << 20);
      expect(tar.length).toBe((await t.store.content.info(layer)).size);
    }
  });

  it('copies a file whose mode or mtime changed (same content), and still makes the plain layer', async () => {
    const prev = copyDir((await build(t)).result);
    chmodSync(join(ctx, 'app', 'f10.txt'), 0o600);
    utimesSync(join(ctx, 'app', 'f11.txt'), Date.now() / 1000 - 7200, Date.now() / 1000 - 7200);
    writeFileSync(join(ctx, 'app', 'f12.txt'), 'changed too\n');
    utimesSync(join(ctx, 'app', 'f12.txt'), Date.now() / 1000 - 3600, Date.now() / 1000 - 3600);
    const r = await build(t);
    expect(r.result.stepsRun).toBe(2);
    const now = copyDir(r.result);
    expect(ino(now, 'app/f10.txt')).not.toBe(ino(prev, 'app/f10.txt'));
    expect(ino(now, 'app/f11.txt')).not.toBe(ino(prev, 'app/f11.txt'));
    expect(ino(now, 'app/f13.txt')).toBe(ino(prev, 'app/f13.txt'));
    expect(lstatSync(join(now, 'app/f10.txt')).mode & 0o777).toBe(0o600);
    sameLayers(r.result.config.rootfs.diff_ids, (await reference()).config.rootfs.diff_ids);
  });

  it('copies everything when the previous result is gone, and with --no-cache', async () => {
    const prev = (await build(t)).result;
    await sn.remove(chainIds(prev.config.rootfs.diff_ids)[2]! as Digest); // the RUN layer above it first
    await sn.remove(chainIds(prev.config.rootfs.diff_ids)[1]! as Digest);
    writeFileSync(join(ctx, 'app', 'f20.txt'), 'changed again\n');
    const r = await build(t);
    expect(linkedStatus(r.events)).toBeUndefined();
    sameLayers(r.result.config.rootfs.diff_ids, (await reference()).config.rootfs.diff_ids);

    writeFileSync(join(ctx, 'app', 'f21.txt'), 'and again\n');
    const fresh = await build(t, true);
    expect(linkedStatus(fresh.events)).toBeUndefined();
    sameLayers(fresh.result.config.rootfs.diff_ids, (await reference()).config.rootfs.diff_ids);
  });

  it('COPY --parents neither links nor records: a path it overwrote cannot be linked from a stale record later', async () => {
    const p = await testStore('mybuild-donor-parents-');
    try {
      const pctx = join(p.dir, 'ctx');
      mkdirSync(join(pctx, 'x', 'y'), { recursive: true });
      mkdirSync(join(pctx, 'y'), { recursive: true });
      writeFileSync(join(pctx, 'x', 'y', 'f'), 'AAAA');
      writeFileSync(join(pctx, 'y', 'f'), 'BBBB');
      const T = Math.floor(Date.now() / 1000) - 3600; // same whole-second mtimes, as an unpacked tarball has
      for (const f of ['x/y/f', 'y/f']) utimesSync(join(pctx, f), T, T);
      const dockerfile = 'FROM busybox\nCOPY --parents x/./ y/* /dest/\n';
      await runBuild(p, { contextDir: pctx, dockerfile, tags: ['p:1'] });
      expect(readFileSync(join(await unpackRootfs(p, 'p:1'), 'dest/y/f'), 'utf8')).toBe('BBBB');
      rmSync(join(pctx, 'y', 'f')); // now /dest/y/f comes from x/y/f
      const r = await runBuild(p, { contextDir: pctx, dockerfile, tags: ['p:2'] });
      expect(linkedStatus(r.events)).toBeUndefined();
      expect(readFileSync(join(await unpackRootfs(p, 'p:2'), 'dest/y/f'), 'utf8')).toBe('AAAA');
    } finally {
      await p.cleanup();
    }
  });

  it('a 0:0 character device (a layer’s deletion marker) is refused, written directly or through the overlay', async () => {
    const d = await testStore('mybuild-donor-wh-');
    try {
      const dctx = join(d.dir, 'ctx');
      mkdirSync(join(dctx, 'app'), { recursive: true });
      writeFileSync(join(dctx, 'app', 'keep'), 'k');
      sys().mknod(join(dctx, 'app', 'wh'), constants.S_IFCHR | 0o600, 0, 0);
      for (const direct of ['1', '0']) {
        process.env.MYBUILD_COPY_DIRECT = direct;
        try {
          const { error } = await failBuild(d, { contextDir: dctx, dockerfile: 'FROM busybox\nCOPY app /newdir/\n', tags: ['w:1'] });
          expect(error.message).toMatch(direct === '1' ? /0:0 character device/ : /0:0 character device|EPERM|not permitted/);
        } finally {
          delete process.env.MYBUILD_COPY_DIRECT;
        }
      }
      await expect(d.store.images.resolve('w:1')).rejects.toThrow();
    } finally {
      await d.cleanup();
    }
  });
});
