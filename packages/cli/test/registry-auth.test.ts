/**
 * login / logout and authenticated push and pull through the CLI, against Debian's real
 * docker-registry on loopback: htpasswd Basic auth over TLS (CA from registries.json) and
 * Bearer tokens from the fixture token server. Checks docker's config.json (mode 0600,
 * `auths[host].auth`) and that no password, auth string or token reaches the output.
 */
import { mkdirSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { randomLayer, writeOciArchive } from '@mybuild/fixtures/images.mjs';
import { createCa } from '../../../fixtures/src/pki.js';
import { startRegistry, type TestRegistry } from '../../../fixtures/src/registry.js';
import { startTokenServer, type TokenServer } from '../../../fixtures/src/token-server.js';
import { cli, type CliResult, tempDir } from './helpers.js';

const USER = 'alice';
const PASSWORD = 'S3cret:pa$$word';
const AUTH = Buffer.from(`${USER}:${PASSWORD}`).toString('base64');

let t: { dir: string; cleanup: () => Promise<void> };
let basic: TestRegistry;
let ts: TokenServer;
let token: TestRegistry;
let store: string;
let env: NodeJS.ProcessEnv;
let dockerConfig: string;
let manifestDigest: string;

function mb(root: string, args: string[], opts: { input?: Buffer; env?: NodeJS.ProcessEnv; via?: 'command' | 'node' } = {}): Promise<CliResult> {
  return cli(root, args, { ...opts, env: { ...env, ...opts.env } });
}

async function ok(root: string, args: string[], opts: { input?: Buffer; env?: NodeJS.ProcessEnv } = {}): Promise<CliResult> {
  const r = await mb(root, args, opts);
  if (r.code !== 0) throw new Error(`mybuild ${args.join(' ')} exited ${r.code}: ${r.stderr}`);
  return r;
}

/** Nothing secret in what the CLI printed. */
function noSecrets(r: CliResult): void {
  for (const text of [r.stdout, r.stderr]) {
    expect(text).not.toContain(PASSWORD);
    expect(text).not.toContain(AUTH);
    expect(text).not.toMatch(/Bearer\s+[A-Za-z0-9._-]{20,}/);
    expect(text).not.toMatch(/eyJ[A-Za-z0-9_-]{10,}\.[A-Za-z0-9_-]{10,}/); // a JWT
  }
}

function oneLineError(r: CliResult): string {
  expect(r.code).not.toBe(0);
  const lines = r.stderr.trim().split('\n');
  expect(lines).toHaveLength(1);
  expect(lines[0]).toMatch(/^mybuild: error: /);
  return lines[0]!;
}

function configJson(): { auths?: Record<string, { auth?: string }> } {
  return JSON.parse(readFileSync(join(dockerConfig, 'config.json'), 'utf8')) as { auths?: Record<string, { auth?: string }> };
}

beforeAll(async () => {
  t = await tempDir('mybuild-registry-auth-');
  ts = await startTokenServer({ users: { [USER]: { password: PASSWORD, push: ['team/*'] } }, anonymousPull: ['public/*'] });
  [basic, token] = await Promise.all([startRegistry({ tls: true, htpasswd: { [USER]: PASSWORD } }), startRegistry({ token: ts })]);
  dockerConfig = join(t.dir, 'docker');
  const mybuildConfig = join(t.dir, 'mybuild-config');
  mkdirSync(mybuildConfig, { recursive: true });
  // The TLS registry's CA comes from registries.json.
  writeFileSync(join(mybuildConfig, 'registries.json'), JSON.stringify({ registries: { [basic.host]: { caFiles: [basic.ca!.cert] } } }));
  env = { DOCKER_CONFIG: dockerConfig, MYBUILD_CONFIG: mybuildConfig };
  const archive = join(t.dir, 'app.oci.tar');
  manifestDigest = (await writeOciArchive(archive, { layers: [randomLayer(512 << 10, 'auth-a')], tag: 'app:1' })).manifest.digest;
  store = join(t.dir, 'store');
  await ok(store, ['load', '-i', archive]);
});

afterAll(async () => {
  await Promise.all([basic?.stop(), token?.stop()]);
  await ts?.stop();
  await t?.cleanup();
});

describe('htpasswd registry over TLS', () => {
  test('a wrong password: one line, exit 1, nothing stored, no secret shown', async () => {
    const r = await mb(store, ['login', '-u', USER, '--password-stdin', basic.host], { input: Buffer.from('wrong-password\n') });
    const line = oneLineError(r);
    expect(line).toContain(basic.host);
    expect(line).toMatch(/401|unauthori[sz]ed|password/i);
    expect(r.stderr).not.toContain('wrong-password');
    expect(() => statSync(join(dockerConfig, 'config.json'))).toThrow();
  });

  test('without a login, a push is refused with a hint to log in', async () => {
    const line = oneLineError(await mb(store, ['push', 'app:1', `${basic.host}/team/app:1`]));
    expect(line).toContain(`${basic.host}/team/app:1`);
    expect(line).toContain('mybuild login');
  });

  test('login writes config.json 0600 with auths[host].auth; push and pull then work', async () => {
    const r = await ok(store, ['login', '-u', USER, '--password-stdin', basic.host], { input: Buffer.from(`${PASSWORD}\n`) });
    expect(r.stdout).toBe('Login Succeeded\n');
    expect(r.stderr).toContain('unencrypted');
    noSecrets(r);
    expect(statSync(join(dockerConfig, 'config.json')).mode & 0o777).toBe(0o600);
    expect(configJson().auths?.[basic.host]?.auth).toBe(AUTH);

    const push = await ok(store, ['--debug', 'push', 'app:1', `${basic.host}/team/app:1`]);
    expect(push.stdout).toContain(`digest: ${manifestDigest}`);
    expect(push.stderr).toContain('mybuild: debug: ');
    noSecrets(push);
    const fresh = join(t.dir, 'store-basic-pull');
    const pull = await ok(fresh, ['--debug', 'pull', `${basic.host}/team/app:1`]);
    expect(pull.stdout).toContain(`Digest: ${manifestDigest}`);
    noSecrets(pull);
    const tags = await ok(fresh, ['tags', `${basic.host}/team/app`]);
    expect(tags.stdout).toBe('1\n');
  });

  test('without the CA the TLS check fails with a hint; --insecure-registry skips it', async () => {
    const noCa = { MYBUILD_CONFIG: join(t.dir, 'nowhere') };
    const line = oneLineError(await mb(store, ['tags', `${basic.host}/team/app`], { env: noCa }));
    expect(line).toMatch(/TLS verification of 127\.0\.0\.1:\d+ failed/);
    expect(line).toContain('ca.crt');
    const r = await ok(store, ['--insecure-registry', basic.host, 'tags', `${basic.host}/team/app`], { env: noCa });
    expect(r.stdout).toBe('1\n');
  });

  test('NODE_EXTRA_CA_CERTS: trusted whether Node or the mybuild command reads it; the processes mybuild starts still get it', async () => {
    // a credential helper that writes down its environment and answers with the user
    const bin = join(t.dir, 'helper-bin');
    const envFile = join(t.dir, 'helper-env.txt');
    mkdirSync(bin, { recursive: true });
    writeFileSync(join(bin, 'docker-credential-envrec'), `#!/bin/sh\nenv > '${envFile}'\nread server\nprintf '{"ServerURL":"%s","Username":"${USER}","Secret":"%s"}' "$server" '${PASSWORD}'\n`, { mode: 0o755 });
    const helperConfig = join(t.dir, 'docker-helper');
    mkdirSync(helperConfig, { recursive: true });
    writeFileSync(join(helperConfig, 'config.json'), JSON.stringify({ credHelpers: { [basic.host]: 'envrec' } }));
    const base = { MYBUILD_CONFIG: join(t.dir, 'nowhere'), DOCKER_CONFIG: helperConfig, PATH: `${bin}:${process.env.PATH ?? ''}` };
    const args = ['--debug', 'tags', `${basic.host}/team/nodeca`];
    const kept = /NODE_EXTRA_CA_CERTS .* is trusted on mybuild's own TLS connections \(kept from Node's start\)/;

    expect(oneLineError(await mb(store, args.slice(1), { env: { ...base, NODE_EXTRA_CA_CERTS: undefined } }))).toMatch(/TLS verification of .* failed/);
    await ok(store, ['push', 'app:1', `${basic.host}/team/nodeca:1`], { env: { ...base, NODE_EXTRA_CA_CERTS: basic.ca!.cert } });
    for (const via of ['command', 'node'] as const) {
      rmSync(envFile, { force: true });
      const r = await mb(store, args, { env: { ...base, NODE_EXTRA_CA_CERTS: basic.ca!.cert }, via });
      expect(r.code, r.stderr).toBe(0);
      expect(r.stdout).toBe('1\n');
      // the command kept the file from Node and trusted it itself; `node mybuild.cjs` left it to Node
      if (via === 'command') expect(r.stderr).toMatch(kept);
      else expect(r.stderr).not.toMatch(kept);
      const seen = readFileSync(envFile, 'utf8');
      expect(seen.split('\n')).toContain(`NODE_EXTRA_CA_CERTS=${basic.ca!.cert}`);
      expect(seen).not.toContain('MYBUILD_NODE_EXTRA_CA_CERTS');
      noSecrets(r);
    }
    // a file that cannot be read (missing, a directory): a warning as Node gives, then the TLS check fails
    for (const [bad, code] of [[join(t.dir, 'missing.pem'), 'ENOENT'], [t.dir, 'EISDIR']] as const) {
      const r = await mb(store, args.slice(1), { env: { ...base, NODE_EXTRA_CA_CERTS: bad } });
      expect(r.code).toBe(1);
      expect(r.stderr).toMatch(new RegExp(`^mybuild: warning: ignoring extra certs from \\S+ \\(NODE_EXTRA_CA_CERTS\\): ${code}\nmybuild: error: .*TLS verification`));
    }
    // the same CA named for the host too: one context holds both, and its other CAs are still trusted
    const other = createCa(mkdtempSync(join(t.dir, 'pki-')));
    const both = { ...base, MYBUILD_CA_FILE: other.cert, NODE_EXTRA_CA_CERTS: basic.ca!.cert };
    for (const via of ['command', 'node'] as const) {
      const r = await mb(store, args.slice(1), { env: both, via });
      expect(r.code, `${via}: ${r.stderr}`).toBe(0);
      expect(r.stdout).toBe('1\n');
    }
  });

  test('-p works with docker\'s warning; logout removes the credentials', async () => {
    const r = await ok(store, ['login', '-u', USER, '-p', PASSWORD, `https://${basic.host}/v1/`]);
    expect(r.stderr).toContain('WARNING! Using --password via the CLI is insecure. Use --password-stdin.');
    expect(r.stdout).toBe('Login Succeeded\n');
    const out = await ok(store, ['logout', basic.host]);
    expect(out.stdout).toBe(`Removing login credentials for ${basic.host}\n`);
    expect(configJson().auths?.[basic.host]).toBeUndefined();
    expect((await ok(store, ['logout', basic.host])).stdout).toBe(`Not logged in to ${basic.host}\n`);
    const line = oneLineError(await mb(join(t.dir, 'store-after-logout'), ['pull', `${basic.host}/team/app:1`]));
    expect(line).toContain(`${basic.host}/team/app:1`);
    expect(line).toContain('mybuild login');
  });

  test('bad usage is a one-line error with exit 2', async () => {
    const r = await mb(store, ['login', '--password-stdin', basic.host], { input: Buffer.from('x\n') });
    expect(r.code).toBe(2);
    expect(r.stderr.trim().split('\n')).toHaveLength(1);
    expect((await mb(store, ['login', '-u', USER, '--password-stdin', basic.host], { input: Buffer.from('\n') })).code).toBe(2);
  });
});

