/**
 * `writeLayer` on the upper dir of a real overlay mount (we are root): a RUN step's changes,
 * made through the merged view, must come back — applied over the lower layer by our extractor,
 * by umoci, and re-mounted as an overlay — as exactly the merged view the step saw.
 */
import { execFileSync } from 'node:child_process';
import { chmodSync, chownSync, linkSync, lstatSync, mkdirSync, readFileSync, rmSync, symlinkSync, utimesSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { MyBuildError } from '@mybuild/oci';
import { OVERLAY_OPTIONS, applyLayer, sys, writeLayer, type WrittenLayer } from '@mybuild/layer-store';
import { type CountingContentStore, type Layer, comparableTree, newStore, rmrf, tempDir, writeOciLayout } from './helpers-tar.js';

const CAP = Buffer.from([0x01, 0x00, 0x00, 0x02, 0x80, 0x20, 0x00, 0x00, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
const T = 1_600_000_000;

function canMountOverlay(): boolean {
  const dir = tempDir('mybuild-ovl-probe-');
  try {
    for (const d of ['l', 'u', 'w', 'm']) mkdirSync(join(dir, d));
    execFileSync('mount', ['-t', 'overlay', 'overlay', '-o', `lowerdir=${dir}/l,upperdir=${dir}/u,workdir=${dir}/w`, `${dir}/m`], { stdio: 'ignore' });
    execFileSync('umount', [`${dir}/m`]);
    return true;
  } catch {
    return false;
  } finally {
    rmrf(dir);
  }
}

/** A base image's files: what RUN steps change. */
function makeLower(root: string): void {
  const file = (rel: string, data: string, mode = 0o644): void => {
    mkdirSync(join(root, rel, '..'), { recursive: true });
    writeFileSync(join(root, rel), data);
    chmodSync(join(root, rel), mode);
  };
  file('etc/passwd', 'root:x:0:0::/root:/bin/sh\n');
  file('etc/group', 'root:x:0:\n');
  file('etc/motd', 'welcome\n');
  file('etc/hosts', '127.0.0.1 localhost\n');
  file('usr/bin/tool', '#!/bin/sh\n', 0o755);
  file('usr/bin/other', 'other', 0o755);
  linkSync(join(root, 'usr/bin/other'), join(root, 'usr/bin/other-hard'));
  file('var/cache/apt/pkgcache.bin', 'cache');
  file('var/cache/apt/archives/lock', '');
  file('opt/app/main.js', 'console.log(1)');
  file('opt/app/lib/util.js', 'exports.x = 1');
  file('srv/data/keep', 'keep');
  mkdirSync(join(root, 'home/user'), { recursive: true });
  chownSync(join(root, 'home/user'), 1000, 1000);
}

/** What a RUN step does, through the merged view. */
function runStep(merged: string): void {
  const m = (p: string): string => join(merged, p);
  rmSync(m('etc/passwd')); // whiteout
  writeFileSync(m('etc/motd'), 'changed\n'); // copy-up, new content
  chmodSync(m('etc/group'), 0o600); // metadata-only change (a full copy-up with metacopy=off)
  chownSync(m('usr/bin/tool'), 1000, 1000);
  sys().lsetxattr(m('usr/bin/tool'), 'security.capability', CAP);
  sys().lsetxattr(m('usr/bin/tool'), 'user.note', Buffer.from([0xff, 0x00]));
  rmSync(m('var/cache'), { recursive: true }); // a directory deleted and made again: opaque
  mkdirSync(m('var/cache/apt'), { recursive: true });
  writeFileSync(m('var/cache/apt/new'), 'fresh');
  rmSync(m('opt/app/lib'), { recursive: true }); // a whole directory deleted: one whiteout
  execFileSync('mv', [m('etc/hosts'), m('etc/hosts.bak')]); // a renamed file
  execFileSync('mv', [m('srv/data'), m('srv/moved')]); // a renamed directory: EXDEV → copied
  writeFileSync(m('home/user/.profile'), 'export A=1'); // new file in a lower dir
  writeFileSync(m('new-a'), 'linked'); // hardlinks made in the step
  linkSync(m('new-a'), m('new-b'));
  linkSync(m('usr/bin/tool'), m('usr/bin/tool-link')); // a hardlink to a (copied-up) lower file
  sys().mknod(m('null'), 0o020666, 1, 3);
  chmodSync(m('null'), 0o666);
  sys().mknod(m('fifo'), 0o010600, 0, 0);
  symlinkSync('/usr/bin/tool', m('tool'));
  writeFileSync(m('usr/bin/other'), 'other v2'); // breaks the lower hardlink (index=off)
  utimesSync(m('new-a'), T, T);
}

/** A tree for comparison: no root, whole-second mtimes (a tar's resolution). */
function treeOf(dir: string): ReturnType<typeof comparableTree> {
  const t = comparableTree(dir, { mtimes: true });
  delete t.entries['.'];
  for (const v of Object.values(t.entries)) v.mtime = Math.floor((v.mtime ?? 0) / 1000);
  // a lower file whose other link was copied up still counts 2 links in the merged view
  t.hardlinks = t.hardlinks.filter((g) => g.length > 1);
  return t;
}

function blobLayer(store: CountingContentStore, l: WrittenLayer): Layer {
  return { tar: Buffer.alloc(0), blob: readFileSync(store.path(l.digest)), diffId: l.diffId, desc: { mediaType: l.mediaType, digest: l.digest, size: l.size } };
}

const mountable = canMountOverlay();

describe.skipIf(!mountable)('writeLayer on a real overlay upper dir', () => {
  let tmp: string;
  let store: CountingContentStore;
  let lower: string;
  let upper: string;
  let work: string;
  let merged: string;
  const mounted: string[] = [];
  const mount = (opts: readonly string[]): void => {
    execFileSync('mount', ['-t', 'overlay', 'overlay', '-o', [`lowerdir=${lower}`, `upperdir=${upper}`, `workdir=${work}`, ...opts].join(','), merged]);
    mounted.push(merged);
  };
  const umount = (): void => {
    execFileSync('umount', [mounted.pop()!]);
  };

  beforeEach(async () => {
    tmp = tempDir('mybuild-diff-ovl-');
    store = await newStore(join(tmp, 'store'));
    lower = join(tmp, 'lower');
    upper = join(tmp, 'upper');
    work = join(tmp, 'work');
    merged = join(tmp, 'merged');
    for (const d of [lower, upper, work, merged]) mkdirSync(d);
    makeLower(lower);
  });
  afterEach(() => {
    for (const m of mounted.splice(0).reverse()) execFileSync('umount', ['-l', m]);
    rmrf(tmp);
  });

  it('gives back the merged view: applied over the lower layer (ours, umoci) and re-mounted', async () => {
    mount(OVERLAY_OPTIONS);
    runStep(merged);
    const seen = treeOf(merged);
    umount();
    // sanity: the step left the overlay's own marks in the upper dir
    expect(lstatSync(join(upper, 'etc/passwd')).isCharacterDevice()).toBe(true);
    expect(sys().lgetxattr(join(upper, 'var/cache'), 'trusted.overlay.opaque')?.toString()).toBe('y');

    const base = await writeLayer(lower, { store, mode: 'plain', compression: 'gzip' });
    const diff = await writeLayer(upper, { store, mode: 'overlay-upper', compression: 'gzip' });

    // flattened by our extractor
    const ours = join(tmp, 'ours');
    for (const l of [base, diff]) await applyLayer(Readable.from([readFileSync(store.path(l.digest))]), ours, { mode: 'flatten', diffId: l.diffId });
    expect(treeOf(ours)).toEqual(seen);

    // flattened by umoci
    const layout = join(tmp, 'layout');
    writeOciLayout(layout, [blobLayer(store, base), blobLayer(store, diff)], 'test');
    const theirs = join(tmp, 'umoci');
    execFileSync('umoci', ['raw', 'unpack', '--image', `${layout}:test`, theirs], { stdio: 'pipe' });
    expect(treeOf(theirs)).toEqual(seen);

    // unpacked as snapshots (overlay mode) and mounted again, as the snapshotter does
    const l1 = join(tmp, 'snap1');
    const l2 = join(tmp, 'snap2');
    await applyLayer(Readable.from([readFileSync(store.path(base.digest))]), l1, { mode: 'overlay' });
    await applyLayer(Readable.from([readFileSync(store.path(diff.digest))]), l2, { mode: 'overlay', lowerDirs: [l1] });
    const view = join(tmp, 'view');
    mkdirSync(view);
    execFileSync('mount', ['-t', 'overlay', 'overlay', '-o', `lowerdir=${l2}:${l1},ro`, view]);
    mounted.push(view);
    const again = treeOf(view);
    umount();
    expect(again).toEqual(seen);

    // and the same upper dir gives the same layer twice
    expect(await writeLayer(upper, { store, mode: 'overlay-upper', compression: 'gzip' })).toEqual(diff);
  });

  it('refuses the upper dir of a mount with metacopy=on (a chmod copies up no data)', async () => {
    mount(['index=off', 'metacopy=on']);
    chmodSync(join(merged, 'etc/group'), 0o600);
    umount();
    expect(sys().lgetxattr(join(upper, 'etc/group'), 'trusted.overlay.metacopy')).not.toBeNull();
    const err = await writeLayer(upper, { store, mode: 'overlay-upper' }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(MyBuildError);
    expect((err as MyBuildError).code).toBe('FAILED_PRECONDITION');
    expect((err as MyBuildError).message).toMatch(/"etc\/group" has the overlay xattr trusted\.overlay\.metacopy/);
    expect(await store.ingests()).toEqual([]);
  });

  it('refuses the upper dir of a mount with redirect_dir=on (a renamed directory points into the lower one)', async () => {
    mount(['index=off', 'redirect_dir=on', 'metacopy=off']);
    execFileSync('mv', [join(merged, 'opt/app'), join(merged, 'opt/renamed')]);
    umount();
    const err = await writeLayer(upper, { store, mode: 'overlay-upper' }).catch((e: unknown) => e);
    expect((err as MyBuildError).code).toBe('FAILED_PRECONDITION');
    expect((err as MyBuildError).message).toMatch(/"opt\/renamed" has the overlay xattr trusted\.overlay\.redirect/);
    expect((err as MyBuildError).hint).toMatch(/redirect_dir=off/);
  });
});
