/**
 * ADD's extras: local tar archives (plain, gzip or zstd) are unpacked into the destination, as
 * BuildKit's file op does (`isArchivePath` + `Untar`); URLs are downloaded (mode 0600, the
 * `Last-Modified` time, `--checksum` verified, a gzip Content-Encoding decoded as Go's client
 * decodes it for BuildKit).
 */
import { closeSync, createReadStream, createWriteStream, mkdtempSync, openSync, readSync, rmSync, utimesSync, chmodSync } from 'node:fs';
import { join } from 'node:path';
import type { IncomingMessage } from 'node:http';
import { createRequire } from 'node:module';
import { PassThrough, Transform } from 'node:stream';
import type { SecureContext } from 'node:tls';
import { pipeline } from 'node:stream/promises';
import { createHash, type Digest, errnoCode, MyBuildError, randomBytes, sniffCompression } from '@mybuild/oci';
import { applyLayer, zlib, zstdNapi } from '@mybuild/layer-store';

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
    if (compression === 'gzip') plain = zlib().gunzipSync(head, { finishFlush: zlib().constants.Z_SYNC_FLUSH });
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

const MAX_REDIRECTS = 20; // as fetch and Go's http client
const REDIRECTS = new Set([301, 302, 303, 307, 308]);
/** TLS errors that mean "signed by a CA not in the trust store". */
const UNKNOWN_CA = new Set(['UNABLE_TO_VERIFY_LEAF_SIGNATURE', 'UNABLE_TO_GET_ISSUER_CERT', 'UNABLE_TO_GET_ISSUER_CERT_LOCALLY', 'SELF_SIGNED_CERT_IN_CHAIN', 'DEPTH_ZERO_SELF_SIGNED_CERT']);
const IDLE_MS = 120_000;

/**
 * GET `url` over node:http(s), following redirects; resolves with the last response. `tls` is
 * the context for https (undefined: Node's default). Each request has a connection of its own
 * (no socket or TLS session shared with a request made under another context).
 */
async function get(url: URL, tls: (() => Promise<SecureContext | undefined>) | undefined, signal: AbortSignal | undefined): Promise<IncomingMessage> {
  for (let hops = 0; ; hops++) {
    if (url.protocol !== 'http:' && url.protocol !== 'https:') throw new Error(`redirected to ${url.protocol} (only http and https are fetched)`);
    const secure = url.protocol === 'https:';
    const context = secure && tls ? await tls() : undefined;
    const res = await new Promise<IncomingMessage>((resolve, reject) => {
      let response: IncomingMessage | undefined;
      // loaded here: a build that downloads nothing does not load them (3-4 ms)
      const client = createRequire(import.meta.url)(secure ? 'node:https' : 'node:http') as typeof import('node:https');
      const req = client.get(url, {
        agent: false,
        // as Go's client asks (BuildKit's): a gzip body is decoded, other encodings are kept
        headers: { 'user-agent': 'mybuild', 'accept-encoding': 'gzip' },
        ...(context ? { secureContext: context } : {}),
        ...(signal ? { signal } : {}),
      });
      req.setTimeout(IDLE_MS, () => {
        const err = new Error(`no data for ${IDLE_MS / 1000} s`);
        req.destroy(err);
        response?.destroy(err);
      });
      req.once('response', (r) => resolve((response = r)));
      req.once('error', reject);
    });
    const location = res.headers.location;
    if (location === undefined || !REDIRECTS.has(res.statusCode ?? 0)) return res;
    res.resume();
    if (hops >= MAX_REDIRECTS) throw new Error(`more than ${MAX_REDIRECTS} redirects`);
    url = new URL(location, url);
  }
}

/** A download's failure as one error: what was being downloaded, why, and a hint for an unknown CA. */
function downloadError(url: string, err: unknown, signal: AbortSignal | undefined): MyBuildError {
  if (err instanceof MyBuildError) return err;
  if (signal?.aborted && signal.reason instanceof MyBuildError) return signal.reason;
  const hint = UNKNOWN_CA.has(errnoCode(err) ?? '') ? "the server's certificate comes from a CA Node does not know: name its CA file in NODE_EXTRA_CA_CERTS" : undefined;
  return new MyBuildError('UNAVAILABLE', `downloading ${url} failed: ${(err as Error).message}`, hint ? { hint } : {});
}

/**
 * Download `url` as `name` into a fresh directory under `tmpRoot`; `tls` is the context for
 * https (default: Node's).
 */
export async function download(url: string, name: string, tmpRoot: string, checksum: string | undefined, signal?: AbortSignal, tls?: () => Promise<SecureContext | undefined>): Promise<Download> {
  let res: IncomingMessage;
  try {
    res = await get(new URL(url), tls, signal);
  } catch (err) {
    throw downloadError(url, err, signal);
  }
  const status = res.statusCode ?? 0;
  if (status < 200 || status >= 300) {
    res.resume();
    throw new MyBuildError(status === 404 ? 'NOT_FOUND' : 'UNAVAILABLE', `downloading ${url} failed: HTTP ${status}`);
  }
  const encoding = (res.headers['content-encoding'] ?? '').trim().toLowerCase();
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
    try {
      await pipeline(res, encoding === 'gzip' || encoding === 'x-gzip' ? zlib().createGunzip() : new PassThrough(), hasher, createWriteStream(file, { mode: 0o600 }));
    } catch (err) {
      throw downloadError(url, err, signal);
    }
    chmodSync(file, 0o600);
    const digest = `sha256:${hash.digest('hex')}` as Digest;
    if (checksum !== undefined && checksum !== digest) {
      throw new MyBuildError('DIGEST_MISMATCH', `${url} has digest ${digest}, not the --checksum ${checksum}`);
    }
    const modified = res.headers['last-modified'];
    const t = modified ? Date.parse(modified) : Number.NaN;
    if (!Number.isNaN(t)) utimesSync(file, t / 1000, t / 1000);
    return { dir, name, digest };
  } catch (err) {
    rmSync(dir, { recursive: true, force: true });
    throw err;
  }
}
