/**
 * What the registry commands share: a RegistryClient built from the global flags
 * (`--insecure-registry`, `--debug`), `$MYBUILD_CONFIG/registries.json` (mirrors, insecure
 * registries, CA files) and the environment (docker's config.json for credentials,
 * `MYBUILD_CA_FILE`, NODE_EXTRA_CA_CERTS when the launcher kept it from Node: extraca.ts),
 * and a renderer of the client's transfer events in docker's words.
 */
import { join } from 'node:path';
import { type Digest, familiarName, MyBuildError, parseReference, type Reference, shortId } from '@mybuild/oci';
import {
  defaultRegistriesFile,
  fileSchemeMemo,
  loadRegistriesConfig,
  type ProgressEvent as TransferEvent,
  RegistryClient,
  type RegistryClientOptions,
} from '@mybuild/registry-client';
import type { GlobalOptions } from './args.js';
import { userCacheDir } from './cachedir.js';
import { deferredCaFiles } from './extraca.js';
import { VERSION } from './main.js';
import { Progress, type ProgressMode } from './progress.js';

/** Blob transfers at once (`MYBUILD_REGISTRY_CONCURRENCY` overrides; the client's default is 6, as skopeo's). */
function concurrencyFromEnv(env: NodeJS.ProcessEnv): number | undefined {
  const raw = env.MYBUILD_REGISTRY_CONCURRENCY;
  if (raw === undefined || raw === '') return undefined;
  const n = Number(raw);
  if (!Number.isInteger(n) || n < 1 || n > 64) {
    throw new MyBuildError('INVALID_ARGUMENT', `MYBUILD_REGISTRY_CONCURRENCY must be a number from 1 to 64, not ${JSON.stringify(raw.slice(0, 20))}`);
  }
  return n;
}

/**
 * The client for one command. Insecure registries are the union of `--insecure-registry` and
 * registries.json's `insecure: true` entries; debug lines (one per request, credentials
 * redacted by the client) go to stderr with `--debug`. Which loopback registries speak plain
 * http is remembered in the user's cache directory (registries-http.json), so that a command
 * does not try TLS on them first again.
 */
export function registryClient(global: GlobalOptions, extra: Partial<RegistryClientOptions> = {}, env: NodeJS.ProcessEnv = process.env): RegistryClient {
  const file = defaultRegistriesFile(env);
  const settings = loadRegistriesConfig(file);
  const concurrency = concurrencyFromEnv(env);
  const cache = userCacheDir(env);
  const extraCa = deferredCaFiles();
  if (global.debug && extraCa.length > 0) process.stderr.write(`mybuild: debug: NODE_EXTRA_CA_CERTS ${extraCa[0]} is trusted on mybuild's own TLS connections (kept from Node's start)\n`);
  return new RegistryClient({
    userAgent: `mybuild/${VERSION}`,
    insecure: [...settings.insecure, ...global.insecureRegistries],
    mirrors: settings.mirrors,
    registryCaFiles: settings.registryCaFiles,
    caFiles: extraCa,
    ...(concurrency === undefined ? {} : { concurrency }),
    ...(cache === undefined ? {} : { schemes: fileSchemeMemo(join(cache, 'registries-http.json')) }),
    ...(global.debug ? { debug: (line: string) => process.stderr.write(`mybuild: debug: ${line}\n`) } : {}),
    env,
    ...extra,
  });
}

/**
 * A registry as `login`/`logout` take it: `host[:port]`, or a URL such as
 * `https://index.docker.io/v1/`; none means Docker Hub. Returned as a reference domain
 * (`docker.io`, `localhost:5000`).
 */
