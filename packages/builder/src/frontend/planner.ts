/**
 * Dockerfile → build plan, with the semantics of BuildKit's dockerfile2llb: global and
 * per-stage ARG scoping, variable expansion per instruction, the stage graph (--target,
 * FROM stage, COPY --from, RUN --mount=from), ONBUILD triggers, and for every stage the
 * image config and history docker would produce. Pure: no I/O.
 */
import { DockerfileError, dfError, suggest, toMyBuildError } from './errors.js';
import { goList, goQuote } from './gofmt.js';
import { normalizePath } from './gopath.js';
import { parseInstruction, parseInstructions, type Instruction } from './instructions.js';
import { EMPTY_ENV, ShellLex } from './lexer.js';
import { parseMount } from './mounts.js';
import { parseDockerfileText } from './parser.js';
import { formatPlatform, hostPlatform, normalizePlatform, parsePlatform, type PlatformSpec } from './platform.js';
import type { BuildPlan, PlanOptions, PlannedStage, StageBase } from './plan-types.js';
import { dispatch } from './dispatch.js';
import {
  DEFAULT_PATH_ENV,
  EnvList,
  PLATFORM_ARGS,
  PROXY_ARGS,
  cloneConfig,
  cloneState,
  emptyImage,
  expand,
  finalizeConfig,
  requireImage,
  resolve,
  stagePlatform,
  validateReference,
  warn,
  type CommandRef,
  type Ctx,
  type StageNode,
  type StageState,
  type WorkingImage,
} from './plan-state.js';

export { DEFAULT_PATH_ENV, finalizeConfig } from './plan-state.js';

/**
 * Plans the build of `dockerfileText`. Throws MyBuildError (INVALID_ARGUMENT, with
 * `where: 'Dockerfile:LINE'` and a hint) for anything docker would reject before running.
 */
export function planBuild(dockerfileText: string, options: PlanOptions = {}): BuildPlan {
  const fileName = options.fileName ?? 'Dockerfile';
  try {
    return plan(dockerfileText, options, fileName);
  } catch (err) {
    throw toMyBuildError(err, fileName);
  }
}

