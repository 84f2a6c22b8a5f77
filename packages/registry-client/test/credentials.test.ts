/** docker config.json credentials, docker-credential-* helpers, and the login/logout writer. */
import { chmodSync, mkdirSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  DOCKER_HUB_CONFIG_KEY,
  dockerConfigCredentials,
  dockerConfigDir,
  RegistryClient,
  removeCredentials,
  saveCredentials,
} from '@mybuild/registry-client';
import { startRegistry, type TestRegistry } from '../../../fixtures/src/registry.js';
import { makeImage, MemoryStore } from './helpers.js';

let tmp: string;
let bin: string;
let env: NodeJS.ProcessEnv;
let reg: TestRegistry;

const b64 = (s: string) => Buffer.from(s).toString('base64');

/** A docker-credential-NAME helper (the real protocol: server URL on stdin, JSON on stdout). */
function helper(name: string, table: Record<string, { Username: string; Secret: string }>): void {
  const store = join(tmp, `${name}.store.json`);
  writeFileSync(store, JSON.stringify(table));
  const script = `#!/usr/bin/env node
const fs = require('fs');
const store = ${JSON.stringify(store)};
const input = fs.readFileSync(0, 'utf8').trim();
const table = JSON.parse(fs.readFileSync(store, 'utf8'));
const action = process.argv[2];
if (action === 'get') {
  const hit = table[input];
  if (!hit) { process.stdout.write('credentials not found in native keychain'); process.exit(1); }
  process.stdout.write(JSON.stringify({ ServerURL: input, ...hit }));
} else if (action === 'store') {
  const c = JSON.parse(input);
  table[c.ServerURL] = { Username: c.Username, Secret: c.Secret };
  fs.writeFileSync(store, JSON.stringify(table));
} else if (action === 'erase') {
  delete table[input];
  fs.writeFileSync(store, JSON.stringify(table));
}
`;
  const file = join(bin, `docker-credential-${name}`);
  writeFileSync(file, script);
  chmodSync(file, 0o755);
}

function config(dir: string, value: unknown): string {
  mkdirSync(dir, { recursive: true });
  writeFileSync(join(dir, 'config.json'), JSON.stringify(value));
  return dir;
}

beforeAll(async () => {
  tmp = mkdtempSync(join(tmpdir(), 'mybuild-creds-'));
  bin = join(tmp, 'bin');
  mkdirSync(bin);
  env = { ...process.env, PATH: `${bin}:${process.env.PATH ?? ''}` };
  reg = await startRegistry({ htpasswd: { 'robot$team+ci': 'p:w$1' } });
});

afterAll(async () => {
  await reg?.stop();
  rmSync(tmp, { recursive: true, force: true });
});

describe('reading config.json', () => {
  it('finds auths by any key spelling, Docker Hub under https://index.docker.io/v1/', async () => {
    const dir = config(join(tmp, 'c1'), {
      auths: {
        [DOCKER_HUB_CONFIG_KEY]: { auth: b64('hubuser:hub:pass') },
        'https://myreg.example.com/v2/': { auth: b64('me:secret') },
        'localhost:5000': { username: 'plain', password: 'fields' },
        'ghcr.io': { identitytoken: 'refresh-me' },
      },
    });
    const get = dockerConfigCredentials({ configDir: dir, env });
    expect(await get('registry-1.docker.io')).toEqual({ username: 'hubuser', password: 'hub:pass' });
    expect(await get('docker.io')).toEqual({ username: 'hubuser', password: 'hub:pass' });
    expect(await get('myreg.example.com')).toEqual({ username: 'me', password: 'secret' });
    expect(await get('localhost:5000')).toEqual({ username: 'plain', password: 'fields' });
    expect(await get('ghcr.io')).toEqual({ identityToken: 'refresh-me' });
    expect(await get('other.example.com')).toBeUndefined();
  });

  it('asks credHelpers before credsStore, and credsStore even with no auths', async () => {
    helper('store', { 'reg.example.com': { Username: 'fromstore', Secret: 's1' }, [DOCKER_HUB_CONFIG_KEY]: { Username: '<token>', Secret: 'idtok' } });
    helper('special', { 'reg.example.com': { Username: 'fromhelper', Secret: 's2' } });
    const dir = config(join(tmp, 'c2'), { credsStore: 'store', credHelpers: { 'reg.example.com': 'special' } });
    const get = dockerConfigCredentials({ configDir: dir, env });
    expect(await get('reg.example.com')).toEqual({ username: 'fromhelper', password: 's2' });
    expect(await get('registry-1.docker.io')).toEqual({ identityToken: 'idtok' });
    expect(await get('unknown.example.com')).toBeUndefined();
  });

  it('says which helper is missing', async () => {
    const dir = config(join(tmp, 'c3'), { credsStore: 'nonexistent-helper' });
    await expect(dockerConfigCredentials({ configDir: dir, env })('x.example.com')).rejects.toMatchObject({
      code: 'UNAVAILABLE',
      message: expect.stringContaining('docker-credential-nonexistent-helper'),
    });
  });

  it('follows DOCKER_CONFIG', () => {
    const saved = process.env.DOCKER_CONFIG;
    process.env.DOCKER_CONFIG = '/some/where';
    try {
      expect(dockerConfigDir()).toBe('/some/where');
    } finally {
      if (saved === undefined) delete process.env.DOCKER_CONFIG;
      else process.env.DOCKER_CONFIG = saved;
    }
  });
});

