/**
 * ADD's extras: local tar archives (plain, gzip or zstd) are unpacked into the destination, as
 * BuildKit's file op does (`isArchivePath` + `Untar`); URLs are downloaded (mode 0600, the
 * `Last-Modified` time, `--checksum` verified).
 */
import { createHash, randomBytes } from 'node:crypto';
import { closeSync, createReadStream, createWriteStream, mkdtempSync, openSync, readSync, rmSync, utimesSync, chmodSync } from 'node:fs';
import { join } from 'node:path';
import { Readable, Transform } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { constants, gunzipSync } from 'node:zlib';
import { type Digest, MyBuildError, sniffCompression } from '@mybuild/oci';
import { applyLayer, zstdNapi } from '@mybuild/layer-store';

const SNIFF = 64 * 1024;

/** Whether the regular file at `path` is a tar archive (maybe compressed): its first header is valid. */
export async function isArchive(path: string): Promise<boolean> {
  const fd = openSync(path, 'r');
  let head: Buffer;
  try {
    const buf = Buffer.alloc(SNIFF);
    const n = readSync(fd, buf, 0, SNIFF, 0);
    head = buf.subarray(0, n);
  } finally {
    closeSync(fd);
  }
  const compression = sniffCompression(head);
  let plain: Buffer;
  try {
    if (compression === 'gzip') plain = gunzipSync(head, { finishFlush: constants.Z_SYNC_FLUSH });
    else if (compression === 'zstd') plain = await zstdHead(head);
    else plain = head;
  } catch {
    return false;
  }
  return validTarHeader(plain);
}

async function zstdHead(head: Buffer): Promise<Buffer> {
  const d = new (zstdNapi().DecompressStream)();
  const out: Buffer[] = [];
  let size = 0;
  await new Promise<void>((resolve, reject) => {
    d.on('data', (c: Buffer) => {
      out.push(c);
      size += c.length;
      if (size >= 512) resolve();
    });
    d.on('error', reject);
    d.on('end', () => resolve());
    d.end(head);
  });
  d.destroy();
  return Buffer.concat(out);
}

/** A tar header block (not the zero end block) whose checksum is right. */
export function validTarHeader(b: Buffer): boolean {
  if (b.length < 512) return false;
  const block = b.subarray(0, 512);
  if (block.every((x) => x === 0)) return false;
  const field = block.subarray(148, 156).toString('latin1').replace(/[\0 ]+$/, '').trim();
  if (!/^[0-7]+$/.test(field)) return false;
  const want = Number.parseInt(field, 8);
  let unsigned = 0;
  let signed = 0;
  for (let i = 0; i < 512; i++) {
    const c = i >= 148 && i < 156 ? 32 : block[i]!;
    unsigned += c;
    signed += c > 127 ? c - 256 : c;
  }
  return want === unsigned || want === signed;
}

/**
 * Unpack the archive at `file` into a fresh directory under `tmpRoot` (safely: nothing leaves
 * it). The caller copies that tree into the destination, then removes it.
 */
export async function unpackToTemp(file: string, tmpRoot: string): Promise<string> {
  const dir = mkdtempSync(join(tmpRoot, 'add-'));
  try {
    await applyLayer(createReadStream(file), dir, { mode: 'flatten', sameOwner: true, what: `archive ${file}` });
  } catch (err) {
    rmSync(dir, { recursive: true, force: true });
    throw err;
  }
  return dir;
}

export interface Download {
  /** directory holding the file (remove it when done) */
  dir: string;
  name: string;
  digest: Digest;
}

/** Download `url` as `name` into a fresh directory under `tmpRoot`. */
export async function download(url: string, name: string, tmpRoot: string, checksum: string | undefined, signal?: AbortSignal): Promise<Download> {
  let res: Response;
  try {
    res = await fetch(url, { redirect: 'follow', ...(signal ? { signal } : {}) });
  } catch (err) {
    throw new MyBuildError('UNAVAILABLE', `downloading ${url} failed: ${(err as Error).message}`);
  }
  if (!res.ok || !res.body) throw new MyBuildError(res.status === 404 ? 'NOT_FOUND' : 'UNAVAILABLE', `downloading ${url} failed: HTTP ${res.status}`);
  const dir = mkdtempSync(join(tmpRoot, `url-${randomBytes(4).toString('hex')}-`));
  const file = join(dir, name);
  const hash = createHash('sha256');
  try {
    const hasher = new Transform({
      transform(chunk: Buffer, _enc, cb) {
        hash.update(chunk);
        cb(null, chunk);
      },
    });
    await pipeline(Readable.fromWeb(res.body as import('node:stream/web').ReadableStream<Uint8Array>), hasher, createWriteStream(file, { mode: 0o600 }));
    chmodSync(file, 0o600);
    const digest = `sha256:${hash.digest('hex')}` as Digest;
    if (checksum !== undefined && checksum !== digest) {
      throw new MyBuildError('DIGEST_MISMATCH', `${url} has digest ${digest}, not the --checksum ${checksum}`);
    }
    const modified = res.headers.get('last-modified');
    const t = modified ? Date.parse(modified) : Number.NaN;
    if (!Number.isNaN(t)) utimesSync(file, t / 1000, t / 1000);
    return { dir, name, digest };
  } catch (err) {
    rmSync(dir, { recursive: true, force: true });
    throw err;
  }
}