function plan(text: string, options: PlanOptions, fileName: string): BuildPlan {
  const parsed = parseInstructions(text);
  const buildPlatform = normalizePlatform(options.buildPlatform ?? hostPlatform());
  const targetPlatform = normalizePlatform(options.platform ?? buildPlatform);
  const buildArgs = { ...options.buildArgs };
  const ctx: Ctx = {
    fileName,
    shlex: new ShellLex(parsed.escapeToken),
    globalArgs: new EnvList(),
    buildArgs,
    proxyEnv: proxyEnv(buildArgs),
    targetPlatform,
    buildPlatform,
    implicitTarget: options.platform === undefined,
    nodes: [],
    byName: new Map(),
    resolveImage: options.resolveImage,
    images: new Map(),
    warnings: [],
    declaredArgs: new Set(),
  };

  for (const d of parsed.directives) {
    if (d.name === 'syntax') {
      warn(ctx, 'SyntaxDirectiveIgnored', `syntax directive ignored: ${d.value} (mybuild uses its built-in Dockerfile frontend)`, d.line);
    }
  }
  for (const w of parsed.parserWarnings) warn(ctx, w.rule, w.message, w.line);

  // global scope: platform args, then ARGs before the first FROM
  const lastStage = parsed.stages[parsed.stages.length - 1]!;
  const targetName = options.target || lastStage.from.stageName || 'default';
  const defaults: [string, string][] = [
    ['BUILDPLATFORM', formatPlatform(buildPlatform)],
    ['BUILDOS', buildPlatform.os],
    ['BUILDOSVERSION', ''],
    ['BUILDARCH', buildPlatform.arch],
    ['BUILDVARIANT', buildPlatform.variant ?? ''],
    ['TARGETPLATFORM', formatPlatform(targetPlatform)],
    ['TARGETOS', targetPlatform.os],
    ['TARGETOSVERSION', ''],
    ['TARGETARCH', targetPlatform.arch],
    ['TARGETVARIANT', targetPlatform.variant ?? ''],
    ['TARGETSTAGE', targetName],
  ];
  for (const [k, v] of defaults) ctx.globalArgs.set(k, Object.hasOwn(buildArgs, k) ? buildArgs[k]! : v);
  for (const cmd of parsed.metaArgs) {
    for (const arg of cmd.args) {
      ctx.declaredArgs.add(arg.key);
      let value = arg.value;
      if (Object.hasOwn(buildArgs, arg.key)) value = buildArgs[arg.key];
      else if (value !== undefined) value = expand(ctx, value, ctx.globalArgs, cmd.line);
      if (value !== undefined) ctx.globalArgs.set(arg.key, value);
    }
  }

  // stages: expand FROM against the global scope (for every stage, as BuildKit does)
  const seenNames = new Set<string>();
  parsed.stages.forEach((def, index) => {
    const from = def.from;
    const baseName = expand(ctx, from.baseName, ctx.globalArgs, from.line);
    if (baseName === '') throw dfError(`base name (${from.baseName}) should not be blank`, from.line, 'set the ARG used in FROM, or give it a default before the first FROM');
    let explicitPlatform: PlatformSpec | undefined;
    if (from.platform !== undefined) {
      const p = expand(ctx, from.platform, ctx.globalArgs, from.line);
      if (p === '') throw dfError(`empty platform value from expression ${from.platform}`, from.line);
      try {
        explicitPlatform = parsePlatform(p, ctx.buildPlatform);
      } catch (err) {
        throw dfError(`failed to parse platform ${from.platform}: ${(err as Error).message}`, from.line, 'a platform looks like linux/amd64 or linux/arm64/v8');
      }
    }
    const name = from.stageName;
    if (name !== undefined) {
      if (name === 'scratch' || name === 'context') warn(ctx, 'ReservedStageName', `Stage name should not use the same name as reserved stage "${name}"`, from.line);
      if (seenNames.has(name)) warn(ctx, 'DuplicateStageName', `Duplicate stage name "${name}", stage names should be unique`, from.line);
      seenNames.add(name);
    }
    const earlier = ctx.byName.get(baseName);
    const node: StageNode = {
      index,
      def,
      name,
      id: name ?? `stage-${index}`,
      line: from.line,
      baseName,
      explicitPlatform,
      base: earlier ? { kind: 'stage', index: earlier.index } : baseName === 'scratch' ? { kind: 'scratch' } : { kind: 'image', ref: baseName },
      commands: [],
      deps: new Map(),
      onBuildInit: false,
      steps: [],
    };
    ctx.nodes.push(node);
    if (name !== undefined) ctx.byName.set(name, node);
  });

  // every image base must be a valid reference, reachable or not
  for (const n of ctx.nodes) if (n.base.kind === 'image') validateReference(ctx, n.base.ref, n.line);

  // the target
  let target = ctx.nodes[ctx.nodes.length - 1]!;
  if (options.target) {
    const t = ctx.byName.get(options.target.toLowerCase());
    if (!t) {
      const names = ctx.nodes.filter((n) => n.name !== undefined).map((n) => n.name!);
      const m = suggest(options.target, names, true);
      const list = names.length ? `stages: ${names.join(', ')}` : 'this Dockerfile has no named stages (FROM ... AS name)';
      throw dfError(`target stage ${goQuote(options.target)} could not be found`, undefined, m ? `did you mean ${m}? ${list}` : list);
    }
    target = t;
  }

  // the stage graph
  for (const node of ctx.nodes) {
    node.commands = node.def.commands.map((ins) => toCommand(ctx, ins, false));
    for (const c of node.commands) addDeps(node, c);
  }
  checkCircular(ctx);

  // reachable stages; ONBUILD triggers may add dependencies, so repeat until stable
  let reachable: Set<StageNode>;
  for (;;) {
    reachable = reachableFrom(ctx, target);
    let newDeps = false;
    for (const node of [...reachable].sort((a, b) => a.index - b.index)) {
      if (node.onBuildInit) continue;
      node.onBuildInit = true;
      const triggers: string[] = [];
      if (node.base.kind === 'stage') {
        for (const c of ctx.nodes[node.base.index]!.def.commands) if (c.kind === 'ONBUILD') triggers.push(c.expression);
      } else if (node.base.kind === 'image') {
        const cfg = resolve(ctx, node.base.ref, stagePlatform(ctx, node));
        for (const t of cfg?.config?.OnBuild ?? []) triggers.push(t);
      }
      if (triggers.length === 0) continue;
      const ins = expandOnBuildInternal(triggers, node.line);
      const cmds = ins.map((i) => toCommand(ctx, i, true));
      for (const c of cmds) if (addDeps(node, c)) newDeps = true;
      node.commands = [...cmds, ...node.commands];
    }
    if (!newDeps) break;
    checkCircular(ctx);
  }

  // dispatch the reachable stages in Dockerfile order
  const ordered = [...reachable].sort((a, b) => a.index - b.index);
  const dispatched = new Set<number>();
  for (const node of ordered) {
    dispatchStage(ctx, node, dispatched);
    dispatched.add(node.index);
  }

  // the result image
  const t = target.state!;
  if (options.labels && Object.keys(options.labels).length > 0) {
    t.image.config.Labels = { ...t.image.config.Labels, ...options.labels };
  }
  if (!ctx.implicitTarget) {
    const same = t.image.os === targetPlatform.os && t.image.architecture === targetPlatform.arch;
    t.image.os = targetPlatform.os;
    t.image.architecture = targetPlatform.arch;
    if (targetPlatform.variant || !same) {
      if (targetPlatform.variant) t.image.variant = targetPlatform.variant;
      else delete t.image.variant;
    }
  }

  // build args nobody declared (docker's classic builder warns about them)
  const unused = Object.keys(buildArgs)
    .filter((k) => !ctx.declaredArgs.has(k))
    .filter((k) => !PROXY_ARGS.includes(k.toUpperCase()) && !PLATFORM_ARGS.includes(k))
    .filter((k) => !k.startsWith('BUILDKIT_') && k !== 'SOURCE_DATE_EPOCH')
    .sort();
  if (unused.length > 0) warn(ctx, 'UnusedBuildArgs', `[Warning] One or more build-args ${goList(unused)} were not consumed`);

  // `# check=skip=Rule1,Rule2` (or skip=all) silences lint-style warnings, as in BuildKit
  const skip = checkSkips(parsed.directives.find((d) => d.name === 'check')?.value);
  const warnings = ctx.warnings.filter((w) => !(skip.has('all') ? LINT_RULES.has(w.rule) : skip.has(w.rule)));

  const stages: PlannedStage[] = ordered.map((n) => plannedStage(ctx, n));
  return {
    fileName,
    escapeToken: parsed.escapeToken,
    stages,
    target: target.index,
    parallel: parallelGroups(ordered),
    images: [...ctx.images.values()],
    platform: targetPlatform,
    buildPlatform,
    warnings,
  };
}

