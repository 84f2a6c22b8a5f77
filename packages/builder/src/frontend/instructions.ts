/**
 * Parser nodes → typed instructions grouped into stages (BuildKit's instructions package).
 * Nothing is expanded here: values keep their quotes and `$VARS` until the planner knows the
 * environment each instruction sees.
 */
import { DockerfileError, dfError, didYouMean, toMyBuildError } from './errors.js';
import { parseFlags, type ParsedFlags } from './flags.js';
import { goQuote, parseGoDuration, trimGoSpace } from './gofmt.js';
import { MountError, precheckMount } from './mounts.js';
import { chompHeredocContent, parseDockerfileText, parseHeredoc, type Directive, type Node, type ParseWarning } from './parser.js';

interface Located {
  /** The instruction word as written (`RUN`, `run`). */
  keyword: string;
  /** First and last line of the instruction in the Dockerfile (1-based), heredoc bodies included. */
  line: number;
  endLine: number;
  /** The instruction text as written (continuations joined). */
  original: string;
}

export interface KeyValue {
  key: string;
  value: string;
  /** Legacy `ENV key value` form. */
  noDelim: boolean;
}

export interface ArgDefinition {
  key: string;
  /** undefined: declared without a default. */
  value: string | undefined;
}

/** A heredoc given to RUN/CMD/ENTRYPOINT. */
export interface InlineFile {
  name: string;
  data: string;
  chomp: boolean;
}

/** A heredoc used as a COPY/ADD source. */
export interface SourceContent {
  /** The heredoc delimiter, used as the file name. */
  path: string;
  data: string;
  /** Expand variables in `data` (delimiter not quoted). */
  expand: boolean;
}

export interface FromInstruction extends Located {
  kind: 'FROM';
  baseName: string;
  /** Lower-cased `AS name`. */
  stageName: string | undefined;
  /** `--platform` as written. */
  platform: string | undefined;
}

export interface ArgInstruction extends Located {
  kind: 'ARG';
  args: ArgDefinition[];
}

export interface EnvInstruction extends Located {
  kind: 'ENV';
  pairs: KeyValue[];
}

export interface LabelInstruction extends Located {
  kind: 'LABEL';
  pairs: KeyValue[];
}

export interface MaintainerInstruction extends Located {
  kind: 'MAINTAINER';
  maintainer: string;
}

export interface ShellDependentCmdLine {
  /** Exec form: the argv; shell form: one string. */
  cmdLine: string[];
  /** Shell form: the stage's SHELL is prepended. */
  prependShell: boolean;
  files: InlineFile[];
}

export interface RunInstruction extends Located, ShellDependentCmdLine {
  kind: 'RUN';
  /** Raw `--mount` values (validated for syntax; expanded by the planner). */
  mounts: string[];
  network: 'default' | 'none' | 'host';
  security: 'sandbox' | 'insecure';
  flagsUsed: string[];
}

export interface CmdInstruction extends Located, ShellDependentCmdLine {
  kind: 'CMD';
}

export interface EntrypointInstruction extends Located, ShellDependentCmdLine {
  kind: 'ENTRYPOINT';
}

interface SourcesAndDest {
  sourcePaths: string[];
  sourceContents: SourceContent[];
  dest: string;
  chown: string;
  chmod: string;
  link: boolean;
  excludes: string[];
}

export interface CopyInstruction extends Located, SourcesAndDest {
  kind: 'COPY';
  /** `--from` as written: stage name, stage index or image reference; "" when absent. */
  from: string;
  parents: boolean;
}

export interface AddInstruction extends Located, SourcesAndDest {
  kind: 'ADD';
  checksum: string;
  keepGitDir: boolean | undefined;
  unpack: boolean | undefined;
}

export interface ExposeInstruction extends Located {
  kind: 'EXPOSE';
  ports: string[];
}

export interface VolumeInstruction extends Located {
  kind: 'VOLUME';
  volumes: string[];
}

export interface UserInstruction extends Located {
  kind: 'USER';
  user: string;
}

export interface WorkdirInstruction extends Located {
  kind: 'WORKDIR';
  path: string;
}

