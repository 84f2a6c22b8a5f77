/**
 * Quirks a real registry will not produce on demand, injected by a proxy in front of a real
 * docker-registry: rate limits, 5xx, resets, redirects, bad digests, odd bodies and Locations,
 * upload forms some registries refuse, timeouts.
 */
import http from 'node:http';
import { connect, createServer, type Server, type Socket } from 'node:net';
import { spawn } from 'node:child_process';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { type Descriptor, digestHex, MediaType, sha256Of } from '@mybuild/oci';
import { RegistryClient, type RegistryClientOptions } from '@mybuild/registry-client';
import { type FaultProxy, startFaultProxy } from '../../../fixtures/src/fault-proxy.js';
import { startRegistry, type TestRegistry } from '../../../fixtures/src/registry.js';
import { makeImage, MemoryStore, type TestImage } from './helpers.js';

let reg: TestRegistry;
let authReg: TestRegistry;
let proxy: FaultProxy;
let authProxy: FaultProxy;
let debugLines: string[];

const fast: RegistryClientOptions['retry'] = { minDelayMs: 5, maxDelayMs: 50 };
const noCreds = () => Promise.resolve(undefined);

function newClient(opts: RegistryClientOptions = {}): RegistryClient {
  return new RegistryClient({ credentials: noCreds, retry: fast, debug: (l) => debugLines.push(l), ...opts });
}

beforeAll(async () => {
  [reg, authReg] = await Promise.all([startRegistry(), startRegistry({ htpasswd: { alice: 's3cret:pw' } })]);
  [proxy, authProxy] = await Promise.all([startFaultProxy(reg.url), startFaultProxy(authReg.url)]);
});

afterAll(async () => {
  await Promise.all([proxy?.stop(), authProxy?.stop()]);
  await Promise.all([reg?.stop(), authReg?.stop()]);
});

beforeEach(() => {
  proxy.reset();
  authProxy.reset();
  debugLines = [];
});

async function pushed(layers = [1024], repo = 'faults/app', tag = '1'): Promise<TestImage> {
  const img = makeImage({ layers });
  const c = newClient();
  await c.push(MemoryStore.of(img), img.manifestBytes, `${reg.host}/${repo}:${tag}`);
  c.close();
  return img;
}

const isManifestGet = (req: http.IncomingMessage) => req.method === 'GET' && /\/manifests\//.test(req.url ?? '');
const isBlobGet = (req: http.IncomingMessage) => req.method === 'GET' && /\/blobs\/sha256:/.test(req.url ?? '');

