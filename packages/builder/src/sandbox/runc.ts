import { createRequire } from 'node:module';

type ChildProcessModule = typeof import('node:child_process');
let childProcessModule: ChildProcessModule | undefined;
/** node:child_process, loaded on first use (~5 ms of start-up that a fully cached build, which runs nothing, does not need). */
function childProcess(): ChildProcessModule {
  childProcessModule ??= createRequire(import.meta.url)('node:child_process') as ChildProcessModule;
  return childProcessModule;
}
import { existsSync, readFileSync, realpathSync } from 'node:fs';
import { constants } from 'node:os';
import { join } from 'node:path';
import type { Readable, Writable } from 'node:stream';
import { OutputTail, RuncLineFilter } from './output.js';

/** Where runc is, when the caller does not say: Debian's package, else $PATH. */
export function defaultRuntime(): string {
  return existsSync('/usr/sbin/runc') ? '/usr/sbin/runc' : 'runc';
}

/** The file `runtime` runs (found in PATH when it names no directory, symlinks resolved); undefined when there is none. */
export function runtimeFile(runtime: string): string | undefined {
  const candidates = runtime.includes('/') ? [runtime] : (process.env.PATH ?? '').split(':').filter(Boolean).map((d) => join(d, runtime));
  for (const c of candidates) {
    try {
      return realpathSync(c);
    } catch {
      // not there: the next one
    }
  }
  return undefined;
}

export interface RuncRunOptions {
  runtime: string;
  /** runc --root: its state directory */
  stateRoot: string;
  bundle: string;
  id: string;
  stdout?: Writable;
  stderr?: Writable;
  signal?: AbortSignal;
}

export interface RuncRunResult {
  /** The container's exit status (128 + signal when a signal ended it). */
  exitCode: number;
  /** runc's own error when it, not the process, failed. */
  runcError?: string;
  /** The container was killed because `signal` aborted. */
  aborted: boolean;
  tail: string[];
}

/** How long `runc kill` is retried (the container may not exist yet) before runc itself is killed. */
const KILL_TIMEOUT_MS = 10_000;

/**
 * `runc run` the bundle in the foreground and wait for it; output streams to the sinks as it
 * comes. On abort: `runc kill ID KILL` (retried until the container exists or runc is gone).
 * When this returns, the container is deleted (`runc delete --force` if runc left it).
 */
export async function runcRun(o: RuncRunOptions): Promise<RuncRunResult> {
  const log = join(o.bundle, 'runc.log');
  const child = childProcess().spawn(o.runtime, ['--root', o.stateRoot, '--log', log, '--log-format', 'json', 'run', '--bundle', o.bundle, o.id], {
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  const tail = new OutputTail();
  const filter = new RuncLineFilter();
  let aborted = false;
  let exited = false;

  const closed = new Promise<number>((resolve, reject) => {
    child.once('error', reject);
    child.once('close', (code, sig) => {
      exited = true;
      resolve(code ?? 128 + signalNumber(sig));
    });
  });
  const outDone = pump(child.stdout, o.stdout, (c) => [c], tail);
  const errDone = pump(child.stderr, o.stderr, (c) => filter.push(c), tail);

  const onAbort = (): void => {
    aborted = true;
    void (async () => {
      const deadline = Date.now() + KILL_TIMEOUT_MS;
      while (!exited && Date.now() < deadline) {
        if (await runcQuiet(o, ['kill', o.id, 'KILL'])) return;
        await sleep(20);
      }
      if (!exited) child.kill('SIGKILL');
    })();
  };
  if (o.signal?.aborted) onAbort();
  else o.signal?.addEventListener('abort', onAbort, { once: true });

  let exitCode: number;
  try {
    exitCode = await closed;
    await Promise.all([outDone, errDone]);
  } finally {
    o.signal?.removeEventListener('abort', onAbort);
    if (existsSync(join(o.stateRoot, o.id))) await runcQuiet(o, ['delete', '--force', o.id]);
  }
  const runcError = readRuncError(log);
  for (const c of filter.end(runcError !== undefined)) {
    tail.push(c);
    o.stderr?.write(c);
  }
  return { exitCode, ...(runcError !== undefined ? { runcError } : {}), aborted, tail: tail.lines() };
}

/** Copy `from` to `to` (respecting its back-pressure), every chunk also to the tail. */
function pump(from: Readable, to: Writable | undefined, pass: (c: Buffer) => Buffer[], tail: OutputTail): Promise<void> {
  return new Promise((resolve) => {
    from.on('data', (chunk: Buffer) => {
      for (const c of pass(chunk)) {
        tail.push(c);
        if (to && !to.write(c)) {
          from.pause();
          to.once('drain', () => from.resume());
        }
      }
    });
    from.once('close', resolve);
  });
}

/** Run a short runc command; true when it succeeded. */
function runcQuiet(o: RuncRunOptions, args: string[]): Promise<boolean> {
  return new Promise((resolve) => {
    childProcess().execFile(o.runtime, ['--root', o.stateRoot, ...args], (err) => resolve(!err));
  });
}

/** The last error runc logged (its json log), if any. */
function readRuncError(log: string): string | undefined {
  let text: string;
  try {
    text = readFileSync(log, 'utf8');
  } catch {
    return undefined;
  }
  let msg: string | undefined;
  for (const line of text.split('\n')) {
    if (line.trim() === '') continue;
    try {
      const e = JSON.parse(line) as { level?: string; msg?: string };
      if ((e.level === 'error' || e.level === 'fatal') && typeof e.msg === 'string') msg = e.msg;
    } catch {
      // not a json line: runc wrote something unexpected; ignore it
    }
  }
  return msg;
}

function signalNumber(sig: NodeJS.Signals | null): number {
  return sig === null ? 0 : (constants.signals[sig] ?? 0);
}

function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}