describe('token registry', () => {
  test('login, push and pull with Bearer tokens; a repository outside the grant is refused', async () => {
    const anon = await mb(store, ['push', 'app:1', `${token.host}/team/app:1`]);
    expect(oneLineError(anon)).toContain(`${token.host}/team/app:1`);

    const login = await ok(store, ['login', '-u', USER, '--password-stdin', token.host], { input: Buffer.from(PASSWORD) });
    expect(login.stdout).toBe('Login Succeeded\n');
    const wrong = await mb(store, ['login', '-u', USER, '--password-stdin', token.host], { input: Buffer.from('nope') });
    expect(oneLineError(wrong)).toContain(token.host);

    const push = await ok(store, ['--debug', 'push', 'app:1', `${token.host}/team/app:1`]);
    expect(push.stdout).toContain(`digest: ${manifestDigest}`);
    noSecrets(push);
    const fresh = join(t.dir, 'store-token-pull');
    const pull = await ok(fresh, ['--debug', 'pull', `${token.host}/team/app:1`]);
    expect(pull.stdout).toContain(`Status: Downloaded newer image for ${token.host}/team/app:1`);
    noSecrets(pull);
    expect(ts.requests.some((q) => q.basicUser === USER || q.params.get('username') === USER)).toBe(true);

    const denied = await mb(store, ['push', 'app:1', `${token.host}/other/app:1`]);
    const line = oneLineError(denied);
    expect(line).toContain(`${token.host}/other/app:1`);
    noSecrets(denied);
  });
});
