/**
 * One instruction of a stage → one plan step, with BuildKit's expansion rules, config
 * changes and history text (dockerfile2llb's dispatch functions).
 */
import type { ContainerConfig, HealthConfig } from '@mybuild/oci';
import { dfError, suggest, type DockerfileError } from './errors.js';
import { PortError, parsePort } from './expose.js';
import { goDuration, goList, goQuote, goQuoteList } from './gofmt.js';
import { normalizePath } from './gopath.js';
import type { ArgDefinition } from './instructions.js';
import { LexError, type EnvGetter } from './lexer.js';
import type { FileSource, PlanStep } from './plan-types.js';
import { parseSignal } from './signal.js';
import { dispatchCopy } from './dispatch-copy.js';
import { dispatchRun } from './dispatch-run.js';
import {
  NON_ENV_ARGS,
  addEnv,
  expand,
  hashKey,
  historyEntry,
  requireImage,
  warn,
  withShell,
  type CommandRef,
  type Ctx,
  type SourceRef,
  type StageNode,
  type StageState,
} from './plan-state.js';

export type StepHead = { instruction: string; line: number; endLine: number; original: string; onbuild: boolean; config: ContainerConfig };

export function dispatch(ctx: Ctx, node: StageNode, st: StageState, c: CommandRef, dispatched: Set<number>): PlanStep | undefined {
  const ins = c.ins;
  const line = ins.line;
  const ex = (word: string) => expand(ctx, word, st.env, line);
  const base = {
    instruction: ins.keyword.toUpperCase(),
    line,
    endLine: ins.endLine,
    original: ins.original,
    onbuild: c.onbuild,
    config: {}, // filled in by dispatchStage
  };
  const cfg = st.image.config;
  const configStep = (createdBy: string, change: unknown): PlanStep => ({
    kind: 'config',
    ...base,
    history: historyEntry(createdBy, true),
    cacheKey: hashKey({ kind: 'config', instruction: base.instruction, change }),
  });

  switch (ins.kind) {
    case 'ENV': {
      const pairs = ins.pairs.map((p) => ({ key: ex(p.key), value: ex(p.value), noDelim: p.noDelim }));
      let msg = 'ENV';
      for (const p of pairs) {
        if (p.noDelim) warn(ctx, 'LegacyKeyValueFormat', '"ENV key=value" should be used instead of legacy "ENV key value" format', line);
        msg += ` ${p.key}=${p.value}`;
        st.env.set(p.key, p.value);
        cfg.Env = addEnv(cfg.Env, p.key, p.value);
      }
      return configStep(msg, pairs);
    }
    case 'LABEL': {
      const pairs = ins.pairs.map((p) => ({ key: ex(p.key), value: ex(p.value), noDelim: p.noDelim }));
      let msg = 'LABEL';
      cfg.Labels = { ...cfg.Labels };
      for (const p of pairs) {
        if (p.noDelim) warn(ctx, 'LegacyKeyValueFormat', '"LABEL key=value" should be used instead of legacy "LABEL key value" format', line);
        cfg.Labels[p.key] = p.value;
        msg += ` ${p.key}=${p.value}`;
      }
      return configStep(msg, pairs);
    }
    case 'MAINTAINER':
      warn(ctx, 'MaintainerDeprecated', 'Maintainer instruction is deprecated in favor of using label', line);
      st.image.author = ins.maintainer;
      return configStep(`MAINTAINER ${ins.maintainer}`, ins.maintainer);
    case 'ARG': {
      const parts: string[] = [];
      for (const def of ins.args) {
        ctx.declaredArgs.add(def.key);
        const hasValue = Object.hasOwn(ctx.buildArgs, def.key);
        let value = def.value;
        if (value === undefined && !hasValue) {
          const g = ctx.globalArgs.get(def.key);
          if (g !== undefined) value = g;
        }
        if (hasValue) value = ctx.buildArgs[def.key];
        else if (def.value !== undefined) value = ex(def.value);
        if (value !== undefined && !NON_ENV_ARGS.has(def.key)) st.env.set(def.key, value);
        st.buildArgs.push({ key: def.key, value });
        parts.push(value === undefined ? def.key : `${def.key}=${value}`);
      }
      return configStep(`ARG ${parts.join(' ')}`, parts);
    }
    case 'RUN':
      return dispatchRun(ctx, node, st, ins, c, dispatched, base);
    case 'WORKDIR': {
      const p = ex(ins.path);
      if (!st.workdirSet && !p.startsWith('/')) {
        warn(ctx, 'WorkdirRelativePath', `Relative workdir ${goQuote(p)} can have unexpected results if the base image changes`, line);
      }
      st.workdirSet = true;
      const wd = normalizePath(cfg.WorkingDir ?? '', p, false);
      cfg.WorkingDir = wd;
      st.dir = wd;
      const createdBy = `WORKDIR ${wd}`;
      return {
        kind: 'workdir',
        ...base,
        path: wd,
        user: cfg.User ?? '',
        history: historyEntry(createdBy, wd === '/'),
        cacheKey: hashKey({ kind: 'workdir', path: wd, user: cfg.User ?? '' }),
      };
    }
    case 'COPY':
    case 'ADD':
      return dispatchCopy(ctx, node, st, ins, c, dispatched, base);
    case 'ONBUILD':
      cfg.OnBuild = [...(cfg.OnBuild ?? []), ins.expression];
      return { kind: 'config', ...base, history: undefined, cacheKey: hashKey({ kind: 'config', instruction: 'ONBUILD', change: ins.expression }) };
    case 'CMD':
    case 'ENTRYPOINT': {
      const prev = ins.kind === 'CMD' ? st.cmdLine : st.entrypointLine;
      if (prev !== undefined) {
        warn(ctx, 'MultipleInstructionsDisallowed', `Multiple ${ins.kind} instructions should not be used in the same stage because only the last one will be used`, prev);
      }
      let args = [...ins.cmdLine];
      if (ins.prependShell) {
        if (!cfg.Shell || cfg.Shell.length === 0) {
          warn(ctx, 'JSONArgsRecommended', `JSON arguments recommended for ${ins.kind} to prevent unintended behavior related to OS signals`, line);
        }
        args = withShell(st.image, args);
      }
      if (ins.kind === 'CMD') {
        st.cmdLine = line;
        cfg.Cmd = args;
        cfg.ArgsEscaped = true;
        return configStep(`CMD ${goQuoteList(args)}`, args);
      }
      st.entrypointLine = line;
      cfg.Entrypoint = args;
      // an ENTRYPOINT resets a CMD that was not set in this stage (an inherited one)
      if (st.cmdLine === undefined) delete cfg.Cmd;
      return configStep(`ENTRYPOINT ${goQuoteList(args)}`, args);
    }
    case 'HEALTHCHECK': {
      if (st.healthcheckLine !== undefined) {
        warn(ctx, 'MultipleInstructionsDisallowed', 'Multiple HEALTHCHECK instructions should not be used in the same stage because only the last one will be used', st.healthcheckLine);
      }
      st.healthcheckLine = line;
      const h = ins.health;
      const hc: HealthConfig = { Test: [...h.test] };
      if (h.interval) hc.Interval = h.interval;
      if (h.timeout) hc.Timeout = h.timeout;
      if (h.startPeriod) hc.StartPeriod = h.startPeriod;
      if (h.startInterval) hc.StartInterval = h.startInterval;
      if (h.retries) hc.Retries = h.retries;
      cfg.Healthcheck = hc;
      const msg =
        `HEALTHCHECK {Test:${goList(h.test)} Interval:${goDuration(h.interval)} Timeout:${goDuration(h.timeout)} ` +
        `StartPeriod:${goDuration(h.startPeriod)} StartInterval:${goDuration(h.startInterval)} Retries:${h.retries}}`;
      return configStep(msg, hc);
    }
    case 'EXPOSE': {
      const words: string[] = [];
      for (const p of ins.ports) {
        try {
          words.push(...ctx.shlex.processWords(p, st.env));
        } catch (err) {
          if (err instanceof LexError) throw dfError(err.message, line);
          throw err;
        }
      }
      const keys: string[] = [];
      for (const w of words) {
        try {
          if (w.includes(':')) {
            warn(ctx, 'ExposeInvalidFormat', `EXPOSE instruction should not define an IP address or host-port mapping, found '${w}'`, line);
          }
          keys.push(...parsePort(w));
        } catch (err) {
          if (err instanceof PortError) throw dfError(err.message, line, 'EXPOSE takes <port>[/<protocol>] or <from>-<to>[/<protocol>], protocol tcp, udp or sctp');
          throw err;
        }
      }
      cfg.ExposedPorts = { ...cfg.ExposedPorts };
      for (const k of keys) cfg.ExposedPorts[k] = {};
      return configStep(`EXPOSE ${goList(keys)}`, keys);
    }
    case 'USER': {
      const user = ex(ins.user);
      cfg.User = user;
      st.user = user;
      return configStep(`USER ${user}`, user);
    }
    case 'VOLUME': {
      const vols = ins.volumes.map((v) => ex(v));
      cfg.Volumes = { ...cfg.Volumes };
      for (const v of vols) {
        if (v === '') throw dfError('VOLUME specified can not be an empty string', line);
        cfg.Volumes[v] = {};
      }
      return configStep(`VOLUME ${goList(vols)}`, vols);
    }
    case 'STOPSIGNAL': {
      const sig = ex(ins.signal);
      if (parseSignal(sig) === undefined) throw dfError(`invalid signal: ${sig}`, line, 'use a signal name like SIGTERM or SIGINT, or a number');
      cfg.StopSignal = sig;
      return configStep(`STOPSIGNAL ${sig}`, sig);
    }
    case 'SHELL':
      cfg.Shell = [...ins.shell];
      return configStep(`SHELL ${goList(ins.shell)}`, ins.shell);
  }
}

