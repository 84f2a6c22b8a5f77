/**
 * Auth and TLS against real registries: htpasswd Basic over TLS (CA from certs.d, MYBUILD_CA_FILE,
 * insecure), client certificates, and Bearer tokens from the fixture token server (anonymous
 * pulls, scoped pushes, OAuth2 POST and GET fallbacks, identity tokens, expiry, invalid_token).
 */
import { copyFileSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import * as http from 'node:http';
import * as https from 'node:https';
import * as net from 'node:net';
import { rootCertificates } from 'node:tls';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { isUnauthorized } from '@mybuild/oci';
import { RegistryClient, type RegistryClientOptions, type SchemeMemo, staticCredentials } from '@mybuild/registry-client';
import { type FaultProxy, startFaultProxy } from '../../../fixtures/src/fault-proxy.js';
import { createCa } from '../../../fixtures/src/pki.js';
import { startRegistry, type TestRegistry } from '../../../fixtures/src/registry.js';
import { startTokenServer, type TokenServer } from '../../../fixtures/src/token-server.js';
import { makeImage, MemoryStore } from './helpers.js';

const ROBOT = 'robot$proj+ci';
const ROBOT_PW = 'pa:ss$word';

let basicTls: TestRegistry;
let mtls: TestRegistry;
let ts: TokenServer;
let tokenReg: TestRegistry;
let proxy: FaultProxy;
let tmp: string;
let certsDir: string;
let debugLines: string[];
const clients: RegistryClient[] = [];

function client(opts: RegistryClientOptions = {}): RegistryClient {
  const c = new RegistryClient({ credentials: () => Promise.resolve(undefined), retry: { minDelayMs: 5, maxDelayMs: 50 }, debug: (l) => debugLines.push(l), ...opts });
  clients.push(c);
  return c;
}

beforeAll(async () => {
  ts = await startTokenServer({
    users: {
      alice: { password: 'alicepw', push: ['team/*', 'public/*'] },
      [ROBOT]: { password: ROBOT_PW, push: ['proj/*'] },
      bob: { password: 'bobpw', push: ['bob/*'] },
    },
    anonymousPull: ['public/*'],
  });
  [basicTls, mtls, tokenReg] = await Promise.all([
    startRegistry({ tls: true, htpasswd: { [ROBOT]: ROBOT_PW, alice: 'alicepw' } }),
    startRegistry({ tls: { clientAuth: true } }),
    startRegistry({ token: ts }),
  ]);
  proxy = await startFaultProxy(tokenReg.url);
  tmp = mkdtempSync(join(tmpdir(), 'mybuild-auth-test-'));
  certsDir = join(tmp, 'certs.d');
  mkdirSync(join(certsDir, basicTls.host), { recursive: true });
  copyFileSync(basicTls.ca!.cert, join(certsDir, basicTls.host, 'ca.crt'));
  mkdirSync(join(certsDir, mtls.host), { recursive: true });
  copyFileSync(mtls.ca!.cert, join(certsDir, mtls.host, 'ca.crt'));
});

afterAll(async () => {
  for (const c of clients) c.close();
  await proxy?.stop();
  await Promise.all([basicTls?.stop(), mtls?.stop(), tokenReg?.stop()]);
  await ts?.stop();
  rmSync(tmp, { recursive: true, force: true });
});

beforeEach(() => {
  debugLines = [];
  ts.requests.length = 0;
  ts.options.oauth = 'on';
  ts.options.tokenField = 'both';
  proxy.reset();
});

describe('TLS and Basic auth (htpasswd)', () => {
  it('refuses an unknown CA with a hint, then trusts certs.d, MYBUILD_CA_FILE or insecure', async () => {
    const creds = staticCredentials({ [basicTls.host]: { username: ROBOT, password: ROBOT_PW } });
    const err = await client({ credentials: creds, certsDirs: [] }).getManifest(`${basicTls.host}/proj/app:1`).catch((e: unknown) => e);
    expect(err).toMatchObject({ code: 'UNAVAILABLE', hint: expect.stringContaining(`certs.d/${basicTls.host}/ca.crt`) });

    const img = makeImage();
    const viaCertsDir = client({ credentials: creds, certsDirs: [join(tmp, 'nowhere'), certsDir] });
    await viaCertsDir.push(MemoryStore.of(img), img.manifestBytes, `${basicTls.host}/proj/app:1`);

    const viaEnv = client({ credentials: creds, certsDirs: [], env: { MYBUILD_CA_FILE: basicTls.ca!.cert } });
    expect((await viaEnv.getManifest(`${basicTls.host}/proj/app:1`)).descriptor.digest).toBe(img.descriptor.digest);

    // a bundle of Node's roots and the CA, as a system bundle holds many
    const bundle = join(tmp, 'bundle.pem');
    writeFileSync(bundle, `${rootCertificates.join('\n')}\n${readFileSync(basicTls.ca!.cert, 'utf8')}`);
    const viaBundle = client({ credentials: creds, certsDirs: [], caFiles: [bundle] });
    expect((await viaBundle.getManifest(`${basicTls.host}/proj/app:1`)).descriptor.digest).toBe(img.descriptor.digest);

    const insecure = client({ credentials: creds, certsDirs: [], insecure: [basicTls.host] });
    expect((await insecure.getManifest(`${basicTls.host}/proj/app:1`)).descriptor.digest).toBe(img.descriptor.digest);
  });

  it('a loopback TLS registry remembered as plain http: the guess is dropped, https used, credentials never sent in plain', async () => {
    const img = makeImage();
    const plainRequests: string[] = [];
    const remembered = new Map<string, 'http:'>([[basicTls.host, 'http:']]);
    const memo: SchemeMemo = {
      get: (h) => remembered.get(h),
      set: (h, p) => void (p ? remembered.set(h, p) : remembered.delete(h)),
    };
    const c = client({
      certsDirs: [certsDir],
      schemes: memo,
      credentials: (h) => {
        plainRequests.push(`credentials asked for ${h} with the guess ${String(remembered.get(h))}`);
        return Promise.resolve(h === basicTls.host ? { username: ROBOT, password: ROBOT_PW } : undefined);
      },
    });
    await c.push(MemoryStore.of(img), img.manifestBytes, `${basicTls.host}/proj/memo:1`);
    expect((await c.getManifest(`${basicTls.host}/proj/memo:1`)).descriptor.digest).toBe(img.descriptor.digest);
    expect(debugLines.filter((l) => l.includes('plain http (remembered) failed (status 400)'))).toHaveLength(1);
    expect(debugLines.some((l) => / http:\/\//.test(l) && !l.includes('remembered'))).toBe(false);
    // credentials are read only after the challenge, which came over TLS: the guess was gone by then
    expect(plainRequests.length).toBeGreaterThan(0);
    expect(plainRequests.every((l) => l.endsWith('the guess undefined'))).toBe(true);
    expect(remembered.size).toBe(0);
  });

  it('a remembered plain http is not confirmed by a redirect to https (a TLS port answering plain http with 308)', async () => {
    // One port speaking both (as Caddy's http_redirect or a multiplexer does): plain http is
    // always redirected to https; only the TLS side is the registry (Basic auth).
    mkdirSync(join(tmp, 'mux-ca'));
    const pair = createCa(join(tmp, 'mux-ca')).issue('mux', 'server');
    const plainSeen: string[] = [];
    let port = 0;
    const plain = http.createServer((req, res) => {
      plainSeen.push(`${req.method} ${req.url} authorization=${req.headers.authorization ?? '-'}`);
      res.writeHead(308, { location: `https://127.0.0.1:${port}${req.url}` }).end();
    });
    const tls = https.createServer({ key: readFileSync(pair.key), cert: readFileSync(pair.cert) }, (req, res) => {
      const h = { 'docker-distribution-api-version': 'registry/2.0' };
      if (req.headers.authorization !== `Basic ${Buffer.from('u:secret').toString('base64')}`) res.writeHead(401, { ...h, 'www-authenticate': 'Basic realm="r"' }).end();
      else res.writeHead(200, { ...h, 'content-type': 'application/json' }).end('{}');
    });
    const front = net.createServer((sock) => {
      sock.once('data', (first) => {
        const to = net.connect(((first[0] === 0x16 ? tls : plain).address() as net.AddressInfo).port, '127.0.0.1');
        to.write(first);
        sock.pipe(to).pipe(sock);
        sock.on('error', () => to.destroy());
        to.on('error', () => sock.destroy());
      });
    });
    for (const srv of [plain, tls, front]) await new Promise<void>((r) => srv.listen(0, '127.0.0.1', r));
    port = (front.address() as net.AddressInfo).port;
    const host = `127.0.0.1:${port}`;
    const remembered = new Map<string, 'http:'>([[host, 'http:']]);
    try {
      const c = client({ insecure: [host], schemes: { get: (h) => remembered.get(h), set: (h, p) => void (p ? remembered.set(h, p) : remembered.delete(h)) } });
      await c.checkLogin(host, { username: 'u', password: 'secret' });
      expect(plainSeen).toHaveLength(1); // the guess, anonymous; never a request with credentials
      expect(plainSeen[0]).toMatch(/authorization=-$/);
      expect(debugLines.some((l) => l.includes('plain http (remembered) failed (status 308)'))).toBe(true);
      expect(remembered.size).toBe(0);
    } finally {
      for (const srv of [front, plain, tls]) srv.close();
    }
  });

  it('sends a `$` user and a password with `:` as Basic, and says when credentials are missing or wrong', async () => {
    const img = makeImage();
    const ok = client({ certsDirs: [certsDir], credentials: staticCredentials({ [basicTls.host]: { username: ROBOT, password: ROBOT_PW } }) });
    await ok.push(MemoryStore.of(img), img.manifestBytes, `${basicTls.host}/proj/robot:1`);

    const none = await client({ certsDirs: [certsDir] }).getManifest(`${basicTls.host}/proj/robot:1`).catch((e: unknown) => e);
    expect(isUnauthorized(none)).toBe(true);
    expect((none as { hint: string }).hint).toContain(`mybuild login ${basicTls.host}`);

    const wrong = await client({ certsDirs: [certsDir], credentials: staticCredentials({ [basicTls.host]: { username: ROBOT, password: 'nope-Secret-123' } }) })
      .getManifest(`${basicTls.host}/proj/robot:1`)
      .catch((e: unknown) => e);
    expect(isUnauthorized(wrong)).toBe(true);
    expect((wrong as { oneLine(): string }).oneLine()).not.toContain('nope-Secret-123');
  });

  it('presents a client certificate pair from certs.d', async () => {
    const withoutPair = await client({ certsDirs: [certsDir] }).getManifest(`${mtls.host}/x/y:1`).catch((e: unknown) => e);
    expect(withoutPair).toMatchObject({ code: 'UNAVAILABLE', hint: expect.stringContaining('client.cert') });
    copyFileSync(mtls.clientCert!.cert, join(certsDir, mtls.host, 'client.cert'));
    copyFileSync(mtls.clientCert!.key, join(certsDir, mtls.host, 'client.key'));
    const img = makeImage();
    const c = client({ certsDirs: [certsDir] });
    await c.push(MemoryStore.of(img), img.manifestBytes, `${mtls.host}/x/y:1`);
    expect((await c.getManifest(`${mtls.host}/x/y:1`)).descriptor.digest).toBe(img.descriptor.digest);
  });

  it('checks credentials for login', async () => {
    const c = client({ certsDirs: [certsDir] });
    await c.checkLogin(basicTls.host, { username: 'alice', password: 'alicepw' });
    await expect(c.checkLogin(basicTls.host, { username: 'alice', password: 'wrong' })).rejects.toMatchObject({ code: 'UNAUTHORIZED' });
  });
});

describe('Bearer tokens', () => {
  const alice = () => staticCredentials({ [tokenReg.host]: { username: 'alice', password: 'alicepw' }, [proxy.host]: { username: 'alice', password: 'alicepw' } });

  it('pulls a public repository anonymously, and says "not found or unauthorized" otherwise', async () => {
    const img = makeImage();
    await client({ credentials: alice() }).push(MemoryStore.of(img), img.manifestBytes, `${tokenReg.host}/public/base:1`);
    await client({ credentials: alice() }).push(MemoryStore.of(img), img.manifestBytes, `${tokenReg.host}/team/private:1`);
    ts.requests.length = 0;

    const anon = client();
    const sink = new MemoryStore();
    await anon.pull(`${tokenReg.host}/public/base:1`, sink);
    expect(sink.blobs.size).toBe(img.blobs.size + 1);
    expect(ts.requests.length).toBeGreaterThan(0);
    expect(ts.requests.every((r) => r.method === 'GET' && r.basicUser === undefined && r.params.get('account') === null)).toBe(true);

    for (const ref of [`${tokenReg.host}/team/private:1`, `${tokenReg.host}/team/does-not-exist:1`]) {
      const err = await anon.getManifest(ref).catch((e: unknown) => e);
      expect(isUnauthorized(err)).toBe(true);
      expect((err as Error).message).toContain('not found or unauthorized');
      expect((err as { oneLine(): string }).oneLine()).toContain(ref);
    }
  });

  it('gets push tokens with the OAuth2 POST form and caches one per scope set', async () => {
    const img = makeImage({ layers: [1000, 2000, 3000] });
    const c = client({ credentials: alice() });
    await c.push(MemoryStore.of(img), img.manifestBytes, `${tokenReg.host}/team/app:1`);
    await c.pull(`${tokenReg.host}/team/app:1`, new MemoryStore());
    const posts = ts.requests.filter((r) => r.method === 'POST');
    expect(posts.length).toBe(ts.requests.length);
    expect(posts.map((r) => r.params.get('scope')).sort()).toEqual(['repository:team/app:pull', 'repository:team/app:pull,push']);
    expect(posts.every((r) => r.params.get('grant_type') === 'password' && r.params.get('username') === 'alice')).toBe(true);
  });

  it('falls back to the GET form on an HTML 404 or a 405, URL-encoding a robot account', async () => {
    const img = makeImage();
    const robot = staticCredentials({ [tokenReg.host]: { username: ROBOT, password: ROBOT_PW } });
    for (const mode of ['html-404', 'json-405'] as const) {
      ts.options.oauth = mode;
      ts.requests.length = 0;
      const c = client({ credentials: robot });
      await c.push(MemoryStore.of(img), img.manifestBytes, `${tokenReg.host}/proj/app:${mode}`);
      const gets = ts.requests.filter((r) => r.method === 'GET');
      expect(ts.requests.filter((r) => r.method === 'POST')).toHaveLength(1);
      expect(gets.length).toBeGreaterThan(0);
      expect(gets.every((r) => r.basicUser === ROBOT && r.status === 200)).toBe(true);
      expect(gets[0]!.raw).toContain('account=robot%24proj%2Bci');
    }
  });

  it('reads `token` or `access_token`', async () => {
    const img = makeImage();
    ts.options.oauth = 'json-404';
    for (const field of ['token', 'access_token'] as const) {
      ts.options.tokenField = field;
      await client({ credentials: alice() }).push(MemoryStore.of(img), img.manifestBytes, `${tokenReg.host}/team/field:${field}`);
    }
  });

  it('uses an identity token with the refresh_token grant', async () => {
    const img = makeImage();
    await client({ credentials: alice() }).push(MemoryStore.of(img), img.manifestBytes, `${tokenReg.host}/team/idtoken:1`);
    ts.requests.length = 0;
    const c = client({ credentials: staticCredentials({ [tokenReg.host]: { identityToken: ts.identityToken('alice') } }) });
    expect((await c.getManifest(`${tokenReg.host}/team/idtoken:1`)).descriptor.digest).toBe(img.descriptor.digest);
    expect(ts.requests.map((r) => r.params.get('grant_type'))).toEqual(['refresh_token']);

    const bad = client({ credentials: staticCredentials({ [tokenReg.host]: { identityToken: 'revoked' } }) });
    const err = await bad.getManifest(`${tokenReg.host}/team/idtoken:1`).catch((e: unknown) => e);
    expect(err).toMatchObject({ code: 'UNAUTHORIZED', hint: expect.stringContaining('mybuild login') });
  });

  it('renews a token before it expires', async () => {
    const img = makeImage();
    let now = Date.now();
    const c = client({ credentials: alice(), clock: () => now });
    await c.push(MemoryStore.of(img), img.manifestBytes, `${tokenReg.host}/team/expiry:1`);
    await c.getManifest(`${tokenReg.host}/team/expiry:1`);
    const before = ts.requests.length;
    await c.getManifest(`${tokenReg.host}/team/expiry:1`);
    expect(ts.requests.length).toBe(before);
    now += 290_000; // within the renewal margin of a 300 s token
    await c.getManifest(`${tokenReg.host}/team/expiry:1`);
    expect(ts.requests.length).toBe(before + 1);
  });

  it('renews on 401 invalid_token mid-push without re-sending finished blobs', async () => {
    const img = makeImage({ layers: [1000, 2000, 3000] });
    let finished = 0;
    let rejected = false;
    proxy.use(async (req, res, ctx) => {
      if (!rejected && finished >= 2 && req.headers.authorization?.startsWith('Bearer ')) {
        rejected = true;
        res.writeHead(401, {
          'content-type': 'application/json',
          'www-authenticate': `Bearer realm="${ts.realm}",service="${ts.service}",error="invalid_token"`,
        });
        res.end('{"errors":[{"code":"UNAUTHORIZED","message":"token expired"}]}');
        return true;
      }
      if (req.method === 'PUT' && req.url?.includes('digest=')) {
        await ctx.forward();
        finished++;
        return true;
      }
      return false;
    });
    const c = client({ credentials: alice(), concurrency: 1 });
    await c.push(MemoryStore.of(img), img.manifestBytes, `${proxy.host}/team/renew:1`);
    expect(rejected).toBe(true);
    const finals = proxy.requests.filter((r) => r.method === 'PUT' && r.url.includes('digest=')).map((r) => /digest=([^&]+)/.exec(r.url)![1]);
    expect(new Set(finals).size).toBe(finals.length);
    expect(finals).toHaveLength(img.blobs.size);
    expect(ts.requests.filter((r) => r.params.get('scope') === 'repository:team/renew:pull,push')).toHaveLength(2);
  });

  it('mounts across repositories when the token allows it, and uploads when it does not', async () => {
    const img = makeImage({ layers: [4000] });
    const a = client({ credentials: alice() });
    await a.push(MemoryStore.of(img), img.manifestBytes, `${proxy.host}/team/mount-src:1`);
    proxy.requests.length = 0;
    await a.copy(`${proxy.host}/team/mount-src:1`, `${proxy.host}/team/mount-dst:1`);
    const mounts = proxy.requests.filter((r) => r.method === 'POST' && r.url.includes('mount='));
    expect(mounts.map((r) => r.status)).toEqual([201, 201]);
    expect(ts.requests.map((r) => r.params.get('scope'))).toContain('repository:team/mount-dst:pull,push repository:team/mount-src:pull');

    proxy.requests.length = 0;
    const bob = client({ credentials: staticCredentials({ [proxy.host]: { username: 'bob', password: 'bobpw' } }) });
    await bob.push(MemoryStore.of(img), img.manifestBytes, `${proxy.host}/bob/copy:1`, { mountFrom: 'team/mount-src' });
    const refused = proxy.requests.filter((r) => r.method === 'POST' && r.url.includes('mount='));
    expect(refused.length).toBe(2);
    expect(refused.every((r) => r.status === 401)).toBe(true);
    expect((await bob.getManifest(`${proxy.host}/bob/copy:1`)).descriptor.digest).toBe(img.descriptor.digest);
  });

  it('refuses to send credentials to a plain-http realm that is not loopback', async () => {
    proxy.use(async (req, _res, ctx) => {
      await ctx.forward({
        mapHead: (status, headers) => {
          if (headers['www-authenticate']) headers['www-authenticate'] = String(headers['www-authenticate']).replace(/realm="[^"]*"/, 'realm="http://auth.example.test/token"');
          return { status, headers };
        },
      });
      return true;
    });
    const err = await client({ credentials: alice() }).getManifest(`${proxy.host}/team/app:1`).catch((e: unknown) => e);
    expect(err).toMatchObject({ code: 'UNAUTHORIZED', message: expect.stringContaining('plain-http token realm http://auth.example.test/token') });
    expect(ts.requests).toHaveLength(0);
  });

  it('works with tokens that carry their certificate in x5c (instead of a libtrust kid)', async () => {
    const x5c = await startTokenServer({ users: { alice: { password: 'alicepw', push: ['*'] } }, keyRef: 'x5c' });
    const r = await startRegistry({ token: x5c });
    try {
      const img = makeImage();
      const c = client({ credentials: staticCredentials({ [r.host]: { username: 'alice', password: 'alicepw' } }) });
      await c.push(MemoryStore.of(img), img.manifestBytes, `${r.host}/any/app:1`);
      expect((await c.getManifest(`${r.host}/any/app:1`)).descriptor.digest).toBe(img.descriptor.digest);
    } finally {
      await r.stop();
      await x5c.stop();
    }
  });

  it('never shows passwords or tokens in errors or debug lines', async () => {
    const img = makeImage();
    const c = client({ credentials: alice() });
    await c.push(MemoryStore.of(img), img.manifestBytes, `${tokenReg.host}/team/redact:1`);
    await c.getManifest(`${tokenReg.host}/team/nothing:1`).catch(() => undefined);
    const text = debugLines.join('\n');
    expect(text).not.toContain('alicepw');
    expect(text).not.toMatch(/eyJ[A-Za-z0-9_-]{10,}/);
    expect(text).toContain('(token)');
  });
});