/** Warnings that are BuildKit lint rules (`# check=skip=...` applies to them). */
const LINT_RULES = new Set([
  'NoEmptyContinuation',
  'ReservedStageName',
  'DuplicateStageName',
  'LegacyKeyValueFormat',
  'MaintainerDeprecated',
  'WorkdirRelativePath',
  'MultipleInstructionsDisallowed',
  'JSONArgsRecommended',
  'ExposeInvalidFormat',
]);

function checkSkips(value: string | undefined): Set<string> {
  const out = new Set<string>();
  for (const part of (value ?? '').split(';')) {
    const eq = part.indexOf('=');
    if (eq < 0 || part.slice(0, eq).trim() !== 'skip') continue;
    for (const rule of part.slice(eq + 1).split(',')) if (rule.trim()) out.add(rule.trim());
  }
  return out;
}

/**
 * Parses ONBUILD triggers (from a base image's config) as instructions placed right after
 * FROM. `line` is the FROM line errors point at. Throws MyBuildError.
 */
export function expandOnBuild(triggers: readonly string[], options: { line?: number; fileName?: string } = {}): Instruction[] {
  try {
    return expandOnBuildInternal(triggers, options.line ?? 1);
  } catch (err) {
    throw toMyBuildError(err, options.fileName ?? 'Dockerfile');
  }
}

