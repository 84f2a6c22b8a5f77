import { closeSync, constants, fstatSync, openSync, readSync } from 'node:fs';
import { join } from 'node:path';
import { MyBuildError, errnoCode } from '@mybuild/oci';
import { rootPath } from './rootPath.js';

/** The process identity a user spec resolves to, as the runtime spec wants it. */
export interface ResolvedUser {
  uid: number;
  gid: number;
  /** Primary gid first, then the supplementary groups (docker's order). */
  additionalGids: number[];
}

interface PasswdEntry {
  name: string;
  uid: number;
  gid: number;
}

interface GroupEntry {
  name: string;
  gid: number;
  members: string[];
}

/** /etc/passwd and /etc/group bigger than this are refused (they are read into memory). */
const MAX_ACCOUNT_FILE = 4 << 20;
const MAX_ID = 2 ** 31 - 1;
const NUMERIC = /^[0-9]+$/;

/**
 * Resolve a docker user spec (`''`, `name`, `uid`, `name:group`, `uid:gid`, ...) against the
 * image's /etc/passwd and /etc/group inside `rootfs`, with docker's rules:
 * a numeric user need not exist (its gid is then 0), a name must; an explicit group replaces
 * the user's gid and drops supplementary groups; without one, every group listing the user's
 * name is added. The files are read without following symlinks out of `rootfs`.
 */
export function resolveUser(rootfs: string, spec: string): ResolvedUser {
  const colon = spec.indexOf(':');
  const userArg = colon < 0 ? spec : spec.slice(0, colon);
  const groupArg = colon < 0 ? '' : spec.slice(colon + 1);
  if (colon >= 0 && (userArg === '' || groupArg === '')) {
    throw new MyBuildError('INVALID_ARGUMENT', `invalid user "${spec}"`, { hint: 'use name, uid, name:group or uid:gid' });
  }
  const passwd = readAccountFile(rootfs, '/etc/passwd');
  const users = passwd === undefined ? [] : parsePasswd(passwd);

  let uid = 0;
  let gid = 0;
  let matched: string | undefined;
  const numericUser = NUMERIC.test(userArg);
  const found = users.find((u) => (userArg === '' ? u.uid === 0 : numericUser ? u.uid === Number(userArg) : u.name === userArg));
  if (found) {
    matched = found.name;
    uid = found.uid;
    gid = found.gid;
  } else if (userArg !== '') {
    if (!numericUser) {
      throw new MyBuildError('NOT_FOUND', `unable to find user ${userArg}: no matching entries in passwd file`, {
        hint: 'create the user in an earlier step or use a numeric uid',
      });
    }
    uid = checkId(userArg, spec);
  }

  const sgids: number[] = [];
  if (groupArg !== '' || matched !== undefined) {
    const groupText = readAccountFile(rootfs, '/etc/group');
    const groups = groupText === undefined ? [] : parseGroup(groupText);
    if (groupArg !== '') {
      const numericGroup = NUMERIC.test(groupArg);
      const g = groups.find((e) => (numericGroup ? e.gid === Number(groupArg) : e.name === groupArg));
      if (g) gid = g.gid;
      else if (numericGroup) gid = checkId(groupArg, spec);
      else {
        throw new MyBuildError('NOT_FOUND', `unable to find group ${groupArg}: no matching entries in group file`, {
          hint: 'create the group in an earlier step or use a numeric gid',
        });
      }
    } else {
      for (const g of groups) if (g.members.includes(matched!)) sgids.push(g.gid);
    }
  }
  return { uid, gid, additionalGids: [gid, ...sgids.filter((g) => g !== gid)] };
}

function checkId(text: string, spec: string): number {
  const n = Number(text);
  if (!Number.isSafeInteger(n) || n > MAX_ID) {
    throw new MyBuildError('INVALID_ARGUMENT', `invalid user "${spec}": uids and gids must be in range 0-${MAX_ID}`);
  }
  return n;
}

function parsePasswd(text: string): PasswdEntry[] {
  const out: PasswdEntry[] = [];
  for (const line of text.split('\n')) {
    const f = line.trim().split(':');
    if (f.length < 4 || f[0] === '' || f[0]!.startsWith('#') || !NUMERIC.test(f[2]!) || !NUMERIC.test(f[3]!)) continue;
    out.push({ name: f[0]!, uid: Number(f[2]), gid: Number(f[3]) });
  }
  return out;
}

function parseGroup(text: string): GroupEntry[] {
  const out: GroupEntry[] = [];
  for (const line of text.split('\n')) {
    const f = line.trim().split(':');
    if (f.length < 3 || f[0] === '' || f[0]!.startsWith('#') || !NUMERIC.test(f[2]!)) continue;
    const members = (f[3] ?? '').split(',').map((m) => m.trim()).filter((m) => m !== '');
    out.push({ name: f[0]!, gid: Number(f[2]), members });
  }
  return out;
}

/** Read `path` inside `rootfs`; undefined when it does not exist. Symlinks stay inside the root. */
export function readAccountFile(rootfs: string, path: string): string | undefined {
  const host = join(rootfs, rootPath(rootfs, path));
  let fd: number;
  try {
    fd = openSync(host, constants.O_RDONLY | constants.O_NOFOLLOW | constants.O_NONBLOCK);
  } catch (err) {
    const code = errnoCode(err);
    if (code === 'ENOENT' || code === 'ENOTDIR') return undefined;
    if (code === 'ELOOP') throw new MyBuildError('UNSAFE_PATH', `${path} in the image changed while it was read`, { where: path });
    throw err;
  }
  try {
    const st = fstatSync(fd);
    if (!st.isFile()) throw new MyBuildError('INVALID_ARGUMENT', `${path} in the image is not a regular file`, { where: path });
    if (st.size > MAX_ACCOUNT_FILE) {
      throw new MyBuildError('SIZE_EXCEEDED', `${path} in the image is ${st.size} bytes, more than ${MAX_ACCOUNT_FILE}`, { where: path });
    }
    const buf = Buffer.alloc(st.size);
    let off = 0;
    while (off < buf.length) {
      const n = readSync(fd, buf, off, buf.length - off, off);
      if (n === 0) break;
      off += n;
    }
    return buf.subarray(0, off).toString('utf8');
  } finally {
    closeSync(fd);
  }
}
