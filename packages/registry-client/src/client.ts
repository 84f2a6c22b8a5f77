/**
 * The OCI Distribution API client: manifests, blobs, tags, referrers, delete, and the three
 * composite operations `pull` (remote image → BlobSink), `push` (BlobSource → registry) and
 * `copy` (registry → registry, streaming, mounting within one registry).
 */
import { delimiter } from 'node:path';
import { Readable } from 'node:stream';
import { finished } from 'node:stream/promises';
import { setTimeout as sleep } from 'node:timers/promises';
import type { SecureContext } from 'node:tls';
import {
  apiHost,
  type BlobSink,
  type BlobSource,
  createHash,
  type Descriptor,
  type Digest,
  digestAlgorithm,
  digestHex,
  formatReference,
  type ImageIndex,
  type ImageManifest,
  isIndexMediaType,
  MediaType,
  MyBuildError,
  parseDigest,
  parseNormalizedReference,
  type Platform,
  type Reference,
  sha256Of,
} from '@mybuild/oci';
import pLimit, { type LimitFunction } from 'p-limit';
import { repositoryScope } from './auth.js';
import type { ClientContext, SchemeMemo } from './context.js';
import { type CredentialProvider, type Credentials, dockerConfigCredentials } from './credentials.js';
import { downloadBlob } from './download.js';
import { Endpoint, type RequestSpec } from './endpoint.js';
import { RegistryError } from './errors.js';
import { DEFAULT_TIMEOUTS, discard, header, Http, readBody, type Timeouts, type TlsOptions } from './http.js';
import {
  type AnyManifest,
  bareMediaType,
  hostPlatform,
  isIndex,
  MANIFEST_ACCEPT,
  MAX_MANIFEST_PULL,
  MAX_MANIFEST_PUSH,
  parseManifest,
  parsePlatform,
  selectManifest,
} from './manifest.js';
import { DEFAULT_RETRY, type RetryPolicy } from './retry.js';
import { DEFAULT_CERTS_DIRS, readIfReadable, secureContextFor, tlsMaterial } from './tls.js';
import { blobExists, uploadBlob, type UploadResult } from './upload.js';

export interface RegistryClientOptions {
  /** Where credentials come from (default: docker's config.json, helpers included). */
  credentials?: CredentialProvider;
  /** Registries (`host[:port]`) allowed over plain http or with unverified TLS. Loopback may use http anyway. */
  insecure?: string[];
  /** CA files trusted for every registry (added to `MYBUILD_CA_FILE`). */
  caFiles?: string[];
  /** CA files per registry host. */
  registryCaFiles?: Record<string, string[]>;
  /** Where `HOST:PORT/*.crt` (CAs) and `*.cert`/`*.key` (client pairs) are looked up. */
  certsDirs?: string[];
  /** Registry domain (`docker.io`) → mirror hosts tried first for pulls. */
  mirrors?: Record<string, string[]>;
  /** Blob transfers running at once (default 6, as skopeo). */
  concurrency?: number;
  retry?: Partial<RetryPolicy>;
  userAgent?: string;
  timeouts?: Partial<Timeouts>;
  /** Largest PATCH when a registry needs chunked uploads (default 4 MiB). */
  chunkSize?: number;
  /** Receives one line per request and decision; credentials are never in it. */
  debug?: (line: string) => void;
  /** Environment for `MYBUILD_CA_FILE` and `NODE_EXTRA_CA_CERTS` (default process.env). */
  env?: NodeJS.ProcessEnv;
  /** Clock for token expiry (tests). */
  clock?: () => number;
  /**
   * Remembers which loopback registries speak plain http, to try that first next time (for
   * one across processes: {@link fileSchemeMemo}). Without it every client probes https first.
   */
  schemes?: SchemeMemo;
}

export type ReferenceInput = Reference | string;

/** A manifest or index as received: exact bytes, their digest, parsed content. */
export interface FetchedManifest {
  reference: Reference;
  descriptor: Descriptor;
  bytes: Buffer;
  manifest: AnyManifest;
}

export interface ProgressEvent {
  direction: 'pull' | 'push';
  digest: Digest;
  mediaType: string;
  /** start: transfer begins; progress: bytes moved; done: finished; exists/mounted: skipped. */
  status: 'start' | 'progress' | 'done' | 'exists' | 'mounted';
  bytes: number;
  total: number;
}