describe('retries', () => {
  it('honours 429 Retry-After in seconds and as an HTTP-date', async () => {
    const img = await pushed();
    let n = 0;
    proxy.use((req, res) => {
      if (!isManifestGet(req) || n++ >= 2) return false;
      const after = n === 1 ? '1' : new Date(Date.now() + 1500).toUTCString();
      res.writeHead(429, { 'retry-after': after, 'content-type': 'application/json' }).end('{"errors":[{"code":"TOOMANYREQUESTS","message":"slow down"}]}');
      return true;
    });
    const c = newClient();
    const t0 = Date.now();
    const m = await c.getManifest(`${proxy.host}/faults/app:1`);
    expect(m.descriptor.digest).toBe(img.descriptor.digest);
    expect(Date.now() - t0).toBeGreaterThanOrEqual(1400);
    expect(n).toBe(3);
  });

  it('fails at once, with a hint, when Retry-After is longer than allowed', async () => {
    await pushed();
    proxy.use((req, res) => {
      if (!isManifestGet(req)) return false;
      res.writeHead(429, { 'retry-after': '3600', 'ratelimit-remaining': '' }).end();
      return true;
    });
    const err = await newClient().getManifest(`${proxy.host}/faults/app:1`).catch((e: unknown) => e);
    expect(err).toMatchObject({ code: 'UNAVAILABLE', status: 429, hint: expect.stringContaining('3600 s') });
  });

  it('retries 5xx and connection resets with backoff, then gives up with one clear line', async () => {
    const img = await pushed();
    let n = 0;
    proxy.use((req, res) => {
      if (!isManifestGet(req)) return false;
      n++;
      if (n === 1) res.writeHead(503).end();
      else if (n === 2) req.socket.destroy();
      else return false;
      return true;
    });
    expect((await newClient().getManifest(`${proxy.host}/faults/app:1`)).descriptor.digest).toBe(img.descriptor.digest);
    expect(n).toBe(3);

    proxy.reset();
    proxy.use((req, res) => {
      res.writeHead(502, { 'content-type': 'text/html' }).end(`<!DOCTYPE html><html><head><title>502 Bad Gateway</title></head><body>${'x'.repeat(50_000)}</body></html>`);
      return true;
    });
    const err = await newClient({ retry: { ...fast, retries: 2 } }).getManifest(`${proxy.host}/faults/app:1`).catch((e: unknown) => e);
    expect(err).toMatchObject({ code: 'UNAVAILABLE', status: 502, temporary: true });
    const line = (err as { oneLine(): string }).oneLine();
    expect(line).toContain('an HTML page "502 Bad Gateway"');
    expect(line).not.toContain('<');
    expect(line.length).toBeLessThan(400);
    expect(proxy.requests).toHaveLength(3);
  });

  it('fails fast on a refused connection and on a server that never answers', async () => {
    const closed: Server = createServer();
    await new Promise<void>((r) => closed.listen(0, '127.0.0.1', r));
    const port = (closed.address() as { port: number }).port;
    await new Promise<void>((r) => closed.close(() => r()));
    const t0 = Date.now();
    const err = await newClient({ retry: { ...fast, retries: 1 } }).getManifest(`127.0.0.1:${port}/x/y:1`).catch((e: unknown) => e);
    expect(err).toMatchObject({ code: 'UNAVAILABLE' });
    expect((err as Error).message).toContain(`127.0.0.1:${port}`);
    expect(Date.now() - t0).toBeLessThan(2000);

    const silent: Server = createServer(() => undefined);
    await new Promise<void>((r) => silent.listen(0, '127.0.0.1', r));
    const sport = (silent.address() as { port: number }).port;
    try {
      const t1 = Date.now();
      const err2 = await newClient({ insecure: [`127.0.0.1:${sport}`], retry: { ...fast, retries: 0 }, timeouts: { connectMs: 300, responseMs: 300 } })
        .getManifest(`127.0.0.1:${sport}/x/y:1`)
        .catch((e: unknown) => e);
      expect(err2).toMatchObject({ code: 'UNAVAILABLE' });
      expect((err2 as Error).message).toMatch(/ETIMEDOUT/);
      expect(Date.now() - t1).toBeLessThan(3000);
    } finally {
      silent.close();
    }
  });
});

describe('connect timeout', () => {
  it('gives up on a connection the server never accepts after connectMs, not after the response timeout', async () => {
    // A listener that never accepts, its backlog filled: further SYNs are dropped and connect() hangs.
    const py = spawn('python3', ['-c', 'import socket,sys,time\ns=socket.socket()\ns.bind(("127.0.0.1",0))\ns.listen(0)\nprint(s.getsockname()[1],flush=True)\ntime.sleep(60)'], { stdio: ['ignore', 'pipe', 'inherit'] });
    try {
      const port = Number(await new Promise<string>((resolve) => py.stdout.once('data', (d: Buffer) => resolve(d.toString().trim()))));
      const fillers: Socket[] = [];
      for (let i = 0; i < 3; i++) fillers.push(connect(port, '127.0.0.1').on('error', () => undefined));
      await new Promise((r) => setTimeout(r, 200));
      const t0 = Date.now();
      const err = await newClient({ insecure: [`127.0.0.1:${port}`], retry: { ...fast, retries: 0 }, timeouts: { connectMs: 400, responseMs: 30_000, idleMs: 30_000 } })
        .getManifest(`127.0.0.1:${port}/x/y:1`)
        .catch((e: unknown) => e);
      expect(err).toMatchObject({ code: 'UNAVAILABLE' });
      expect((err as Error).message).toMatch(/ETIMEDOUT.*connect/);
      expect(Date.now() - t0).toBeLessThan(5000);
      for (const f of fillers) f.destroy();
    } finally {
      py.kill();
    }
  });
});

