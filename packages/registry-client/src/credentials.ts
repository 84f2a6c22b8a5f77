/**
 * Credentials from docker's `config.json` (`$DOCKER_CONFIG/config.json`, default
 * `~/.docker/config.json`): `auths.<host>.auth` (base64 user:pass), `identitytoken`,
 * `credHelpers[host]` (beats `credsStore`), `credsStore`, via the docker-credential-* protocol.
 * Also the writer behind `login`/`logout`: same file, mode 0600, written atomically.
 */
import { createRequire } from 'node:module';
import { chmod, mkdir, readFile, rename, rm, writeFile } from 'node:fs/promises';
import { homedir } from 'node:os';
import { dirname, join } from 'node:path';
import { apiHost, DOCKER_HUB_API_HOST, DOCKER_HUB_DOMAIN, errnoCode, MyBuildError, randomBytes } from '@mybuild/oci';

export interface Credentials {
  username?: string;
  password?: string;
  /** A refresh token for the OAuth2 `refresh_token` grant (docker's `identitytoken`). */
  identityToken?: string;
  /** A bearer token sent as is, skipping the token exchange (`registrytoken`). */
  registryToken?: string;
}

/** Looks up credentials for a registry API host (`registry-1.docker.io`, `localhost:5000`). */
export type CredentialProvider = (host: string) => Promise<Credentials | undefined>;

/** The key docker uses for Docker Hub in config.json and with credential helpers. */
export const DOCKER_HUB_CONFIG_KEY = 'https://index.docker.io/v1/';

interface DockerConfigFile {
  auths?: Record<string, { auth?: string; username?: string; password?: string; identitytoken?: string; registrytoken?: string; email?: string }>;
  credsStore?: string;
  credHelpers?: Record<string, string>;
  [other: string]: unknown;
}

export interface DockerConfigOptions {
  /** Directory of config.json; default `$DOCKER_CONFIG` or `~/.docker`. */
  configDir?: string;
  /** Extra PATH for docker-credential-* helpers (tests). */
  env?: NodeJS.ProcessEnv;
}

export function dockerConfigDir(opts: DockerConfigOptions = {}): string {
  return opts.configDir ?? process.env.DOCKER_CONFIG ?? join(homedir(), '.docker');
}

/** Hosts docker.io answers to: what a config.json key may name for Docker Hub. */
function isDockerHub(host: string): boolean {
  return host === DOCKER_HUB_DOMAIN || host === DOCKER_HUB_API_HOST || host === 'index.docker.io';
}

/** The config.json key and helper server URL docker uses for a host. */
export function configKeyFor(host: string): string {
  return isDockerHub(host) ? DOCKER_HUB_CONFIG_KEY : host;
}

