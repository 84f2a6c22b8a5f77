/**
 * Byte-exact tar headers for layers we write: ustar headers, plus a PAX extended header before
 * an entry when a field does not fit (long or non-ASCII names, large ids, sizes or times,
 * xattrs). tar-stream's packer cannot carry binary PAX values (security.capability), so the
 * writer encodes headers itself; the output follows Go's archive/tar (what docker and BuildKit
 * write): empty uname/gname, `PaxHeaders.0/<name>` for PAX headers, whole-second mtimes.
 */

export const BLOCK = 512;

/** Tar typeflags of the entries a layer holds. */
export const TypeFlag = {
  file: '0',
  link: '1',
  symlink: '2',
  char: '3',
  block: '4',
  dir: '5',
  fifo: '6',
  pax: 'x',
} as const;
export type TypeFlagName = keyof typeof TypeFlag;

/** One entry's header fields. `name` has no trailing slash; directories get one here. */
export interface TarHeader {
  name: string;
  type: Exclude<TypeFlagName, 'pax'>;
  /** permission bits incl. setuid/setgid/sticky (& 0o7777) */
  mode: number;
  uid: number;
  gid: number;
  /** bytes of data that follow (regular files only) */
  size: number;
  /** whole seconds since the epoch */
  mtime: number;
  linkname?: string;
  devmajor?: number;
  devminor?: number;
  /** xattrs by name, in the order to write them */
  xattrs?: readonly (readonly [string, Buffer])[];
}

/** Largest values the ustar octal fields hold. */
const MAX_OCTAL_7 = 0o7777777; // mode, uid, gid, devmajor, devminor (8-byte fields)
const MAX_OCTAL_11 = 0o77777777777; // size, mtime (12-byte fields)

function isAscii(s: string): boolean {
  for (let i = 0; i < s.length; i++) if (s.charCodeAt(i) > 0x7f) return false;
  return true;
}

/** One PAX record `"%d key=value\n"`, the length (decimal) counting itself. */
export function paxRecord(key: string, value: Buffer | string): Buffer {
  const k = Buffer.from(key, 'utf8');
  const v = typeof value === 'string' ? Buffer.from(value, 'utf8') : value;
  const body = k.length + v.length + 3; // ' ' '=' '\n'
  let len = body + String(body).length;
  if (String(len).length + body !== len) len = body + String(len).length;
  const out = Buffer.allocUnsafe(len);
  let off = out.write(`${len} `, 0, 'latin1');
  off += k.copy(out, off);
  out[off++] = 0x3d;
  off += v.copy(out, off);
  out[off] = 0x0a;
  return out;
}

/** ASCII-only (non-ASCII dropped), at most `max` bytes: the best-effort ustar field for a PAX value. */
function asciiField(s: string, max: number): string {
  let a = s;
  if (!isAscii(s)) {
    a = '';
    for (let i = 0; i < s.length; i++) if (s.charCodeAt(i) <= 0x7f) a += s[i];
  }
  return a.length > max ? a.slice(0, max) : a;
}

/**
 * The PAX records `h` needs (empty when the ustar header says it all), keys in byte order so
 * the output does not depend on how the caller built `h`.
 */
export function paxRecordsFor(h: TarHeader): Buffer[] {
  const recs: [string, Buffer | string][] = [];
  const name = h.type === 'dir' ? `${h.name}/` : h.name;
  if (name.length > 100 || !isAscii(name)) recs.push(['path', name]);
  const link = h.linkname;
  if (link !== undefined && (link.length > 100 || !isAscii(link))) recs.push(['linkpath', link]);
  if (h.uid > MAX_OCTAL_7) recs.push(['uid', String(h.uid)]);
  if (h.gid > MAX_OCTAL_7) recs.push(['gid', String(h.gid)]);
  if (h.size > MAX_OCTAL_11) recs.push(['size', String(h.size)]);
  if (h.mtime < 0 || h.mtime > MAX_OCTAL_11) recs.push(['mtime', String(h.mtime)]);
  for (const [n, v] of h.xattrs ?? []) recs.push([`SCHILY.xattr.${n}`, v]);
  if (recs.length === 0) return [];
  recs.sort((a, b) => (a[0] < b[0] ? -1 : a[0] > b[0] ? 1 : 0));
  return recs.map(([k, v]) => paxRecord(k, v));
}

function octal(buf: Buffer, off: number, width: number, value: number): void {
  const s = value.toString(8);
  // `width - 1` digits and a NUL, as GNU tar and Go write them.
  buf.write(s.length >= width - 1 ? s : '0'.repeat(width - 1 - s.length) + s, off, width - 1, 'latin1');
  buf[off + width - 1] = 0;
}

/**
 * Write one 512-byte ustar header at `buf[off]`. Fields that need PAX get a placeholder here
 * (0, or an ASCII-truncated name): the PAX header written before it holds the real value.
 */
export function encodeUstar(buf: Buffer, off: number, f: {
  name: string;
  typeflag: string;
  mode: number;
  uid: number;
  gid: number;
  size: number;
  mtime: number;
  linkname?: string | undefined;
  devmajor?: number | undefined;
  devminor?: number | undefined;
}): void {
  buf.fill(0, off, off + BLOCK);
  buf.write(asciiField(f.name, 100), off, 100, 'latin1');
  octal(buf, off + 100, 8, f.mode & 0o7777);
  octal(buf, off + 108, 8, f.uid > MAX_OCTAL_7 ? 0 : f.uid);
  octal(buf, off + 116, 8, f.gid > MAX_OCTAL_7 ? 0 : f.gid);
  octal(buf, off + 124, 12, f.size > MAX_OCTAL_11 ? 0 : f.size);
  octal(buf, off + 136, 12, f.mtime < 0 || f.mtime > MAX_OCTAL_11 ? 0 : f.mtime);
  buf[off + 156] = f.typeflag.charCodeAt(0);
  if (f.linkname) buf.write(asciiField(f.linkname, 100), off + 157, 100, 'latin1');
  buf.write('ustar\x0000', off + 257, 8, 'latin1');
  octal(buf, off + 329, 8, f.devmajor ?? 0);
  octal(buf, off + 337, 8, f.devminor ?? 0);
  // checksum: the header's bytes with the checksum field taken as 8 spaces
  buf.fill(0x20, off + 148, off + 156);
  let sum = 0;
  for (let i = off; i < off + BLOCK; i++) sum += buf[i]!;
  octal(buf, off + 148, 7, sum); // 6 digits + NUL; the 8th byte stays a space
}

/** Name of the PAX header that describes `name` (Go's archive/tar: `dir/PaxHeaders.0/base`). */
export function paxHeaderName(name: string): string {
  const slash = name.lastIndexOf('/');
  return slash < 0 ? `PaxHeaders.0/${name}` : `${name.slice(0, slash)}/PaxHeaders.0/${name.slice(slash + 1)}`;
}

/** Bytes of padding after `size` bytes of data. */
export function padding(size: number): number {
  const r = size % BLOCK;
  return r === 0 ? 0 : BLOCK - r;
}