describe('blob downloads', () => {
  it('resumes a broken transfer with Range and accepts the 206', async () => {
    const img = await pushed([3 << 20]);
    const layer = img.manifest.layers[0]!;
    let cut = false;
    proxy.use(async (req, _res, ctx) => {
      if (!isBlobGet(req) || !req.url!.includes(layer.digest) || cut) return false;
      cut = true;
      await ctx.forward({ cutAfter: 1_000_000 });
      return true;
    });
    const sink = new MemoryStore();
    await newClient().pull(`${proxy.host}/faults/app:1`, sink);
    expect(sink.blobs.get(layer.digest)?.equals(img.blobs.get(layer.digest)!)).toBe(true);
    const gets = proxy.requests.filter((r) => r.url.includes(layer.digest));
    expect(gets).toHaveLength(2);
    expect(gets[1]!.headers.range).toMatch(/^bytes=\d+-$/);
    expect(Number(/\d+/.exec(gets[1]!.headers.range as string)![0])).toBeGreaterThan(0);
    expect(gets[1]!.status).toBe(206);
  });

  it('starts over when the server answers the resume with 200', async () => {
    const img = await pushed([2 << 20]);
    const layer = img.manifest.layers[0]!;
    let n = 0;
    proxy.use(async (req, _res, ctx) => {
      if (!isBlobGet(req) || !req.url!.includes(layer.digest)) return false;
      n++;
      if (n === 1) await ctx.forward({ cutAfter: 700_000 });
      else await ctx.forward({ requestHeaders: { range: undefined } });
      return true;
    });
    const sink = new MemoryStore();
    await newClient().pull(`${proxy.host}/faults/app:1`, sink);
    expect(sink.blobs.get(layer.digest)?.equals(img.blobs.get(layer.digest)!)).toBe(true);
    const gets = proxy.requests.filter((r) => r.url.includes(layer.digest));
    expect(gets).toHaveLength(2);
    expect(gets[1]!.headers.range).toMatch(/^bytes=\d+-$/);
    expect(gets[1]!.status).toBe(200);
  });

  it('starts over when the resume answers a 206 for another range', async () => {
    const img = await pushed([1 << 20]);
    const layer = img.manifest.layers[0]!;
    let n = 0;
    proxy.use(async (req, _res, ctx) => {
      if (!isBlobGet(req) || !req.url!.includes(layer.digest)) return false;
      n++;
      if (n === 1) await ctx.forward({ cutAfter: 300_000 });
      else if (n === 2) await ctx.forward({ requestHeaders: { range: 'bytes=1000-' } });
      else await ctx.forward();
      return true;
    });
    const sink = new MemoryStore();
    await newClient().pull(`${proxy.host}/faults/app:1`, sink);
    expect(sink.blobs.get(layer.digest)?.equals(img.blobs.get(layer.digest)!)).toBe(true);
    const gets = proxy.requests.filter((r) => r.url.includes(layer.digest));
    // The client may drop the wrong 206 before its body is all sent: its head status says it came.
    expect(gets.map((r) => r.headStatus)).toEqual([200, 206, 200]);
    expect([gets[0]!.status, gets[2]!.status]).toEqual([undefined, 200]);
    expect(gets[2]!.headers.range).toBeUndefined();
  });

  it('follows a redirect to another host without sending Authorization there', async () => {
    const img = makeImage({ layers: [200_000] });
    const creds = { [authProxy.host]: { username: 'alice', password: 's3cret:pw' } };
    const c = newClient({ credentials: (h) => Promise.resolve(creds[h]) });
    await c.push(MemoryStore.of(img), img.manifestBytes, `${authProxy.host}/faults/cdn:1`);
    const seen: http.IncomingHttpHeaders[] = [];
    const cdn = http.createServer((req, res) => {
      seen.push(req.headers);
      const digest = decodeURIComponent(/\/blob\/([^?]+)/.exec(req.url ?? '')?.[1] ?? '');
      const body = img.blobs.get(digest as never);
      if (!body) {
        res.writeHead(404).end();
        return;
      }
      res.writeHead(200, { 'content-length': body.length }).end(body);
    });
    await new Promise<void>((r) => cdn.listen(0, '127.0.0.2', r));
    const cdnPort = (cdn.address() as { port: number }).port;
    try {
      authProxy.use((req, res) => {
        const m = /\/blobs\/(sha256:[a-f0-9]{64})/.exec(req.url ?? '');
        if (req.method !== 'GET' || !m || !req.headers.authorization) return false;
        res.writeHead(307, { location: `http://127.0.0.2:${cdnPort}/blob/${m[1]}?X-Amz-Signature=topsecret&X-Amz-Expires=60` }).end();
        return true;
      });
      const sink = new MemoryStore();
      await c.pull(`${authProxy.host}/faults/cdn:1`, sink);
      for (const [d, b] of img.blobs) expect(sink.blobs.get(d)?.equals(b)).toBe(true);
      expect(seen.length).toBe(img.blobs.size);
      expect(seen.every((h) => h.authorization === undefined)).toBe(true);
      expect(authProxy.requests.some((r) => r.headers.authorization?.startsWith('Basic '))).toBe(true);
      const log = debugLines.join('\n');
      expect(log).toContain('127.0.0.2');
      expect(log).not.toContain('topsecret');
      expect(log).not.toContain('s3cret');
    } finally {
      cdn.close();
      c.close();
    }
  });
});

