/**
 * Blob upload, in the forms registries accept:
 * - default: POST, one streamed PATCH of the whole blob, empty PUT `?digest=` (Artifactory,
 *   distribution, GHCR below its cap);
 * - `put`: POST, one streamed PUT `?digest=` (for registries refusing PATCH, such as GAR);
 * - `chunked`: POST, PATCHes of at most the chunk size with `Content-Range` (registries capping
 *   request bodies, GHCR's 4 MiB), honouring `OCI-Chunk-Min-Length`, then the empty PUT.
 * HEAD first, always (Nexus rejects re-PUTs); cross-repo mount first when a source repo is known
 * (201 = done, 202 = a session to continue). The latest Location is always used, `digest=` is
 * appended verbatim. A failed PATCH is never replayed blindly: the upload URL's Range says
 * where to go on, a 404 session starts over; a PUT that failed may have committed, so HEAD first.
 */
import { pipeline, type Readable, Transform, type TransformCallback } from 'node:stream';
import type { Descriptor, Digest } from '@mybuild/oci';
import { repositoryScope } from './auth.js';
import type { ClientContext } from './context.js';
import type { Endpoint, RequestSpec } from './endpoint.js';
import { RegistryError } from './errors.js';
import { discard, header, type RawResponse } from './http.js';

export type UploadResult = 'exists' | 'mounted' | 'uploaded';
type UploadMode = Endpoint['uploadMode'];

export interface UploadOptions {
  /** A repository on the same registry that may hold the blob (cross-repo mount). */
  mountFrom?: string;
  /** Called with the bytes sent so far. */
  onBytes?: (sent: number) => void;
}

/** Internal control flow: start a new session (maybe in another upload form). */
class UploadSignal extends Error {
  constructor(
    readonly kind: 'restart' | 'downgrade',
    readonly mode: UploadMode | undefined,
    readonly reason: unknown,
  ) {
    super(kind);
  }
}

interface Session {
  location: URL;
  minChunk: number | undefined;
}

const MAX_RESTARTS = 3;
const MAX_STATUS_CHECKS = 3;

