import { execFileSync } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync, readdirSync, rmSync, statSync, unlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { type Digest, sha256Of } from '@mybuild/oci';
import { type Mount, OverlaySnapshotter, acquireLock, chainIds, storePaths, sys, unpackImage } from '@mybuild/layer-store';
import { type CountingContentStore, type Layer, comparableTree, makeLayer, newStore, nodeInfo, putLayers, rmrf, tempDir } from './helpers-tar.js';

/** Mount `m` at `target` the way a caller of the snapshotter would (real mounts; we are root). */
function mountAt(m: Mount, target: string): void {
  mkdirSync(target, { recursive: true });
  if (m.type === 'overlay') {
    execFileSync('mount', ['-t', 'overlay', m.source, '-o', m.options.join(','), target]);
    return;
  }
  execFileSync('mount', ['--bind', m.source, target]);
  if (m.options.includes('ro')) execFileSync('mount', ['-o', 'remount,bind,ro', target]);
}

function isMounted(target: string): boolean {
  return readFileSync('/proc/self/mountinfo', 'utf8')
    .split('\n')
    .some((l) => l.split(' ')[4] === target);
}

function unmount(target: string): void {
  try {
    execFileSync('umount', [target]);
  } catch {
    execFileSync('umount', ['-l', target]);
  }
}

/** Mount, run `fn`, always unmount. */
async function withMount<T>(m: Mount[], target: string, fn: () => T | Promise<T>): Promise<T> {
  expect(m).toHaveLength(1);
  mountAt(m[0]!, target);
  try {
    return await fn();
  } finally {
    unmount(target);
  }
}

const base = (): Layer =>
  makeLayer([
    { name: 'etc/', type: 'dir' },
    { name: 'etc/os-release', data: 'ID=test\n' },
    { name: 'etc/gone', data: 'deleted by layer 2' },
    { name: 'opt/', type: 'dir' },
    { name: 'opt/old1', data: '1' },
    { name: 'opt/old2', data: '2' },
    { name: 'bin/', type: 'dir' },
    { name: 'bin/sh', data: '#!shell', mode: 0o755 },
    { name: 'bin/rmme', data: 'x' },
  ]);

const second = (): Layer =>
  makeLayer([
    { name: 'etc/', type: 'dir' },
    { name: 'etc/.wh.gone', data: '' },
    { name: 'etc/added', data: 'layer 2' },
    { name: 'opt/', type: 'dir', mode: 0o750 },
    { name: 'opt/.wh..wh..opq', data: '' },
    { name: 'opt/new', data: 'new' },
  ]);