function expandOnBuildInternal(triggers: readonly string[], line: number): Instruction[] {
  return triggers.map((trigger) => {
    let nodes;
    try {
      nodes = parseDockerfileText(trigger).nodes;
    } catch (err) {
      if (err instanceof DockerfileError) throw dfError(`ONBUILD trigger ${goQuote(trigger)}: ${err.message}`, line, err.hint);
      throw err;
    }
    if (nodes.length !== 1) throw dfError('onbuild trigger should be a single expression', line);
    const node = nodes[0]!;
    node.startLine = line;
    node.endLine = line;
    let ins;
    try {
      ins = parseInstruction(node);
    } catch (err) {
      if (err instanceof DockerfileError) throw dfError(`ONBUILD trigger ${goQuote(trigger)}: ${err.message}`, line, err.hint);
      throw err;
    }
    if (ins.kind === 'FROM') throw dfError(`ONBUILD trigger ${goQuote(trigger)}: FROM isn't allowed as an ONBUILD trigger`, line);
    if (ins.kind === 'ONBUILD') throw dfError("Chaining ONBUILD via `ONBUILD ONBUILD` isn't allowed", line);
    return ins;
  });
}

/** `COPY --from` / `RUN --mount=from` targets, like BuildKit's toCommand. */
function toCommand(ctx: Ctx, ins: Instruction, onbuild: boolean): CommandRef {
  const c: CommandRef = { ins, onbuild, sources: [] };
  if (ins.kind === 'COPY' && ins.from !== '') {
    let res: string;
    try {
      res = ctx.shlex.processWord(ins.from, EMPTY_ENV);
    } catch {
      res = '';
    }
    if (res !== ins.from) {
      throw dfError(
        'variable expansion is not supported for --from, define a new stage with FROM using ARG from global scope as a workaround',
        ins.line,
        'ARG X=...; FROM $X AS src; then COPY --from=src',
      );
    }
    if (/^[+-]?\d+$/.test(ins.from)) {
      const index = Number.parseInt(ins.from, 10);
      if (index < 0 || index >= ctx.nodes.length) {
        throw dfError(`invalid stage index ${index}`, ins.line, `stage indices go from 0 to ${ctx.nodes.length - 1}`);
      }
      c.sources = [{ kind: 'stage', index }];
    } else {
      const n = ctx.byName.get(ins.from.toLowerCase());
      c.sources = [n ? { kind: 'stage', index: n.index } : { kind: 'image', ref: ins.from }];
    }
  } else if (ins.kind === 'RUN') {
    c.sources = ins.mounts.map((m) => {
      const from = mountFrom(m);
      if (from === '') return undefined;
      const n = ctx.byName.get(from.toLowerCase());
      return n ? { kind: 'stage', index: n.index } : { kind: 'image', ref: from };
    });
  }
  return c;
}

/** The raw `from=` of a mount (not expanded: BuildKit forbids variables there). */
function mountFrom(raw: string): string {
  try {
    const m = parseMount(raw, (w) => w);
    return m.from;
  } catch {
    return '';
  }
}

function addDeps(node: StageNode, c: CommandRef): boolean {
  let added = false;
  for (const s of c.sources) {
    if (s?.kind === 'stage' && !node.deps.has(s.index)) {
      node.deps.set(s.index, c.ins.line);
      added = true;
    }
  }
  return added;
}

function checkCircular(ctx: Ctx): void {
  const visited = new Set<number>();
  const onPath = new Set<number>();
  const visit = (i: number, lines: number[]): number[] | undefined => {
    if (visited.has(i)) return undefined;
    visited.add(i);
    onPath.add(i);
    for (const [dep, line] of ctx.nodes[i]!.deps) {
      const next = [...lines, line];
      if (onPath.has(dep)) return next;
      const found = visit(dep, next);
      if (found) return found;
    }
    onPath.delete(i);
    return undefined;
  };
  for (const n of ctx.nodes) {
    const lines = visit(n.index, []);
    if (lines) {
      throw dfError(`circular dependency detected on stage: ${n.id}`, lines[0], 'a stage cannot copy from itself or from a stage that copies from it');
    }
  }
}

function reachableFrom(ctx: Ctx, target: StageNode): Set<StageNode> {
  const out = new Set<StageNode>();
  const add = (n: StageNode) => {
    if (out.has(n)) return;
    out.add(n);
    if (n.base.kind === 'stage') add(ctx.nodes[n.base.index]!);
    for (const d of n.deps.keys()) add(ctx.nodes[d]!);
  };
  add(target);
  return out;
}

