import { open, stat, unlink, type FileHandle } from 'node:fs/promises';
import { join } from 'node:path';
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
  /**
   * Release the lock. With `removeFile`, the lock file is unlinked first (while still held):
   * a process waiting on the old file notices the inode changed and locks the new one.
   */
  release(opts?: { removeFile?: boolean }): Promise<void>;
}

/** Waiters in this process, by lock file: woken when this process releases that lock. */
const waiters = new Map<string, Set<() => void>>();

/** Resolves when this process releases the lock at `path`, or after `ms`. */
function releasedOrAfter(path: string, ms: number): Promise<void> {
  return new Promise((resolve) => {
    let set = waiters.get(path);
    if (!set) waiters.set(path, (set = new Set()));
    const wake = () => {
      clearTimeout(timer);
      set.delete(wake);
      if (set.size === 0 && waiters.get(path) === set) waiters.delete(path);
      resolve();
    };
    const timer = setTimeout(wake, ms);
    set.add(wake);
  });
}

/**
 * An advisory flock(2) on `<locksDir>/<name>.lock`. The kernel drops it when the
 * process dies (even by SIGKILL), so a crash never leaves a stale lock. Waiting polls
 * with LOCK_NB so the event loop is never blocked; a wait on a lock this process holds (two
 * stages of one build unpacking the same base) ends as soon as it is released, not at the
 * next poll.
 */
export async function acquireLock(locksDir: string, name: string, opts: LockOptions = {}): Promise<Lock> {
  const path = join(locksDir, `${name.replace(/[^A-Za-z0-9._-]/g, '_')}.lock`);
  const exclusive = !opts.shared;
  const deadline = Date.now() + (opts.timeoutMs ?? 600_000);
  let delay = 2;
  for (;;) {
    const fh: FileHandle = await open(path, 'a', 0o644);
    let held = false;
    try {
      for (;;) {
        if (sys().flock(fh.fd, exclusive, false)) break;
        if (opts.noWait || Date.now() > deadline) {
          throw new MyBuildError('LOCKED', `lock ${name} is held by another mybuild process`, {
            hint: 'wait for the other process to finish',
          });
        }
        await releasedOrAfter(path, delay);
        delay = Math.min(delay * 2, 50);
      }
      // The holder may have removed the file while we waited: then we hold a lock on an
      // orphaned inode that nobody else sees. Start again on the current file.
      const [mine, current] = await Promise.all([fh.stat(), stat(path).catch(() => undefined)]);
      held = current !== undefined && current.ino === mine.ino && current.dev === mine.dev;
    } catch (err) {
      await fh.close();
      throw err;
    }
    if (!held) {
      await fh.close();
      continue;
    }
    let released = false;
    return {
      async release(ropts = {}) {
        if (released) return;
        released = true;
        if (ropts.removeFile) await unlink(path).catch(() => {});
        await fh.close(); // closing the last fd releases the flock
        for (const wake of waiters.get(path) ?? []) wake(); // each removes itself: safe while iterating a Set
      },
    };
  }
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
