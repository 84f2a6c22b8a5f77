/** The sandbox's pure parts: user resolution, path resolution in a root, output handling, the spec. */
import { mkdirSync, mkdtempSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { MyBuildError } from '@mybuild/oci';
import { DEFAULT_CAPABILITIES, resolveUser, rootPath, runtimeSpec } from '@mybuild/builder';
import { OutputTail, RuncLineFilter } from '../src/sandbox/output.js';
import { runtimeFile } from '../src/sandbox/runc.js';

let root: string;
beforeEach(() => {
  root = mkdtempSync(join(tmpdir(), 'mybuild-sandbox-unit-'));
});
afterEach(() => rmSync(root, { recursive: true, force: true }));

function write(rel: string, text: string): void {
  mkdirSync(join(root, rel, '..'), { recursive: true });
  writeFileSync(join(root, rel), text);
}

function thrown(fn: () => unknown): MyBuildError {
  try {
    fn();
  } catch (err) {
    expect(err).toBeInstanceOf(MyBuildError);
    return err as MyBuildError;
  }
  throw new Error('expected a throw');
}

describe('rootPath', () => {
  it('follows symlinks with the root as /', () => {
    mkdirSync(join(root, 'real/dir'), { recursive: true });
    symlinkSync('/real', join(root, 'abs'));
    symlinkSync('../../../../real/dir', join(root, 'real/up'));
    symlinkSync('dir', join(root, 'real/rel'));
    expect(rootPath(root, '/abs/dir/x')).toBe('real/dir/x');
    expect(rootPath(root, '/real/up/y')).toBe('real/dir/y');
    expect(rootPath(root, '/real/rel')).toBe('real/dir');
    expect(rootPath(root, '/../../etc/passwd')).toBe('etc/passwd');
    expect(rootPath(root, '/')).toBe('');
  });

  it('keeps missing components as written and refuses symlink loops', () => {
    expect(rootPath(root, '/no/such/../path')).toBe('no/path');
    symlinkSync('/loop', join(root, 'loop'));
    expect(thrown(() => rootPath(root, '/loop/x')).code).toBe('UNSAFE_PATH');
  });
});

describe('resolveUser', () => {
  beforeEach(() => {
    write('etc/passwd', 'root:x:0:0:root:/root:/bin/sh\n# comment\napp:x:1000:1000::/home/app:/bin/sh\nbad:x:notanumber:1::/:/bin/sh\n42:x:1042:1042::/:/bin/sh\n');
    write('etc/group', 'root:x:0:root\nwheel:x:10:app,root\nstaff:x:50:app\napp:x:1000:\n');
  });

  it('follows docker’s rules', () => {
    expect(resolveUser(root, '')).toEqual({ uid: 0, gid: 0, additionalGids: [0, 10] });
    expect(resolveUser(root, 'root')).toEqual({ uid: 0, gid: 0, additionalGids: [0, 10] });
    expect(resolveUser(root, 'app')).toEqual({ uid: 1000, gid: 1000, additionalGids: [1000, 10, 50] });
    expect(resolveUser(root, '1000')).toEqual({ uid: 1000, gid: 1000, additionalGids: [1000, 10, 50] });
    expect(resolveUser(root, 'app:staff')).toEqual({ uid: 1000, gid: 50, additionalGids: [50] });
    expect(resolveUser(root, 'app:77')).toEqual({ uid: 1000, gid: 77, additionalGids: [77] });
    expect(resolveUser(root, '5000')).toEqual({ uid: 5000, gid: 0, additionalGids: [0] });
    expect(resolveUser(root, '5000:5000')).toEqual({ uid: 5000, gid: 5000, additionalGids: [5000] });
    // A numeric spec is a uid, never a name.
    expect(resolveUser(root, '42')).toEqual({ uid: 42, gid: 0, additionalGids: [0] });
  });

  it('fails with docker’s messages', () => {
    expect(thrown(() => resolveUser(root, 'ghost')).message).toBe('unable to find user ghost: no matching entries in passwd file');
    expect(thrown(() => resolveUser(root, 'app:ghosts')).message).toBe('unable to find group ghosts: no matching entries in group file');
    expect(thrown(() => resolveUser(root, '99999999999')).code).toBe('INVALID_ARGUMENT');
    expect(thrown(() => resolveUser(root, 'app:')).code).toBe('INVALID_ARGUMENT');
  });

  it('works without /etc/passwd for numeric users only', () => {
    rmSync(join(root, 'etc'), { recursive: true });
    expect(resolveUser(root, '')).toEqual({ uid: 0, gid: 0, additionalGids: [0] });
    expect(resolveUser(root, '1:2')).toEqual({ uid: 1, gid: 2, additionalGids: [2] });
    expect(thrown(() => resolveUser(root, 'app')).code).toBe('NOT_FOUND');
  });

  it('never reads a file outside the root through a symlink', () => {
    const outside = join(tmpdir(), `mybuild-host-passwd-${process.pid}`);
    writeFileSync(outside, 'hostonly:x:4242:4242::/:/bin/sh\n');
    try {
      rmSync(join(root, 'etc/passwd'));
      symlinkSync(`../../../../../../../../..${outside}`, join(root, 'etc/passwd'));
      expect(thrown(() => resolveUser(root, 'hostonly')).code).toBe('NOT_FOUND');
      rmSync(join(root, 'etc/passwd'));
      symlinkSync(outside, join(root, 'etc/passwd'));
      expect(thrown(() => resolveUser(root, 'hostonly')).code).toBe('NOT_FOUND');
    } finally {
      rmSync(outside);
    }
    // A link that stays inside is followed.
    rmSync(join(root, 'etc/passwd'));
    write('elsewhere/pw', 'root:x:0:0::/:/bin/sh\nlinked:x:7:7::/:/bin/sh\n');
    symlinkSync('../elsewhere/pw', join(root, 'etc/passwd'));
    expect(resolveUser(root, 'linked').uid).toBe(7);
  });
});

describe('output', () => {
  it('keeps the last lines', () => {
    const t = new OutputTail(3);
    t.push(Buffer.from('a\nb\nc'));
    t.push(Buffer.from('d\ne\npartial'));
    expect(t.lines()).toEqual(['cd', 'e', 'partial']);
    t.push(Buffer.from('-end\n'));
    expect(t.lines()).toEqual(['cd', 'e', 'partial-end']);
  });

  it('holds back runc’s own failure line only', () => {
    const f = new RuncLineFilter();
    const out: string[] = [];
    const push = (s: string) => out.push(...f.push(Buffer.from(s)).map((b) => b.toString()));
    push('hello\nru');
    expect(out.join('')).toBe('hello\n');
    push('n away\nrunc run fai');
    expect(out.join('')).toBe('hello\nrun away\n');
    push('led: unable to start container process: exec: "x": not found\n');
    expect(out.join('')).toBe('hello\nrun away\n');
    expect(f.end(true)).toEqual([]);
    const g = new RuncLineFilter();
    const kept = [...g.push(Buffer.from('mid line runc run failed: \nrunc run failed: mine\n')), ...g.end(false)].map((b) => b.toString());
    expect(kept.join('')).toBe('mid line runc run failed: \nrunc run failed: mine\n');
  });
});

describe('runtimeSpec', () => {
  const base = {
    args: ['/bin/sh', '-c', 'true'],
    env: ['PATH=/bin'],
    cwd: '/',
    hostname: 'h',
    resolvConf: '/b/resolv.conf',
    hosts: '/b/hosts',
    mounts: [],
  };

  it('has docker’s defaults and namespaces per network mode', () => {
    const s = runtimeSpec({ ...base, user: { uid: 0, gid: 0, additionalGids: [0] }, network: 'none' });
    expect(s.process.capabilities.effective).toEqual([...DEFAULT_CAPABILITIES]);
    expect(s.process.noNewPrivileges).toBe(true);
    expect(s.process.terminal).toBe(false);
    expect(s.linux.namespaces.map((n) => n.type).sort()).toEqual(['ipc', 'mount', 'network', 'pid', 'uts']);
    expect(s.mounts.map((m) => m.destination)).toEqual(['/proc', '/dev', '/dev/pts', '/dev/shm', '/dev/mqueue', '/sys', '/run', '/etc/resolv.conf', '/etc/hosts']);
    expect(s.mounts.find((m) => m.destination === '/etc/hosts')?.options).toContain('ro');
    const host = runtimeSpec({ ...base, user: { uid: 1, gid: 1, additionalGids: [1] }, network: 'host', limits: { memory: 1 << 30, pids: 100, cpus: 2 } });
    expect(host.linux.namespaces.map((n) => n.type)).not.toContain('network');
    expect(host.process.capabilities.effective).toEqual([]);
    expect(host.process.capabilities.bounding).toEqual([...DEFAULT_CAPABILITIES]);
    expect(host.linux.resources).toEqual({
      devices: [{ allow: false, access: 'rwm' }],
      memory: { limit: 1 << 30 },
      pids: { limit: 100 },
      cpu: { quota: 200000, period: 100000 },
    });
  });
});

describe('runtimeFile', () => {
  it('finds a bare name in PATH and resolves symlinks; undefined when there is none', () => {
    write('real/bin/myrt', '#!/bin/sh\n');
    mkdirSync(join(root, 'bin'));
    symlinkSync(join(root, 'real/bin/myrt'), join(root, 'bin/myrt'));
    const saved = process.env.PATH;
    process.env.PATH = `${join(root, 'nowhere')}:${join(root, 'bin')}`;
    try {
      expect(runtimeFile('myrt')).toBe(join(root, 'real/bin/myrt'));
      expect(runtimeFile('absent-runtime')).toBeUndefined();
    } finally {
      process.env.PATH = saved;
    }
    expect(runtimeFile(join(root, 'bin/myrt'))).toBe(join(root, 'real/bin/myrt'));
    expect(runtimeFile(join(root, 'bin/none'))).toBeUndefined();
  });
});
