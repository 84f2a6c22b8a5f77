/**
 * The planner's working state: what each stage looks like while its instructions are
 * dispatched (BuildKit's dispatchState), and helpers shared by the dispatch functions.
 */
import { type ContainerConfig, createHash, type HealthConfig, type ImageConfig, parseReference } from '@mybuild/oci';
import { dfError, didYouMean } from './errors.js';
import { goQuote } from './gofmt.js';
import type { ArgDefinition, Instruction, StageDefinition } from './instructions.js';
import { LexError, type EnvGetter, type ShellLex } from './lexer.js';
import { formatPlatform, type PlatformSpec } from './platform.js';
import type { HistoryStep, ImageRequirement, PlanOptions, PlanStep, PlanWarning } from './plan-types.js';

export const HISTORY_COMMENT = 'buildkit.dockerfile.v0';
export const DEFAULT_PATH_ENV = '/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin';
/** Build args that need no ARG and are never reported as unused. */
export const PROXY_ARGS = ['HTTP_PROXY', 'HTTPS_PROXY', 'FTP_PROXY', 'NO_PROXY', 'ALL_PROXY'];
export const PLATFORM_ARGS = [
  'BUILDPLATFORM',
  'BUILDOS',
  'BUILDOSVERSION',
  'BUILDARCH',
  'BUILDVARIANT',
  'TARGETPLATFORM',
  'TARGETOS',
  'TARGETOSVERSION',
  'TARGETARCH',
  'TARGETVARIANT',
  'TARGETSTAGE',
];
/** Build args BuildKit interprets itself; they never become env. */
export const NON_ENV_ARGS = new Set(['BUILDKIT_SBOM_SCAN_CONTEXT', 'BUILDKIT_SBOM_SCAN_STAGE']);

/** An ordered KEY=VALUE list where setting a key moves it to the end (llb.EnvList). */
export class EnvList implements EnvGetter {
  private readonly map = new Map<string, string>();
  constructor(entries: Iterable<[string, string]> = []) {
    for (const [k, v] of entries) this.set(k, v);
  }
  static fromList(list: readonly string[]): EnvList {
    return new EnvList(list.map((e) => splitKeyValue(e)));
  }
  get(key: string): string | undefined {
    return this.map.get(key);
  }
  keys(): string[] {
    return [...this.map.keys()];
  }
  set(key: string, value: string): void {
    this.map.delete(key);
    this.map.set(key, value);
  }
  clone(): EnvList {
    return new EnvList(this.map);
  }
  toList(): string[] {
    return [...this.map].map(([k, v]) => `${k}=${v}`);
  }
}

export function splitKeyValue(e: string): [string, string] {
  const eq = e.indexOf('=');
  return eq < 0 ? [e, ''] : [e.slice(0, eq), e.slice(eq + 1)];
}

/** The image being built by a stage, with docker's mutable view of the config. */
export interface WorkingImage {
  os: string;
  architecture: string;
  variant?: string;
  author?: string;
  config: ContainerConfig;
}

export interface StageState {
  image: WorkingImage;
  /** The env RUN sees and variables expand against: image env plus build args (llb state env). */
  env: EnvList;
  dir: string;
  user: string;
  /** ARGs in scope with their values, in declaration order (for `RUN |N K=V ...`). */
  buildArgs: ArgDefinition[];
  workdirSet: boolean;
  cmdLine?: number;
  entrypointLine?: number;
  healthcheckLine?: number;
}

export type SourceRef = { kind: 'stage'; index: number } | { kind: 'image'; ref: string } | undefined;

export interface CommandRef {
  ins: Instruction;
  onbuild: boolean;
  /** COPY --from: one source; RUN: one per mount (undefined = context / scratch). */
  sources: SourceRef[];
}

export interface StageNode {
  index: number;
  def: StageDefinition;
  name: string | undefined;
  id: string;
  line: number;
  baseName: string;
  explicitPlatform: PlatformSpec | undefined;
  base: { kind: 'scratch' } | { kind: 'image'; ref: string } | { kind: 'stage'; index: number };
  commands: CommandRef[];
  /** Stage dependencies other than the base, with the line that creates them. */
  deps: Map<number, number>;
  onBuildInit: boolean;
  state?: StageState;
  platform?: PlatformSpec;
  steps: PlanStep[];
}

export interface Ctx {
  fileName: string;
  shlex: ShellLex;
  globalArgs: EnvList;
  buildArgs: Record<string, string>;
  proxyEnv: string[];
  targetPlatform: PlatformSpec;
  buildPlatform: PlatformSpec;
  implicitTarget: boolean;
  nodes: StageNode[];
  byName: Map<string, StageNode>;
  resolveImage: PlanOptions['resolveImage'];
  images: Map<string, ImageRequirement>;
  warnings: PlanWarning[];
  declaredArgs: Set<string>;
}

export function where(ctx: { fileName: string }, line: number | undefined): string | undefined {
  return line === undefined ? undefined : `${ctx.fileName}:${line}`;
}

export function warn(ctx: Ctx, rule: string, message: string, line?: number): void {
  const w: PlanWarning = { rule, message };
  const at = where(ctx, line);
  if (at) w.where = at;
  ctx.warnings.push(w);
}

export function expand(ctx: Ctx, word: string, env: EnvGetter, line: number): string {
  try {
    return ctx.shlex.processWord(word, env);
  } catch (err) {
    if (err instanceof LexError) throw dfError(err.message, line);
    throw err;
  }
}

export function stagePlatform(ctx: Ctx, node: StageNode): PlatformSpec {
  return node.explicitPlatform ?? ctx.targetPlatform;
}