function initialState(ctx: Ctx, node: StageNode): StageState {
  if (node.base.kind === 'stage') {
    const base = ctx.nodes[node.base.index]!;
    node.platform = base.platform;
    return cloneState(base.state!);
  }
  let image: WorkingImage;
  if (node.base.kind === 'scratch') {
    // BuildKit gives scratch the target platform, even under FROM --platform
    node.platform = ctx.targetPlatform;
    image = emptyImage(ctx.targetPlatform);
  } else {
    const platform = stagePlatform(ctx, node);
    node.platform = platform;
    requireImage(ctx, node.base.ref, platform, node.index, node.line);
    const cfg = resolve(ctx, node.base.ref, platform);
    image = {
      os: cfg?.os ?? platform.os,
      architecture: cfg?.architecture ?? platform.arch,
      config: cloneConfig(cfg?.config),
    };
    const variant = cfg ? cfg.variant : platform.variant;
    if (variant) image.variant = variant;
    if (cfg?.author) image.author = cfg.author;
    delete image.config.OnBuild; // consumed as triggers
  }
  const env = EnvList.fromList(image.config.Env ?? []);
  if (env.get('PATH') === undefined && image.os !== 'windows') {
    image.config.Env = [...(image.config.Env ?? []), `PATH=${DEFAULT_PATH_ENV}`];
    env.set('PATH', DEFAULT_PATH_ENV);
  }
  const state: StageState = { image, env, dir: '/', user: '', buildArgs: [], workdirSet: false };
  if (image.config.WorkingDir) {
    const wd = normalizePath(image.config.WorkingDir, image.config.WorkingDir, false);
    image.config.WorkingDir = wd;
    state.dir = wd;
  }
  if (image.config.User) state.user = image.config.User;
  return state;
}

function dispatchStage(ctx: Ctx, node: StageNode, dispatched: Set<number>): void {
  const state = initialState(ctx, node);
  node.state = state;
  for (const c of node.commands) {
    const step = dispatch(ctx, node, state, c, dispatched);
    if (!step) continue;
    step.config = finalizeConfig(state.image.config);
    if (c.ins.kind === 'MAINTAINER' && step.kind === 'config') step.author = c.ins.maintainer;
    node.steps.push(step);
  }
}

function plannedStage(ctx: Ctx, n: StageNode): PlannedStage {
  const st = n.state!;
  const platform = n.platform ?? stagePlatform(ctx, n);
  let base: StageBase;
  if (n.base.kind === 'image') {
    base = { kind: 'image', ref: n.base.ref, platform, resolved: resolve(ctx, n.base.ref, platform) !== undefined };
  } else {
    base = n.base;
  }
  const deps = new Set<number>(n.deps.keys());
  if (n.base.kind === 'stage') deps.add(n.base.index);
  const image: PlannedStage['image'] = { os: st.image.os, architecture: st.image.architecture, config: finalizeConfig(st.image.config) };
  if (st.image.variant) image.variant = st.image.variant;
  if (st.image.author) image.author = st.image.author;
  return {
    index: n.index,
    name: n.name,
    id: n.id,
    line: n.line,
    base,
    platform,
    dependsOn: [...deps].sort((a, b) => a - b),
    steps: n.steps,
    image,
  };
}

function parallelGroups(ordered: StageNode[]): number[][] {
  const depth = new Map<number, number>();
  for (const n of ordered) {
    let d = 0;
    const deps = [...n.deps.keys()];
    if (n.base.kind === 'stage') deps.push(n.base.index);
    for (const dep of deps) d = Math.max(d, (depth.get(dep) ?? 0) + 1);
    depth.set(n.index, d);
  }
  const groups: number[][] = [];
  for (const n of ordered) {
    const d = depth.get(n.index)!;
    (groups[d] ??= []).push(n.index);
  }
  return groups.filter((g) => g !== undefined);
}

function proxyEnv(buildArgs: Record<string, string>): string[] {
  const out: string[] = [];
  for (const name of PROXY_ARGS) {
    let value: string | undefined;
    for (const k of Object.keys(buildArgs).sort()) if (k.toUpperCase() === name) value = buildArgs[k];
    if (value !== undefined && value !== '') out.push(`${name}=${value}`, `${name.toLowerCase()}=${value}`);
  }
  return out;
}


