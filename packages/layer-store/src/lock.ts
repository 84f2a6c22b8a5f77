import { open, type FileHandle } from 'node:fs/promises';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { MyBuildError } from '@mybuild/oci';
import { sys } from './native.js';

export interface LockOptions {
  /** shared (readers) or exclusive (writers); default exclusive */
  shared?: boolean;
  /** give up after this many ms (default 10 minutes) */
  timeoutMs?: number;
  /** fail at once instead of waiting */
  noWait?: boolean;
}

export interface Lock {
  release(): Promise<void>;
}

/**
 * An advisory flock(2) on `<locksDir>/<name>.lock`. The kernel drops it when the
 * process dies (even by SIGKILL), so a crash never leaves a stale lock. Waiting polls
 * with LOCK_NB so the event loop is never blocked.
 */
export async function acquireLock(locksDir: string, name: string, opts: LockOptions = {}): Promise<Lock> {
  const path = join(locksDir, `${name.replace(/[^A-Za-z0-9._-]/g, '_')}.lock`);
  const fh: FileHandle = await open(path, 'a', 0o644);
  const exclusive = !opts.shared;
  const deadline = Date.now() + (opts.timeoutMs ?? 600_000);
  let delay = 2;
  try {
    for (;;) {
      if (sys().flock(fh.fd, exclusive, false)) break;
      if (opts.noWait || Date.now() > deadline) {
        throw new MyBuildError('LOCKED', `lock ${name} is held by another mybuild process`, {
          hint: 'wait for the other process to finish',
        });
      }
      await sleep(delay);
      delay = Math.min(delay * 2, 50);
    }
  } catch (err) {
    await fh.close();
    throw err;
  }
  let released = false;
  return {
    async release() {
      if (released) return;
      released = true;
      await fh.close(); // closing the last fd releases the flock
    },
  };
}

/** Run `fn` while holding the lock. */
export async function withLock<T>(locksDir: string, name: string, fn: () => Promise<T>, opts: LockOptions = {}): Promise<T> {
  const lock = await acquireLock(locksDir, name, opts);
  try {
    return await fn();
  } finally {
    await lock.release();
  }
}
