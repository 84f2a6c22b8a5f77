import { mkdirSync, readFileSync, rmSync, rmdirSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { isAbsolute, join, posix } from 'node:path';
import type { Writable } from 'node:stream';
import { errnoCode, MyBuildError, randomBytes } from '@mybuild/oci';
import type { Mount } from '@mybuild/layer-store';
import { MountStubs } from './mountStubs.js';
import { isMountPoint, mountAll, unmount } from './mount.js';
import { rootPath } from './rootPath.js';
import { RUNC_ERROR_PREFIX } from './output.js';
import { type RuncRunResult, defaultRuntime, runcRun } from './runc.js';
import { type RuntimeMount, type SandboxLimits, nofileLimit, runtimeSpec, standardMounts } from './runtimeSpec.js';
import { resolveUser } from './user.js';
import { nowMs } from '../clock.js';

/** A mount for the step itself (`RUN --mount=...`): a host path or a fresh tmpfs. */
export type SandboxMount =
  | {
      type: 'bind';
      /** host path (file or directory) */
      source: string;
      /** absolute path in the container */
      target: string;
      /** default false (read-write) */
      readonly?: boolean;
    }
  | {
      type: 'tmpfs';
      target: string;
      /** size limit in bytes (default: the kernel's, half of RAM) */
      size?: number;
      /** permission bits of its root (default 0o1777) */
      mode?: number;
    };

export interface SandboxOptions {
  /** The rootfs, as the snapshotter returns it (overlay or bind mounts, as data). Mounted for the run, always unmounted. */
  rootfsMounts: Mount[];
  /** The process, final (`['/bin/sh', '-c', 'make']` or an exec form). */
  args: string[];
  /** `KEY=value` entries; docker's default PATH is added when there is none. */
  env?: string[];
  /** Absolute working directory (default `/`). A missing one is created for the run and removed after if still empty. */
  cwd?: string;
  /** docker's USER: `name`, `uid`, `name:group`, `uid:gid`, resolved in the image's /etc/passwd and /etc/group (default root). */
  user?: string;
  /** `host`: the host's network namespace; `none`: a new one with only loopback. */
  network: 'host' | 'none';
  /** Default `mybuild`. */
  hostname?: string;
  /** The step's own mounts (`RUN --mount`), made after the standard ones, in order. */
  mounts?: SandboxMount[];
  /**
   * Mount a tmpfs on /run (default true, as `docker run` does). A Dockerfile RUN step passes
   * false: docker's builders keep what a step writes to /run in its layer.
   */
  runTmpfs?: boolean;
  /** Where the process's output goes, as it comes (discarded when absent). */
  stdout?: Writable;
  stderr?: Writable;
  /** Aborting kills the process tree; the run then rejects with the signal's reason. */
  signal?: AbortSignal;
  /** cgroup limits (none by default). */
  limits?: SandboxLimits;
  /** mybuild's runtime state: bundles and runc's `--root` (default {@link defaultSandboxStateDir}). */
  stateDir?: string;
  /** The runc binary (default /usr/sbin/runc, else runc on $PATH). */
  runtime?: string;
}

export interface SandboxResult {
  /** The last lines of output (stdout and stderr as they came). */
  lastLines: string[];
  /** Paths (container paths) of mount stubs runc created in the rootfs and the sandbox removed again. */
  removedStubs: string[];
  /** Where the time went, in ms: mounting and writing the bundle, `runc run`, cleaning up. */
  timings: { setup: number; runc: number; cleanup: number };
}

/** A process that ran but exited non-zero (or was killed by a signal other than an abort). */
export class SandboxExitError extends MyBuildError {
  override readonly name = 'SandboxExitError';
  /** The exit status (128 + signal number when a signal ended it). */
  readonly exitCode: number;
  /** The last lines of output, for showing above the error. */
  readonly lastLines: string[];

  constructor(args: string[], exitCode: number, lastLines: string[]) {
    super('FAILED_PRECONDITION', `process "${shortCommand(args)}" did not complete successfully: exit code: ${exitCode}`);
    this.exitCode = exitCode;
    this.lastLines = lastLines;
  }
}

/** Whether `err` is a process's non-zero exit (as opposed to the sandbox failing to run it). */
export function isSandboxExit(err: unknown): err is SandboxExitError {
  return err instanceof SandboxExitError;
}

/** A secret for `RUN --mount=type=secret`: the host file, read-only at /run/secrets/<id> by default. */
export function secretMount(id: string, source: string, target?: string): SandboxMount {
  if (target === undefined && (id === '' || id === '.' || id === '..' || id.includes('/'))) {
    throw new MyBuildError('INVALID_ARGUMENT', `invalid secret id "${id}"`, { hint: 'give the secret a target, or an id without "/"' });
  }
  return { type: 'bind', source, target: target ?? `/run/secrets/${id}`, readonly: true };
}

/** `/run/mybuild` for root (a tmpfs, like runc's /run/runc), else under $XDG_RUNTIME_DIR or the temp dir. */
export function defaultSandboxStateDir(): string {
  if (process.getuid?.() === 0) return '/run/mybuild';
  return join(process.env.XDG_RUNTIME_DIR ?? tmpdir(), `mybuild-${process.getuid?.() ?? 'user'}`);
}

export const DEFAULT_PATH = 'PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin';

/**
 * Run one process in a runc sandbox on the given rootfs, as a Dockerfile RUN step (and
 * `mybuild run`) needs it: mount the rootfs, resolve the user in the image, write an OCI
 * bundle, `runc run` it with output streaming to the sinks, then — whatever happened — delete
 * the container, remove the mount stubs runc created in the rootfs, unmount and remove the
 * bundle. Resolves when the process exited 0; a non-zero exit is a {@link SandboxExitError}.
 */
export async function runInSandbox(opts: SandboxOptions): Promise<SandboxResult> {
  const cwd = checkOptions(opts);
  opts.signal?.throwIfAborted();
  const stateDir = opts.stateDir ?? defaultSandboxStateDir();
  const id = `mybuild-${randomBytes(8).toString('hex')}`;
  const bundle = join(stateDir, 'bundles', id);
  const rootfs = join(bundle, 'rootfs');
  const stateRoot = join(stateDir, 'runc');
  mkdirSync(stateRoot, { recursive: true, mode: 0o700 });
  mkdirSync(rootfs, { recursive: true, mode: 0o700 });

  const t0 = nowMs();
  let t1 = t0;
  const upperDir = upperDirOf(opts.rootfsMounts);
  let stubs: MountStubs | undefined;
  let run: RuncRunResult | undefined;
  let failure: { err: unknown } | undefined;
  try {
    await mountAll(opts.rootfsMounts, rootfs);
    const user = resolveUser(rootfs, opts.user ?? '');
    checkCwd(rootfs, cwd);
    const mounts = (opts.mounts ?? []).map(toRuntimeMount);
    const resolvConf = join(bundle, 'resolv.conf');
    const hosts = join(bundle, 'hosts');
    const hostname = opts.hostname ?? 'mybuild';
    const runTmpfs = opts.runTmpfs ?? true;
    const targets = [...standardMounts(resolvConf, hosts, runTmpfs), ...mounts].map((m) => m.destination);
    stubs = MountStubs.scan(rootfs, [...targets, cwd], upperDir);

    writeFileSync(resolvConf, hostResolvConf(), { mode: 0o644 });
    writeFileSync(hosts, `127.0.0.1\tlocalhost ${hostname}\n::1\tlocalhost ip6-localhost ip6-loopback\n`, { mode: 0o644 });
    const env = opts.env ?? [];
    const spec = runtimeSpec({
      args: opts.args,
      env: env.some((e) => e.startsWith('PATH=')) ? env : [DEFAULT_PATH, ...env],
      cwd,
      user,
      network: opts.network,
      hostname,
      resolvConf,
      hosts,
      mounts,
      runTmpfs,
      nofile: nofileLimit(),
      ...(opts.limits ? { limits: opts.limits } : {}),
    });
    writeFileSync(join(bundle, 'config.json'), JSON.stringify(spec), { mode: 0o600 });
    const runtime = opts.runtime ?? defaultRuntime();
    opts.signal?.throwIfAborted();
    t1 = nowMs();
    run = await runcRun({
      runtime,
      stateRoot,
      bundle,
      id,
      ...(opts.stdout ? { stdout: opts.stdout } : {}),
      ...(opts.stderr ? { stderr: opts.stderr } : {}),
      ...(opts.signal ? { signal: opts.signal } : {}),
    }).catch((err: unknown) => {
      if (errnoCode(err) !== 'ENOENT') throw err;
      throw new MyBuildError('FAILED_PRECONDITION', `the OCI runtime ${runtime} is not installed`, { hint: 'install runc (apt-get install runc)' });
    });
  } catch (err) {
    failure = { err };
  }

  // Whatever happened: the container is gone (runcRun saw to it); clean the rootfs, unmount.
  const t2 = nowMs();
  const cleanupErrors: unknown[] = [];
  const step = async (fn: () => unknown): Promise<void> => {
    try {
      await fn();
    } catch (err) {
      cleanupErrors.push(err);
    }
  };
  if (stubs) await step(() => stubs.removeStubs());
  await step(() => unmount(rootfs));
  if (!isMountPoint(rootfs)) {
    if (stubs && upperDir !== undefined) await step(() => stubs.pruneUpper(upperDir));
    await step(() => removeBundle(bundle));
  }

  const t3 = nowMs();
  if (failure) throw failure.err;
  if (cleanupErrors.length > 0) {
    const first = cleanupErrors[0];
    throw new MyBuildError('INTERNAL', `cleaning up the sandbox failed: ${first instanceof Error ? first.message : String(first)}`, { cause: first });
  }
  const r = run!;
  if (r.aborted) throw opts.signal?.reason ?? new Error('aborted');
  if (r.runcError !== undefined) throw runcFailure(r.runcError);
  if (r.exitCode !== 0) throw new SandboxExitError(opts.args, r.exitCode, r.tail);
  return {
    lastLines: r.tail,
    removedStubs: stubs!.removed.map((rel) => `/${rel}`),
    timings: { setup: t1 - t0, runc: t2 - t1, cleanup: t3 - t2 },
  };
}

/**
 * Remove the bundle by name, file by file: never a recursive delete, which would go into a
 * rootfs still mounted there.
 */
function removeBundle(bundle: string): void {
  for (const f of BUNDLE_FILES) rmSync(join(bundle, f), { force: true });
  for (const d of [join(bundle, 'rootfs'), bundle]) {
    try {
      rmdirSync(d);
    } catch (err) {
      if (errnoCode(err) !== 'ENOENT') throw err;
    }
  }
}

const BUNDLE_FILES = ['config.json', 'resolv.conf', 'hosts', 'runc.log'];

const HOSTNAME = /^[A-Za-z0-9][A-Za-z0-9.-]{0,63}$/;

/** Validate what can be checked without the rootfs; returns the normalized cwd. */
function checkOptions(opts: SandboxOptions): string {
  if (opts.args.length === 0 || opts.args[0] === '') throw new MyBuildError('INVALID_ARGUMENT', 'no command to run');
  if (opts.rootfsMounts.length === 0) throw new MyBuildError('INVALID_ARGUMENT', 'no rootfs mounts given');
  if (opts.network !== 'host' && opts.network !== 'none') {
    throw new MyBuildError('INVALID_ARGUMENT', `unsupported network mode "${String(opts.network)}"`, { hint: 'use host or none' });
  }
  if (opts.hostname !== undefined && !HOSTNAME.test(opts.hostname)) {
    throw new MyBuildError('INVALID_ARGUMENT', `invalid hostname "${opts.hostname}"`, { hint: 'letters, digits, "-" and ".", at most 64' });
  }
  const cwd = opts.cwd ?? '/';
  if (!isAbsolute(cwd)) throw new MyBuildError('INVALID_ARGUMENT', `working directory ${cwd} is not absolute`);
  for (const m of opts.mounts ?? []) {
    if (!isAbsolute(m.target) || posix.normalize(m.target) === '/') {
      throw new MyBuildError('INVALID_ARGUMENT', `mount target "${m.target}" must be an absolute path other than /`);
    }
    if (m.type === 'bind') {
      try {
        statSync(m.source);
      } catch {
        throw new MyBuildError('NOT_FOUND', `mount source ${m.source} does not exist`, { where: m.target });
      }
    }
  }
  return posix.normalize(cwd);
}

function checkCwd(rootfs: string, cwd: string): void {
  let isDir = true;
  try {
    isDir = statSync(join(rootfs, rootPath(rootfs, cwd))).isDirectory();
  } catch (err) {
    if (errnoCode(err) !== 'ENOENT' && errnoCode(err) !== 'ENOTDIR') throw err;
  }
  if (!isDir) throw new MyBuildError('INVALID_ARGUMENT', `working directory ${cwd} is not a directory in the image`);
}

function toRuntimeMount(m: SandboxMount): RuntimeMount {
  const destination = posix.normalize(m.target);
  if (m.type === 'bind') return { destination, type: 'bind', source: m.source, options: ['rbind', m.readonly ? 'ro' : 'rw'] };
  const options = ['nosuid', 'nodev', `mode=${(m.mode ?? 0o1777).toString(8)}`];
  if (m.size !== undefined) options.push(`size=${m.size}`);
  return { destination, type: 'tmpfs', source: 'tmpfs', options };
}

/** The upper dir of an overlay rootfs (where the step's changes go); none for a bind. */
function upperDirOf(mounts: Mount[]): string | undefined {
  for (const m of mounts) {
    if (m.type !== 'overlay' || (m.target !== undefined && m.target !== '/' && m.target !== '')) continue;
    const o = m.options.find((x) => x.startsWith('upperdir='));
    if (o) return o.slice('upperdir='.length);
  }
  return undefined;
}

/** The host's resolv.conf, as docker gives a container on the host network. */
function hostResolvConf(): string {
  try {
    return readFileSync('/etc/resolv.conf', 'utf8');
  } catch {
    return '';
  }
}

/** runc's failure as one line, with docker's wording for the common ones. */
export function runcFailure(msg: string): MyBuildError {
  let m = msg.startsWith(RUNC_ERROR_PREFIX) ? msg.slice(RUNC_ERROR_PREFIX.length) : msg;
  for (const p of ['unable to start container process: ', 'error during container init: ']) {
    if (m.startsWith(p)) m = m.slice(p.length);
  }
  if (/^exec: ".*": executable file not found in \$PATH$/.test(m) || /^exec: ".*": (stat .*: )?no such file or directory$/.test(m)) {
    return new MyBuildError('NOT_FOUND', m, { hint: 'check the command name and the PATH the step runs with' });
  }
  if (/^exec: ".*": permission denied$/.test(m)) return new MyBuildError('FAILED_PRECONDITION', m, { hint: 'the file must be executable and not a directory' });
  return new MyBuildError('INTERNAL', `runc: ${m}`);
}

function shortCommand(args: string[]): string {
  const s = args.join(' ');
  return s.length > 200 ? `${s.slice(0, 200)}…` : s;
}