/** `https://host:port/v1/` → `host:port`; Docker Hub keys all map to `docker.io`'s API host. */
function normaliseKey(key: string): string {
  let k = key.trim();
  k = k.replace(/^[a-z][a-z0-9+.-]*:\/\//i, '');
  const slash = k.indexOf('/');
  if (slash >= 0) k = k.slice(0, slash);
  k = k.toLowerCase();
  return isDockerHub(k) ? DOCKER_HUB_API_HOST : apiHost(k);
}

async function readConfig(dir: string): Promise<DockerConfigFile> {
  try {
    const text = await readFile(join(dir, 'config.json'), 'utf8');
    return JSON.parse(text) as DockerConfigFile;
  } catch (err) {
    if (errnoCode(err) === 'ENOENT') return {};
    throw new MyBuildError('INVALID_ARGUMENT', `cannot read docker config ${join(dir, 'config.json')}: ${(err as Error).message}`, {
      hint: 'fix or remove the file, or point DOCKER_CONFIG elsewhere',
    });
  }
}

const HELPER_NAME = /^[A-Za-z0-9_.-]+$/;

/** Run `docker-credential-<name> <action>` with `input` on stdin; never through a shell. */
function runHelper(name: string, action: 'get' | 'store' | 'erase', input: string, env?: NodeJS.ProcessEnv): Promise<{ code: number; out: string }> {
  if (!HELPER_NAME.test(name)) {
    return Promise.reject(new MyBuildError('INVALID_ARGUMENT', `invalid credential helper name ${JSON.stringify(name.slice(0, 60))}`));
  }
  return new Promise((resolve, reject) => {
    // node:child_process loads only when a credential helper is used (~5 ms of start-up otherwise)
    const { spawn } = createRequire(import.meta.url)('node:child_process') as typeof import('node:child_process');
    const child = spawn(`docker-credential-${name}`, [action], { stdio: ['pipe', 'pipe', 'pipe'], env: env ?? process.env });
    const out: Buffer[] = [];
    child.stdout.on('data', (b: Buffer) => out.push(b));
    child.stderr.resume();
    child.on('error', (err) =>
      reject(
        new MyBuildError('UNAVAILABLE', `credential helper docker-credential-${name} cannot run: ${errnoCode(err) ?? err.message}`, {
          hint: `install docker-credential-${name} or remove it from config.json`,
        }),
      ),
    );
    child.on('close', (code) => resolve({ code: code ?? 1, out: Buffer.concat(out).toString('utf8') }));
    child.stdin.on('error', () => undefined);
    child.stdin.end(input);
  });
}

async function helperGet(name: string, serverUrl: string, env?: NodeJS.ProcessEnv): Promise<Credentials | undefined> {
  const { code, out } = await runHelper(name, 'get', serverUrl, env);
  if (code !== 0) {
    // "credentials not found in native keychain" (and anything else) means: none.
    return undefined;
  }
  let parsed: { Username?: string; Secret?: string };
  try {
    parsed = JSON.parse(out) as { Username?: string; Secret?: string };
  } catch {
    throw new MyBuildError('INVALID_ARGUMENT', `credential helper docker-credential-${name} printed no JSON for ${serverUrl}`);
  }
  if (!parsed.Secret) return undefined;
  // docker's convention: user "<token>" means the secret is an identity (refresh) token.
  if (parsed.Username === '<token>') return { identityToken: parsed.Secret };
  return { username: parsed.Username ?? '', password: parsed.Secret };
}

function fromAuthEntry(entry: NonNullable<DockerConfigFile['auths']>[string]): Credentials | undefined {
  if (entry.identitytoken) return { identityToken: entry.identitytoken, ...(entry.username ? { username: entry.username } : {}) };
  if (entry.registrytoken) return { registryToken: entry.registrytoken };
  if (entry.auth) {
    const text = Buffer.from(entry.auth, 'base64').toString('utf8');
    const colon = text.indexOf(':');
    // Passwords may contain ':'; user names cannot.
    if (colon < 0) return undefined;
    return { username: text.slice(0, colon), password: text.slice(colon + 1) };
  }
  if (entry.username && entry.password) return { username: entry.username, password: entry.password };
  return undefined;
}

/**
 * A provider reading docker's config.json once per host lookup (helpers are asked once per host
 * per provider; results are cached).
 */
export function dockerConfigCredentials(opts: DockerConfigOptions = {}): CredentialProvider {
  const cache = new Map<string, Promise<Credentials | undefined>>();
  return (host: string) => {
    const key = normaliseKey(host);
    let hit = cache.get(key);
    if (!hit) {
      hit = lookup(key, opts);
      cache.set(key, hit);
      hit.catch(() => cache.delete(key));
    }
    return hit;
  };
}

async function lookup(host: string, opts: DockerConfigOptions): Promise<Credentials | undefined> {
  const config = await readConfig(dockerConfigDir(opts));
  const serverUrl = configKeyFor(host);
  const helper = Object.entries(config.credHelpers ?? {}).find(([k]) => normaliseKey(k) === host)?.[1];
  if (helper) return helperGet(helper, serverUrl, opts.env);
  if (config.credsStore) {
    const found = await helperGet(config.credsStore, serverUrl, opts.env);
    if (found) return found;
  }
  for (const [k, entry] of Object.entries(config.auths ?? {})) {
    if (normaliseKey(k) === host) {
      const creds = fromAuthEntry(entry);
      if (creds) return creds;
    }
  }
  return undefined;
}

/** Credentials from a fixed table keyed by host as references name it (`docker.io`, `host:port`). */
export function staticCredentials(table: Record<string, Credentials>): CredentialProvider {
  const byHost = new Map(Object.entries(table).map(([k, v]) => [normaliseKey(k), v]));
  return (host) => Promise.resolve(byHost.get(normaliseKey(host)));
}

/** Try providers in order; the first that knows the host wins. */
export function chainCredentials(...providers: CredentialProvider[]): CredentialProvider {
  return async (host) => {
    for (const p of providers) {
      const c = await p(host);
      if (c) return c;
    }
    return undefined;
  };
}

async function writeConfig(dir: string, config: DockerConfigFile): Promise<void> {
  await mkdir(dir, { recursive: true, mode: 0o700 });
  const file = join(dir, 'config.json');
  const tmp = join(dirname(file), `.config.json.${randomBytes(6).toString('hex')}.tmp`);
  try {
    await writeFile(tmp, `${JSON.stringify(config, null, '\t')}\n`, { mode: 0o600 });
    await chmod(tmp, 0o600);
    await rename(tmp, file);
  } catch (err) {
    await rm(tmp, { force: true });
    throw err;
  }
}

function helperFor(config: DockerConfigFile, host: string): string | undefined {
  return Object.entries(config.credHelpers ?? {}).find(([k]) => normaliseKey(k) === host)?.[1] ?? config.credsStore;
}

/**
 * Store credentials the way `docker login` does: in the credential helper when one is
 * configured for the host (config.json then keeps an empty `auths` entry), else base64 in
 * `auths`. The file is written atomically with mode 0600. `registry` is a reference domain
 * (`docker.io`, `host:port`).
 */
export async function saveCredentials(registry: string, creds: Credentials, opts: DockerConfigOptions = {}): Promise<void> {
  const dir = dockerConfigDir(opts);
  const config = await readConfig(dir);
  const host = normaliseKey(registry);
  const key = configKeyFor(host);
  const auths = { ...config.auths };
  for (const k of Object.keys(auths)) if (normaliseKey(k) === host) delete auths[k];
  const helper = helperFor(config, host);
  const secret = creds.identityToken ?? creds.password ?? '';
  const username = creds.identityToken ? '<token>' : (creds.username ?? '');
  if (helper) {
    const { code, out } = await runHelper(helper, 'store', JSON.stringify({ ServerURL: key, Username: username, Secret: secret }), opts.env);
    if (code !== 0) {
      throw new MyBuildError('UNAVAILABLE', `credential helper docker-credential-${helper} could not store credentials for ${registry}: ${out.trim().slice(0, 200)}`);
    }
    auths[key] = {};
  } else if (creds.identityToken) {
    auths[key] = { identitytoken: creds.identityToken, ...(creds.username ? { auth: Buffer.from(`${creds.username}:`).toString('base64') } : {}) };
  } else {
    auths[key] = { auth: Buffer.from(`${username}:${secret}`).toString('base64') };
  }
  await writeConfig(dir, { ...config, auths });
}

/** Remove stored credentials for a registry (helper `erase` too). True when something was removed. */
export async function removeCredentials(registry: string, opts: DockerConfigOptions = {}): Promise<boolean> {
  const dir = dockerConfigDir(opts);
  const config = await readConfig(dir);
  const host = normaliseKey(registry);
  const auths = { ...config.auths };
  let removed = false;
  for (const k of Object.keys(auths)) {
    if (normaliseKey(k) === host) {
      delete auths[k];
      removed = true;
    }
  }
  const helper = helperFor(config, host);
  if (helper) {
    const { code } = await runHelper(helper, 'erase', configKeyFor(host), opts.env);
    removed ||= code === 0;
  }
  if (removed) await writeConfig(dir, { ...config, auths });
  return removed;
}