describe('OverlaySnapshotter', () => {
  let tmp: string;
  let root: string;
  let store: CountingContentStore;
  let sn: OverlaySnapshotter;
  const mounted: string[] = [];

  beforeEach(async () => {
    tmp = tempDir('mybuild-snap-');
    root = join(tmp, 'store');
    store = await newStore(root);
    sn = new OverlaySnapshotter(root);
  });
  afterEach(() => {
    for (const m of mounted.splice(0)) if (isMounted(m)) unmount(m);
    rmrf(tmp);
  });

  it('unpacks layers once per chain ID into committed snapshots', async () => {
    const layers = [base(), second()];
    await putLayers(store, layers);
    const top = await sn.unpack(
      layers.map((l) => l.desc),
      layers.map((l) => l.diffId),
      store,
    );
    const chain = chainIds(layers.map((l) => l.diffId));
    expect(top).toBe(chain[1]);
    expect(chain[0]).toBe(layers[0]!.diffId);
    expect(chain[1]).toBe(sha256Of(`${layers[0]!.diffId} ${layers[1]!.diffId}`));
    const snaps = storePaths(root).snapshots;
    expect(readdirSync(snaps).sort()).toEqual(chain.map((c) => c.slice(7)).sort());
    const info = JSON.parse(readFileSync(join(snaps, chain[1]!.slice(7), 'info.json'), 'utf8')) as Record<string, string>;
    expect(info).toMatchObject({ name: chain[1], kind: 'committed', parent: chain[0] });
    expect(typeof info.created).toBe('string');
    expect(await sn.stat(chain[1]!)).toMatchObject({ name: chain[1], kind: 'committed', parent: chain[0] });
    // the upper layer's own directory holds overlay whiteouts
    expect(nodeInfo(join(sn.dir(chain[1]!), 'etc/gone'))).toMatchObject({ type: 'char', rdev: [0, 0] });
    expect(sys().lgetxattr(join(sn.dir(chain[1]!), 'opt'), 'trusted.overlay.opaque')?.toString()).toBe('y');
    expect((await sn.list()).map((s) => s.name).sort()).toEqual([...chain].sort());
  });

  it('prepare returns an overlay mount with explicit options; writes land in the upper dir', async () => {
    const layers = [base(), second()];
    await putLayers(store, layers);
    const top = await sn.unpack(
      layers.map((l) => l.desc),
      layers.map((l) => l.diffId),
      store,
    );
    const chain = chainIds(layers.map((l) => l.diffId));
    const mounts = await sn.prepare('build-1', top);
    expect(mounts).toHaveLength(1);
    const m = mounts[0]!;
    expect(m.type).toBe('overlay');
    expect(m.options).toEqual(expect.arrayContaining(['index=off', 'redirect_dir=off', 'metacopy=off']));
    const upper = sn.dir('build-1');
    expect(m.options).toContain(`upperdir=${upper}`);
    expect(m.options).toContain(`lowerdir=${sn.dir(chain[1]!)}:${sn.dir(chain[0]!)}`);
    expect(m.options.find((o) => o.startsWith('workdir='))).toBe(`workdir=${join(upper, '..', 'work')}`);
    expect(await sn.mounts('build-1')).toEqual(mounts);

    const target = join(tmp, 'mnt');
    mounted.push(target);
    await withMount(mounts, target, () => {
      // the merged view honours the layers' whiteouts
      expect(readFileSync(join(target, 'etc/os-release'), 'utf8')).toBe('ID=test\n');
      expect(readFileSync(join(target, 'etc/added'), 'utf8')).toBe('layer 2');
      expect(existsSync(join(target, 'etc/gone'))).toBe(false);
      expect(readdirSync(join(target, 'opt'))).toEqual(['new']);
      expect(statSync(join(target, 'opt')).mode & 0o7777).toBe(0o750);
      // a RUN step's changes
      writeFileSync(join(target, 'etc/hostname'), 'box\n');
      unlinkSync(join(target, 'bin/rmme'));
    });
    expect(readFileSync(join(upper, 'etc/hostname'), 'utf8')).toBe('box\n');
    expect(nodeInfo(join(upper, 'bin/rmme'))).toMatchObject({ type: 'char', rdev: [0, 0] });
    expect(existsSync(join(upper, 'etc/os-release'))).toBe(false); // nothing copied up that was not changed

    // commit renames, no copy; a new snapshot on top sees the change
    const ino = statSync(upper).ino;
    await sn.commit('layer-3', 'build-1');
    expect(statSync(sn.dir('layer-3')).ino).toBe(ino);
    await expect(sn.stat('build-1')).rejects.toMatchObject({ code: 'NOT_FOUND' });
    expect(await sn.stat('layer-3')).toMatchObject({ kind: 'committed', parent: top });
    const m2 = await sn.prepare('build-2', 'layer-3');
    await withMount(m2, target, () => {
      expect(readFileSync(join(target, 'etc/hostname'), 'utf8')).toBe('box\n');
      expect(existsSync(join(target, 'bin/rmme'))).toBe(false);
      expect(existsSync(join(target, 'bin/sh'))).toBe(true);
    });
  });

  it('prepare without a parent is a rw bind mount; views are read-only', async () => {
    const layers = [base(), second()];
    await putLayers(store, layers);
    const top = await sn.unpack(
      layers.map((l) => l.desc),
      layers.map((l) => l.diffId),
      store,
    );
    const first = chainIds(layers.map((l) => l.diffId))[0]!;
    const target = join(tmp, 'mnt');
    mounted.push(target);

    const scratch = await sn.prepare('scratch');
    expect(scratch).toEqual([{ type: 'bind', source: sn.dir('scratch'), options: ['rbind', 'rw'] }]);
    await withMount(scratch, target, () => writeFileSync(join(target, 'f'), 'x'));
    expect(readFileSync(join(sn.dir('scratch'), 'f'), 'utf8')).toBe('x');

    const v1 = await sn.view('v1', first);
    expect(v1).toEqual([{ type: 'bind', source: sn.dir(first), options: ['rbind', 'ro'] }]);
    const v2 = await sn.view('v2', top);
    expect(v2[0]!.type).toBe('overlay');
    expect(v2[0]!.options.some((o) => o.startsWith('upperdir='))).toBe(false);
    expect((await sn.stat('v2')).kind).toBe('view');
    await withMount(v2, target, () => {
      expect(readFileSync(join(target, 'etc/added'), 'utf8')).toBe('layer 2');
      expect(() => writeFileSync(join(target, 'nope'), 'x')).toThrow(/EROFS/);
    });
    await expect(sn.commit('x', 'v2')).rejects.toMatchObject({ code: 'FAILED_PRECONDITION' });
    // the same views without snapshots of their own (a build under the import lease)
    const listed = (await sn.list()).map((i) => i.name).sort();
    expect(sn.viewMounts(first)).toEqual(v1);
    expect(sn.viewMounts(top)).toEqual(v2);
    await withMount(sn.viewMounts(top), target, () => {
      expect(readFileSync(join(target, 'etc/added'), 'utf8')).toBe('layer 2');
      expect(() => writeFileSync(join(target, 'nope'), 'x')).toThrow(/EROFS/);
    });
    expect((await sn.list()).map((i) => i.name).sort()).toEqual(listed);
    expect(() => sn.viewMounts('sha256:' + '0'.repeat(64))).toThrow(/not found/);
    expect(() => sn.viewMounts('scratch')).toThrow(/not committed/);
  });

  it('shares layers between images: each chain ID is extracted once, also when unpacked concurrently', async () => {
    const l1 = base();
    const l2 = second();
    const l3 = makeLayer([{ name: 'app/', type: 'dir' }, { name: 'app/main', data: 'main' }], 'zstd');
    await putLayers(store, [l1, l2, l3]);
    const imageA = [l1, l2];
    const imageB = [l1, l3];
    const sn2 = new OverlaySnapshotter(root); // another "process" on the same root
    const [a, a2] = await Promise.all([
      sn.unpack(
        imageA.map((l) => l.desc),
        imageA.map((l) => l.diffId),
        store,
      ),
      sn2.unpack(
        imageA.map((l) => l.desc),
        imageA.map((l) => l.diffId),
        store,
      ),
    ]);
    expect(a2).toBe(a);
    const baseDir = sn.dir(l1.diffId);
    const baseIno = statSync(baseDir).ino;
    await sn.unpack(
      imageB.map((l) => l.desc),
      imageB.map((l) => l.diffId),
      store,
    );
    expect(store.reads.get(l1.desc.digest)).toBe(1);
    expect(store.reads.get(l2.desc.digest)).toBe(1);
    expect(store.reads.get(l3.desc.digest)).toBe(1);
    expect(statSync(baseDir).ino).toBe(baseIno);
    // 3 chain IDs: l1, l1+l2, l1+l3
    expect((await sn.list()).filter((s) => s.kind === 'committed')).toHaveLength(3);
    // unpacking again reads nothing
    await sn.unpack(
      imageB.map((l) => l.desc),
      imageB.map((l) => l.diffId),
      store,
    );
    expect(store.reads.get(l1.desc.digest)).toBe(1);
  });

  it('commits nothing when the diffID does not match, and leaves no temp directory', async () => {
    const l1 = base();
    const l2 = second();
    await putLayers(store, [l1, l2]);
    const wrong = sha256Of('not the tar');
    await expect(sn.unpack([l1.desc, l2.desc], [l1.diffId, wrong], store)).rejects.toMatchObject({ code: 'DIGEST_MISMATCH' });
    const snaps = storePaths(root).snapshots;
    expect(readdirSync(snaps)).toEqual([l1.diffId.slice(7)]); // the good base layer only
    expect(chainIds([l1.diffId, wrong])[1]).toBeDefined();
    await expect(sn.stat(chainIds([l1.diffId, wrong])[1]!)).rejects.toMatchObject({ code: 'NOT_FOUND' });
  });

  it('verifies the compressed blob against its descriptor', async () => {
    const l1 = base();
    await putLayers(store, [l1]);
    await expect(sn.unpack([{ ...l1.desc, size: l1.desc.size - 1 }], [l1.diffId], store)).rejects.toMatchObject({ code: 'SIZE_EXCEEDED' });
    expect(readdirSync(storePaths(root).snapshots)).toEqual([]);
  });

  it('follows containerd semantics for keys, names and removal', async () => {
    const l1 = base();
    await putLayers(store, [l1]);
    const top = await sn.unpack([l1.desc], [l1.diffId], store);
    await sn.prepare('k1', top);
    await expect(sn.prepare('k1', top)).rejects.toMatchObject({ code: 'ALREADY_EXISTS' });
    await expect(sn.prepare('k2', 'sha256:' + '0'.repeat(64))).rejects.toMatchObject({ code: 'NOT_FOUND' });
    await expect(sn.prepare('k3', 'k1')).rejects.toMatchObject({ code: 'FAILED_PRECONDITION' });
    await expect(sn.commit(top, 'k1')).rejects.toMatchObject({ code: 'ALREADY_EXISTS' });
    expect(await sn.stat('k1')).toMatchObject({ kind: 'active', name: 'k1' }); // still active after the failed commit
    await sn.commit('c1', 'k1');
    await expect(sn.remove(top)).rejects.toMatchObject({ code: 'FAILED_PRECONDITION' });
    await sn.remove('c1');
    await sn.remove(top);
    await expect(sn.remove(top)).rejects.toMatchObject({ code: 'NOT_FOUND' });
    expect(readdirSync(storePaths(root).snapshots)).toEqual([]);
  });

  it('a mounted stack of overlay-mode snapshots shows the same tree as flatten mode', async () => {
    const lower = makeLayer([
      { name: 'a/', type: 'dir', mode: 0o700, uid: 5 },
      { name: 'a/x', data: 'x' },
      { name: 'a/sub/', type: 'dir' },
      { name: 'a/sub/z', data: 'z' },
      { name: 'b/', type: 'dir', mode: 0o711 },
      { name: 'b/p', data: 'p' },
      { name: 'c', data: 'file, then a dir' },
      { name: 'd/', type: 'dir' },
      { name: 'd/e', data: 'e' },
      { name: 'f/', type: 'dir' },
      { name: 'f/keep', data: 'k', mode: 0o600 },
      { name: 'h', data: 'hard', mode: 0o640 },
      { name: 'h2', type: 'link', linkname: 'h' },
    ]);
    const upper = makeLayer([
      { name: '.wh.a', data: '' }, // whiteout, then new content under the same name
      { name: 'a/new', data: 'new' },
      { name: 'b/new2', data: 'n2' }, // new content, then a whiteout of its directory
      { name: '.wh.b', data: '' },
      { name: 'c/', type: 'dir', mode: 0o750 },
      { name: 'c/f', data: 'f' },
      { name: '.wh.d', data: '' }, // whiteout, then a directory entry
      { name: 'd/', type: 'dir', mode: 0o705 },
      { name: 'd/g', data: 'g' },
      { name: 'f/added', data: 'a' },
      { name: 'f/.wh.never', data: '' },
      { name: 'f/.wh.added', data: '' }, // same layer: stays
    ]);
    const third = second();
    const layers = [lower, upper, base(), third];
    await putLayers(store, layers);
    const top = await sn.unpack(
      layers.map((l) => l.desc),
      layers.map((l) => l.diffId),
      store,
    );
    const flat = join(tmp, 'flat');
    await unpackImage(
      layers.map((l) => l.desc),
      store,
      flat,
    );
    const target = join(tmp, 'mnt');
    mounted.push(target);
    const merged = await withMount(await sn.view('cmp', top), target, () => comparableTree(target));
    const expected = comparableTree(flat);
    delete (expected.entries as Record<string, unknown>)['.'];
    delete (merged.entries as Record<string, unknown>)['.'];
    expect(merged).toEqual(expected);
    expect(Object.keys(expected.entries).filter((p) => /^[ab](\/|$)/.test(p)).sort()).toEqual(['a', 'a/new', 'b', 'b/new2']);
    expect(expected.entries['b']?.mode).toBe(0o711);
    expect(expected.hardlinks).toEqual([['h', 'h2']]);
  });

  it('fails clearly when the lowerdir list exceeds one page of mount data', async () => {
    let parent: string | undefined;
    let layers = 0;
    let err: unknown;
    for (let i = 0; i < 200 && err === undefined; i++) {
      try {
        await sn.prepare(`k${i}`, parent);
      } catch (e) {
        err = e;
        break;
      }
      const name = `sha256:${sha256Of(String(i)).slice(7)}` as Digest;
      await sn.commit(name, `k${i}`);
      parent = name;
      layers = i + 1;
    }
    expect(err).toMatchObject({ code: 'UNSUPPORTED' });
    expect(layers).toBeGreaterThan(10);
    // the last chain that was accepted really mounts
    const ok = await sn.view('last-ok', parent);
    expect(ok[0]!.options.join(',').length).toBeLessThanOrEqual(4095);
    const target = join(tmp, 'mnt');
    mounted.push(target);
    await withMount(ok, target, () => expect(readdirSync(target)).toEqual([]));
    rmSync(target, { recursive: true });
  });
});

describe('OverlaySnapshotter.cleanup', () => {
  it('removes temp dirs a killed process left, keeps those in use', async () => {
    const dir = tempDir();
    try {
      const paths = storePaths(join(dir, 'root'));
      const snaps = new OverlaySnapshotter(paths);
      await snaps.prepare('warm-up'); // creates snapshots/ and locks/
      mkdirSync(join(paths.snapshots, 'tmp-dead0000'), { recursive: true });
      mkdirSync(join(paths.snapshots, 'rm-dead0000', 'fs'), { recursive: true });
      mkdirSync(join(paths.snapshots, 'tmp-live0000'), { recursive: true });
      const live = await acquireLock(paths.locks, 'snapshot-tmp-live0000');
      try {
        expect(await snaps.cleanup()).toBe(2);
        const left = readdirSync(paths.snapshots).filter((n) => n.startsWith('tmp-') || n.startsWith('rm-'));
        expect(left).toEqual(['tmp-live0000']);
      } finally {
        await live.release();
      }
      expect(await snaps.cleanup()).toBe(1);
      expect((await snaps.list()).map((s) => s.name)).toEqual(['warm-up']);
    } finally {
      rmrf(dir);
    }
  });
});
