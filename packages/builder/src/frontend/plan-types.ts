/**
 * The build plan: pure data the executor runs. Built by {@link planBuild}; nothing in it
 * needs the Dockerfile text again.
 */
import type { ContainerConfig, ImageConfig } from '@mybuild/oci';
import type { HealthcheckSpec } from './instructions.js';
import type { CacheSharing } from './mounts.js';
import type { PlatformSpec } from './platform.js';

export type { PlatformSpec } from './platform.js';

export interface PlanOptions {
  /** `--build-arg K=V` values. */
  buildArgs?: Record<string, string>;
  /** `--target`: the stage to build (default: the last one). */
  target?: string;
  /** `--platform`: the target platform (default: the build platform). */
  platform?: PlatformSpec;
  /** The platform the build runs on (default: this machine). */
  buildPlatform?: PlatformSpec;
  /** Name used in error locations (`Dockerfile:12`); default "Dockerfile". */
  fileName?: string;
  /** `--label K=V`: added to the target image's labels. */
  labels?: Record<string, string>;
  /**
   * Configs of images the plan refers to (FROM, `COPY --from=image`, `RUN --mount=from=image`),
   * already fetched by the caller. Without a config an image counts as empty (no env, no
   * workdir, no ONBUILD triggers) and is listed in {@link BuildPlan.images} as unresolved:
   * fetch those and plan again for the exact result (docker resolves them while planning).
   */
  resolveImage?: (ref: string, platform: PlatformSpec) => ImageConfig | undefined;
}

export interface PlanWarning {
  /** A short rule name (BuildKit's lint rule names where one exists). */
  rule: string;
  message: string;
  /** `Dockerfile:12`, when the warning is about a line. */
  where?: string;
}

export interface ImageRequirement {
  /** The reference as written after variable expansion (`alpine:3.20`, `docker.io/x/y@sha256:…`). */
  ref: string;
  platform: PlatformSpec;
  /** A config was supplied through {@link PlanOptions.resolveImage}. */
  resolved: boolean;
  /** Indices of the stages that use it. */
  usedBy: number[];
}

export type StageBase =
  | { kind: 'scratch' }
  | { kind: 'image'; ref: string; platform: PlatformSpec; resolved: boolean }
  | { kind: 'stage'; index: number };

/** Where COPY --from / RUN --mount=from takes files from. */
export type FileSource =
  | { kind: 'context' }
  | { kind: 'scratch' }
  | { kind: 'stage'; index: number }
  | { kind: 'image'; ref: string; platform: PlatformSpec };

export interface HistoryStep {
  created_by: string;
  empty_layer: boolean;
  comment: string;
}

interface StepBase {
  /** The instruction keyword, upper-case. */
  instruction: string;
  line: number;
  endLine: number;
  /** The instruction as written (one line, continuations joined). */
  original: string;
  /** An ONBUILD trigger of the base image (or base stage) run as if written after FROM. */
  onbuild: boolean;
  /** The history entry this step adds to the image (ONBUILD adds none). */
  history: HistoryStep | undefined;
  /**
   * Hex SHA-256 of everything in the step that affects its result, except the parent
   * snapshot and the content of source files (the executor mixes those in).
   */
  cacheKey: string;
  /** The image config after this step (docker's omitempty applied). */
  config: ContainerConfig;
}

export interface RunMount {
  type: 'bind' | 'cache' | 'tmpfs' | 'secret' | 'ssh';
  /** Absolute path in the container. */
  target: string;
  readOnly: boolean;
  /** bind/cache: where the files come from. */
  from: FileSource;
  /** bind/cache: path inside `from` ("/" = its root). */
  source: string;
  cache?: { id: string; sharing: CacheSharing };
  tmpfs?: { size: number };
  secret?: { id: string; required: boolean; env?: string; target?: string };
  ssh?: { id: string; required: boolean; target?: string };
  uid?: number;
  gid?: number;
  mode?: number;
}

export interface RunStep extends StepBase {
  kind: 'run';
  /** The process argv (shell already prepended for the shell form). */
  args: string[];
  /** The process environment: image env plus build args in scope (`KEY=VALUE`). */
  env: string[];
  /** Proxy variables from --build-arg, set for the process but never recorded or cached. */
  proxyEnv: string[];
  user: string;
  workdir: string;
  mounts: RunMount[];
  network: 'default' | 'none' | 'host';
  security: 'sandbox' | 'insecure';
  /** Files to provide read-only to the process (a heredoc with a shebang runs as a script). */
  inlineFiles: { path: string; data: string; mode: number }[];
}

export type CopySourceItem =
  | { kind: 'path'; path: string }
  | { kind: 'url'; url: string; filename: string; unpack: boolean }
  | { kind: 'git'; url: string }
  | { kind: 'inline'; name: string; data: string };

export interface CopyStep extends StepBase {
  kind: 'copy';
  instruction: 'COPY' | 'ADD';
  from: FileSource;
  sources: CopySourceItem[];
  /** Absolute destination; a trailing "/" means "into this directory". */
  dest: string;
  /** `--chown` as written (user[:group], names or ids, resolved by the executor). */
  chown?: string;
  /** `--chmod`, octal. */
  chmod?: number;
  link: boolean;
  parents: boolean;
  excludes: string[];
  /** Unpack local tar archives (ADD, unless --unpack=false; never for COPY). */
  unpack: boolean;
  checksum?: string;
  keepGitDir?: boolean;
  /** The working directory at this step (relative `--parents` pivots and the like). */
  workdir: string;
}

export interface WorkdirStep extends StepBase {
  kind: 'workdir';
  /** Absolute directory to create (with parents) when missing. */
  path: string;
  /** Owner of created directories: the USER at that point ("" = root). */
  user: string;
}

/** A metadata instruction (ENV, LABEL, CMD, ARG, ...): a config change only, no layer. */
export interface ConfigStep extends StepBase {
  kind: 'config';
  /** MAINTAINER: the image author from here on. */
  author?: string;
}

export type PlanStep = RunStep | CopyStep | WorkdirStep | ConfigStep;

export interface StageImage {
  os: string;
  architecture: string;
  variant?: string;
  /** MAINTAINER */
  author?: string;
  /** The config after every instruction of the stage (docker's omitempty applied). */
  config: ContainerConfig;
}

export interface PlannedStage {
  /** Position in the Dockerfile (what `COPY --from=N` means). */
  index: number;
  /** `AS name`, lower-case. */
  name: string | undefined;
  /** The name, or `stage-N`. */
  id: string;
  /** Line of its FROM. */
  line: number;
  base: StageBase;
  /** The platform this stage builds for. */
  platform: PlatformSpec;
  /** Stages to build first: the base stage and every `--from` stage. */
  dependsOn: number[];
  steps: PlanStep[];
  image: StageImage;
}

export interface BuildPlan {
  fileName: string;
  escapeToken: string;
  /** Stages to build, in an order where each comes after what it depends on. */
  stages: PlannedStage[];
  /** Index of the stage whose image is the result. */
  target: number;
  /** Stage indices in groups: a group depends only on earlier groups, so its stages can run in parallel. */
  parallel: number[][];
  /** Images to fetch (configs and layers). */
  images: ImageRequirement[];
  platform: PlatformSpec;
  buildPlatform: PlatformSpec;
  warnings: PlanWarning[];
}

export type { HealthcheckSpec };