export interface StopSignalInstruction extends Located {
  kind: 'STOPSIGNAL';
  signal: string;
}

export interface ShellInstruction extends Located {
  kind: 'SHELL';
  shell: string[];
}

/** Durations in nanoseconds, as in the image config. */
export interface HealthcheckSpec {
  test: string[];
  interval: number;
  timeout: number;
  startPeriod: number;
  startInterval: number;
  retries: number;
}

export interface HealthcheckInstruction extends Located {
  kind: 'HEALTHCHECK';
  health: HealthcheckSpec;
}

export interface OnbuildInstruction extends Located {
  kind: 'ONBUILD';
  /** The trigger text stored in the image config (heredoc bodies appended). */
  expression: string;
}

export type Instruction =
  | ArgInstruction
  | EnvInstruction
  | LabelInstruction
  | MaintainerInstruction
  | RunInstruction
  | CmdInstruction
  | EntrypointInstruction
  | CopyInstruction
  | AddInstruction
  | ExposeInstruction
  | VolumeInstruction
  | UserInstruction
  | WorkdirInstruction
  | StopSignalInstruction
  | ShellInstruction
  | HealthcheckInstruction
  | OnbuildInstruction;

export interface StageDefinition {
  from: FromInstruction;
  commands: Instruction[];
}

export interface ParsedDockerfile {
  escapeToken: string;
  directives: Directive[];
  parserWarnings: ParseWarning[];
  /** ARG instructions before the first FROM. */
  metaArgs: ArgInstruction[];
  stages: StageDefinition[];
}

export const INSTRUCTION_NAMES = [
  'ADD',
  'ARG',
  'CMD',
  'COPY',
  'ENTRYPOINT',
  'ENV',
  'EXPOSE',
  'FROM',
  'HEALTHCHECK',
  'LABEL',
  'MAINTAINER',
  'ONBUILD',
  'RUN',
  'SHELL',
  'STOPSIGNAL',
  'USER',
  'VOLUME',
  'WORKDIR',
] as const;

const VALID_STAGE_NAME = /^[a-z][a-z0-9-_.]*$/;

/**
 * Parses Dockerfile text into stages of typed instructions. Throws DockerfileError
 * (see {@link toMyBuildError}).
 */
export function parseInstructions(text: string): ParsedDockerfile {
  if (text.length === 0) throw dfError('the Dockerfile cannot be empty', undefined, 'write at least a FROM instruction');
  const parsed = parseDockerfileText(text);
  if (parsed.nodes.length === 0) {
    const lines = text.split('\n').length - (text.endsWith('\n') ? 1 : 0);
    throw dfError('file with no instructions', Math.max(lines, 1), 'a Dockerfile needs at least a FROM instruction');
  }
  const metaArgs: ArgInstruction[] = [];
  const stages: StageDefinition[] = [];
  for (const node of parsed.nodes) {
    const ins = parseInstruction(node);
    if (ins.kind === 'FROM') {
      stages.push({ from: ins, commands: [] });
      continue;
    }
    if (stages.length === 0) {
      if (ins.kind === 'ARG') {
        metaArgs.push(ins);
        continue;
      }
      throw dfError('no build stage in current context', node.startLine, 'a Dockerfile must start with FROM (only ARG and parser directives may come before it)');
    }
    stages[stages.length - 1]!.commands.push(ins);
  }
  if (stages.length === 0) {
    throw dfError('dockerfile contains no stages to build', parsed.nodes[0]!.startLine, 'add a FROM instruction after the global ARGs');
  }
  return { escapeToken: parsed.escapeToken, directives: parsed.directives, parserWarnings: parsed.warnings, metaArgs, stages };
}

/**
 * Parses a Dockerfile into stages of typed instructions (nothing expanded yet). Throws
 * MyBuildError (INVALID_ARGUMENT, `where: 'Dockerfile:LINE'`).
 */
export function parseDockerfile(text: string, options: { fileName?: string } = {}): ParsedDockerfile {
  try {
    return parseInstructions(text);
  } catch (err) {
    throw toMyBuildError(err, options.fileName ?? 'Dockerfile');
  }
}