describe('manifests', () => {
  it('hashes the bytes received, not what Docker-Content-Digest claims', async () => {
    const img = await pushed();
    proxy.use(async (req, _res, ctx) => {
      if (!isManifestGet(req)) return false;
      await ctx.forward({ mapHead: (status, headers) => ({ status, headers: { ...headers, 'docker-content-digest': sha256Of('lies') } }) });
      return true;
    });
    const c = newClient();
    const m = await c.getManifest(`${proxy.host}/faults/app:1`);
    expect(m.descriptor.digest).toBe(img.descriptor.digest);
    const accept = String(proxy.requests.find((r) => r.url.includes('/manifests/'))?.headers.accept);
    for (const t of [MediaType.OciIndex, MediaType.OciManifest, MediaType.DockerManifestList, MediaType.DockerManifest]) expect(accept).toContain(t);
    expect(accept).not.toContain(MediaType.DockerSchema1);

    proxy.reset();
    proxy.use(async (req, _res, ctx) => {
      if (!isManifestGet(req)) return false;
      await ctx.forward({ body: (b) => Buffer.from(b.toString().replace('"schemaVersion": 2', '"schemaVersion":2')) });
      return true;
    });
    await expect(c.getManifest(`${proxy.host}/faults/app@${img.descriptor.digest}`)).rejects.toMatchObject({ code: 'DIGEST_MISMATCH' });
  });

  it('refuses huge manifests, schema 1 and non-manifest answers', async () => {
    const c = newClient();
    let mode = 'huge';
    proxy.use((req, res) => {
      if (!isManifestGet(req)) return false;
      if (mode === 'huge') {
        res.writeHead(200, { 'content-type': MediaType.OciManifest, 'content-length': 6 << 20 });
        res.end(Buffer.alloc(6 << 20, 0x20));
      } else if (mode === 'huge-chunked') {
        res.writeHead(200, { 'content-type': MediaType.OciManifest });
        for (let i = 0; i < 6; i++) res.write(Buffer.alloc(1 << 20, 0x20));
        res.end();
      } else if (mode === 'schema1') {
        res.writeHead(200, { 'content-type': MediaType.DockerSchema1Signed }).end('{"schemaVersion":1,"name":"x","tag":"1","fsLayers":[]}');
      } else if (mode === 'schema1-json') {
        res.writeHead(200, { 'content-type': 'application/json' }).end('{"schemaVersion":1,"name":"x","tag":"1","fsLayers":[]}');
      } else {
        res.writeHead(200, { 'content-type': 'text/html' }).end('<html><body>login here</body></html>');
      }
      return true;
    });
    await expect(c.getManifest(`${proxy.host}/faults/app:1`)).rejects.toMatchObject({ code: 'SIZE_EXCEEDED' });
    mode = 'huge-chunked';
    await expect(c.getManifest(`${proxy.host}/faults/app:1`)).rejects.toMatchObject({ code: 'SIZE_EXCEEDED' });
    mode = 'schema1';
    await expect(c.getManifest(`${proxy.host}/faults/app:1`)).rejects.toMatchObject({ code: 'UNSUPPORTED', message: expect.stringContaining('schema 1') });
    mode = 'schema1-json';
    await expect(c.getManifest(`${proxy.host}/faults/app:1`)).rejects.toMatchObject({ code: 'UNSUPPORTED' });
    mode = 'html';
    await expect(c.getManifest(`${proxy.host}/faults/app:1`)).rejects.toMatchObject({ code: 'INVALID_ARGUMENT' });
  });

  it('surfaces the registry error body when a manifest push is refused', async () => {
    const img = makeImage();
    proxy.use((req, res) => {
      if (req.method !== 'PUT' || !/\/manifests\//.test(req.url ?? '')) return false;
      const errors = Array.from({ length: 5 }, (_, i) => ({ code: 'MANIFEST_INVALID', message: `manifest invalid: unsupported media type ${i} ${'z'.repeat(600)}` }));
      res.writeHead(400, { 'content-type': 'application/json' }).end(JSON.stringify({ errors }));
      return true;
    });
    const err = await newClient().push(MemoryStore.of(img), img.manifestBytes, `${proxy.host}/faults/refused:1`).catch((e: unknown) => e);
    expect(err).toMatchObject({ code: 'INVALID_ARGUMENT', status: 400 });
    const msg = (err as Error).message;
    expect(msg).toContain('MANIFEST_INVALID: manifest invalid: unsupported media type 0');
    expect(msg).toContain('(+2 more)');
    expect(msg.length).toBeLessThan(1400);
  });
});

describe('tags', () => {
  it('follows Link verbatim across short pages and caps the page count', async () => {
    const pages: Record<string, { tags: string[]; next?: string }> = {
      first: { tags: ['a', 'b'], next: '/v2/faults/paged/tags/list?n=2&last=b&cursor=x%2Fy' },
      '/v2/faults/paged/tags/list?n=2&last=b&cursor=x%2Fy': { tags: ['c'], next: `http://${proxy.host}/v2/faults/paged/tags/list?last=c&page=3` },
      '/v2/faults/paged/tags/list?last=c&page=3': { tags: ['d', 'e'] },
    };
    proxy.use((req, res) => {
      if (!req.url?.startsWith('/v2/faults/paged/tags/list')) return false;
      const page = pages[req.url === '/v2/faults/paged/tags/list?n=2' ? 'first' : req.url];
      if (!page) {
        res.writeHead(400).end();
        return true;
      }
      res.writeHead(200, { 'content-type': 'application/json', ...(page.next ? { link: `<${page.next}>; rel="next"` } : {}), 'ratelimit-remaining': '' });
      res.end(JSON.stringify({ name: 'faults/paged', tags: page.tags }));
      return true;
    });
    const c = newClient();
    expect(await c.listTags(`${proxy.host}/faults/paged`, { pageSize: 2 })).toEqual(['a', 'b', 'c', 'd', 'e']);

    proxy.reset();
    proxy.use((req, res) => {
      res.writeHead(200, { 'content-type': 'application/json', link: '</v2/faults/loop/tags/list?again=1>; rel="next"' });
      res.end('{"name":"faults/loop","tags":["x"]}');
      return true;
    });
    await expect(c.listTags(`${proxy.host}/faults/loop`, { maxPages: 5 })).rejects.toMatchObject({ code: 'FAILED_PRECONDITION' });
    expect(proxy.requests).toHaveLength(5);
  });
});

describe('uploads', () => {
  const patches = () => proxy.requests.filter((r) => r.method === 'PATCH');
  const puts = () => proxy.requests.filter((r) => r.method === 'PUT' && r.url.includes('/blobs/uploads/'));

  it('uses the latest Location, relative or absolute with query state, and appends digest with &', async () => {
    const img = makeImage({ layers: [5000, 7000] });
    let step = 0;
    const issued = new Set<string>();
    proxy.use(async (req, res, ctx) => {
      if (!req.url?.includes('/blobs/uploads/')) return false;
      const u = new URL(req.url, 'http://x');
      const mine = u.searchParams.get('step');
      if (req.method !== 'POST' && (!mine || !issued.has(mine))) {
        res.writeHead(400, { 'content-type': 'application/json' }).end('{"errors":[{"code":"BLOB_UPLOAD_INVALID","message":"stale location"}]}');
        return true;
      }
      if (mine) issued.delete(mine);
      await ctx.forward({
        path: `${u.pathname}?${[...u.searchParams].filter(([k]) => k !== 'step').map(([k, v]) => `${k}=${encodeURIComponent(v)}`).join('&')}`,
        mapHead: (status, headers) => {
          if (headers.location) {
            const s = String(++step);
            issued.add(s);
            const loc = new URL(headers.location, `http://${proxy.host}`);
            // Alternate absolute and relative Locations.
            headers.location = step % 2 === 0 ? `${loc.href}&step=${s}` : `${loc.pathname}${loc.search}&step=${s}`;
          }
          return { status, headers };
        },
      });
      return true;
    });
    await newClient().push(MemoryStore.of(img), img.manifestBytes, `${proxy.host}/faults/locations:1`);
    const finals = puts();
    expect(finals).toHaveLength(img.blobs.size);
    for (const p of finals) expect(p.url).toMatch(/_state=[^&]+&step=\d+&digest=sha256%3A[a-f0-9]{64}$/);
    expect(proxy.requests.every((r) => r.status !== 400)).toBe(true);
  });

  it('falls back to a monolithic PUT when PATCH is refused (GAR), and remembers it', async () => {
    const img = makeImage({ layers: [300_000, 400_000] });
    proxy.use((req, res) => {
      if (req.method !== 'PATCH') return false;
      res.writeHead(405, { 'content-type': 'application/json' }).end('{"errors":[{"code":"UNSUPPORTED","message":"chunked upload not supported"}]}');
      return true;
    });
    const c = newClient({ concurrency: 1 });
    await c.push(MemoryStore.of(img), img.manifestBytes, `${proxy.host}/faults/gar:1`);
    expect(patches()).toHaveLength(1);
    const bodies = puts().map((r) => r.bodyBytes);
    expect(bodies).toHaveLength(3);
    expect(bodies.every((n) => n > 0)).toBe(true);
    expect((await c.getManifest(`${proxy.host}/faults/gar:1`)).descriptor.digest).toBe(img.descriptor.digest);
  });

  it('follows redirects on upload POST and PUT, sending the body again', async () => {
    const img = makeImage({ layers: [100_000] });
    const redirected = new Set<string>();
    proxy.use((req, res) => {
      const u = req.url ?? '';
      if (req.method === 'PATCH') {
        res.writeHead(405).end();
        return true;
      }
      const isUpload = (req.method === 'POST' && u.endsWith('/blobs/uploads/')) || (req.method === 'PUT' && u.includes('/blobs/uploads/'));
      if (!isUpload || redirected.has(`${req.method} ${u}`) || u.includes('hop=1')) return false;
      redirected.add(`${req.method} ${u}`);
      req.resume();
      res.writeHead(307, { location: `${u}${u.includes('?') ? '&' : '?'}hop=1` }).end();
      return true;
    });
    const c = newClient({ concurrency: 1 });
    await c.push(MemoryStore.of(img), img.manifestBytes, `${proxy.host}/faults/redirected:1`);
    const hops = proxy.requests.filter((r) => r.url.includes('hop=1'));
    expect(hops.some((r) => r.method === 'POST' && r.status === 202)).toBe(true);
    const puts = hops.filter((r) => r.method === 'PUT' && r.status === 201);
    expect(puts.length).toBeGreaterThan(0);
    expect(puts.every((r) => r.bodyBytes === Number(r.headers['content-length']) && r.bodyBytes > 0)).toBe(true);
  });

  it('switches to chunks within a body cap (GHCR 416), honouring OCI-Chunk-Min-Length', async () => {
    const img = makeImage({ layers: [10 << 20] });
    const cap = 3 << 20;
    proxy.use(async (req, res, ctx) => {
      if (req.method === 'PATCH' && Number(req.headers['content-length']) > cap) {
        // Read the body first (as a front proxy with lingering close does), then refuse it.
        await ctx.readBody();
        res.writeHead(416, { 'content-type': 'application/json' }).end('{"errors":[{"code":"SIZE_INVALID","message":"request too large"}]}');
        return true;
      }
      if (req.method === 'POST') {
        await ctx.forward({ mapHead: (status, headers) => ({ status, headers: { ...headers, 'oci-chunk-min-length': String(2 << 20) } }) });
        return true;
      }
      return false;
    });
    // One blob at a time: once the layer's 416 switched the registry to chunks, a config upload
    // running beside it would put its own (small) chunk among the layer's.
    const c = newClient({ chunkSize: 1 << 20, concurrency: 1 });
    await c.push(MemoryStore.of(img), img.manifestBytes, `${proxy.host}/faults/ghcr:1`);
    const layer = img.manifest.layers[0]!;
    const chunkPatches = patches().filter((r) => r.headers['content-range']);
    const sizes = chunkPatches.map((r) => Number(r.headers['content-length']));
    expect(sizes.slice(0, -1).every((n) => n === 2 << 20)).toBe(true);
    expect(sizes.reduce((a, b) => a + b, 0)).toBeGreaterThanOrEqual(layer.size);
    expect(chunkPatches.every((r) => /^\d+-\d+$/.test(r.headers['content-range'] as string))).toBe(true);
    const sink = new MemoryStore();
    await c.pull(`${proxy.host}/faults/ghcr:1`, sink);
    expect(sink.blobs.get(layer.digest)?.equals(img.blobs.get(layer.digest)!)).toBe(true);
  });

  it('asks the upload URL for its Range instead of replaying a PATCH that timed out', async () => {
    const img = makeImage({ layers: [500_000] });
    const layer = img.manifest.layers[0]!;
    let hungAt: string | undefined;
    let latest: string | undefined;
    proxy.use(async (req, res, ctx) => {
      if (req.method === 'PATCH' && !hungAt && Number(req.headers['content-length']) === layer.size) {
        hungAt = req.url;
        // The registry takes the whole body; its answer never reaches the client.
        await ctx.forward({ hang: true, mapHead: (status, headers) => ((latest = String(headers.location)), { status, headers }) });
        return true;
      }
      if (req.method === 'GET' && req.url === hungAt && latest) {
        // What registries with a working status endpoint answer: the bytes held, the latest URL.
        res.writeHead(204, { range: `0-${layer.size - 1}`, location: latest, 'content-length': 0 }).end();
        return true;
      }
      return false;
    });
    const c = newClient({ concurrency: 1, timeouts: { responseMs: 1500 } });
    await c.push(MemoryStore.of(img), img.manifestBytes, `${proxy.host}/faults/patch-timeout:1`);
    expect(proxy.requests.filter((r) => r.method === 'PATCH' && Number(r.headers['content-length']) === layer.size)).toHaveLength(1);
    const put = proxy.requests.find((r) => r.method === 'PUT' && r.url.includes(digestHex(layer.digest)))!;
    expect(put.url.startsWith(new URL(latest!).pathname)).toBe(true);
    expect(await c.blobExists(`${proxy.host}/faults/patch-timeout`, layer.digest)).toBe(true);
  });

  it('starts over with POST when the upload URL cannot say where a timed-out PATCH stands (distribution)', async () => {
    const img = makeImage({ layers: [300_000] });
    const layer = img.manifest.layers[0]!;
    let hungAt: string | undefined;
    proxy.use(async (req, _res, ctx) => {
      if (req.method !== 'PATCH' || hungAt || Number(req.headers['content-length']) !== layer.size) return false;
      hungAt = req.url;
      await ctx.forward({ hang: true });
      return true;
    });
    const c = newClient({ concurrency: 1, timeouts: { responseMs: 1500 } });
    await c.push(MemoryStore.of(img), img.manifestBytes, `${proxy.host}/faults/patch-restart:1`);
    // distribution 2.8 answers the stale session's status with 404 BLOB_UPLOAD_INVALID.
    const status = proxy.requests.find((r) => r.method === 'GET' && r.url === hungAt);
    expect(status?.status).toBe(404);
    const patchUrls = proxy.requests.filter((r) => r.method === 'PATCH').map((r) => r.url.replace(/\?.*$/, ''));
    expect(new Set(patchUrls).size).toBe(patchUrls.length);
    expect(await c.blobExists(`${proxy.host}/faults/patch-restart`, layer.digest)).toBe(true);
  });

  it('HEADs the blob after a PUT that timed out but committed', async () => {
    const img = makeImage({ layers: [1000] });
    let hung = 0;
    proxy.use(async (req, _res, ctx) => {
      if (req.method !== 'PUT' || !req.url?.includes('/blobs/uploads/') || hung++ > 0) return false;
      await ctx.forward({ hang: true });
      return true;
    });
    const c = newClient({ concurrency: 1, timeouts: { responseMs: 1500 } });
    await c.push(MemoryStore.of(img), img.manifestBytes, `${proxy.host}/faults/put-timeout:1`);
    // One hung PUT; the next blob's PUT went through; no PUT was repeated for the first blob.
    expect(puts()).toHaveLength(2);
    expect(proxy.requests.filter((r) => r.method === 'POST')).toHaveLength(2);
  });

  it('starts a new session when the upload is unknown (404)', async () => {
    const img = makeImage({ layers: [1000] });
    let lost = 0;
    proxy.use((req, res) => {
      if (req.method !== 'PATCH' || lost++ > 0) return false;
      res.writeHead(404, { 'content-type': 'application/json' }).end('{"errors":[{"code":"BLOB_UPLOAD_UNKNOWN","message":"blob upload unknown"}]}');
      return true;
    });
    await newClient({ concurrency: 1 }).push(MemoryStore.of(img), img.manifestBytes, `${proxy.host}/faults/lost:1`);
    expect(proxy.requests.filter((r) => r.method === 'POST')).toHaveLength(3);
  });

  it('continues with the session a refused mount opened (Harbor 202)', async () => {
    const img = await pushed([2000], 'faults/mount-src');
    proxy.use(async (req, _res, ctx) => {
      if (req.method !== 'POST' || !req.url?.includes('mount=')) return false;
      await ctx.forward({ path: req.url.replace(/\?.*$/, '') });
      return true;
    });
    const c = newClient();
    await c.copy(`${proxy.host}/faults/mount-src:1`, `${proxy.host}/faults/mount-dst:1`);
    const mounts = proxy.requests.filter((r) => r.method === 'POST' && r.url.includes('mount='));
    expect(mounts).toHaveLength(2);
    expect(mounts.every((r) => r.status === 202)).toBe(true);
    expect(proxy.requests.filter((r) => r.method === 'POST' && !r.url.includes('mount='))).toHaveLength(0);
    expect((await c.getManifest(`${proxy.host}/faults/mount-dst:1`)).descriptor.digest).toBe(img.descriptor.digest);
  });
});

describe('blob pushes of a store-backed source', () => {
  it('never opens a blob the registry already has', async () => {
    const img = await pushed([1000, 2000], 'faults/known');
    const src = MemoryStore.of(img);
    await newClient().push(src, img.manifestBytes, `${proxy.host}/faults/known:2`);
    expect(src.opened).toEqual([]);
    const heads = proxy.requests.filter((r) => r.method === 'HEAD').map((r) => r.url);
    const layerHexes = img.manifest.layers.map((l: Descriptor) => digestHex(l.digest));
    for (const hex of layerHexes) expect(heads.some((u) => u.includes(hex))).toBe(true);
  });
});
