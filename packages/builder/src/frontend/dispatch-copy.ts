/** COPY / ADD → a copy step: sources (paths, URLs, git, heredocs), destination, ownership, history. */
import { parseDigest } from '@mybuild/oci';
import { dfError } from './errors.js';
import { goQuote } from './gofmt.js';
import { goBase, normalizePath } from './gopath.js';
import type { AddInstruction, CopyInstruction } from './instructions.js';
import { LexError, ShellLex } from './lexer.js';
import type { CopySourceItem, FileSource, PlanStep } from './plan-types.js';
import { expand, hashKey, historyEntry, type CommandRef, type Ctx, type StageNode, type StageState } from './plan-state.js';
import { sourceFor, type StepHead } from './dispatch.js';

const GIT_SCP = /^[A-Za-z0-9_.+-]+@[A-Za-z0-9.-]+:(?!\/\/)/;

export function isGitSource(src: string): boolean {
  if (src.startsWith('./') || src.startsWith('../') || src.startsWith('github.com/')) return false;
  if (src.startsWith('git://') || src.startsWith('ssh://') || src.startsWith('git@') || GIT_SCP.test(src)) return true;
  if (src.startsWith('http://') || src.startsWith('https://')) {
    try {
      return new URL(src).pathname.endsWith('.git');
    } catch {
      return false;
    }
  }
  return false;
}

export function isHTTPSource(src: string): boolean {
  return (src.startsWith('http://') || src.startsWith('https://')) && !isGitSource(src);
}

export function dispatchCopy(ctx: Ctx, node: StageNode, st: StageState, ins: CopyInstruction | AddInstruction, c: CommandRef, dispatched: Set<number>, base: StepHead): PlanStep {
  const line = ins.line;
  const isAdd = ins.kind === 'ADD';
  const ex = (w: string) => expand(ctx, w, st.env, line);
  const chown = ex(ins.chown);
  const chmodRaw = ex(ins.chmod);
  const checksum = isAdd ? ex(ins.checksum) : '';
  const sourcePaths = ins.sourcePaths.map(ex);
  const destRaw = ex(ins.dest);
  // heredoc bodies: expanded with a backslash lexer that leaves quotes alone
  const rawLex = new ShellLex('\\', { skipProcessQuotes: true });
  const contents = ins.sourceContents.map((sc) => {
    if (!sc.expand) return sc;
    try {
      return { ...sc, data: rawLex.processWord(sc.data, st.env) };
    } catch (err) {
      if (err instanceof LexError) throw dfError(err.message, line);
      throw err;
    }
  });

  let from: FileSource = { kind: 'context' };
  if (ins.kind === 'COPY' && c.sources[0]) {
    const fromName = ins.from;
    from = sourceFor(
      ctx,
      c.sources[0],
      dispatched,
      () => dfError(`cannot copy from stage ${goQuote(fromName)}, it needs to be defined before current stage ${goQuote(node.id)}`, line, 'move the stage you copy from above this one'),
      node.index,
      line,
    )!;
  }

  let dest = destRaw;
  if (!dest.startsWith('/')) dest = normalizePath(st.dir, dest === '.' || dest === '' ? './' : dest, true);
  else dest = normalizePath('/', dest, true);

  let chmod: number | undefined;
  if (chmodRaw !== '') {
    if (!/^[0-7]+$/.test(chmodRaw) || Number.parseInt(chmodRaw, 8) > 0o7777) {
      throw dfError(`invalid chmod parameter: '${chmodRaw}'. it should be octal string and between 0 and 07777`, line, 'use an octal mode like --chmod=0755');
    }
    chmod = Number.parseInt(chmodRaw, 8);
  }
  if (checksum !== '') {
    if (sourcePaths.length !== 1) throw dfError("checksum can't be specified for multiple sources", line);
    if (!isHTTPSource(sourcePaths[0]!) && !isGitSource(sourcePaths[0]!)) throw dfError('checksum requires HTTP(S) or Git sources', line);
    if (isHTTPSource(sourcePaths[0]!)) {
      try {
        parseDigest(checksum);
      } catch {
        throw dfError('invalid checksum digest format', line, '--checksum=sha256:<64 hex digits>');
      }
    }
  }

  const sources: CopySourceItem[] = [];
  let msg = isAdd ? 'ADD' : 'COPY';
  if (ins.kind === 'COPY' && ins.parents) msg += ' --parents';
  if (chown !== '') msg += ` --chown=${chown}`;
  if (chmodRaw !== '') msg += ` --chmod=${chmodRaw}`;
  for (const src of sourcePaths) {
    msg += ` ${src}`;
    if (isGitSource(src)) {
      if (!isAdd) throw dfError("source can't be a git ref for COPY", line, 'use ADD for git sources');
      sources.push({ kind: 'git', url: src });
    } else if (isHTTPSource(src)) {
      if (!isAdd) throw dfError("source can't be a URL for COPY", line, 'use ADD for URLs');
      let filename = '__unnamed__';
      try {
        const b = goBase(new URL(src).pathname);
        if (b !== '.' && b !== '/') filename = b;
      } catch {
        // keep the default name
      }
      // remote files are not unpacked unless asked for (--unpack)
      sources.push({ kind: 'url', url: src, filename, unpack: isAdd && ins.unpack === true });
    } else {
      sources.push({ kind: 'path', path: src });
    }
  }
  for (const sc of contents) {
    msg += ` <<${sc.path}`;
    sources.push({ kind: 'inline', name: sc.path, data: sc.data });
  }
  msg += ` ${destRaw}`;

  const unpack = isAdd ? (ins.unpack ?? true) : false;
  const step: PlanStep = {
    kind: 'copy',
    ...base,
    instruction: isAdd ? 'ADD' : 'COPY',
    from,
    sources,
    dest,
    link: ins.link,
    parents: ins.kind === 'COPY' ? ins.parents : false,
    excludes: [...ins.excludes],
    unpack,
    workdir: st.dir,
    history: historyEntry(`${msg} # buildkit`, false),
    cacheKey: '',
  };
  if (chown !== '') step.chown = chown;
  if (chmod !== undefined) step.chmod = chmod;
  if (checksum !== '') step.checksum = checksum;
  if (isAdd && ins.keepGitDir !== undefined) step.keepGitDir = ins.keepGitDir;
  const { line: _l, endLine: _e, original: _o, history: _h, cacheKey: _c, config: _cfg, ...semantic } = step;
  step.cacheKey = hashKey(semantic);
  return step;
}

