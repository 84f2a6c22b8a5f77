/**
 * `$MYBUILD_CONFIG/registries.json`: per-registry mirrors, insecure flags and CA files.
 *
 * ```json
 * {
 *   "registries": {
 *     "docker.io": { "mirrors": ["mirror.internal:5000", "http://10.0.0.5:5000"] },
 *     "build.local:5000": { "insecure": true },
 *     "corp.example.com": { "caFiles": ["/etc/ssl/corp-ca.pem"] }
 *   }
 * }
 * ```
 */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { errnoCode, MyBuildError } from '@mybuild/oci';

export interface RegistryConfig {
  /** Hosts (`host[:port]`, optionally `http://`/`https://`) tried before this registry for pulls. */
  mirrors?: string[];
  /** Allow plain http and unverified TLS. */
  insecure?: boolean;
  /** Extra CA files trusted for this registry. */
  caFiles?: string[];
}

export interface RegistriesFile {
  registries?: Record<string, RegistryConfig>;
}

/** The options of {@link RegistryClientOptions} a registries.json provides. */
export interface RegistriesSettings {
  insecure: string[];
  mirrors: Record<string, string[]>;
  registryCaFiles: Record<string, string[]>;
}

/** Default location: `$MYBUILD_CONFIG/registries.json`, undefined when MYBUILD_CONFIG is unset. */
export function defaultRegistriesFile(env: NodeJS.ProcessEnv = process.env): string | undefined {
  return env.MYBUILD_CONFIG ? join(env.MYBUILD_CONFIG, 'registries.json') : undefined;
}

/** Read a registries.json; a missing file means no settings. */
export function loadRegistriesConfig(file: string | undefined = defaultRegistriesFile()): RegistriesSettings {
  const out: RegistriesSettings = { insecure: [], mirrors: {}, registryCaFiles: {} };
  if (file === undefined) return out;
  let parsed: RegistriesFile;
  try {
    parsed = JSON.parse(readFileSync(file, 'utf8')) as RegistriesFile;
  } catch (err) {
    if (errnoCode(err) === 'ENOENT') return out;
    throw new MyBuildError('INVALID_ARGUMENT', `cannot read ${file}: ${(err as Error).message}`, { hint: 'registries.json must be JSON like {"registries": {"host:port": {"mirrors": [...], "insecure": true, "caFiles": [...]}}}' });
  }
  for (const [host, cfg] of Object.entries(parsed.registries ?? {})) {
    if (typeof cfg !== 'object' || cfg === null) throw new MyBuildError('INVALID_ARGUMENT', `${file}: registries.${host} must be an object`);
    if (cfg.insecure === true) out.insecure.push(host);
    if (Array.isArray(cfg.mirrors)) out.mirrors[host] = cfg.mirrors.map(String);
    if (Array.isArray(cfg.caFiles)) out.registryCaFiles[host] = cfg.caFiles.map(String);
  }
  return out;
}