export interface PullOptions {
  /** Platform to select from an index (`linux/arm64` or object); `all` pulls every one. Default: this host's. */
  platform?: Platform | string | 'all';
  onProgress?: (e: ProgressEvent) => void;
  /**
   * Hash blobs on the way in too (default true). A BlobSink verifies size and digest of what it
   * is given (its contract; the layer store does); set false to leave the digest check to it and
   * save one sha256 pass over every byte. Sizes are enforced either way.
   */
  verifyBlobs?: boolean;
}

export interface PullResult {
  reference: Reference;
  /** What the reference named: an index or a manifest (written to the sink too). */
  descriptor: Descriptor;
  /** The image manifest chosen for the platform (the first one with `all`). */
  manifestDescriptor: Descriptor;
  manifest: ImageManifest;
  index: ImageIndex | undefined;
  /** Every image manifest pulled. */
  manifests: FetchedManifest[];
}

export interface PushOptions {
  /** Media type when the manifest bytes carry none. */
  mediaType?: string;
  /** A repository on the destination registry that may already hold the blobs (mount first). */
  mountFrom?: string;
  onProgress?: (e: ProgressEvent) => void;
}

export interface CopyOptions {
  /** Copy one platform of an index (then the index digest is not kept). Default: everything. */
  platform?: Platform | string;
  onProgress?: (e: ProgressEvent) => void;
}

export interface TagListOptions {
  /** `n=` page size asked for (servers may send shorter pages). */
  pageSize?: number;
  /** Give up after this many pages (default 1000). */
  maxPages?: number;
}

function toReference(input: ReferenceInput): Reference {
  return typeof input === 'string' ? parseNormalizedReference(input) : input;
}

function hashBytes(bytes: Uint8Array, like?: Digest): Digest {
  const alg = like ? digestAlgorithm(like) : 'sha256';
  return parseDigest(`${alg}:${createHash(alg).update(bytes).digest('hex')}`);
}

async function readStream(stream: Readable, max: number, what: string): Promise<Buffer> {
  const chunks: Buffer[] = [];
  let n = 0;
  for await (const c of stream as AsyncIterable<Buffer>) {
    n += c.length;
    if (n > max) {
      stream.destroy();
      throw new MyBuildError('SIZE_EXCEEDED', `${what} is larger than ${max} bytes`);
    }
    chunks.push(c);
  }
  return Buffer.concat(chunks);
}

/** Wait for every promise (none is left running unobserved), then throw the first failure. */
async function settleAll(promises: readonly Promise<unknown>[]): Promise<void> {
  const results = await Promise.allSettled(promises);
  const bad = results.find((r): r is PromiseRejectedResult => r.status === 'rejected');
  if (bad) throw bad.reason;
}

/**
 * A task wrapper for a shared limiter: after the first failure, queued tasks do not start and
 * fail with that same error (so whatever waits on them reports the real cause).
 */
function failFast(): <T>(task: () => Promise<T>) => () => Promise<T> {
  let failure: { err: unknown } | undefined;
  return (task) => async () => {
    if (failure) throw failure.err;
    try {
      return await task();
    } catch (err) {
      failure ??= { err };
      throw err;
    }
  };
}

/** Emits start / progress (every 256 KiB) / done events for one blob. */
function reporter(onProgress: ((e: ProgressEvent) => void) | undefined, direction: 'pull' | 'push', desc: Descriptor) {
  let last = 0;
  const emit = (status: ProgressEvent['status'], bytes: number) =>
    onProgress?.({ direction, digest: desc.digest, mediaType: desc.mediaType, status, bytes, total: desc.size });
  return {
    emit,
    bytes(n: number) {
      if (n - last >= 256 * 1024 || n === desc.size) {
        last = n;
        emit('progress', n);
      }
    },
  };
}

interface MirrorSpec {
  host: string;
  protocol: 'https:' | 'http:' | undefined;
}

function parseMirror(text: string): MirrorSpec {
  const m = /^(https?):\/\/([^/]+)\/?$/i.exec(text.trim());
  if (m) return { host: m[2]!.toLowerCase(), protocol: `${m[1]!.toLowerCase()}:` as 'https:' | 'http:' };
  return { host: text.trim().replace(/\/+$/, '').toLowerCase(), protocol: undefined };
}

export class RegistryClient {
  readonly #ctx: ClientContext;
  readonly #http: Http;
  readonly #endpoints = new Map<string, Endpoint>();
  readonly #mirrors = new Map<string, MirrorSpec[]>();
  readonly #limit: LimitFunction;
  readonly #tls = new Map<string, TlsOptions>();

