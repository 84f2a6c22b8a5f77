import { afterEach, beforeEach, describe, expect, test, vi } from 'vitest';
import { mkdtemp, readdir, rm, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { acquireLock, type Lock, openStore } from '@mybuild/layer-store';

let dir: string;
beforeEach(async () => {
  dir = await mkdtemp(join(tmpdir(), 'mybuild-lock-'));
});
afterEach(async () => {
  await rm(dir, { recursive: true, force: true });
});

describe('acquireLock', () => {
  test('an exclusive lock excludes a second holder until released', async () => {
    const a = await acquireLock(dir, 'x');
    await expect(acquireLock(dir, 'x', { noWait: true })).rejects.toMatchObject({ code: 'LOCKED' });
    await a.release();
    const b = await acquireLock(dir, 'x', { noWait: true });
    await b.release();
  });

  test('a waiter whose lock file was removed by the holder locks the new file, not the orphan', async () => {
    const a = await acquireLock(dir, 'y');
    const waiting = acquireLock(dir, 'y', { timeoutMs: 5000 });
    await new Promise((r) => setTimeout(r, 30));
    await a.release({ removeFile: true });
    const b = await waiting;
    // b holds the lock on the file now at the path: a third process must be excluded.
    const ino = (await stat(join(dir, 'y.lock'))).ino;
    expect(ino).toBeGreaterThan(0);
    await expect(acquireLock(dir, 'y', { noWait: true })).rejects.toMatchObject({ code: 'LOCKED' });
    await b.release();
  });

  test('a waiter in this process takes the lock when this process releases it, not at its next poll', async () => {
    const a = await acquireLock(dir, 'w');
    // the waiter's poll timer never fires: only the release can wake it
    vi.useFakeTimers({ toFake: ['setTimeout', 'clearTimeout'] });
    try {
      let b: Lock | undefined;
      const waiting = acquireLock(dir, 'w').then((l) => (b = l));
      for (let i = 0; i < 20; i++) await stat(dir); // real I/O turns: it tries, fails, waits
      expect(b).toBeUndefined();
      await a.release({ removeFile: true });
      for (let i = 0; i < 500 && b === undefined; i++) await stat(dir);
      expect(b).toBeDefined();
      await waiting;
      await expect(acquireLock(dir, 'w', { noWait: true })).rejects.toMatchObject({ code: 'LOCKED' });
      await b!.release();
    } finally {
      vi.useRealTimers();
    }
  });

  test('committed and aborted ingests leave no lock files behind', async () => {
    const store = await openStore(join(dir, 'root'));
    for (let i = 0; i < 5; i++) await store.content.put(Readable.from([Buffer.from(`blob ${i}`)]));
    await store.content.putBytes(Buffer.from('known'));
    const w = await store.content.writer('abandoned');
    await w.abort();
    const locks = (await readdir(store.paths.locks)).filter((n) => n.startsWith('ingest-'));
    expect(locks).toEqual([]);
  });
});