/** Parses a single instruction node (used for ONBUILD triggers as well). */
export function parseInstruction(node: Node): FromInstruction | Instruction {
  try {
    return parseNode(node);
  } catch (err) {
    if (err instanceof DockerfileError) throw err;
    if (err instanceof MountError) throw dfError(err.message, node.startLine, err.hint);
    throw err;
  }
}

function located(node: Node): Located {
  return { keyword: node.keyword, line: node.startLine, endLine: node.endLine, original: trimGoSpace(node.original) };
}

function parseNode(node: Node): FromInstruction | Instruction {
  const line = node.startLine;
  const fail = (msg: string, hint?: string) => dfError(msg, line, hint);
  const flags = (spec: Record<string, 'bool' | 'string' | 'strings'>): ParsedFlags => parseFlags(node.flags, spec, line);
  const base = located(node);
  const args = node.args;
  switch (node.cmd) {
    case 'env':
    case 'label': {
      const name = node.cmd.toUpperCase();
      flags({});
      if (args.length === 0) throw fail(`${name} requires at least one argument`);
      if (args.length % 3 !== 0) throw fail(`Bad input to ${name}, too many arguments`);
      const pairs: KeyValue[] = [];
      for (let j = 0; j < args.length; j += 3) {
        if (args[j]!.length === 0) throw fail(`${name} names can not be blank`);
        pairs.push({ key: args[j]!, value: args[j + 1]!, noDelim: args[j + 2] === '' });
      }
      return node.cmd === 'env' ? { kind: 'ENV', ...base, pairs } : { kind: 'LABEL', ...base, pairs };
    }
    case 'maintainer':
      if (args.length !== 1) throw fail('MAINTAINER requires exactly one argument');
      flags({});
      return { kind: 'MAINTAINER', ...base, maintainer: args[0]! };
    case 'add':
    case 'copy': {
      const name = node.cmd.toUpperCase() as 'ADD' | 'COPY';
      if (args.length < 2) {
        throw fail(`${name} requires at least two arguments, but only one was provided. Destination could not be determined`);
      }
      const f =
        name === 'COPY'
          ? flags({ chown: 'string', from: 'string', chmod: 'string', link: 'bool', exclude: 'strings', parents: 'bool' })
          : flags({ chown: 'string', chmod: 'string', link: 'bool', 'keep-git-dir': 'bool', checksum: 'string', unpack: 'bool', exclude: 'strings' });
      const sd = sourcesAndDest(node, name);
      const common: SourcesAndDest = {
        ...sd,
        chown: f.values.get('chown') ?? '',
        chmod: f.values.get('chmod') ?? '',
        link: f.values.get('link') === 'true',
        excludes: f.lists.get('exclude') ?? [],
      };
      if (name === 'COPY') {
        return { kind: 'COPY', ...base, ...common, from: f.values.get('from') ?? '', parents: f.values.get('parents') === 'true' };
      }
      const optBool = (k: string) => (f.used.has(k) ? f.values.get(k) === 'true' : undefined);
      return { kind: 'ADD', ...base, ...common, checksum: f.values.get('checksum') ?? '', keepGitDir: optBool('keep-git-dir'), unpack: optBool('unpack') };
    }
    case 'from': {
      let stageName: string | undefined;
      if (args.length === 3 && args[1]!.toLowerCase() === 'as') {
        stageName = args[2]!.toLowerCase();
        if (!VALID_STAGE_NAME.test(stageName)) {
          throw fail(
            `invalid name for build stage: ${goQuote(args[2]!)}, name can't start with a number or contain symbols`,
            'a stage name is lower-case letters, digits and - _ . starting with a letter',
          );
        }
      } else if (args.length !== 1) {
        throw fail('FROM requires either one or three arguments', 'FROM [--platform=<platform>] <image> [AS <name>]');
      }
      const f = flags({ platform: 'string' });
      return { kind: 'FROM', ...base, baseName: args[0]!, stageName, platform: f.values.get('platform') };
    }
    case 'onbuild': {
      if (args.length === 0) throw fail('ONBUILD requires at least one argument');
      flags({});
      const trigger = trimGoSpace(args[0]!).toUpperCase();
      if (trigger === 'ONBUILD') throw fail("Chaining ONBUILD via `ONBUILD ONBUILD` isn't allowed");
      if (trigger === 'MAINTAINER' || trigger === 'FROM') throw fail(`${trigger} isn't allowed as an ONBUILD trigger`);
      let expression = node.original.replace(/^\s*ONBUILD\s*/i, '');
      for (const h of node.heredocs) expression += '\n' + h.content + h.name;
      return { kind: 'ONBUILD', ...base, expression };
    }
    case 'workdir':
      if (args.length !== 1) throw fail('WORKDIR requires exactly one argument');
      flags({});
      return { kind: 'WORKDIR', ...base, path: args[0]! };
    case 'run': {
      const f = flags({ mount: 'strings', network: 'string', security: 'string' });
      const mounts = f.lists.get('mount') ?? [];
      for (const m of mounts) precheckMount(m);
      const network = f.values.get('network') ?? 'default';
      if (network !== 'default' && network !== 'none' && network !== 'host') {
        throw fail(`invalid network mode ${goQuote(network)}`, 'use --network=default, none or host');
      }
      const security = f.values.get('security') ?? 'sandbox';
      if (security !== 'sandbox' && security !== 'insecure') {
        throw fail(`security ${goQuote(security)} is not valid`, 'use --security=sandbox or insecure');
      }
      return { kind: 'RUN', ...base, ...shellDependent(node), mounts, network, security, flagsUsed: [...f.used] };
    }
    case 'cmd':
      flags({});
      return { kind: 'CMD', ...base, ...shellDependent(node) };
    case 'entrypoint':
      flags({});
      return { kind: 'ENTRYPOINT', ...base, ...shellDependent(node) };
    case 'healthcheck':
      return { kind: 'HEALTHCHECK', ...base, health: healthcheck(node, flags) };
    case 'expose':
      if (args.length === 0) throw fail('EXPOSE requires at least one argument');
      flags({});
      return { kind: 'EXPOSE', ...base, ports: [...args].sort(compareBytes) };
    case 'user':
      if (args.length !== 1) throw fail('USER requires exactly one argument');
      flags({});
      return { kind: 'USER', ...base, user: args[0]! };
    case 'volume': {
      if (args.length === 0) throw fail('VOLUME requires at least one argument');
      flags({});
      const volumes: string[] = [];
      for (const v of args) {
        const t = trimGoSpace(v);
        if (t === '') throw fail('VOLUME specified can not be an empty string');
        volumes.push(t);
      }
      return { kind: 'VOLUME', ...base, volumes };
    }
    case 'stopsignal':
      // BuildKit does not parse STOPSIGNAL's flags (nor ARG's): they are ignored
      if (args.length !== 1) throw fail('STOPSIGNAL requires exactly one argument');
      return { kind: 'STOPSIGNAL', ...base, signal: args[0]! };
    case 'arg': {
      if (args.length < 1) throw fail('ARG requires at least one argument');
      const defs: ArgDefinition[] = args.map((a) => {
        const eq = a.indexOf('=');
        if (eq < 0) return { key: a, value: undefined };
        if (eq === 0) throw fail('ARG names can not be blank');
        return { key: a.slice(0, eq), value: a.slice(eq + 1) };
      });
      return { kind: 'ARG', ...base, args: defs };
    }
    case 'shell': {
      flags({});
      const shell = handleJSONArgs(args, node.json);
      if (shell.length === 0) throw fail('SHELL requires at least one argument');
      if (!node.json) throw fail('SHELL requires the arguments to be in JSON form', 'SHELL ["/bin/bash", "-c"]');
      return { kind: 'SHELL', ...base, shell };
    }
    default: {
      const hint = didYouMean(node.keyword, INSTRUCTION_NAMES, false);
      throw fail(`unknown instruction: ${node.keyword}`, hint ?? `instructions are ${INSTRUCTION_NAMES.join(', ')}`);
    }
  }
}