  constructor(opts: RegistryClientOptions = {}) {
    const concurrency = Math.max(1, opts.concurrency ?? 6);
    const env = opts.env ?? process.env;
    const debug = opts.debug;
    this.#http = new Http({
      userAgent: opts.userAgent ?? 'mybuild-registry-client/0.1',
      timeouts: { ...DEFAULT_TIMEOUTS, ...opts.timeouts },
      maxSockets: concurrency * 2,
    });
    const insecure = new Set((opts.insecure ?? []).map((h) => apiHost(h.toLowerCase())));
    const isInsecure = (host: string) => {
      const h = host.toLowerCase();
      return insecure.has(h) || insecure.has(h.replace(/:\d+$/, ''));
    };
    const nodeExtraCa = env.NODE_EXTRA_CA_CERTS || undefined;
    const globalCa = [...(env.MYBUILD_CA_FILE ? env.MYBUILD_CA_FILE.split(delimiter).filter(Boolean) : []), ...(opts.caFiles ?? [])];
    const perHostCa = new Map(Object.entries(opts.registryCaFiles ?? {}).map(([h, files]) => [apiHost(h.toLowerCase()), files]));
    const certsDirs = opts.certsDirs ?? DEFAULT_CERTS_DIRS;
    for (const [domain, list] of Object.entries(opts.mirrors ?? {})) this.#mirrors.set(apiHost(domain.toLowerCase()), list.map(parseMirror));
    this.#ctx = {
      http: this.#http,
      credentials: opts.credentials ?? dockerConfigCredentials(),
      retry: { ...DEFAULT_RETRY, ...opts.retry },
      isInsecure,
      tlsFor: (host) => {
        let t = this.#tls.get(host);
        if (!t) {
          const insecure = isInsecure(host);
          // The host's TLS material is read at its first https request (a plain http registry
          // never needs it): CA files and certs.d, then one context of them.
          let context: SecureContext | null | undefined = null;
          const contextFor = (): SecureContext | undefined => {
            if (context === null) {
              const files = [...globalCa, ...(perHostCa.get(host) ?? [])];
              const m = tlsMaterial(host, certsDirs, files);
              // A context with CAs of its own starts from a copy of Node's store made without
              // NODE_EXTRA_CA_CERTS (Node 20): that file is added again, as Node would trust it.
              if (m.ca && nodeExtraCa && !files.includes(nodeExtraCa)) m.ca.push(...readIfReadable(nodeExtraCa));
              // an insecure host's certificate is not checked: its CAs do not matter, a client certificate does
              const material = insecure ? { ...m, ca: undefined } : m;
              context = material.ca || material.cert ? secureContextFor(host, material) : undefined;
            }
            return context;
          };
          t = { rejectUnauthorized: !insecure, context: contextFor };
          this.#tls.set(host, t);
        }
        return t;
      },
      debug: (line) => debug?.(line),
      debugging: debug !== undefined,
      now: opts.clock ?? Date.now,
      sleep: (ms) => sleep(ms),
      chunkSize: opts.chunkSize ?? 4 << 20,
      ...(opts.schemes ? { schemes: opts.schemes } : {}),
    };
    this.#limit = pLimit(concurrency);
  }

  /** Close idle keep-alive connections. */
  close(): void {
    this.#http.close();
  }

  #endpoint(host: string, protocol?: 'https:' | 'http:'): Endpoint {
    const key = `${protocol ?? ''}${host}`;
    let ep = this.#endpoints.get(key);
    if (!ep) {
      ep = new Endpoint(host, this.#ctx, protocol);
      this.#endpoints.set(key, ep);
    }
    return ep;
  }

  /** The registry's own endpoint for a reference. */
  #origin(ref: Reference): Endpoint {
    return this.#endpoint(apiHost(ref.domain.toLowerCase()));
  }

  /** Mirrors first, then the registry itself: where pulls are tried. */
  #pullEndpoints(ref: Reference): Endpoint[] {
    const host = apiHost(ref.domain.toLowerCase());
    return [...(this.#mirrors.get(host) ?? []).map((m) => this.#endpoint(m.host, m.protocol)), this.#origin(ref)];
  }

  /** Try each endpoint in turn; the last one's error wins. */
  async #firstOf<T>(ref: Reference, what: string, fn: (ep: Endpoint) => Promise<T>): Promise<T> {
    const eps = this.#pullEndpoints(ref);
    for (let i = 0; ; i++) {
      const ep = eps[i]!;
      try {
        return await fn(ep);
      } catch (err) {
        if (i === eps.length - 1) throw err;
        this.#ctx.debug(`mirror ${ep.host} failed for ${what} ${formatReference(ref)}: ${(err as Error).message}; trying the next`);
      }
    }
  }

  /** Fetch a manifest or index by tag or digest, keeping the exact bytes. */
  async getManifest(input: ReferenceInput): Promise<FetchedManifest> {
    const ref = toReference(input);
    return this.#firstOf(ref, 'manifest', (ep) => this.#getManifestFrom(ep, ref));
  }

  async #getManifestFrom(ep: Endpoint, ref: Reference): Promise<FetchedManifest> {
    const where = formatReference(ref);
    const target = ref.digest ?? ref.tag ?? 'latest';
    const spec: RequestSpec = {
      method: 'GET',
      url: `/v2/${ref.path}/manifests/${target}`,
      scopes: [repositoryScope(ref.path)],
      headers: { accept: MANIFEST_ACCEPT },
      what: 'pull manifest',
      where,
    };
    const res = await ep.request(spec);
    if (res.status !== 200) throw await ep.fail(res, spec);
    const contentType = header(res, 'content-type');
    const ct = bareMediaType(contentType);
    if (ct === MediaType.DockerSchema1 || ct === MediaType.DockerSchema1Signed) {
      discard(res);
      parseManifest(Buffer.alloc(0), ct, where); // throws the schema1 error
    }
    let bytes: Buffer;
    try {
      bytes = await readBody(res, MAX_MANIFEST_PULL, `manifest from ${ep.host}`);
    } catch (err) {
      if (err instanceof MyBuildError) throw new RegistryError(err.code, err.message, { where, registry: ep.host, hint: 'the registry sent a manifest larger than any image needs' });
      throw ep.networkError(err, spec);
    }
    const digest = hashBytes(bytes, ref.digest);
    if (ref.digest && digest !== ref.digest) {
      throw new RegistryError('DIGEST_MISMATCH', `manifest from ${ep.host} has digest ${digest}, not the one asked for`, { where, registry: ep.host });
    }
    const claimed = header(res, 'docker-content-digest');
    if (claimed && claimed !== digest) this.#ctx.debug(`${ep.host} claims ${claimed} for ${where}; the bytes hash to ${digest}`);
    const { mediaType, manifest } = parseManifest(bytes, contentType, where);
    return { reference: ref, descriptor: { mediaType, digest, size: bytes.length }, bytes, manifest };
  }

  /** Resolve a reference to a descriptor with HEAD (no body); undefined when absent. */
  async headManifest(input: ReferenceInput): Promise<Descriptor | undefined> {
    const ref = toReference(input);
    const ep = this.#origin(ref);
    const spec: RequestSpec = {
      method: 'HEAD',
      url: `/v2/${ref.path}/manifests/${ref.digest ?? ref.tag ?? 'latest'}`,
      scopes: [repositoryScope(ref.path)],
      headers: { accept: MANIFEST_ACCEPT },
      what: 'resolve manifest',
      where: formatReference(ref),
    };
    const res = await ep.request(spec);
    discard(res);
    if (res.status === 404) return undefined;
    if (res.status !== 200) throw await ep.fail(res, spec);
    const digest = header(res, 'docker-content-digest');
    const size = Number(header(res, 'content-length'));
    const mediaType = bareMediaType(header(res, 'content-type'));
    if (!digest || !Number.isSafeInteger(size) || !mediaType) {
      // Not every registry answers HEAD fully: fall back to the body.
      return (await this.getManifest(ref)).descriptor;
    }
    return { mediaType, digest: parseDigest(digest, spec.where), size };
  }

  /** The image manifest for a platform (selected from an index when the reference names one). */
  async getImageManifest(input: ReferenceInput, platform?: Platform | string): Promise<{ top: FetchedManifest; image: FetchedManifest }> {
    const ref = toReference(input);
    const top = await this.getManifest(ref);
    if (!isIndex(top.manifest)) return { top, image: top };
    const want = typeof platform === 'string' ? parsePlatform(platform) : (platform ?? hostPlatform());
    let current = top;
    for (let depth = 0; isIndex(current.manifest); depth++) {
      if (depth > 2) throw new MyBuildError('INVALID_ARGUMENT', 'indexes nested too deep', { where: formatReference(ref) });
      const chosen = selectManifest(current.manifest, want, formatReference(ref));
      current = await this.getManifest({ ...ref, tag: undefined, digest: chosen.digest });
    }
    return { top, image: current };
  }

  /** Stream a blob, verified (size and digest) as it flows; resumes broken transfers with Range. */
  async fetchBlob(input: ReferenceInput, desc: Descriptor, opts: { onBytes?: (received: number) => void; verifyDigest?: boolean } = {}): Promise<Readable> {
    const ref = toReference(input);
    return this.#firstOf(ref, `blob ${desc.digest}`, (ep) => downloadBlob(ep, this.#ctx, ref.path, desc, formatReference(ref), opts));
  }

  async blobExists(input: ReferenceInput, digest: Digest): Promise<boolean> {
    const ref = toReference(input);
    return blobExists(this.#origin(ref), ref.path, digest, [repositoryScope(ref.path)], formatReference(ref));
  }

  /** Upload one blob (HEAD first, mount when `mountFrom` is given). `open` may be called again for retries. */
  async pushBlob(input: ReferenceInput, desc: Descriptor, open: () => Promise<Readable>, opts: { mountFrom?: string; onBytes?: (sent: number) => void } = {}): Promise<UploadResult> {
    const ref = toReference(input);
    return uploadBlob(this.#origin(ref), this.#ctx, ref.path, desc, open, formatReference(ref), opts);
  }

  /** PUT a manifest or index under the reference's tag (or digest). Returns its descriptor. */
  async putManifest(input: ReferenceInput, bytes: Uint8Array, mediaType?: string): Promise<Descriptor> {
    const ref = toReference(input);
    const where = formatReference(ref);
    const parsed = parseManifest(bytes, mediaType, where);
    const desc: Descriptor = { mediaType: parsed.mediaType, digest: sha256Of(bytes), size: bytes.length };
    await this.#putManifest(this.#origin(ref), ref, bytes, desc, ref.tag ?? ref.digest ?? desc.digest);
    return desc;
  }

  async #putManifest(ep: Endpoint, ref: Reference, bytes: Uint8Array, desc: Descriptor, target: string): Promise<void> {
    const where = `${ep.host}/${ref.path}${target.includes(':') ? '@' : ':'}${target}`;
    if (bytes.length > MAX_MANIFEST_PUSH) {
      throw new MyBuildError('SIZE_EXCEEDED', `manifest is ${bytes.length} bytes; registries accept at most ${MAX_MANIFEST_PUSH}`, { where });
    }
    if (ref.digest && target === ref.tag && ref.digest !== desc.digest) {
      throw new MyBuildError('DIGEST_MISMATCH', `manifest has digest ${desc.digest}, not ${ref.digest}`, { where });
    }
    const spec: RequestSpec = {
      method: 'PUT',
      url: `/v2/${ref.path}/manifests/${target}`,
      scopes: [repositoryScope(ref.path, true)],
      headers: { 'content-type': desc.mediaType },
      body: Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength),
      what: isIndexMediaType(desc.mediaType) ? 'push index' : 'push manifest',
      where,
    };
    const res = await ep.request(spec);
    if (res.status !== 201 && res.status !== 200 && res.status !== 202) throw await ep.fail(res, spec);
    const stored = header(res, 'docker-content-digest');
    discard(res);
    if (stored && stored !== desc.digest) {
      throw new RegistryError('DIGEST_MISMATCH', `${ep.host} stored the manifest as ${stored}, not ${desc.digest}`, {
        where,
        registry: ep.host,
        hint: 'the registry rewrote the manifest; it may not support this manifest type',
      });
    }
  }

  /** Delete a manifest (by digest; a tag is resolved first). */
  async deleteManifest(input: ReferenceInput): Promise<void> {
    const ref = toReference(input);
    const where = formatReference(ref);
    const digest = ref.digest ?? (await this.headManifest(ref))?.digest;
    if (!digest) throw new RegistryError('NOT_FOUND', 'delete manifest: no such tag', { where, registry: apiHost(ref.domain), status: 404 });
    const ep = this.#origin(ref);
    const spec: RequestSpec = {
      method: 'DELETE',
      url: `/v2/${ref.path}/manifests/${digest}`,
      scopes: [`repository:${ref.path}:delete`],
      what: 'delete manifest',
      where,
    };
    const res = await ep.request(spec);
    if (res.status === 202 || res.status === 200 || res.status === 204) {
      discard(res);
      return;
    }
    if (res.status === 405) {
      const err = await ep.fail(res, spec);
      throw new RegistryError('UNSUPPORTED', `delete manifest: ${ep.host} does not allow deletes (405${err.errors[0] ? ` ${err.errors[0].code}` : ''})`, {
        where,
        registry: ep.host,
        status: 405,
        errors: err.errors,
        hint: 'distribution needs storage.delete.enabled: true; other registries delete through their UI or API',
      });
    }
    throw await ep.fail(res, spec);
  }

  /** All tags of a repository, following `Link: <...>; rel="next"` verbatim. */
  async listTags(input: ReferenceInput, opts: TagListOptions = {}): Promise<string[]> {
    const ref = toReference(input);
    const ep = this.#origin(ref);
    const where = formatReference({ ...ref, tag: undefined, digest: undefined });
    const maxPages = opts.maxPages ?? 1000;
    let url: string | URL = `/v2/${ref.path}/tags/list${opts.pageSize ? `?n=${opts.pageSize}` : ''}`;
    const tags: string[] = [];
    for (let page = 0; ; page++) {
      if (page >= maxPages) {
        throw new RegistryError('FAILED_PRECONDITION', `list tags: more than ${maxPages} pages`, { where, registry: ep.host, hint: 'the registry keeps sending next links; raise maxPages if the repository is that large' });
      }
      const spec: RequestSpec = { method: 'GET', url, scopes: [repositoryScope(ref.path)], what: 'list tags', where };
      const res = await ep.request(spec);
      if (res.status !== 200) throw await ep.fail(res, spec);
      const body = await readBody(res, 16 << 20, 'tag list');
      let json: { tags?: unknown };
      try {
        json = JSON.parse(body.toString('utf8')) as { tags?: unknown };
      } catch {
        throw new RegistryError('INVALID_ARGUMENT', `list tags: ${ep.host} answered something that is not JSON`, { where, registry: ep.host });
      }
      if (Array.isArray(json.tags)) tags.push(...json.tags.filter((t): t is string => typeof t === 'string'));
      const remaining = header(res, 'ratelimit-remaining');
      if (remaining !== undefined) this.#ctx.debug(`${ep.host} ratelimit-remaining: ${remaining.trim() || '(empty)'}`);
      const next = nextLink(header(res, 'link'));
      if (!next) return tags;
      url = new URL(next, res.url);
    }
  }

  /**
   * Referrers of a manifest (read side): the referrers API, or on 404 the `sha256-<hex>` tag
   * fallback. Filtered by `artifactType` when given.
   */
  async referrers(input: ReferenceInput, opts: { artifactType?: string } = {}): Promise<Descriptor[]> {
    const ref = toReference(input);
    if (!ref.digest) throw new MyBuildError('INVALID_ARGUMENT', 'referrers need a reference by digest', { where: formatReference(ref) });
    const ep = this.#origin(ref);
    const where = formatReference(ref);
    const q = opts.artifactType ? `?artifactType=${encodeURIComponent(opts.artifactType)}` : '';
    const spec: RequestSpec = {
      method: 'GET',
      url: `/v2/${ref.path}/referrers/${ref.digest}${q}`,
      scopes: [repositoryScope(ref.path)],
      headers: { accept: MediaType.OciIndex },
      what: 'list referrers',
      where,
    };
    const filter = (list: Descriptor[], applied: boolean) => (opts.artifactType && !applied ? list.filter((d) => d.artifactType === opts.artifactType) : list);
    const res = await ep.request(spec);
    if (res.status === 200) {
      const bytes = await readBody(res, MAX_MANIFEST_PULL, 'referrers index');
      const parsed = parseManifest(bytes, header(res, 'content-type') ?? MediaType.OciIndex, where);
      if (!isIndex(parsed.manifest)) throw new RegistryError('INVALID_ARGUMENT', 'list referrers: the registry answered a manifest, not an index', { where, registry: ep.host });
      return filter(parsed.manifest.manifests, /artifactType/i.test(header(res, 'oci-filters-applied') ?? ''));
    }
    if (res.status !== 404) throw await ep.fail(res, spec);
    discard(res);
    // Tag schema fallback: an index tagged sha256-<hex>.
    let fallback: FetchedManifest;
    try {
      fallback = await this.#getManifestFrom(ep, { ...ref, digest: undefined, tag: `${digestAlgorithm(ref.digest)}-${digestHex(ref.digest)}` });
    } catch (err) {
      if (err instanceof RegistryError && err.status === 404) return [];
      throw err;
    }
    if (!isIndex(fallback.manifest) || fallback.descriptor.mediaType !== MediaType.OciIndex) {
      throw new RegistryError('INVALID_ARGUMENT', 'list referrers: the fallback tag does not hold an OCI index', { where, registry: ep.host });
    }
    return filter(fallback.manifest.manifests, false);
  }

  /** Check credentials against a registry (what `login` does before saving them). */
  async checkLogin(registry: string, creds: Credentials): Promise<void> {
    const ep = new Endpoint(apiHost(registry.toLowerCase()), this.#ctx);
    ep.auth.setCredentials(creds);
    const spec: RequestSpec = { method: 'GET', url: '/v2/', scopes: [], what: 'login', where: registry };
    const res = await ep.request(spec);
    if (res.status === 200) {
      discard(res);
      return;
    }
    throw await ep.fail(res, { ...spec, method: 'DELETE' }, `check the user name and password for ${registry}`);
  }

  /**
   * Pull an image into a blob sink: blobs first (bounded concurrency, skipped when the sink has
   * them), then the manifest(s) and index, so the sink never holds a manifest without its blobs.
   */
  async pull(input: ReferenceInput, sink: BlobSink, opts: PullOptions = {}): Promise<PullResult> {
    const ref = toReference(input);
    const top = await this.getManifest(ref);
    const byDigest = (d: Descriptor) => this.getManifest({ ...ref, tag: undefined, digest: d.digest });
    let images: FetchedManifest[];
    const indexes: FetchedManifest[] = [];
    if (isIndex(top.manifest)) {
      indexes.push(top);
      if (opts.platform === 'all') {
        images = [];
        const walk = async (idx: ImageIndex, depth: number): Promise<void> => {
          const children = await Promise.all(idx.manifests.map(byDigest));
          for (const child of children) {
            if (isIndex(child.manifest)) {
              if (depth > 2) throw new MyBuildError('INVALID_ARGUMENT', 'indexes nested too deep', { where: formatReference(ref) });
              indexes.push(child);
              await walk(child.manifest, depth + 1);
            } else images.push(child);
          }
        };
        await walk(top.manifest, 0);
      } else {
        images = [(await this.getImageManifest(ref, opts.platform)).image];
      }
    } else {
      images = [top];
    }
    const blobs = new Map<Digest, Descriptor>();
    for (const m of images) {
      const mf = m.manifest as ImageManifest;
      for (const d of [mf.config, ...mf.layers]) if (!blobs.has(d.digest)) blobs.set(d.digest, d);
    }
    const guard = failFast();
    // The limit bounds transfers: a blob frees its slot once its body is received, while the
    // sink still commits it (a store fsyncs), so the next download overlaps that commit.
    const commits: Promise<void>[] = [];
    let commitFailure: { err: unknown } | undefined;
    const transfers = await Promise.allSettled([...blobs.values()].map((desc) => this.#limit(guard(async () => {
      if (commitFailure) throw commitFailure.err;
      const report = reporter(opts.onProgress, 'pull', desc);
      if (await sink.has(desc.digest)) {
        report.emit('exists', desc.size);
        return;
      }
      report.emit('start', 0);
      const stream = await this.fetchBlob(ref, desc, { onBytes: (n) => report.bytes(n), ...(opts.verifyBlobs === false ? { verifyDigest: false } : {}) });
      const put = sink.put(desc, stream).then(
        () => report.emit('done', desc.size),
        (err: unknown) => {
          commitFailure ??= { err };
          throw err;
        },
      ).finally(() => {
        // A sink that failed (or returned early) must not leave the download holding a connection.
        if (!stream.readableEnded) stream.destroy();
      });
      commits.push(put);
      // Received in full (or failed): either way the slot is free; `put` is awaited below.
      await Promise.race([put, finished(stream, { writable: false })]);
    }))));
    // Every commit ends before pull returns or throws; a transfer's error is the one reported.
    const committed = await Promise.allSettled(commits);
    const failed = [...transfers, ...committed].find((r): r is PromiseRejectedResult => r.status === 'rejected');
    if (failed) throw failed.reason;
    for (const m of [...images, ...indexes.reverse()]) {
      if (await sink.has(m.descriptor.digest)) continue;
      if (sink.putBytes) await sink.putBytes(m.descriptor, m.bytes);
      else await sink.put(m.descriptor, Readable.from([m.bytes]));
    }
    const first = images[0]!;
    return {
      reference: ref,
      descriptor: top.descriptor,
      manifestDescriptor: first.descriptor,
      manifest: first.manifest as ImageManifest,
      index: isIndex(top.manifest) ? top.manifest : undefined,
      manifests: images,
    };
  }

  /**
   * Push an image (manifest or index bytes, exactly as given) with its blobs from `source`.
   * Blobs go first (HEAD, mount, upload; bounded concurrency), child manifests by digest next,
   * the top manifest under the reference's tag last. Returns the pushed top descriptor.
   */
  async push(source: BlobSource, manifestBytes: Uint8Array, input: ReferenceInput, opts: PushOptions = {}): Promise<Descriptor> {
    const ref = toReference(input);
    const ep = this.#origin(ref);
    const where = formatReference(ref);
    if (manifestBytes.length > MAX_MANIFEST_PUSH) {
      throw new MyBuildError('SIZE_EXCEEDED', `manifest is ${manifestBytes.length} bytes; registries accept at most ${MAX_MANIFEST_PUSH}`, { where });
    }
    const parsed = parseManifest(manifestBytes, opts.mediaType, where);
    const top: Descriptor = { mediaType: parsed.mediaType, digest: sha256Of(manifestBytes), size: manifestBytes.length };
    if (ref.digest && ref.digest !== top.digest) throw new MyBuildError('DIGEST_MISMATCH', `manifest has digest ${top.digest}, not ${ref.digest}`, { where });
    const uploads = new Map<Digest, Promise<unknown>>();
    const guard = failFast();
    const pushBlobOnce = (desc: Descriptor) => {
      let p = uploads.get(desc.digest);
      if (!p) {
        const report = reporter(opts.onProgress, 'push', desc);
        p = this.#limit(
          guard(async () => {
            report.emit('start', 0);
            const result = await uploadBlob(ep, this.#ctx, ref.path, desc, () => source.open(desc), where, {
              ...(opts.mountFrom ? { mountFrom: opts.mountFrom } : {}),
              onBytes: (n) => report.bytes(n),
            });
            report.emit(result === 'uploaded' ? 'done' : result, desc.size);
          }),
        );
        uploads.set(desc.digest, p);
      }
      return p;
    };
    const pushTree = async (manifest: AnyManifest, depth: number): Promise<void> => {
      if (!isIndex(manifest)) {
        await settleAll([manifest.config, ...manifest.layers].map(pushBlobOnce));
        return;
      }
      if (depth > 2) throw new MyBuildError('INVALID_ARGUMENT', 'indexes nested too deep', { where });
      await settleAll(
        manifest.manifests.map(async (child) => {
          const bytes = await readStream(await source.open(child), MAX_MANIFEST_PUSH, `manifest ${child.digest}`);
          if (hashBytes(bytes, child.digest) !== child.digest) {
            throw new MyBuildError('DIGEST_MISMATCH', `child manifest ${child.digest} from the source has other content`, { where });
          }
          const sub = parseManifest(bytes, child.mediaType, where);
          await pushTree(sub.manifest, depth + 1);
          await this.#putManifest(ep, ref, bytes, { ...child, mediaType: sub.mediaType }, child.digest);
        }),
      );
    };
    await pushTree(parsed.manifest, 0);
    await this.#putManifest(ep, ref, manifestBytes, top, ref.tag ?? top.digest);
    return top;
  }

  /**
   * Copy an image between references, streaming blobs GET → PUT (never through disk), mounting
   * when both are on one registry. Without `platform` an index is copied whole, keeping its digest.
   */
  async copy(srcInput: ReferenceInput, dstInput: ReferenceInput, opts: CopyOptions = {}): Promise<Descriptor> {
    const src = toReference(srcInput);
    const dst = toReference(dstInput);
    let root = await this.getManifest(src);
    if (opts.platform !== undefined && isIndex(root.manifest)) root = (await this.getImageManifest(src, opts.platform)).image;
    const source: BlobSource = {
      open: async (desc) => {
        if (isIndexMediaType(desc.mediaType) || desc.mediaType === MediaType.OciManifest || desc.mediaType === MediaType.DockerManifest) {
          return Readable.from([(await this.getManifest({ ...src, tag: undefined, digest: desc.digest })).bytes]);
        }
        return this.fetchBlob(src, desc);
      },
    };
    const sameRegistry = apiHost(src.domain) === apiHost(dst.domain);
    return this.push(source, root.bytes, dst, {
      mediaType: root.descriptor.mediaType,
      ...(sameRegistry && src.path !== dst.path ? { mountFrom: src.path } : {}),
      ...(opts.onProgress ? { onProgress: opts.onProgress } : {}),
    });
  }
}

/** The `rel="next"` target of a Link header, verbatim. */
export function nextLink(value: string | undefined): string | undefined {
  if (!value) return undefined;
  const re = /<([^>]*)>((?:\s*;\s*[^;,]*(?:"[^"]*")?)*)/g;
  for (let m = re.exec(value); m; m = re.exec(value)) {
    if (/;\s*rel\s*=\s*"?(?:[^"]*\s)?next(?:\s[^"]*)?"?/i.test(m[2] ?? '')) return m[1];
  }
  return undefined;
}
