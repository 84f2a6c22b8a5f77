/** RUN → a run step: argv (shell form, heredocs), mounts, network, env and history. */
import { dfError } from './errors.js';
import { goList, goQuote } from './gofmt.js';
import { goBase, goClean, goJoin } from './gopath.js';
import type { RunInstruction } from './instructions.js';
import { MountError, parseMount } from './mounts.js';
import { chompHeredocContent, parseHeredoc } from './parser.js';
import type { FileSource, PlanStep, RunMount } from './plan-types.js';
import { expand, hashKey, historyEntry, withShell, type CommandRef, type Ctx, type StageNode, type StageState } from './plan-state.js';
import { runCommandString, sourceFor, type StepHead } from './dispatch.js';

export function dispatchRun(ctx: Ctx, node: StageNode, st: StageState, ins: RunInstruction, c: CommandRef, dispatched: Set<number>, base: StepHead): PlanStep {
  const line = ins.line;
  let args = [...ins.cmdLine];
  const inlineFiles: { path: string; data: string; mode: number }[] = [];
  if (ins.files.length > 0) {
    if (args.length !== 1 || !ins.prependShell) throw dfError(`parsing produced an invalid run command: ${goList(args)}`, line);
    let simple;
    try {
      simple = parseHeredoc(args[0]!);
    } catch {
      simple = undefined;
    }
    if (simple) {
      const file = ins.files[0]!;
      let data = file.data;
      if (file.chomp) data = chompHeredocContent(data);
      if (st.image.os !== 'windows' && data.startsWith('#!')) {
        // a script with a shebang: provide it as a file and run it
        const path = goJoin('/dev/pipes/', file.name);
        inlineFiles.push({ path, data, mode: 0o755 });
        args = [path];
      } else {
        args = [data];
      }
    } else {
      // several heredocs, or a command around one: hand the whole text to the shell
      let b = args[0]!;
      for (const f of ins.files) b += '\n' + f.data + f.name;
      args = [b];
    }
  }
  if (ins.prependShell) args = withShell(st.image, args);

  const mounts: RunMount[] = [];
  let sshIndex = 0;
  ins.mounts.forEach((raw, i) => {
    let m;
    try {
      m = parseMount(raw, (w) => expand(ctx, w, st.env, line));
    } catch (err) {
      if (err instanceof MountError) throw dfError(err.message, line, err.hint);
      throw err;
    }
    const absolute = (t: string) => (goClean(t).startsWith('/') ? t : goJoin('/', st.dir, t));
    const fileInfo = () => ({
      ...(m.uid !== undefined ? { uid: m.uid } : {}),
      ...(m.gid !== undefined ? { gid: m.gid } : {}),
      ...(m.mode !== undefined ? { mode: m.mode } : {}),
    });
    if (m.type === 'secret') {
      let id = m.source || m.id;
      if (id === '') {
        if (m.target === '') throw dfError('one of source, target required', line);
        id = goBase(m.target);
      }
      const secret: NonNullable<RunMount['secret']> = { id, required: m.required };
      if (m.env !== undefined) {
        secret.env = m.env;
        if (m.target !== '') secret.target = absolute(m.target);
      } else {
        secret.target = m.target !== '' ? absolute(m.target) : `/run/secrets/${goBase(id)}`;
      }
      mounts.push({ type: 'secret', target: secret.target ?? '', readOnly: true, from: { kind: 'scratch' }, source: '/', secret, ...fileInfo() });
      return;
    }
    if (m.type === 'ssh') {
      if (m.source !== '') throw dfError('ssh does not support source', line);
      // llb's default socket path, numbered among the step's ssh mounts
      const target = m.target !== '' ? absolute(m.target) : `/run/buildkit/ssh_agent.${sshIndex}`;
      sshIndex++;
      mounts.push({ type: 'ssh', target, readOnly: true, from: { kind: 'scratch' }, source: '/', ssh: { id: m.id || 'default', required: m.required, target }, ...fileInfo() });
      return;
    }
    let from: FileSource = m.type === 'cache' || m.type === 'tmpfs' ? { kind: 'scratch' } : { kind: 'context' };
    if (m.from !== '' && m.type !== 'tmpfs') {
      from =
        sourceFor(
          ctx,
          c.sources[i],
          dispatched,
          () => dfError(`cannot mount from stage ${goQuote(m.from)} to ${goQuote(m.target)}, stage needs to be defined before current command`, line),
          node.index,
          line,
        ) ?? from;
    }
    const target = absolute(m.target);
    if (target === '/') throw dfError(`invalid mount target ${goQuote(target)}`, line, 'give the mount a target=/path');
    const mount: RunMount = { type: m.type, target, readOnly: m.readOnly, from, source: goJoin('/', m.source), ...fileInfo() };
    if (m.type === 'cache') mount.cache = { id: m.id || goClean(m.target), sharing: m.sharing || 'shared' };
    if (m.type === 'tmpfs') mount.tmpfs = { size: m.sizeLimit };
    mounts.push(mount);
  });

  const createdBy = `RUN ${runCommandString(args, st.buildArgs, st.env)} # buildkit`;
  const step: PlanStep = {
    kind: 'run',
    ...base,
    args,
    env: st.env.toList(),
    proxyEnv: ctx.proxyEnv,
    user: st.user,
    workdir: st.dir,
    mounts,
    network: ins.network,
    security: ins.security,
    inlineFiles,
    history: historyEntry(createdBy, false),
    cacheKey: '',
  };
  step.cacheKey = hashKey({
    kind: 'run',
    args,
    env: step.env,
    user: step.user,
    workdir: step.workdir,
    mounts,
    network: ins.network,
    security: ins.security,
    inlineFiles,
  });
  return step;
}

