/**
 * Golden cases for the Dockerfile front end (BuildKit's testfiles layout):
 *
 *   fixtures/dockerfiles/<case>/Dockerfile       + expected.json       the plan's observable result
 *   fixtures/dockerfiles/fail/<case>/Dockerfile  + expected-error.txt  the one-line error
 *
 * Either may have `options.json` ({ buildArgs, target, platform, buildPlatform, labels })
 * and `images.json` (image configs by reference, standing in for a registry).
 * `MYBUILD_UPDATE_GOLDEN=1` rewrites the expected files from the current output.
 */
import { existsSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, test } from 'vitest';
import { MyBuildError, type ImageConfig } from '@mybuild/oci';
import { formatPlatform, planBuild, type BuildPlan, type PlanOptions, type PlanStep, type PlannedStage } from '@mybuild/builder';

const ROOT = fileURLToPath(new URL('../../../fixtures/dockerfiles/', import.meta.url));
const UPDATE = process.env['MYBUILD_UPDATE_GOLDEN'] === '1';

interface CaseOptions extends Omit<PlanOptions, 'resolveImage'> {}

function loadOptions(dir: string): PlanOptions {
  const opts: PlanOptions = { buildPlatform: { os: 'linux', arch: 'amd64' } };
  const optFile = join(dir, 'options.json');
  if (existsSync(optFile)) Object.assign(opts, JSON.parse(readFileSync(optFile, 'utf8')) as CaseOptions);
  const imgFile = join(dir, 'images.json');
  if (existsSync(imgFile)) {
    const images = JSON.parse(readFileSync(imgFile, 'utf8')) as Record<string, ImageConfig>;
    opts.resolveImage = (ref) => images[ref];
  }
  return opts;
}

function caseDirs(dir: string): string[] {
  if (!existsSync(dir)) return [];
  return readdirSync(dir, { withFileTypes: true })
    .filter((e) => e.isDirectory() && e.name !== 'fail' && existsSync(join(dir, e.name, 'Dockerfile')))
    .map((e) => e.name)
    .sort();
}

function stageRef(plan: BuildPlan, index: number): string {
  return plan.stages.find((s) => s.index === index)?.id ?? `stage-${index}`;
}

function source(plan: BuildPlan, from: { kind: string; index?: number; ref?: string; platform?: { os: string; arch: string } }): string {
  switch (from.kind) {
    case 'stage':
      return `stage ${stageRef(plan, from.index!)}`;
    case 'image':
      return `image ${from.ref}`;
    default:
      return from.kind;
  }
}

/** What a test looks at in a step: the executor's inputs and the history entry. */
function observeStep(plan: BuildPlan, s: PlanStep): Record<string, unknown> {
  const o: Record<string, unknown> = { line: s.line, instruction: s.instruction, kind: s.kind };
  if (s.onbuild) o['onbuild'] = true;
  switch (s.kind) {
    case 'run':
      o['args'] = s.args;
      o['env'] = s.env;
      if (s.proxyEnv.length) o['proxyEnv'] = s.proxyEnv;
      if (s.user) o['user'] = s.user;
      o['workdir'] = s.workdir;
      if (s.mounts.length) o['mounts'] = s.mounts.map((m) => ({ ...m, from: source(plan, m.from) }));
      if (s.network !== 'default') o['network'] = s.network;
      if (s.security !== 'sandbox') o['security'] = s.security;
      if (s.inlineFiles.length) o['inlineFiles'] = s.inlineFiles.map((f) => ({ ...f, mode: f.mode.toString(8) }));
      break;
    case 'copy':
      o['from'] = source(plan, s.from);
      o['sources'] = s.sources.map((x) => (x.kind === 'path' ? x.path : x));
      o['dest'] = s.dest;
      if (s.chown !== undefined) o['chown'] = s.chown;
      if (s.chmod !== undefined) o['chmod'] = s.chmod.toString(8).padStart(4, '0');
      if (s.link) o['link'] = true;
      if (s.parents) o['parents'] = true;
      if (s.excludes.length) o['excludes'] = s.excludes;
      if (s.instruction === 'ADD') o['unpack'] = s.unpack;
      if (s.checksum !== undefined) o['checksum'] = s.checksum;
      if (s.keepGitDir !== undefined) o['keepGitDir'] = s.keepGitDir;
      break;
    case 'workdir':
      o['path'] = s.path;
      if (s.user) o['user'] = s.user;
      break;
    case 'config':
      break;
  }
  o['created_by'] = s.history?.created_by ?? null;
  if (s.history) o['empty_layer'] = s.history.empty_layer;
  return o;
}

function observeStage(plan: BuildPlan, st: PlannedStage): Record<string, unknown> {
  const base = st.base.kind === 'stage' ? `stage ${stageRef(plan, st.base.index)}` : st.base.kind === 'image' ? `image ${st.base.ref}` : 'scratch';
  return {
    id: st.id,
    index: st.index,
    line: st.line,
    base,
    platform: formatPlatform(st.platform),
    dependsOn: st.dependsOn.map((i) => stageRef(plan, i)),
    image: st.image,
    steps: st.steps.map((s) => observeStep(plan, s)),
  };
}

function observePlan(plan: BuildPlan): Record<string, unknown> {
  return {
    target: stageRef(plan, plan.target),
    stages: plan.stages.map((s) => observeStage(plan, s)),
    parallel: plan.parallel.map((g) => g.map((i) => stageRef(plan, i))),
    images: plan.images.map((i) => `${i.ref} ${formatPlatform(i.platform)}${i.resolved ? '' : ' (unresolved)'}`),
    warnings: plan.warnings.map((w) => `${w.where ? w.where + ': ' : ''}${w.rule}: ${w.message}`),
  };
}

describe('golden Dockerfiles', () => {
  const cases = caseDirs(ROOT);
  test('there are golden cases', () => {
    expect(cases.length).toBeGreaterThan(10);
  });
  test.each(cases)('%s', (name) => {
    const dir = join(ROOT, name);
    const text = readFileSync(join(dir, 'Dockerfile'), 'utf8');
    const got = observePlan(planBuild(text, loadOptions(dir)));
    const expectedFile = join(dir, 'expected.json');
    if (UPDATE || !existsSync(expectedFile)) writeFileSync(expectedFile, JSON.stringify(got, null, 2) + '\n');
    expect(got).toEqual(JSON.parse(readFileSync(expectedFile, 'utf8')));
  });
});

describe('failing Dockerfiles', () => {
  const failRoot = join(ROOT, 'fail');
  const cases = caseDirs(failRoot);
  test('there are failing cases', () => {
    expect(cases.length).toBeGreaterThan(10);
  });
  test.each(cases)('%s', (name) => {
    const dir = join(failRoot, name);
    const text = readFileSync(join(dir, 'Dockerfile'), 'utf8');
    let error: unknown;
    try {
      planBuild(text, loadOptions(dir));
    } catch (err) {
      error = err;
    }
    expect(error).toBeInstanceOf(MyBuildError);
    const e = error as MyBuildError;
    expect(e.code).toBe('INVALID_ARGUMENT');
    const got = e.oneLine();
    const expectedFile = join(dir, 'expected-error.txt');
    if (UPDATE || !existsSync(expectedFile)) writeFileSync(expectedFile, got + '\n');
    expect(got).toBe(readFileSync(expectedFile, 'utf8').trimEnd());
  });
});
