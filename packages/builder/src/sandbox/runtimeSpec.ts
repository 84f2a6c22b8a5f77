import { readFileSync } from 'node:fs';
import type { ResolvedUser } from './user.js';

/** The part of the OCI runtime spec (1.0.2, as runc 1.1 reads it) the sandbox writes. */
export interface RuntimeSpec {
  ociVersion: string;
  process: {
    terminal: boolean;
    user: { uid: number; gid: number; additionalGids: number[]; umask: number };
    args: string[];
    env: string[];
    cwd: string;
    capabilities: { bounding: string[]; effective: string[]; permitted: string[] };
    rlimits: { type: string; hard: number; soft: number }[];
    noNewPrivileges: boolean;
  };
  root: { path: string; readonly: boolean };
  hostname: string;
  mounts: RuntimeMount[];
  linux: {
    resources: RuntimeResources;
    namespaces: { type: string }[];
    maskedPaths: string[];
    readonlyPaths: string[];
  };
}

export interface RuntimeMount {
  destination: string;
  type: string;
  source: string;
  options?: string[];
}

export interface RuntimeResources {
  devices: { allow: boolean; access: string }[];
  memory?: { limit: number };
  pids?: { limit: number };
  cpu?: { quota: number; period: number };
}

/** cgroup limits for one run. */
export interface SandboxLimits {
  /** memory limit in bytes */
  memory?: number;
  /** most processes and threads at once */
  pids?: number;
  /** CPUs' worth of time (1.5 = one and a half CPUs), as `docker run --cpus` */
  cpus?: number;
}

/** Docker's default capability set. */
export const DEFAULT_CAPABILITIES: readonly string[] = [
  'CAP_CHOWN',
  'CAP_DAC_OVERRIDE',
  'CAP_FSETID',
  'CAP_FOWNER',
  'CAP_MKNOD',
  'CAP_NET_RAW',
  'CAP_SETGID',
  'CAP_SETUID',
  'CAP_SETFCAP',
  'CAP_SETPCAP',
  'CAP_NET_BIND_SERVICE',
  'CAP_SYS_CHROOT',
  'CAP_KILL',
  'CAP_AUDIT_WRITE',
];

/** `runc spec`'s masked paths. */
export const MASKED_PATHS: readonly string[] = [
  '/proc/acpi',
  '/proc/asound',
  '/proc/kcore',
  '/proc/keys',
  '/proc/latency_stats',
  '/proc/timer_list',
  '/proc/timer_stats',
  '/proc/sched_debug',
  '/sys/firmware',
  '/proc/scsi',
];

/** `runc spec`'s read-only paths. */
export const READONLY_PATHS: readonly string[] = ['/proc/bus', '/proc/fs', '/proc/irq', '/proc/sys', '/proc/sysrq-trigger'];

const CFS_PERIOD = 100_000;

export interface RuntimeSpecInput {
  args: string[];
  env: string[];
  cwd: string;
  user: ResolvedUser;
  network: 'host' | 'none';
  hostname: string;
  /** Host paths of the generated files bound read-only over /etc/resolv.conf and /etc/hosts. */
  resolvConf: string;
  hosts: string;
  /** The step's own mounts, after the standard ones. */
  mounts: RuntimeMount[];
  /** Mount a tmpfs on /run (default true; a build step leaves it out, as docker's builders do, so its writes there stay in the layer). */
  runTmpfs?: boolean;
  limits?: SandboxLimits;
  /** RLIMIT_NOFILE (default 1048576; a host without CAP_SYS_RESOURCE cannot go above its own hard limit). */
  nofile?: number;
}

/** Docker's RLIMIT_NOFILE. */
export const NOFILE = 1048576;

/**
 * The NOFILE limit a container can get here: 1048576, or less when this process's hard limit
 * is lower and it lacks CAP_SYS_RESOURCE to raise it (runc would fail to set it).
 */