/** Append `digest=` to an upload URL verbatim: `&` when it already has a query. */
export function withDigest(location: URL, digest: Digest): URL {
  const href = location.href.replace(/#.*$/, '');
  return new URL(`${href}${location.search ? '&' : '?'}digest=${encodeURIComponent(digest)}`);
}

/** The latest Location (relative or absolute), or the previous URL when none was sent. */
function locationOf(res: RawResponse, previous: URL): URL {
  const loc = header(res, 'location');
  return loc ? new URL(loc, res.url) : previous;
}

/** Upload `Range` header: `0-N` or `bytes=0-N` → bytes held (N+1); `0-0` before any data. */
export function parseUploadRange(value: string | undefined, zeroMeansEmpty: boolean): number | undefined {
  const m = /^\s*(?:bytes=)?(\d+)-(\d+)\s*$/i.exec(value ?? '');
  if (!m) return undefined;
  const end = Number(m[2]);
  if (end === 0 && zeroMeansEmpty) return 0;
  return end + 1;
}

/** Skip the first `n` bytes of a stream and count what passes. */
function skipAndCount(n: number, onBytes: (passed: number) => void): Transform {
  let toSkip = n;
  let passed = 0;
  return new Transform({
    transform(chunk: Buffer, _enc, cb: TransformCallback) {
      let c = chunk;
      if (toSkip > 0) {
        if (c.length <= toSkip) {
          toSkip -= c.length;
          cb();
          return;
        }
        c = c.subarray(toSkip);
        toSkip = 0;
      }
      passed += c.length;
      onBytes(passed);
      cb(null, c);
    },
  });
}

/** Re-chunk a stream into buffers of exactly `size` bytes (the last may be shorter). */
async function* chunksOf(stream: Readable, size: number): AsyncGenerator<Buffer> {
  let parts: Buffer[] = [];
  let held = 0;
  for await (const chunk of stream as AsyncIterable<Buffer>) {
    let c = chunk;
    while (held + c.length >= size) {
      const take = size - held;
      parts.push(c.subarray(0, take));
      yield Buffer.concat(parts, size);
      parts = [];
      held = 0;
      c = c.subarray(take);
    }
    if (c.length > 0) {
      parts.push(c);
      held += c.length;
    }
  }
  if (held > 0) yield Buffer.concat(parts, held);
}

export async function blobExists(ep: Endpoint, path: string, digest: Digest, scopes: readonly string[], where: string): Promise<boolean> {
  const spec: RequestSpec = { method: 'HEAD', url: `/v2/${path}/blobs/${digest}`, scopes, what: `check blob ${digest}`, where };
  const res = await ep.request(spec);
  discard(res);
  if (res.status === 200) return true;
  if (res.status === 404) return false;
  throw await ep.fail(res, spec);
}

export async function uploadBlob(
  ep: Endpoint,
  ctx: ClientContext,
  path: string,
  desc: Descriptor,
  open: () => Promise<Readable>,
  where: string,
  opts: UploadOptions = {},
): Promise<UploadResult> {
  const scopes = [repositoryScope(path, true)];
  const what = `push blob ${desc.digest}`;
  const base = { scopes, what, where };
  const size = desc.size;

  if (await blobExists(ep, path, desc.digest, scopes, where)) return 'exists';

  const sessionFrom = (res: RawResponse): Session => {
    const loc = header(res, 'location');
    discard(res);
    if (!loc) throw new RegistryError('INVALID_ARGUMENT', `${what}: ${ep.host} opened an upload without a Location`, { where, registry: ep.host });
    const min = Number(header(res, 'oci-chunk-min-length'));
    return { location: new URL(loc, res.url), minChunk: Number.isSafeInteger(min) && min > 0 ? min : undefined };
  };

  const openSession = async (mount: boolean): Promise<Session | 'mounted'> => {
    if (mount && opts.mountFrom && opts.mountFrom !== path) {
      const from = opts.mountFrom;
      const res = await ep.request({
        method: 'POST',
        url: `/v2/${path}/blobs/uploads/?mount=${encodeURIComponent(desc.digest)}&from=${encodeURIComponent(from)}`,
        scopes: [...scopes, repositoryScope(from)],
        what: `mount blob ${desc.digest} from ${from}`,
        where,
        idempotent: true,
      });
      if (res.status === 201) {
        discard(res);
        return 'mounted';
      }
      // 202: the registry opened a normal session instead (Harbor, when the source is not linked).
      if (res.status === 202) return sessionFrom(res);
      // Refused (often for auth on the source): upload normally.
      ctx.debug(`mount of ${desc.digest} from ${from} refused with ${res.status}: uploading`);
      discard(res);
    }
    const spec: RequestSpec = { method: 'POST', url: `/v2/${path}/blobs/uploads/`, ...base, idempotent: true };
    const res = await ep.request(spec);
    if (res.status !== 202) throw await ep.fail(res, spec);
    return sessionFrom(res);
  };

  /** The blob from byte `offset` on, counted for progress. */
  const openAt = async (offset: number): Promise<Readable> => {
    const src = await open();
    const t = skipAndCount(offset, (n) => opts.onBytes?.(offset + n));
    return pipeline(src, t, () => undefined);
  };

  /** Where the registry stands: bytes held and the latest URL; a lost session restarts. */
  const status = async (loc: URL): Promise<{ offset: number; location: URL }> => {
    const res = await ep.request({ method: 'GET', url: loc, ...base, what: `check upload of ${desc.digest}`, idempotent: true });
    discard(res);
    if (res.status !== 204 && res.status !== 200) throw new UploadSignal('restart', undefined, await ep.fail(res, { ...base, method: 'GET' }));
    return { offset: parseUploadRange(header(res, 'range'), true) ?? 0, location: locationOf(res, loc) };
  };

  /** A refused PATCH or PUT: another upload form, a new session, or an error. */
  const refused = async (res: RawResponse, mode: UploadMode, spec: RequestSpec): Promise<never> => {
    const err = await ep.fail(res, spec);
    if (res.status === 404) throw new UploadSignal('restart', undefined, err);
    if (mode !== 'put' && (res.status === 405 || res.status === 501 || (res.status === 400 && mode === 'patch'))) throw new UploadSignal('downgrade', 'put', err);
    if (mode === 'patch' && (res.status === 413 || res.status === 416)) throw new UploadSignal('downgrade', 'chunked', err);
    throw err;
  };

  /**
   * One PATCH. When it breaks on the network (the server may have taken some, all or none of
   * it), ask the upload URL where it stands instead of replaying blindly — at most
   * MAX_STATUS_CHECKS times per piece (`attempt` counts them).
   */
  const patch = async (spec: RequestSpec, loc: URL, attempt: number): Promise<{ res: RawResponse } | { stand: { offset: number; location: URL }; err: unknown }> => {
    try {
      return { res: await ep.request(spec) };
    } catch (err) {
      if (attempt >= MAX_STATUS_CHECKS) throw err;
      return { stand: await status(loc), err };
    }
  };

  /** The closing PUT; one that failed may still have committed, so HEAD before starting over. */
  const finish = async (loc: URL, body: (() => Promise<Readable>) | undefined, mode: UploadMode): Promise<void> => {
    const spec: RequestSpec = {
      method: 'PUT',
      url: withDigest(loc, desc.digest),
      ...base,
      headers: { 'content-type': 'application/octet-stream', 'content-length': String(body ? size : 0) },
      ...(body ? { body } : {}),
      idempotent: false,
    };
    let res: RawResponse;
    try {
      res = await ep.request(spec);
    } catch (err) {
      if (await blobExists(ep, path, desc.digest, scopes, where)) return;
      throw new UploadSignal('restart', undefined, err);
    }
    if (res.status === 201 || res.status === 204 || res.status === 200) {
      const got = header(res, 'docker-content-digest');
      discard(res);
      if (got && got !== desc.digest) {
        throw new RegistryError('DIGEST_MISMATCH', `${what}: ${ep.host} stored it as ${got}`, { where, registry: ep.host });
      }
      return;
    }
    if (res.status >= 500) {
      discard(res);
      if (await blobExists(ep, path, desc.digest, scopes, where)) return;
      throw new UploadSignal('restart', undefined, await ep.fail(res, spec));
    }
    await refused(res, mode, spec);
  };

  const patchWhole = async (session: Session): Promise<void> => {
    let loc = session.location;
    let offset = 0;
    for (let checks = 0; offset < size; ) {
      const from = offset;
      const spec: RequestSpec = {
        method: 'PATCH',
        url: loc,
        ...base,
        headers: {
          'content-type': 'application/octet-stream',
          'content-length': String(size - from),
          ...(from > 0 ? { 'content-range': `${from}-${size - 1}` } : {}),
        },
        body: () => openAt(from),
        idempotent: false,
      };
      const sent = await patch(spec, loc, checks++);
      if ('stand' in sent) {
        ({ offset, location: loc } = sent.stand);
        ctx.debug(`PATCH of ${desc.digest} failed (${(sent.err as Error).message}); registry holds ${offset} bytes`);
        continue;
      }
      const res = sent.res;
      if (res.status !== 202 && res.status !== 204) await refused(res, 'patch', spec);
      loc = locationOf(res, loc);
      offset = parseUploadRange(header(res, 'range'), false) ?? size;
      discard(res);
      if (offset <= from) {
        throw new RegistryError('FAILED_PRECONDITION', `${what}: ${ep.host} took no data (Range ${header(res, 'range')})`, { where, registry: ep.host });
      }
      if (offset < size) ctx.debug(`${ep.host} took ${offset} of ${size} bytes of ${desc.digest}: sending the rest`);
    }
    await finish(loc, undefined, 'patch');
  };

  const chunked = async (session: Session): Promise<void> => {
    let loc = session.location;
    const chunkSize = Math.max(session.minChunk ?? 0, ctx.chunkSize);
    let offset = 0;
    const src = await openAt(0);
    try {
      for await (const buf of chunksOf(src, chunkSize)) {
        const end = offset + buf.length - 1;
        for (let checks = 0; ; ) {
          const spec: RequestSpec = {
            method: 'PATCH',
            url: loc,
            ...base,
            headers: { 'content-type': 'application/octet-stream', 'content-length': String(buf.length), 'content-range': `${offset}-${end}` },
            body: buf,
            idempotent: false,
          };
          const sent = await patch(spec, loc, checks++);
          if ('stand' in sent) {
            loc = sent.stand.location;
            if (sent.stand.offset > end) break; // the chunk landed before the connection broke
            if (sent.stand.offset !== offset) throw new UploadSignal('restart', undefined, sent.err);
            continue;
          }
          const res = sent.res;
          if (res.status !== 202 && res.status !== 204) await refused(res, 'chunked', spec);
          loc = locationOf(res, loc);
          discard(res);
          break;
        }
        offset = end + 1;
      }
    } finally {
      src.destroy();
    }
    await finish(loc, undefined, 'chunked');
  };

  let session = await openSession(true);
  if (session === 'mounted') return 'mounted';
  for (let restarts = 0; ; ) {
    const mode = ep.uploadMode;
    try {
      if (mode === 'put') await finish(session.location, () => openAt(0), 'put');
      else if (mode === 'chunked') await chunked(session);
      else await patchWhole(session);
      return 'uploaded';
    } catch (err) {
      if (!(err instanceof UploadSignal)) throw err;
      if (err.kind === 'downgrade' && err.mode) {
        ctx.debug(`${ep.host} refused the ${mode} upload form: using ${err.mode}`);
        ep.uploadMode = err.mode;
      } else if (restarts++ >= MAX_RESTARTS) {
        throw err.reason;
      }
      const next = await openSession(false);
      if (next === 'mounted') return 'mounted';
      session = next;
    }
  }
}
