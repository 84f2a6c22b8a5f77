/**
 * Test helpers: a byte-exact tar writer (so tests can craft hostile headers), tree listings to
 * compare directories, an OCI layout writer for umoci, and a counting content store.
 */
import { createHash } from 'node:crypto';
import { lstatSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, readlinkSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { gzipSync } from 'node:zlib';
import { compress as zstdCompress } from 'zstd-napi';
import { type Descriptor, type Digest, MediaType, sha256Of } from '@mybuild/oci';
import { type ContentStore, LocalContentStore, initLayout, storePaths, sys } from '@mybuild/layer-store';

export type EntryType = 'file' | 'dir' | 'symlink' | 'link' | 'char' | 'block' | 'fifo';

const TYPEFLAG: Record<EntryType, string> = { file: '0', link: '1', symlink: '2', char: '3', block: '4', dir: '5', fifo: '6' };

export interface TarEntry {
  name: string;
  type?: EntryType;
  /** A raw typeflag character, overriding `type` (e.g. 'S' for GNU sparse). */
  typeflag?: string;
  mode?: number;
  uid?: number;
  gid?: number;
  /** seconds since the epoch; fractional values go into a PAX record */
  mtime?: number;
  linkname?: string;
  devmajor?: number;
  devminor?: number;
  data?: Buffer | string;
  /** Declared size in the header (default: the data's length) — lie to test bounds. */
  size?: number;
  /** Extra PAX records (values as bytes or strings). */
  pax?: Record<string, Buffer | string>;
  /** xattrs, written as SCHILY.xattr.* PAX records with binary values. */
  xattrs?: Record<string, Buffer | string>;
  /** Encode uid/gid in GNU base-256 instead of octal/PAX. */
  base256Ids?: boolean;
}

function octal(value: number, width: number): string {
  return `${value.toString(8).padStart(width - 1, '0')}\0`;
}

function base256(value: number, width: number): Buffer {
  const b = Buffer.alloc(width);
  b[0] = 0x80;
  let v = value;
  for (let i = width - 1; i > 0; i--) {
    b[i] = v % 256;
    v = Math.floor(v / 256);
  }
  return b;
}

/** One PAX record `"%d key=value\n"`, the length counting itself. */
export function paxRecord(key: string, value: Buffer | string): Buffer {
  const body = Buffer.concat([Buffer.from(` ${key}=`), Buffer.isBuffer(value) ? value : Buffer.from(value), Buffer.from('\n')]);
  let len = body.length + 1;
  while (String(len).length + body.length !== len) len = String(len).length + body.length;
  return Buffer.concat([Buffer.from(String(len)), body]);
}

/** A 512-byte ustar header with a correct checksum. */
export function ustarHeader(f: {
  name: string;
  typeflag: string;
  size: number;
  mode?: number;
  uid?: number | Buffer;
  gid?: number | Buffer;
  mtime?: number;
  linkname?: string;
  devmajor?: number;
  devminor?: number;
}): Buffer {
  const h = Buffer.alloc(512);
  h.write(f.name, 0, 100, 'utf8');
  h.write(octal(f.mode ?? 0o644, 8), 100, 'latin1');
  const id = (v: number | Buffer | undefined, off: number): void => {
    if (Buffer.isBuffer(v)) v.copy(h, off);
    else h.write(octal(v ?? 0, 8), off, 'latin1');
  };
  id(f.uid, 108);
  id(f.gid, 116);
  if (f.size > 0o77777777777) base256(f.size, 12).copy(h, 124);
  else h.write(octal(f.size, 12), 124, 'latin1');
  h.write(octal(Math.floor(f.mtime ?? 1_700_000_000), 12), 136, 'latin1');
  h.write(f.typeflag, 156, 'latin1');
  if (f.linkname) h.write(f.linkname, 157, 100, 'utf8');
  h.write('ustar\0', 257, 'latin1');
  h.write('00', 263, 'latin1');
  h.write('root', 265, 'latin1');
  h.write('root', 297, 'latin1');
  h.write(octal(f.devmajor ?? 0, 8), 329, 'latin1');
  h.write(octal(f.devminor ?? 0, 8), 337, 'latin1');
  h.fill(0x20, 148, 156);
  let sum = 0;
  for (const b of h) sum += b;
  h.write(`${sum.toString(8).padStart(6, '0')}\0 `, 148, 'latin1');
  return h;
}

function pad(n: number): Buffer {
  const r = n % 512;
  return Buffer.alloc(r === 0 ? 0 : 512 - r);
}

/** The blocks of one entry (PAX header when needed, header, body, padding). */
export function tarEntry(e: TarEntry): Buffer {
  const data = e.data === undefined ? Buffer.alloc(0) : Buffer.isBuffer(e.data) ? e.data : Buffer.from(e.data);
  const typeflag = e.typeflag ?? TYPEFLAG[e.type ?? 'file'];
  const records: Buffer[] = [];
  let name = e.name;
  if (Buffer.byteLength(name) > 100) {
    records.push(paxRecord('path', name));
    name = name.slice(0, 99);
  }
  let linkname = e.linkname;
  if (linkname !== undefined && Buffer.byteLength(linkname) > 100) {
    records.push(paxRecord('linkpath', linkname));
    linkname = linkname.slice(0, 99);
  }
  let uid: number | Buffer = e.uid ?? 0;
  let gid: number | Buffer = e.gid ?? 0;
  if (e.base256Ids) {
    uid = base256(e.uid ?? 0, 8);
    gid = base256(e.gid ?? 0, 8);
  } else {
    if ((e.uid ?? 0) > 0o7777777) {
      records.push(paxRecord('uid', String(e.uid)));
      uid = 0;
    }
    if ((e.gid ?? 0) > 0o7777777) {
      records.push(paxRecord('gid', String(e.gid)));
      gid = 0;
    }
  }
  if (e.mtime !== undefined && !Number.isInteger(e.mtime)) records.push(paxRecord('mtime', e.mtime.toFixed(9)));
  for (const [k, v] of Object.entries(e.xattrs ?? {})) records.push(paxRecord(`SCHILY.xattr.${k}`, v));
  for (const [k, v] of Object.entries(e.pax ?? {})) records.push(paxRecord(k, v));
  const parts: Buffer[] = [];
  if (records.length > 0) {
    const body = Buffer.concat(records);
    parts.push(ustarHeader({ name: 'PaxHeaders/x', typeflag: 'x', size: body.length }), body, pad(body.length));
  }
  const size = e.size ?? data.length;
  parts.push(
    ustarHeader({
      name,
      typeflag,
      size,
      mode: e.mode ?? (e.type === 'dir' ? 0o755 : 0o644),
      uid,
      gid,
      ...(e.mtime !== undefined ? { mtime: e.mtime } : {}),
      ...(linkname !== undefined ? { linkname } : {}),
      ...(e.devmajor !== undefined ? { devmajor: e.devmajor } : {}),
      ...(e.devminor !== undefined ? { devminor: e.devminor } : {}),
    }),
    data,
    pad(data.length),
  );
  return Buffer.concat(parts);
}

/** A whole tar: entries plus the two zero blocks (unless `end` is false). */
export function buildTar(entries: TarEntry[], opts: { end?: boolean } = {}): Buffer {
  const parts = entries.map(tarEntry);
  if (opts.end !== false) parts.push(Buffer.alloc(1024));
  return Buffer.concat(parts);
}

export const gzip = (b: Buffer): Buffer => gzipSync(b, { level: 1 });
export const zstd = (b: Buffer): Buffer => zstdCompress(b);

export function streamOf(b: Buffer, chunk = 64 * 1024): Readable {
  async function* gen(): AsyncGenerator<Buffer> {
    for (let off = 0; off < b.length; off += chunk) yield b.subarray(off, off + chunk);
  }
  return Readable.from(gen(), { objectMode: false });
}

export function tempDir(prefix = 'mybuild-ls-'): string {
  return mkdtempSync(join(tmpdir(), prefix));
}

export function rmrf(p: string): void {
  rmSync(p, { recursive: true, force: true });
}

// ---------------------------------------------------------------------------------------
// Tree listings

export interface NodeInfo {
  type: 'file' | 'dir' | 'symlink' | 'char' | 'block' | 'fifo' | 'socket';
  mode: number;
  uid: number;
  gid: number;
  size?: number;
  sha256?: string;
  link?: string;
  rdev?: [number, number];
  xattrs: Record<string, string>;
  mtime: number;
  nlink: number;
  ino: number;
}

function typeOf(st: ReturnType<typeof lstatSync> & object): NodeInfo['type'] {
  if (st.isFile()) return 'file';
  if (st.isDirectory()) return 'dir';
  if (st.isSymbolicLink()) return 'symlink';
  if (st.isCharacterDevice()) return 'char';
  if (st.isBlockDevice()) return 'block';
  if (st.isFIFO()) return 'fifo';
  return 'socket';
}

export function nodeInfo(p: string): NodeInfo {
  const st = lstatSync(p, { bigint: false });
  const type = typeOf(st);
  const xattrs: Record<string, string> = {};
  for (const n of sys().llistxattr(p).sort()) xattrs[n] = sys().lgetxattr(p, n)?.toString('hex') ?? '';
  const info: NodeInfo = { type, mode: st.mode & 0o7777, uid: st.uid, gid: st.gid, xattrs, mtime: st.mtimeMs, nlink: st.nlink, ino: st.ino };
  if (type === 'file') {
    info.size = st.size;
    info.sha256 = createHash('sha256').update(readFileSync(p)).digest('hex');
  }
  if (type === 'symlink') info.link = readlinkSync(p);
  if (type === 'char' || type === 'block') info.rdev = sys().devnums(st.rdev);
  return info;
}

/** Every path under `dir` (relative, '.' for dir itself) with its NodeInfo; `skip` names top-level children to leave out. */
export function listTree(dir: string, skip: string[] = []): Map<string, NodeInfo> {
  const out = new Map<string, NodeInfo>();
  const walk = (rel: string): void => {
    const p = rel === '.' ? dir : join(dir, rel);
    const info = nodeInfo(p);
    out.set(rel, info);
    if (info.type !== 'dir') return;
    for (const child of readdirSync(p).sort()) {
      if (rel === '.' && skip.includes(child)) continue;
      walk(rel === '.' ? child : `${rel}/${child}`);
    }
  };
  walk('.');
  return out;
}

/** A comparable form of a tree: drops inode numbers and link counts (keeps hardlink groups), mtimes (ms) on request. */
export function comparableTree(dir: string, opts: { mtimes?: boolean } = {}): { entries: Record<string, Omit<NodeInfo, 'ino' | 'nlink' | 'mtime'> & { mtime?: number }>; hardlinks: string[][] } {
  const tree = listTree(dir);
  const entries: Record<string, Omit<NodeInfo, 'ino' | 'nlink' | 'mtime'> & { mtime?: number }> = {};
  const byIno = new Map<number, string[]>();
  for (const [rel, info] of tree) {
    const { ino, nlink, mtime, ...rest } = info;
    entries[rel] = opts.mtimes ? { ...rest, mtime } : rest;
    if (info.type !== 'dir' && nlink > 1) byIno.set(ino, [...(byIno.get(ino) ?? []), rel]);
  }
  const hardlinks = [...byIno.values()].map((g) => g.sort()).sort((a, b) => a[0]!.localeCompare(b[0]!));
  return { entries, hardlinks };
}

// ---------------------------------------------------------------------------------------
// Stores and layouts

/** The real content store, counting how often each blob is opened. */
export class CountingContentStore extends LocalContentStore {
  readonly reads = new Map<string, number>();
  override async read(digest: Digest, opts?: { verify?: boolean; start?: number }): Promise<Readable> {
    this.reads.set(digest, (this.reads.get(digest) ?? 0) + 1);
    return super.read(digest, opts);
  }
}

export async function newStore(root: string): Promise<CountingContentStore> {
  const paths = storePaths(root);
  await initLayout(paths);
  return new CountingContentStore(paths);
}

export interface Layer {
  tar: Buffer;
  blob: Buffer;
  desc: Descriptor;
  diffId: Digest;
}

export function makeLayer(entries: TarEntry[] | Buffer, compression: 'gzip' | 'zstd' | 'none' = 'gzip'): Layer {
  const tar = Buffer.isBuffer(entries) ? entries : buildTar(entries);
  const blob = compression === 'gzip' ? gzip(tar) : compression === 'zstd' ? zstd(tar) : tar;
  const mediaType = compression === 'gzip' ? MediaType.OciLayerGzip : compression === 'zstd' ? MediaType.OciLayerZstd : MediaType.OciLayer;
  return { tar, blob, desc: { mediaType, digest: sha256Of(blob), size: blob.length }, diffId: sha256Of(tar) };
}

export async function putLayers(store: ContentStore, layers: Layer[]): Promise<void> {
  for (const l of layers) await store.putBytes(l.blob, l.desc.digest);
}

/** An OCI image layout at `dir` holding one image tagged `tag`, made of `layers`. */
export function writeOciLayout(dir: string, layers: Layer[], tag = 'test'): void {
  const blobs = join(dir, 'blobs', 'sha256');
  mkdirSync(blobs, { recursive: true });
  const put = (b: Buffer): Digest => {
    const d = sha256Of(b);
    writeFileSync(join(blobs, d.slice(7)), b);
    return d;
  };
  for (const l of layers) put(l.blob);
  const config = Buffer.from(
    JSON.stringify({ architecture: 'amd64', os: 'linux', config: {}, rootfs: { type: 'layers', diff_ids: layers.map((l) => l.diffId) } }),
  );
  const manifest = Buffer.from(
    JSON.stringify({
      schemaVersion: 2,
      mediaType: MediaType.OciManifest,
      config: { mediaType: MediaType.OciConfig, digest: put(config), size: config.length },
      layers: layers.map((l) => l.desc),
    }),
  );
  const md = put(manifest);
  writeFileSync(join(dir, 'oci-layout'), '{"imageLayoutVersion":"1.0.0"}');
  writeFileSync(
    join(dir, 'index.json'),
    JSON.stringify({
      schemaVersion: 2,
      mediaType: MediaType.OciIndex,
      manifests: [{ mediaType: MediaType.OciManifest, digest: md, size: manifest.length, annotations: { 'org.opencontainers.image.ref.name': tag } }],
    }),
  );
}