describe('login and logout', () => {
  it('writes config.json with mode 0600, keeping what else is there', async () => {
    const dir = config(join(tmp, 'w1'), { auths: { 'keep.example.com': { auth: b64('a:b') } }, psFormat: 'table' });
    await saveCredentials('docker.io', { username: 'hub', password: 'pw:with:colons' }, { configDir: dir });
    await saveCredentials('localhost:5000', { username: 'robot$x+y', password: 'z' }, { configDir: dir });
    const file = join(dir, 'config.json');
    expect(statSync(file).mode & 0o777).toBe(0o600);
    const written = JSON.parse(readFileSync(file, 'utf8')) as { auths: Record<string, { auth: string }>; psFormat: string };
    expect(written.psFormat).toBe('table');
    expect(Object.keys(written.auths).sort()).toEqual([DOCKER_HUB_CONFIG_KEY, 'keep.example.com', 'localhost:5000']);
    expect(await dockerConfigCredentials({ configDir: dir })('registry-1.docker.io')).toEqual({ username: 'hub', password: 'pw:with:colons' });
    expect(await removeCredentials('docker.io', { configDir: dir })).toBe(true);
    expect(await removeCredentials('docker.io', { configDir: dir })).toBe(false);
    expect(await dockerConfigCredentials({ configDir: dir })('registry-1.docker.io')).toBeUndefined();
  });

  it('stores in the credential helper when one is configured', async () => {
    helper('vault', {});
    const dir = config(join(tmp, 'w2'), { credsStore: 'vault' });
    await saveCredentials('reg.example.com', { username: 'u', password: 'p' }, { configDir: dir, env });
    const written = JSON.parse(readFileSync(join(dir, 'config.json'), 'utf8')) as { auths: Record<string, unknown> };
    expect(written.auths['reg.example.com']).toEqual({});
    expect(JSON.stringify(written)).not.toContain('"p"');
    expect(await dockerConfigCredentials({ configDir: dir, env })('reg.example.com')).toEqual({ username: 'u', password: 'p' });
    await removeCredentials('reg.example.com', { configDir: dir, env });
    expect(await dockerConfigCredentials({ configDir: dir, env })('reg.example.com')).toBeUndefined();
  });

  it('lets a client push with what login wrote', async () => {
    const dir = join(tmp, 'w3');
    const c = new RegistryClient({ credentials: dockerConfigCredentials({ configDir: dir }) });
    try {
      await c.checkLogin(reg.host, { username: 'robot$team+ci', password: 'p:w$1' });
      await saveCredentials(reg.host, { username: 'robot$team+ci', password: 'p:w$1' }, { configDir: dir });
      const img = makeImage();
      await c.push(MemoryStore.of(img), img.manifestBytes, `${reg.host}/team/app:1`);
      expect((await c.getManifest(`${reg.host}/team/app:1`)).descriptor.digest).toBe(img.descriptor.digest);
    } finally {
      c.close();
    }
  });
});