function compareBytes(a: string, b: string): number {
  const ba = Buffer.from(a);
  const bb = Buffer.from(b);
  return Buffer.compare(ba, bb);
}

function handleJSONArgs(args: string[], json: boolean): string[] {
  if (args.length === 0) return [];
  if (json) return [...args];
  return [args.join(' ')];
}

/** An empty exec form (`CMD []`) gives an empty cmdLine: the value is unset in the image. */
function shellDependent(node: Node): ShellDependentCmdLine {
  const files: InlineFile[] = node.heredocs.map((h) => ({ name: h.name, data: h.content, chomp: h.chomp }));
  return { cmdLine: handleJSONArgs(node.args, node.json), prependShell: !node.json, files };
}

function sourcesAndDest(node: Node, name: string): { sourcePaths: string[]; sourceContents: SourceContent[]; dest: string } {
  const srcs = node.args.slice(0, -1);
  const dest = node.args[node.args.length - 1]!;
  if (parseHeredocSafe(dest)) throw dfError(`${name} cannot accept a heredoc as a destination`, node.startLine);
  const lookup = new Map(node.heredocs.map((h) => [h.name, h]));
  const sourcePaths: string[] = [];
  const sourceContents: SourceContent[] = [];
  for (const src of srcs) {
    const h = parseHeredocSafe(src);
    if (h) {
      let content = lookup.get(h.name)?.content ?? '';
      if (h.chomp) content = chompHeredocContent(content);
      sourceContents.push({ path: h.name, data: content, expand: h.expand });
    } else {
      sourcePaths.push(src);
    }
  }
  return { sourcePaths, sourceContents, dest };
}