export function runCommandString(args: string[], buildArgs: ArgDefinition[], env: EnvGetter): string {
  const entries: string[] = [];
  const index = new Map<string, number>();
  for (const arg of buildArgs) {
    const v = env.get(arg.key) ?? arg.value ?? '';
    const i = index.get(arg.key);
    if (i !== undefined) entries[i] = `${arg.key}=${v}`;
    else {
      index.set(arg.key, entries.length);
      entries.push(`${arg.key}=${v}`);
    }
  }
  const prefix = entries.length > 0 ? [`|${entries.length}`, ...entries] : [];
  return [...prefix, ...args].join(' ');
}

export function sourceFor(ctx: Ctx, ref: SourceRef, dispatched: Set<number>, onMissing: () => DockerfileError, stage: number, line: number): FileSource | undefined {
  if (ref === undefined) return undefined;
  if (ref.kind === 'stage') {
    if (!dispatched.has(ref.index)) throw onMissing();
    return { kind: 'stage', index: ref.index };
  }
  const platform = ctx.targetPlatform;
  requireImage(ctx, ref.ref, platform, stage, line);
  const near = suggest(ref.ref, ctx.nodes.filter((n) => n.name !== undefined).map((n) => n.name!), true);
  if (near !== undefined) {
    warn(ctx, 'FromImageNotStage', `--from=${ref.ref} is not a stage of this Dockerfile and is used as an image; did you mean the stage ${near}?`, line);
  }
  return { kind: 'image', ref: ref.ref, platform };
}

