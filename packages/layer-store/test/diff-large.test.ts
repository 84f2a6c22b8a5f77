/**
 * The PERF-NOTES context, as a layer: 20,000 files of 10 KiB (a quarter of each random) in 200
 * directories, written with every compression; prints times beside `tar -c | gzip -1 | sha256sum`
 * etc. run on the same tree in the same run. Slow (a few hundred MB of I/O): runs only with
 * MYBUILD_SLOW=1 (MYBUILD_SLOW_ROUNDS=n: best of n, default 2).
 */
import { execFileSync } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Compression } from '@mybuild/oci';
import { layerTar, writeLayer, type WrittenLayer } from '@mybuild/layer-store';
import { type CountingContentStore, newStore, rmrf, tempDir } from './helpers-tar.js';

const SLOW = process.env.MYBUILD_SLOW === '1';
const ROUNDS = Math.max(1, Number(process.env.MYBUILD_SLOW_ROUNDS ?? 2));
const DIRS = 200;
const PER_DIR = 100;
const FILE = 10 * 1024;

function makeContext(root: string): number {
  const text = Buffer.from('lorem ipsum dolor sit amet, consectetur adipiscing elit, sed do eiusmod tempor '.repeat(200));
  let bytes = 0;
  for (let d = 0; d < DIRS; d++) {
    const dir = join(root, `d${String(d).padStart(3, '0')}`);
    mkdirSync(dir, { recursive: true });
    const random = randomBytes((FILE / 4) * PER_DIR);
    for (let f = 0; f < PER_DIR; f++) {
      const buf = Buffer.allocUnsafe(FILE);
      random.copy(buf, 0, f * (FILE / 4), (f + 1) * (FILE / 4));
      const at = (d * PER_DIR + f) % 1000;
      text.copy(buf, FILE / 4, at, at + (FILE * 3) / 4);
      writeFileSync(join(dir, `f${f}.txt`), buf);
      bytes += FILE;
    }
  }
  return bytes;
}

/** Wall time of `fn` and the process's CPU time (all threads: zlib's pool, zstd's worker). */
async function timed<T>(fn: () => Promise<T>): Promise<{ ms: number; cpuMs: number; value: T }> {
  const c0 = process.cpuUsage();
  const t0 = performance.now();
  const value = await fn();
  const ms = performance.now() - t0;
  const cpu = process.cpuUsage(c0);
  return { ms, cpuMs: (cpu.user + cpu.system) / 1000, value };
}

function shell(cmd: string): { ms: number; out: string } {
  const t0 = performance.now();
  const out = execFileSync('bash', ['-o', 'pipefail', '-c', cmd], { encoding: 'utf8', maxBuffer: 1 << 20 }).trim();
  return { ms: performance.now() - t0, out };
}

describe.skipIf(!SLOW)('writeLayer on a 20,000-file context (MYBUILD_SLOW=1)', () => {
  let tmp: string;
  let ctx: string;
  let store: CountingContentStore;
  let bytes = 0;
  beforeAll(async () => {
    tmp = tempDir('mybuild-diff-large-');
    ctx = join(tmp, 'ctx');
    bytes = makeContext(ctx);
    store = await newStore(join(tmp, 'store'));
    execFileSync('sync'); // the context's dirty pages must not be written back during the runs
  });
  afterAll(() => rmrf(tmp));

  it('writes every compression in one pass; prints throughput beside tar | gzip | sha256sum', { timeout: 600_000 }, async () => {
    const cases: [string, Compression, number | undefined][] = [
      ['none', 'none', undefined],
      ['gzip -1', 'gzip', 1],
      ['gzip -6', 'gzip', 6],
      ['zstd -3', 'zstd', 3],
    ];
    const rows: string[] = [];
    const mb = bytes / 1e6;
    const results: WrittenLayer[] = [];
    for (const [label, compression, level] of cases) {
      let best: { ms: number; cpuMs: number; value: WrittenLayer } | undefined;
      for (let r = 0; r < ROUNDS; r++) {
        const t = await timed(() => writeLayer(ctx, { store, mode: 'plain', compression, ...(level === undefined ? {} : { level }) }));
        if (!best || t.ms < best.ms) best = t;
      }
      const l = best!.value;
      results.push(l);
      rows.push(
        `writeLayer ${label.padEnd(19)} ${best!.ms.toFixed(0).padStart(6)} ms  cpu ${best!.cpuMs.toFixed(0).padStart(6)} ms  ${(mb / (best!.ms / 1000)).toFixed(0).padStart(4)} MB/s  blob ${(l.size / 1e6).toFixed(1)} MB`,
      );
    }
    // the tar alone, hashed, nothing stored: the counterpart of `tar -c | sha256sum`
    let tarMs = Infinity;
    for (let r = 0; r < ROUNDS; r++) {
      const t = await timed(async () => {
        const h = createHash('sha256');
        for (const c of layerTar(ctx, { mode: 'plain' })) h.update(c);
        return h.digest('hex');
      });
      expect(`sha256:${t.value}`).toBe(results[0]!.diffId);
      tarMs = Math.min(tarMs, t.ms);
    }
    rows.push(`${'layerTar + sha256 (no store)'.padEnd(30)} ${tarMs.toFixed(0).padStart(6)} ms  ${''.padStart(15)} ${(mb / (tarMs / 1000)).toFixed(0).padStart(4)} MB/s`);
    const peers: [string, string][] = [
      ['tar -c | sha256sum', `tar -C ${ctx} -cf - . | sha256sum`],
      ['tar -c | gzip -1 | sha256sum', `tar -C ${ctx} -cf - . | gzip -1 | sha256sum`],
      ['tar -c | gzip -6 | sha256sum', `tar -C ${ctx} -cf - . | gzip -6 | sha256sum`],
      ['tar -c | zstd -3 | sha256sum', `tar -C ${ctx} -cf - . | zstd -3 -q | sha256sum`],
    ];
    for (const [label, cmd] of peers) {
      let ms = Infinity;
      for (let r = 0; r < ROUNDS; r++) ms = Math.min(ms, shell(cmd).ms);
      rows.push(`${label.padEnd(30)} ${ms.toFixed(0).padStart(6)} ms  ${''.padStart(15)} ${(mb / (ms / 1000)).toFixed(0).padStart(4)} MB/s`);
    }
    console.log(`\n${DIRS * PER_DIR} files, ${mb.toFixed(0)} MB of file data (best of ${ROUNDS}):\n${rows.join('\n')}\n`);

    // one tar, four blobs: the same diffID; each digest is the sha256 of the stored bytes
    expect(new Set(results.map((l) => l.diffId)).size).toBe(1);
    expect(results[0]!.entries).toBe(DIRS * PER_DIR + DIRS);
    expect(results[0]!.uncompressedSize).toBeGreaterThan(bytes);
    for (const l of results) {
      expect(shell(`sha256sum ${store.path(l.digest)}`).out.split(' ')[0]).toBe(l.digest.slice('sha256:'.length));
      expect(readFileSync(store.path(l.digest)).length).toBe(l.size);
    }
    const gz = results[1]!;
    expect(shell(`gzip -dc ${store.path(gz.digest)} | sha256sum`).out.split(' ')[0]).toBe(gz.diffId.slice('sha256:'.length));
    const zst = results[3]!;
    expect(shell(`zstd -dcq ${store.path(zst.digest)} | sha256sum`).out.split(' ')[0]).toBe(zst.diffId.slice('sha256:'.length));
  });
});