function parseHeredocSafe(src: string) {
  try {
    return parseHeredoc(src);
  } catch {
    return undefined;
  }
}

function healthcheck(node: Node, flags: (spec: Record<string, 'bool' | 'string' | 'strings'>) => ParsedFlags): HealthcheckSpec {
  const line = node.startLine;
  if (node.args.length === 0) throw dfError('HEALTHCHECK requires at least one argument', line, 'HEALTHCHECK [--interval=30s ...] CMD <command> | NONE');
  const typ = node.args[0]!.toUpperCase();
  const rest = node.args.slice(1);
  if (typ === 'NONE') {
    // BuildKit does not look at the flags of HEALTHCHECK NONE
    if (rest.length !== 0) throw dfError('HEALTHCHECK NONE takes no arguments', line);
    return { test: ['NONE'], interval: 0, timeout: 0, startPeriod: 0, startInterval: 0, retries: 0 };
  }
  const f = flags({ interval: 'string', timeout: 'string', 'start-period': 'string', 'start-interval': 'string', retries: 'string' });
  if (typ !== 'CMD') throw dfError(`Unknown type ${goQuote(typ)} in HEALTHCHECK (try CMD)`, line);
  const cmd = handleJSONArgs(rest, node.json);
  if (cmd.length === 0) throw dfError('Missing command after HEALTHCHECK CMD', line);
  const test = [node.json ? 'CMD' : 'CMD-SHELL', ...cmd];
  const interval = (name: string): number => {
    const s = f.values.get(name) ?? '';
    if (s === '') return 0;
    let d: bigint;
    try {
      d = parseGoDuration(s);
    } catch (err) {
      throw dfError((err as Error).message, line, 'durations look like 30s, 1m30s, 500ms');
    }
    if (d === 0n) return 0;
    if (d < 1_000_000n) throw dfError(`Interval ${goQuote(name)} cannot be less than 1ms`, line);
    return Number(d);
  };
  const health: HealthcheckSpec = {
    test,
    interval: interval('interval'),
    timeout: interval('timeout'),
    startPeriod: interval('start-period'),
    startInterval: interval('start-interval'),
    retries: 0,
  };
  const r = f.values.get('retries') ?? '';
  if (r !== '') {
    if (!/^[+-]?\d+$/.test(r)) throw dfError(`strconv.ParseInt: parsing ${goQuote(r)}: invalid syntax`, line);
    const n = Number.parseInt(r, 10);
    if (n > 2147483647 || n < -2147483648) throw dfError(`strconv.ParseInt: parsing ${goQuote(r)}: value out of range`, line);
    if (n < 0) throw dfError(`--retries cannot be negative (${n})`, line);
    health.retries = n;
  }
  return health;
}
