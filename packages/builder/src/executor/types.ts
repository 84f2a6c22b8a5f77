/** The executor's options, result and progress events. */
import type { SecureContext } from 'node:tls';
import type { Compression, Descriptor, Digest, ImageConfig } from '@mybuild/oci';
import type { Store } from '@mybuild/layer-store';
import type { RegistryClient } from '@mybuild/registry-client';
import type { PlatformSpec } from '../frontend/platform.js';

/** A `--secret`: a file on the host, or a value (from an environment variable). */
export type SecretSource = { file: string } | { value: Buffer };

export interface BuildOptions {
  /** The store the image goes to; it must have a snapshotter (the overlay one). */
  store: Store;
  /** The build context directory. */
  contextDir: string;
  /** The Dockerfile's text. */
  dockerfile: string;
  /** Its host path, for `<Dockerfile>.dockerignore` (default: none). */
  dockerfilePath?: string;
  /** The name errors use (`Dockerfile:12`); default "Dockerfile". */
  fileName?: string;
  buildArgs?: Record<string, string>;
  target?: string;
  labels?: Record<string, string>;
  platform?: PlatformSpec;
  /** `-t`: names to tag the result with (none: the image is recorded untagged). */
  tags?: string[];
  /** `--no-cache`: run every step again (results still go into the cache). */
  noCache?: boolean;
  /** `--pull`: look base images up in the registry even when the store has them. */
  pull?: boolean;
  /** The network RUN steps get unless they say `--network` (default host). */
  network?: 'host' | 'none';
  /** `--secret id=...`: by id. */
  secrets?: Record<string, SecretSource>;
  /**
   * Pulls base images the store lacks (a client, or a function making one when first needed);
   * without one, such an image is an error.
   */
  registry?: RegistryClient | (() => Promise<RegistryClient>);
  /** Progress events (see {@link BuildEvent}). */
  onEvent?: (e: BuildEvent) => void;
  signal?: AbortSignal;
  /** The TLS context for ADD of https URLs, asked for when one is fetched (default: Node's). */
  httpsContext?: () => Promise<SecureContext | undefined>;
  /** Stages built at once (default 2). */
  concurrency?: number;
  /** Sandbox state dir and OCI runtime (defaults: the sandbox's). */
  sandbox?: { stateDir?: string; runtime?: string };
}

export interface BuildResult {
  /** The image ID: the config's digest. */
  imageId: Digest;
  /** The manifest as stored (layers uncompressed, as build layers are kept). */
  manifest: Descriptor;
  config: ImageConfig;
  /** Names tagged (normalised as the store keeps them). */
  tags: string[];
  /** Steps that ran, and steps that came from the cache. */
  stepsRun: number;
  stepsCached: number;
}

/**
 * Progress, in BuildKit's vertex model: a vertex starts, may log output and status lines, and
 * ends (done, cached or failed). Ids count up from 1 in the order vertices start.
 */
export type BuildEvent =
  | { type: 'vertex'; id: number; name: string }
  | { type: 'status'; id: number; text: string }
  | { type: 'log'; id: number; stream: 'stdout' | 'stderr'; data: Buffer }
  | { type: 'done'; id: number; cached?: boolean; error?: string; canceled?: boolean }
  | { type: 'warning'; message: string; where?: string };

/** What a layer of the image being built is, in the store. */
export interface LayerRef {
  diffId: Digest;
  /** The blob in the content store (uncompressed for build layers; as pulled for base layers). */
  desc: Descriptor;
}

export type { Compression };