export function registryHost(arg: string | undefined): string {
  if (arg === undefined || arg === '') return 'docker.io';
  let host = arg.trim().replace(/^[a-z][a-z0-9+.-]*:\/\//i, '');
  const slash = host.indexOf('/');
  if (slash >= 0) host = host.slice(0, slash);
  host = host.toLowerCase();
  if (host === 'index.docker.io' || host === 'registry-1.docker.io' || host === 'docker.io') return 'docker.io';
  // Let the reference grammar judge the host: `HOST/x` must parse with HOST as its domain.
  let ref: Reference;
  try {
    ref = parseReference(`${host}/x`);
  } catch {
    throw new MyBuildError('INVALID_ARGUMENT', `invalid registry ${JSON.stringify(arg.slice(0, 100))}`, { hint: 'a registry looks like host[:port], e.g. registry.example.com or localhost:5000' });
  }
  if (ref.domain !== host) {
    throw new MyBuildError('INVALID_ARGUMENT', `invalid registry ${JSON.stringify(arg.slice(0, 100))}`, {
      hint: 'a registry host has a dot or a port (registry.example.com, localhost:5000), or is localhost',
    });
  }
  return host;
}

/** `repo:tag` / `repo@digest` as docker's pull prints it: `1.2: Pulling from team/app`. */
export function tagOrDigest(ref: Reference): string {
  return ref.digest ?? ref.tag ?? 'latest';
}

/** The name `pull` tags and prints: the familiar form (`alpine:3.20`, `localhost:5000/team/app:1.2`). */
export function familiarTagged(ref: Reference): string {
  return `${familiarName(ref)}${ref.tag !== undefined && ref.digest === undefined ? `:${ref.tag}` : ''}${ref.digest !== undefined ? `@${ref.digest}` : ''}`;
}

function isConfig(mediaType: string): boolean {
  return /config/.test(mediaType);
}

/**
 * Renders the client's per-blob events: docker's lines on a terminal and in plain logs
 * (`a1b2c3d4e5f6: Pull complete`, `Layer already exists`, `Mounted from team/base`) plus, on a
 * terminal, one live line with the bytes moved so far; with `rawjson`, one JSON object per
 * event (`{"id": digest, "action": "pull:done", "current", "total", "time"}`).
 */
export class TransferProgress {
  readonly progress: Progress;
  readonly #direction: 'pull' | 'push';
  readonly #mountFrom: string | undefined;
  readonly #moved = new Map<Digest, number>();
  readonly #totals = new Map<Digest, number>();
  readonly #started = new Set<Digest>();
  /** Blobs written (pull) or uploaded/mounted (push); skipped ones are not counted. */
  transferred = 0;
  skipped = 0;

  constructor(mode: ProgressMode, direction: 'pull' | 'push', opts: { mountFrom?: string } = {}) {
    this.progress = new Progress(mode);
    this.#direction = direction;
    this.#mountFrom = opts.mountFrom;
  }

  /** The `onProgress` to hand to the client. */
  readonly onProgress = (e: TransferEvent): void => {
    const { progress } = this;
    if (e.status === 'exists') this.skipped++;
    if (e.status === 'done' || e.status === 'mounted') this.transferred++;
    if (progress.mode === 'quiet') return;
    if (progress.mode === 'rawjson') {
      const event = { id: e.digest, action: `${e.direction}:${e.status}`, current: e.bytes, total: e.total };
      if (e.status === 'progress') progress.update(event);
      else progress.done(event);
      return;
    }
    const id = shortId(e.digest);
    // Docker shows layers only; configs (and manifests) move silently.
    const shown = !isConfig(e.mediaType);
    switch (e.status) {
      case 'start':
        this.#started.add(e.digest);
        this.#totals.set(e.digest, e.total);
        this.#moved.set(e.digest, 0);
        break;
      case 'progress':
        this.#moved.set(e.digest, e.bytes);
        this.#live();
        break;
      case 'done':
        this.#finish(e.digest, e.total);
        if (shown) this.#line(id, this.#direction === 'pull' ? 'Pull complete' : 'Pushed', e.total);
        this.#live();
        break;
      case 'exists':
        this.#finish(e.digest, 0);
        if (shown) this.#line(id, this.#direction === 'pull' ? 'Already exists' : 'Layer already exists');
        break;
      case 'mounted':
        this.#finish(e.digest, 0);
        if (shown) this.#line(id, this.#mountFrom ? `Mounted from ${this.#mountFrom}` : 'Mounted');
        break;
    }
  };

  /** A blob left the live count; skipped ones leave the byte totals too. */
  #finish(digest: Digest, moved: number): void {
    this.#started.delete(digest);
    if (moved > 0) this.#moved.set(digest, moved);
    else {
      this.#moved.delete(digest);
      this.#totals.delete(digest);
    }
  }

  /** `a1b2c3d4e5f6: Pull complete 12.3MB` (the live line is cleared first). */
  #line(id: string, text: string, total?: number): void {
    this.progress.done({ action: `${id}:`, id: text, ...(total === undefined ? {} : { total }) });
  }

  /** On a terminal: `Downloading 2 blobs 123MB / 1.07GB`. */
  #live(): void {
    const active = this.#started.size;
    if (this.progress.mode !== 'tty' || active === 0) return;
    let current = 0;
    let total = 0;
    for (const [d, t] of this.#totals) {
      total += t;
      current += this.#moved.get(d) ?? 0;
    }
    const verb = this.#direction === 'pull' ? 'Downloading' : 'Uploading';
    this.progress.update({ action: verb, id: `${active} blob${active === 1 ? '' : 's'}`, current, total });
  }

  /** A note for people (not in rawjson or quiet mode), through the progress stream. */
  note(text: string): void {
    if (this.progress.mode === 'quiet' || this.progress.mode === 'rawjson') return;
    const space = text.indexOf(' ');
    this.progress.done(space < 0 ? { action: text, id: '' } : { action: text.slice(0, space), id: text.slice(space + 1) });
  }

  end(): void {
    this.progress.end();
  }
}

/** The progress mode of a registry command: `-q` is quiet, otherwise --progress (a global flag, accepted anywhere). */
export function progressMode(global: GlobalOptions, local: { quiet?: boolean | undefined }): ProgressMode {
  return local.quiet ? 'quiet' : global.progress;
}
