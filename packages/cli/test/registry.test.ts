/**
 * The registry commands against Debian's real docker-registry on loopback (plain http), with
 * skopeo as the peer: push, re-push, pull into a fresh store, copy, tags, remote inspect,
 * multi-platform indexes, and the failures (missing tag, unreachable registry).
 */
import { createHash } from 'node:crypto';
import { existsSync, mkdirSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { randomLayer, tarLayer, writeOciArchive } from '@mybuild/fixtures/images.mjs';
import { hostPlatform, type Platform } from '@mybuild/oci';
import { RegistryClient } from '@mybuild/registry-client';
import { startFaultProxy } from '../../../fixtures/src/fault-proxy.js';
import { freePort, startRegistry, type TestRegistry } from '../../../fixtures/src/registry.js';
import { makeIndex, MemoryStore } from '../../registry-client/test/helpers.js';
import { familiarTagged, registryHost } from '../src/registry.js';
import { cli, type CliResult, run, tempDir } from './helpers.js';

let t: { dir: string; cleanup: () => Promise<void> };
let reg: TestRegistry;
/** A store holding `app:1` (OCI types, three gzip layers) and `dapp:1` (Docker types). */
let storeA: string;
let env: NodeJS.ProcessEnv;
let appDigest: string;
let appLayers: string[];

const sha = (b: Buffer) => `sha256:${createHash('sha256').update(b).digest('hex')}`;

/** The CLI with a private DOCKER_CONFIG and MYBUILD_CONFIG (never the user's). */
function mb(root: string, args: string[], opts: { input?: Buffer; env?: NodeJS.ProcessEnv } = {}): Promise<CliResult> {
  return cli(root, args, { ...opts, env: { ...env, ...opts.env } });
}

async function ok(root: string, args: string[], opts: { input?: Buffer; env?: NodeJS.ProcessEnv } = {}): Promise<CliResult> {
  const r = await mb(root, args, opts);
  if (r.code !== 0) throw new Error(`mybuild ${args.join(' ')} exited ${r.code}: ${r.stderr}`);
  return r;
}

async function skopeo(...args: string[]): Promise<string> {
  return run('skopeo', ['--insecure-policy', ...args]);
}

async function skopeoInspect(ref: string): Promise<{ Digest: string; Layers: string[] }> {
  return JSON.parse(await skopeo('inspect', '--tls-verify=false', `docker://${ref}`)) as { Digest: string; Layers: string[] };
}

async function skopeoRaw(ref: string): Promise<Buffer> {
  const { execFileP } = await import('./helpers.js');
  const { stdout } = await execFileP('skopeo', ['--insecure-policy', 'inspect', '--tls-verify=false', '--raw', `docker://${ref}`], { encoding: 'buffer', maxBuffer: 16 << 20 });
  return stdout;
}

interface Inspected {
  Id: string;
  Digest: string;
  RepoTags: string[];
  MediaType: string;
  Layers?: string[];
  Manifest: { layers: { digest: string }[] };
}

async function inspect(root: string, ref: string): Promise<Inspected> {
  return (JSON.parse((await ok(root, ['inspect', ref])).stdout) as Inspected[])[0]!;
}

function tagsIn(root: string): string[] {
  const index = JSON.parse(readFileSync(join(root, 'index.json'), 'utf8')) as { manifests: { annotations?: Record<string, string> }[] };
  return index.manifests.map((m) => m.annotations?.['org.opencontainers.image.ref.name'] ?? '<none>');
}

/** Every blob of a store hashes to its name. */
function verifyBlobs(root: string): number {
  const dir = join(root, 'blobs', 'sha256');
  const names = readdirSync(dir);
  for (const name of names) expect(sha(readFileSync(join(dir, name))), `blob ${name}`).toBe(`sha256:${name}`);
  return names.length;
}

beforeAll(async () => {
  t = await tempDir('mybuild-registry-cli-');
  env = { DOCKER_CONFIG: join(t.dir, 'docker'), MYBUILD_CONFIG: join(t.dir, 'mybuild-config') };
  reg = await startRegistry();
  const small = await tarLayer([
    { name: 'etc/', type: 'directory' },
    { name: 'etc/hello', type: 'file', data: Buffer.from('hello\n') },
  ]);
  const oci = join(t.dir, 'app.oci.tar');
  const written = await writeOciArchive(oci, { layers: [randomLayer(3 << 20, 'reg-a'), randomLayer(1 << 20, 'reg-b'), small], tag: 'app:1' });
  appDigest = written.manifest.digest;
  appLayers = written.layers.map((l) => l.digest);
  const docker = join(t.dir, 'dapp.oci.tar');
  await writeOciArchive(docker, { layers: [randomLayer(1 << 20, 'reg-d'), small], tag: 'dapp:1', mediaTypes: 'docker' });
  storeA = join(t.dir, 'store-a');
  await ok(storeA, ['load', '-i', oci]);
  await ok(storeA, ['load', '-i', docker]);
});

afterAll(async () => {
  await reg?.stop();
  await t?.cleanup();
});

describe('push', () => {
  test('pushes a stored image; skopeo sees the same digest and layers', async () => {
    const dest = `${reg.host}/team/app:1.2`;
    const r = await ok(storeA, ['push', 'app:1', dest]);
    expect(r.stdout).toContain(`The push refers to repository [${reg.host}/team/app]`);
    expect(r.stdout).toContain(`1.2: digest: ${appDigest} size: `);
    for (const l of appLayers) expect(r.stderr).toContain(`${l.slice(7, 19)}: Pushed`);
    const seen = await skopeoInspect(dest);
    expect(seen.Digest).toBe(appDigest);
    expect(seen.Layers).toEqual(appLayers);
    expect(sha(await skopeoRaw(dest))).toBe(appDigest);
  });

  test('a re-push sends nothing: every layer already exists', async () => {
    const dest = `${reg.host}/team/app:1.2`;
    const r = await ok(storeA, ['push', 'app:1', dest]);
    expect(r.stdout).toContain(`digest: ${appDigest}`);
    for (const l of appLayers) expect(r.stderr).toContain(`${l.slice(7, 19)}: Layer already exists`);
    expect(r.stderr).not.toContain('Pushed');
  });

  test('Docker media types are kept, byte for byte', async () => {
    const local = await inspect(storeA, 'dapp:1');
    expect(local.MediaType).toBe('application/vnd.docker.distribution.manifest.v2+json');
    const r = await ok(storeA, ['push', 'dapp:1', `${reg.host}/team/dapp:1`]);
    expect(r.stdout).toContain(`digest: ${local.Digest}`);
    const raw = await skopeoRaw(`${reg.host}/team/dapp:1`);
    expect(sha(raw)).toBe(local.Digest);
    expect(JSON.parse(raw.toString()).mediaType).toBe('application/vnd.docker.distribution.manifest.v2+json');
  });

  test('push NAME pushes to the name itself; an image ID needs a destination', async () => {
    const name = `${reg.host}/self/app:7`;
    await ok(storeA, ['tag', 'app:1', name]);
    const r = await ok(storeA, ['push', '-q', name]);
    expect(r.stdout).toMatch(new RegExp(`^7: digest: ${appDigest} size: \\d+\\n$`));
    // mounted from team/app: the store knows the image under another name on this registry
    expect((await skopeoInspect(name)).Digest).toBe(appDigest);
    const id = (await inspect(storeA, 'app:1')).Id;
    const bad = await mb(storeA, ['push', id]);
    expect(bad.code).not.toBe(0);
    expect(bad.stderr.trim().split('\n')).toHaveLength(1);
    expect(bad.stderr).toContain('say where to push it');
  });

  test('blobs another repository of the registry holds are mounted', async () => {
    const name = `${reg.host}/mounted/app:1`;
    await ok(storeA, ['tag', 'app:1', `${reg.host}/team/app:1.2`]);
    const r = await ok(storeA, ['push', 'app:1', name]);
    // from team/app or self/app: both hold them
    for (const l of appLayers) expect(r.stderr).toMatch(new RegExp(`${l.slice(7, 19)}: Mounted from (team|self)/app`));
    expect(r.stderr).not.toContain('Pushed');
    expect((await skopeoInspect(name)).Digest).toBe(appDigest);
  });
});

describe('pull', () => {
  test('into a fresh store: same image ID and manifest digest; a second pull is up to date', async () => {
    const root = join(t.dir, 'store-pull');
    const ref = `${reg.host}/team/app:1.2`;
    const r = await ok(root, ['pull', ref]);
    expect(r.stdout.split('\n')).toEqual([
      `1.2: Pulling from team/app`,
      `Digest: ${appDigest}`,
      `Status: Downloaded newer image for ${ref}`,
      ref,
      '',
    ]);
    for (const l of appLayers) expect(r.stderr).toContain(`${l.slice(7, 19)}: Pull complete`);
    const pulled = await inspect(root, ref);
    const original = await inspect(storeA, 'app:1');
    expect(pulled.Id).toBe(original.Id);
    expect(pulled.Digest).toBe(appDigest);
    expect(tagsIn(root)).toEqual([ref]);
    expect(verifyBlobs(root)).toBe(appLayers.length + 2);
    // the store is an OCI layout skopeo reads
    expect(JSON.parse(await skopeo('inspect', `oci:${root}:${ref}`)).Digest).toBe(appDigest);

    const again = await ok(root, ['pull', ref]);
    expect(again.stdout).toContain(`Status: Image is up to date for ${ref}`);
    for (const l of appLayers) expect(again.stderr).toContain(`${l.slice(7, 19)}: Already exists`);
    // -q: only the name
    expect((await ok(root, ['pull', '-q', ref])).stdout).toBe(`${ref}\n`);
  });

  test('skips blobs the store already has (shared layers are not downloaded again)', async () => {
    const root = join(t.dir, 'store-shared');
    await ok(root, ['pull', `${reg.host}/team/dapp:1`]);
    const r = await ok(root, ['pull', `${reg.host}/team/app:1.2`]);
    // the small layer is in both images
    expect(r.stderr).toContain(`${appLayers[2]!.slice(7, 19)}: Already exists`);
    expect(r.stderr).toContain(`${appLayers[0]!.slice(7, 19)}: Pull complete`);
  });

  test('--progress rawjson: one JSON event per line on stderr', async () => {
    const root = join(t.dir, 'store-json');
    const r = await ok(root, ['pull', '--progress', 'rawjson', `${reg.host}/team/app:1.2`]);
    const events = r.stderr
      .trim()
      .split('\n')
      .map((l) => JSON.parse(l) as { id: string; action: string; total?: number; time: string });
    const done = events.filter((e) => e.action === 'pull:done').map((e) => e.id);
    for (const l of appLayers) expect(done).toContain(l);
    expect(events.every((e) => typeof e.time === 'string')).toBe(true);
    // the global flag (before the command) works the same
    const again = await ok(root, ['--progress', 'rawjson', 'pull', `${reg.host}/team/app:1.2`]);
    expect(again.stderr.trim().split('\n').map((l) => (JSON.parse(l) as { action: string }).action)).toContain('pull:exists');
  });

  test('by digest: recorded without a tag', async () => {
    const root = join(t.dir, 'store-digest');
    const ref = `${reg.host}/team/app@${appDigest}`;
    const r = await ok(root, ['pull', ref]);
    expect(r.stdout).toContain(`${appDigest}: Pulling from team/app`);
    expect(tagsIn(root)).toEqual(['<none>']);
    expect((await inspect(root, appDigest)).Digest).toBe(appDigest);
  });

  test('a missing tag: one line on stderr, exit 1, nothing tagged', async () => {
    const root = join(t.dir, 'store-missing');
    const r = await mb(root, ['pull', `${reg.host}/team/app:nope`]);
    expect(r.code).toBe(1);
    const lines = r.stderr.trim().split('\n');
    expect(lines).toHaveLength(1);
    expect(lines[0]).toMatch(/^mybuild: error: /);
    expect(lines[0]).toContain(`${reg.host}/team/app:nope`);
    expect(lines[0]).toMatch(/manifest unknown|not found/i);
    expect(r.stdout).toBe('');
    expect(tagsIn(root)).toEqual([]);
    // a repository that does not exist
    const r2 = await mb(root, ['pull', `${reg.host}/nobody/here:1`]);
    expect(r2.code).toBe(1);
    expect(r2.stderr.trim().split('\n')).toHaveLength(1);
    expect(r2.stderr).toContain(`${reg.host}/nobody/here:1`);
  });

  test('a blob that does not match its digest: one-line error, nothing tagged, no bad blob stored', async () => {
    const proxy = await startFaultProxy(reg.url);
    try {
      const bad = appLayers[0]!;
      proxy.use((req, _res, ctx) => {
        if (req.method !== 'GET' || !req.url?.endsWith(`/blobs/${bad}`)) return false;
        // same size, one byte flipped
        void ctx.forward({ body: (b) => Buffer.concat([b.subarray(0, 1000), Buffer.from([b[1000]! ^ 0xff]), b.subarray(1001)]) });
        return true;
      });
      const root = join(t.dir, 'store-corrupt');
      const r = await mb(root, ['pull', `${proxy.host}/team/app:1.2`]);
      expect(r.code).toBe(1);
      const lines = r.stderr.trim().split('\n').filter((l) => !/: (Pull complete|Already exists)/.test(l));
      expect(lines).toHaveLength(1);
      expect(lines[0]).toMatch(/^mybuild: error: .*digest/i);
      expect(tagsIn(root)).toEqual([]);
      expect(existsSync(join(root, 'blobs', 'sha256', bad.slice(7)))).toBe(false);
      verifyBlobs(root);
    } finally {
      await proxy.stop();
    }
  });

  test('registries.json mirrors: a pull is served by the mirror, the name stays the registry\'s', async () => {
    // The "registry" is a closed loopback port: only the mirror can answer.
    const origin = `127.0.0.2:${await freePort()}`;
    const config = join(t.dir, 'mirror-config');
    mkdirSync(config, { recursive: true });
    writeFileSync(join(config, 'registries.json'), JSON.stringify({ registries: { [origin]: { mirrors: [`http://${reg.host}`] } } }));
    const root = join(t.dir, 'store-mirror');
    const ref = `${origin}/team/app:1.2`;
    const r = await ok(root, ['--debug', 'pull', ref], { env: { MYBUILD_CONFIG: config } });
    expect(r.stdout).toContain(`Digest: ${appDigest}`);
    expect(r.stderr).toContain(`http://${reg.host}/v2/team/app/manifests/1.2`);
    expect(tagsIn(root)).toEqual([ref]);
  });

  test('an unreachable registry: one line naming it, quickly', async () => {
    const port = await freePort();
    const root = join(t.dir, 'store-unreachable');
    const started = Date.now();
    const r = await mb(root, ['pull', `127.0.0.1:${port}/team/app:1`]);
    expect(r.code).toBe(1);
    expect(r.stderr.trim().split('\n')).toHaveLength(1);
    expect(r.stderr).toContain(`cannot reach 127.0.0.1:${port}`);
    expect(Date.now() - started).toBeLessThan(10_000);
    expect(tagsIn(root)).toEqual([]);
  });
});

describe('copy, tags, inspect docker://', () => {
  test('copy between repositories keeps the digest (blobs mounted); tags lists them', async () => {
    const r = await ok(storeA, ['copy', `${reg.host}/team/app:1.2`, `${reg.host}/copies/app:c1`]);
    expect(r.stdout).toBe(`c1: digest: ${appDigest} size: ${(await skopeoRaw(`${reg.host}/team/app:1.2`)).length}\n`);
    for (const l of appLayers) expect(r.stderr).toContain(`${l.slice(7, 19)}: Mounted from team/app`);
    expect((await skopeoInspect(`${reg.host}/copies/app:c1`)).Digest).toBe(appDigest);
    await ok(storeA, ['copy', '-q', `${reg.host}/copies/app:c1`, `${reg.host}/copies/app:c2`]);

    const tags = await ok(storeA, ['tags', `${reg.host}/copies/app`]);
    expect(tags.stdout.trim().split('\n').sort()).toEqual(['c1', 'c2']);
    const json = JSON.parse((await ok(storeA, ['tags', '--format', 'json', `${reg.host}/copies/app`])).stdout) as { Repository: string; Tags: string[] };
    expect(json.Repository).toBe(`${reg.host}/copies/app`);
    expect(json.Tags.sort()).toEqual(['c1', 'c2']);
    const bad = await mb(storeA, ['tags', `${reg.host}/copies/app:c1`]);
    expect(bad.code).not.toBe(0);
    const unknown = await mb(storeA, ['tags', `${reg.host}/never/pushed`]);
    expect(unknown.code).toBe(1);
    expect(unknown.stderr.trim().split('\n')).toHaveLength(1);
  });

  test('inspect docker://REF reads manifest and config without storing anything', async () => {
    const root = join(t.dir, 'store-inspect');
    const ref = `${reg.host}/team/app:1.2`;
    const r = await ok(root, ['inspect', `docker://${ref}`]);
    const [info] = JSON.parse(r.stdout) as (Inspected & { Name: string; Config: { rootfs: { diff_ids: string[] } } })[];
    const peer = await skopeoInspect(ref);
    expect(info!.Name).toBe(`${reg.host}/team/app`);
    expect(info!.Digest).toBe(peer.Digest);
    expect(info!.Layers).toEqual(peer.Layers);
    expect(info!.Id).toBe((await inspect(storeA, 'app:1')).Id);
    expect(info!.Config.rootfs.diff_ids).toHaveLength(appLayers.length);
    // nothing stored
    expect(existsSync(join(root, 'index.json'))).toBe(false);
    const raw = await ok(root, ['inspect', '--raw', `docker://${ref}`]);
    expect(sha(Buffer.from(raw.stdout))).toBe(appDigest);
    const missing = await mb(root, ['inspect', `docker://${reg.host}/team/app:nope`]);
    expect(missing.code).toBe(1);
    expect(missing.stderr.trim().split('\n')).toHaveLength(1);
  });
});

describe('multi-platform images', () => {
  const host = hostPlatform();
  const other: Platform = host.architecture === 'arm64' ? { os: 'linux', architecture: 'amd64' } : { os: 'linux', architecture: 'arm64', variant: 'v8' };
  let idx: ReturnType<typeof makeIndex>;
  let ref: string;

  beforeAll(async () => {
    idx = makeIndex([host, other], { layers: [4096, 2048] });
    ref = `${reg.host}/multi/app:1`;
    const client = new RegistryClient({ credentials: () => Promise.resolve(undefined) });
    try {
      await client.push(MemoryStore.of(idx), idx.indexBytes, ref);
    } finally {
      client.close();
    }
  });

  test('pull tags the host platform manifest; push sends that manifest', async () => {
    const root = join(t.dir, 'store-multi');
    const r = await ok(root, ['pull', ref]);
    expect(r.stdout).toContain(`Digest: ${idx.descriptor.digest}`);
    const mine = idx.images[0]!;
    const got = await inspect(root, ref);
    expect(got.Digest).toBe(mine.descriptor.digest);
    const p = await ok(root, ['push', ref, `${reg.host}/multi/single:1`]);
    expect(p.stdout).toContain(`digest: ${mine.descriptor.digest}`);
    expect(sha(await skopeoRaw(`${reg.host}/multi/single:1`))).toBe(mine.descriptor.digest);
  });

  test('pull --platform picks another platform', async () => {
    const root = join(t.dir, 'store-multi-other');
    await ok(root, ['pull', '--platform', `${other.os}/${other.architecture}`, ref]);
    expect((await inspect(root, ref)).Digest).toBe(idx.images[1]!.descriptor.digest);
  });

  test('pull --platform of a single-platform image of another platform warns', async () => {
    const root = join(t.dir, 'store-mismatch');
    const r = await ok(root, ['pull', '--platform', `${other.os}/${other.architecture}`, `${reg.host}/team/app:1.2`]);
    expect(r.stderr).toContain(`does not match the requested platform (${other.os}/${other.architecture}`);
  });

  test('pull -a tags the index; push --all keeps its digest; push alone sends one platform', async () => {
    const root = join(t.dir, 'store-multi-all');
    await ok(root, ['pull', '-a', ref]);
    const got = await inspect(root, ref);
    expect(got.Digest).toBe(idx.descriptor.digest);
    const p = await ok(root, ['push', '--all', ref, `${reg.host}/multi/copy:1`]);
    expect(p.stdout).toContain(`digest: ${idx.descriptor.digest}`);
    expect(sha(await skopeoRaw(`${reg.host}/multi/copy:1`))).toBe(idx.descriptor.digest);
    const one = await ok(root, ['push', ref, `${reg.host}/multi/one:1`]);
    expect(one.stdout).toContain(`digest: ${idx.images[0]!.descriptor.digest}`);
    expect(one.stderr).toContain('--all pushes every platform');
  });

  test('push --all of an index whose platforms were not all pulled: one-line error', async () => {
    const root = join(t.dir, 'store-multi-partial');
    await ok(root, ['pull', '-a', ref]);
    // the other platform's manifest goes missing (as if the index had been written by a tool pulling one platform)
    const gone = idx.images[1]!.descriptor.digest;
    rmSync(join(root, 'blobs', 'sha256', gone.slice(7)), { force: true });
    const r = await mb(root, ['push', '--all', ref, `${reg.host}/multi/partial:1`]);
    expect(r.code).toBe(1);
    expect(r.stderr.trim().split('\n')).toHaveLength(1);
    expect(r.stderr).toContain('pull them with');
  });
});

describe('registry names', () => {
  test('login/logout registries: host[:port] or a URL; none is Docker Hub', () => {
    expect(registryHost(undefined)).toBe('docker.io');
    expect(registryHost('https://index.docker.io/v1/')).toBe('docker.io');
    expect(registryHost('registry-1.docker.io')).toBe('docker.io');
    expect(registryHost('Registry.Example.com')).toBe('registry.example.com');
    expect(registryHost('https://localhost:5000/v2/')).toBe('localhost:5000');
    expect(registryHost('[::1]:5000')).toBe('[::1]:5000');
    expect(() => registryHost('not a host')).toThrow(/invalid registry/);
    expect(() => registryHost('justaname')).toThrow(/invalid registry/);
  });

  test('pull tags the familiar name', async () => {
    const { parseNormalizedReference } = await import('@mybuild/oci');
    expect(familiarTagged(parseNormalizedReference('alpine'))).toBe('alpine:latest');
    expect(familiarTagged(parseNormalizedReference('docker.io/library/alpine:3.20'))).toBe('alpine:3.20');
    expect(familiarTagged(parseNormalizedReference('localhost:5000/team/app:1.2'))).toBe('localhost:5000/team/app:1.2');
    expect(familiarTagged(parseNormalizedReference(`ghcr.io/org/app@sha256:${'a'.repeat(64)}`))).toBe(`ghcr.io/org/app@sha256:${'a'.repeat(64)}`);
  });
});