export function nofileLimit(): number {
  try {
    const status = readFileSync('/proc/self/status', 'utf8');
    const eff = /^CapEff:\s*([0-9a-f]+)$/m.exec(status)?.[1];
    if (eff !== undefined && (BigInt(`0x${eff}`) & (1n << CAP_SYS_RESOURCE)) !== 0n) return NOFILE;
    const hard = /^Max open files\s+\S+\s+(\S+)/m.exec(readFileSync('/proc/self/limits', 'utf8'))?.[1];
    if (hard === undefined || hard === 'unlimited') return NOFILE;
    return Math.min(NOFILE, Number(hard));
  } catch {
    return NOFILE;
  }
}

const CAP_SYS_RESOURCE = 24n;

/**
 * The standard mounts, in the order runc must make them (a mount's parent first). `runTmpfs`
 * false leaves out the tmpfs on /run.
 */
export function standardMounts(resolvConf: string, hosts: string, runTmpfs = true): RuntimeMount[] {
  const ro = ['rbind', 'ro', 'nosuid', 'nodev', 'noexec'];
  const all: RuntimeMount[] = [
    { destination: '/proc', type: 'proc', source: 'proc', options: ['nosuid', 'noexec', 'nodev'] },
    { destination: '/dev', type: 'tmpfs', source: 'tmpfs', options: ['nosuid', 'strictatime', 'mode=755', 'size=65536k'] },
    { destination: '/dev/pts', type: 'devpts', source: 'devpts', options: ['nosuid', 'noexec', 'newinstance', 'ptmxmode=0666', 'mode=0620', 'gid=5'] },
    { destination: '/dev/shm', type: 'tmpfs', source: 'shm', options: ['nosuid', 'noexec', 'nodev', 'mode=1777', 'size=65536k'] },
    { destination: '/dev/mqueue', type: 'mqueue', source: 'mqueue', options: ['nosuid', 'noexec', 'nodev'] },
    { destination: '/sys', type: 'sysfs', source: 'sysfs', options: ['nosuid', 'noexec', 'nodev', 'ro'] },
    { destination: '/run', type: 'tmpfs', source: 'tmpfs', options: ['nosuid', 'nodev', 'mode=755'] },
    { destination: '/etc/resolv.conf', type: 'bind', source: resolvConf, options: ro },
    { destination: '/etc/hosts', type: 'bind', source: hosts, options: ro },
  ];
  return runTmpfs ? all : all.filter((m) => m.destination !== '/run');
}

/**
 * The config.json for one run: new mount, pid, ipc and uts namespaces (and network for
 * `none`), docker's default capabilities (none effective for a non-root user, as docker),
 * no_new_privs, runc's masked and read-only paths, NOFILE 1048576, no terminal.
 */
export function runtimeSpec(i: RuntimeSpecInput): RuntimeSpec {
  const caps = [...DEFAULT_CAPABILITIES];
  const root = i.user.uid === 0;
  const resources: RuntimeResources = { devices: [{ allow: false, access: 'rwm' }] };
  if (i.limits?.memory !== undefined) resources.memory = { limit: i.limits.memory };
  if (i.limits?.pids !== undefined) resources.pids = { limit: i.limits.pids };
  if (i.limits?.cpus !== undefined) resources.cpu = { quota: Math.round(i.limits.cpus * CFS_PERIOD), period: CFS_PERIOD };
  const namespaces = [{ type: 'pid' }, { type: 'ipc' }, { type: 'uts' }, { type: 'mount' }];
  if (i.network === 'none') namespaces.push({ type: 'network' });
  return {
    ociVersion: '1.0.2-dev',
    process: {
      terminal: false,
      user: { uid: i.user.uid, gid: i.user.gid, additionalGids: i.user.additionalGids, umask: 0o022 },
      args: i.args,
      env: i.env,
      cwd: i.cwd,
      capabilities: { bounding: caps, effective: root ? caps : [], permitted: root ? caps : [] },
      rlimits: [{ type: 'RLIMIT_NOFILE', hard: i.nofile ?? NOFILE, soft: i.nofile ?? NOFILE }],
      noNewPrivileges: true,
    },
    root: { path: 'rootfs', readonly: false },
    hostname: i.hostname,
    mounts: [...standardMounts(i.resolvConf, i.hosts, i.runTmpfs ?? true), ...i.mounts],
    linux: {
      resources,
      namespaces,
      maskedPaths: [...MASKED_PATHS],
      readonlyPaths: [...READONLY_PATHS],
    },
  };
}
