/**
 * The build cache: a second identical build is all CACHED (same image ID); a touched file
 * (same content) keeps COPY cached without re-reading the rest of the context; one changed byte
 * rebuilds from its step on; `--no-cache`; cache records as GC roots; a failed build leaves the
 * store's tags as they were and no active snapshot or mount behind.
 */
import { existsSync, mkdirSync, readFileSync, readdirSync, rmSync, utimesSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { OverlaySnapshotter, chainIds, openStore } from '@mybuild/layer-store';
import { type BuildEvent, cacheRoots } from '@mybuild/builder';
import { type TestStore, canBuild, failBuild, runBuild, testStore } from './executor-helpers.js';

/** The names of the step vertices (`[2/4] RUN ...`) and whether each came from the cache. */
function steps(events: BuildEvent[]): { name: string; cached: boolean }[] {
  const names = new Map<number, string>();
  const out: { name: string; cached: boolean }[] = [];
  for (const e of events) {
    if (e.type === 'vertex') names.set(e.id, e.name);
    if (e.type === 'done' && /^\[(?!internal)/.test(names.get(e.id) ?? '') && !/ FROM /.test(names.get(e.id)!)) {
      out.push({ name: names.get(e.id)!.replace(/^\[[^\]]*\] /, ''), cached: e.cached === true });
    }
  }
  return out;
}

function contextStatus(events: BuildEvent[]): string {
  return events.filter((e): e is Extract<BuildEvent, { type: 'status' }> => e.type === 'status' && /transferring context: .* hashed/.test(e.text)).map((e) => e.text)[0] ?? '';
}

const DOCKERFILE = `FROM busybox
RUN echo first > /first
COPY f1 /f1
RUN cat /f1 > /out
COPY tree /tree/
COPY f2 /f2
`;

describe.skipIf(!canBuild)('build cache', () => {
  let t: TestStore;
  let ctx: string;
  beforeAll(async () => {
    t = await testStore('mybuild-cache-');
    ctx = join(t.dir, 'ctx');
    mkdirSync(join(ctx, 'tree'), { recursive: true });
    writeFileSync(join(ctx, 'f1'), 'one\n');
    writeFileSync(join(ctx, 'f2'), 'two\n');
    for (let i = 0; i < 50; i++) writeFileSync(join(ctx, 'tree', `file${i}`), `content ${i}\n`);
    // files older than the stat cache's racy window, as a real checkout's are
    const old = Date.now() / 1000 - 3600;
    for (const f of ['f1', 'f2', ...readdirSync(join(ctx, 'tree')).map((n) => `tree/${n}`)]) utimesSync(join(ctx, f), old, old);
  });
  afterAll(async () => {
    await t?.cleanup();
  });

  const build = (opts: { noCache?: boolean; tags?: string[] } = {}) => runBuild(t, { contextDir: ctx, dockerfile: DOCKERFILE, tags: opts.tags ?? ['cache-test:latest'], ...opts });

  it('runs every step the first time, and none the second (same image ID, context not read again)', async () => {
    const first = await build();
    expect(steps(first.events).every((s) => !s.cached)).toBe(true);
    expect(first.result.stepsRun).toBe(5);
    const second = await build();
    expect(steps(second.events).map((s) => s.cached)).toEqual([true, true, true, true, true]);
    expect(second.result.imageId).toBe(first.result.imageId);
    expect(second.result.manifest.digest).toBe(first.result.manifest.digest);
    expect(contextStatus(second.events)).toMatch(/ 0 file\(s\) hashed/);
  });

  it('keeps COPY cached when only a file\'s mtime changed (and reads only that file)', async () => {
    const now = Date.now() / 1000;
    utimesSync(join(ctx, 'f1'), now - 100, now - 100);
    const r = await build();
    expect(steps(r.events).every((s) => s.cached)).toBe(true);
    expect(contextStatus(r.events)).toMatch(/ 1 file\(s\) hashed/);
  });

  it('rebuilds from the step whose input changed by one byte', async () => {
    const before = await build();
    writeFileSync(join(ctx, 'f1'), 'onf\n');
    const r = await build();
    expect(steps(r.events)).toEqual([
      { name: 'RUN echo first > /first', cached: true },
      { name: 'COPY f1 /f1', cached: false },
      { name: 'RUN cat /f1 > /out', cached: false },
      { name: 'COPY tree /tree/', cached: false },
      { name: 'COPY f2 /f2', cached: false },
    ]);
    expect(r.result.imageId).not.toBe(before.result.imageId);
    // and back: the old results are still in the cache
    writeFileSync(join(ctx, 'f1'), 'one\n');
    const back = await build();
    expect(steps(back.events).every((s) => s.cached)).toBe(true);
    expect(back.result.imageId).toBe(before.result.imageId);
  });

  it('a change deep in a copied tree invalidates that COPY only from there on', async () => {
    writeFileSync(join(ctx, 'tree', 'file7'), 'changed\n');
    const r = await build();
    expect(steps(r.events).map((s) => s.cached)).toEqual([true, true, true, false, false]);
  });

  it('--no-cache runs every step again', async () => {
    const r = await build({ noCache: true });
    expect(steps(r.events).every((s) => !s.cached)).toBe(true);
  });

  it('cache records are GC roots: prune keeps their layers and snapshots, the next build is still cached', async () => {
    const store = await openStore(t.store.paths.root, { snapshotter: (paths) => new OverlaySnapshotter(paths), extraRoots: () => cacheRoots(t.store.paths) });
    const img = await t.store.images.resolve('cache-test:latest');
    // no image names the cached results any more
    await t.store.images.untag('cache-test:latest');
    const roots = await cacheRoots(t.store.paths);
    expect(roots.length).toBeGreaterThan(5);
    await store.prune();
    for (const chain of chainIds(img.config.rootfs.diff_ids)) expect((await store.snapshots!.stat(chain)).kind).toBe('committed');
    for (const layer of img.manifest.layers) expect(await store.content.has(layer.digest)).toBe(true);
    const r = await build();
    expect(steps(r.events).every((s) => s.cached)).toBe(true);
    // without the cache roots, prune takes the build results away
    await t.store.images.untag('cache-test:latest');
    const bare = await openStore(t.store.paths.root, { snapshotter: (paths) => new OverlaySnapshotter(paths) });
    const freed = await bare.prune();
    expect(freed.snapshotsRemoved).toBeGreaterThan(0);
    // records whose blobs are gone are misses, not errors
    const again = await build();
    expect(steps(again.events).some((s) => !s.cached)).toBe(true);
  });

  it('a failed build leaves the tags as they were, and no active snapshot or mount', async () => {
    const before = await t.store.images.list();
    const { error, events } = await failBuild(t, {
      contextDir: ctx,
      dockerfile: 'FROM busybox\nRUN echo ok > /ok\nCOPY f1 /f1\nRUN echo partial > /partial && exit 3\n',
      tags: ['cache-test:failed'],
    });
    expect((error as { where?: string }).where).toBe('Dockerfile:4');
    expect(events.some((e) => e.type === 'done' && e.error !== undefined)).toBe(true);
    expect(await t.store.images.list()).toEqual(before);
    const active = (await t.store.snapshots!.list()).filter((s) => s.kind !== 'committed');
    expect(active).toEqual([]);
    const mounts = readFileSync('/proc/self/mountinfo', 'utf8').split('\n').filter((l) => l.includes(t.dir));
    expect(mounts).toEqual([]);
    expect(existsSync(join(t.stateDir, 'mounts')) ? readdirSync(join(t.stateDir, 'mounts')) : []).toEqual([]);
  });

  it('removes the active snapshots a killed build left behind', async () => {
    const sn = t.store.snapshots!;
    await sn.prepare(`build-${'ab'.repeat(12)}`);
    await sn.prepare('someone-else');
    await runBuild(t, { contextDir: ctx, dockerfile: 'FROM busybox\nRUN true\n', noCache: true });
    const left = (await sn.list()).filter((s) => s.kind !== 'committed').map((s) => s.name);
    expect(left).toEqual(['someone-else']);
    await sn.remove('someone-else');
  });

  it('hashes a large uncached context while copying it (one read), then caches as usual', async () => {
    const big = join(t.dir, 'bigctx');
    mkdirSync(join(big, 'blobs'), { recursive: true });
    const chunk = Buffer.alloc(1 << 20);
    for (let i = 0; i < 40; i++) {
      chunk.fill(i);
      writeFileSync(join(big, 'blobs', `b${i}`), chunk);
    }
    const old = Date.now() / 1000 - 3600;
    for (let i = 0; i < 40; i++) utimesSync(join(big, 'blobs', `b${i}`), old, old);
    const dockerfile = 'FROM busybox\nCOPY blobs /blobs/\nRUN ls /blobs | wc -l\n';
    const first = await runBuild(t, { contextDir: big, dockerfile });
    expect(contextStatus(first.events)).toMatch(/0 file\(s\) hashed, 1 COPY step\(s\) hash while copying/);
    expect(first.result.stepsRun).toBe(2);
    const second = await runBuild(t, { contextDir: big, dockerfile });
    expect(second.result.stepsCached).toBe(2);
    expect(second.result.imageId).toBe(first.result.imageId);
    expect(contextStatus(second.events)).toMatch(/ 0 file\(s\) hashed/);
    // same content copied again from a fresh stat cache: the result is found by its key
    rmSync(join(t.store.paths.cache, 'context'), { recursive: true, force: true });
    const third = await runBuild(t, { contextDir: big, dockerfile });
    expect(third.result.imageId).toBe(first.result.imageId);
  });

  it('runs independent stages side by side', async () => {
    const dockerfile = `FROM busybox AS a
RUN sleep 1 && echo a > /a
FROM busybox AS b
RUN sleep 1 && echo b > /b
FROM busybox
COPY --from=a /a /a
COPY --from=b /b /b
`;
    const r = await runBuild(t, { contextDir: ctx, dockerfile, noCache: true });
    expect(r.result.stepsRun).toBe(4);
    // both sleeps had started before either ended
    const runs = r.events.flatMap((e) => (e.type === 'vertex' && / RUN sleep 1/.test(e.name) ? [e.id] : []));
    expect(runs).toHaveLength(2);
    const firstDone = r.events.findIndex((e) => e.type === 'done' && runs.includes(e.id));
    const starts = r.events.map((e, i) => (e.type === 'vertex' && runs.includes(e.id) ? i : -1)).filter((i) => i >= 0);
    expect(Math.max(...starts)).toBeLessThan(firstDone);
  });
});