export function resolve(ctx: Ctx, ref: string, platform: PlatformSpec): ImageConfig | undefined {
  return ctx.resolveImage?.(ref, platform);
}

export function validateReference(ctx: Ctx, ref: string, line: number): void {
  try {
    parseReference(ref);
  } catch {
    const names = ctx.nodes.filter((n) => n.name !== undefined).map((n) => n.name!);
    throw dfError(
      `failed to parse stage name ${goQuote(ref)}: invalid reference format`,
      line,
      didYouMean(ref, names, false) ?? 'an image reference is lower-case, like alpine:3.20 or registry.example.com/team/app:1.2',
    );
  }
}

export function requireImage(ctx: Ctx, ref: string, platform: PlatformSpec, stage: number, line: number): boolean {
  validateReference(ctx, ref, line);
  const key = `${ref}\u0000${formatPlatform(platform)}`;
  let req = ctx.images.get(key);
  if (!req) {
    req = { ref, platform, resolved: resolve(ctx, ref, platform) !== undefined, usedBy: [] };
    ctx.images.set(key, req);
  }
  if (!req.usedBy.includes(stage)) req.usedBy.push(stage);
  return req.resolved;
}

export function emptyImage(p: PlatformSpec): WorkingImage {
  const img: WorkingImage = { os: p.os, architecture: p.arch, config: { WorkingDir: '/' } };
  if (p.variant) img.variant = p.variant;
  if (p.os !== 'windows') img.config.Env = [`PATH=${DEFAULT_PATH_ENV}`];
  return img;
}

export function cloneConfig(c: ContainerConfig | undefined): ContainerConfig {
  const src = c ?? {};
  const out: ContainerConfig = { ...src };
  if (src.Env) out.Env = [...src.Env];
  if (src.Cmd) out.Cmd = [...src.Cmd];
  if (src.Entrypoint) out.Entrypoint = [...src.Entrypoint];
  if (src.OnBuild) out.OnBuild = [...src.OnBuild];
  if (src.Shell) out.Shell = [...src.Shell];
  if (src.ExposedPorts) out.ExposedPorts = { ...src.ExposedPorts };
  if (src.Volumes) out.Volumes = { ...src.Volumes };
  if (src.Labels) out.Labels = { ...src.Labels };
  if (src.Healthcheck) out.Healthcheck = { ...src.Healthcheck, ...(src.Healthcheck.Test ? { Test: [...src.Healthcheck.Test] } : {}) };
  return out;
}

export function cloneState(s: StageState): StageState {
  const image: WorkingImage = { ...s.image, config: cloneConfig(s.image.config) };
  delete image.config.OnBuild; // triggers do not carry over to a child stage
  return {
    image,
    env: s.env.clone(),
    dir: s.dir,
    user: s.user,
    buildArgs: s.buildArgs.map((a) => ({ ...a })),
    workdirSet: s.workdirSet,
  };
}

export function historyEntry(createdBy: string, emptyLayer: boolean): HistoryStep {
  return { created_by: createdBy, empty_layer: emptyLayer, comment: HISTORY_COMMENT };
}

export function hashKey(value: unknown): string {
  return createHash('sha256').update(JSON.stringify(value)).digest('hex');
}

export function withShell(image: WorkingImage, args: string[]): string[] {
  const shell = image.config.Shell && image.config.Shell.length > 0 ? [...image.config.Shell] : image.os === 'windows' ? ['cmd', '/S', '/C'] : ['/bin/sh', '-c'];
  return [...shell, args.join(' ')];
}

export function addEnv(list: string[] | undefined, key: string, value: string): string[] {
  const out = [...(list ?? [])];
  const i = out.findIndex((e) => splitKeyValue(e)[0] === key);
  if (i >= 0) out[i] = `${key}=${value}`;
  else out.push(`${key}=${value}`);
  return out;
}

/** The config as docker serialises it: empty values omitted, maps sorted. */
export function finalizeConfig(c: ContainerConfig): ContainerConfig {
  const out: ContainerConfig = {};
  const sorted = <T>(o: Record<string, T>): Record<string, T> => Object.fromEntries(Object.keys(o).sort().map((k) => [k, o[k]!]));
  if (c.User) out.User = c.User;
  if (c.ExposedPorts && Object.keys(c.ExposedPorts).length) out.ExposedPorts = sorted(c.ExposedPorts);
  if (c.Env && c.Env.length) out.Env = [...c.Env];
  if (c.Entrypoint && c.Entrypoint.length) out.Entrypoint = [...c.Entrypoint];
  if (c.Cmd && c.Cmd.length) out.Cmd = [...c.Cmd];
  if (c.Volumes && Object.keys(c.Volumes).length) out.Volumes = sorted(c.Volumes);
  if (c.WorkingDir) out.WorkingDir = c.WorkingDir;
  if (c.Labels && Object.keys(c.Labels).length) out.Labels = sorted(c.Labels);
  if (c.StopSignal) out.StopSignal = c.StopSignal;
  if (c.ArgsEscaped) out.ArgsEscaped = true;
  if (c.Healthcheck) {
    const h: HealthConfig = {};
    if (c.Healthcheck.Test && c.Healthcheck.Test.length) h.Test = [...c.Healthcheck.Test];
    for (const k of ['Interval', 'Timeout', 'StartPeriod', 'StartInterval', 'Retries'] as const) {
      const v = c.Healthcheck[k];
      if (v) h[k] = v;
    }
    out.Healthcheck = h;
  }
  if (c.OnBuild && c.OnBuild.length) out.OnBuild = [...c.OnBuild];
  if (c.Shell && c.Shell.length) out.Shell = [...c.Shell];
  return out;
}

