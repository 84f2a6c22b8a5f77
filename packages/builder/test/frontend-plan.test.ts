import { describe, expect, test } from 'vitest';
import { MyBuildError, isInvalidArgument, type ImageConfig } from '@mybuild/oci';
import { expandOnBuild, planBuild, type BuildPlan, type PlanOptions, type RunStep } from '@mybuild/builder';

const AMD64 = { os: 'linux', arch: 'amd64' };
const plan = (text: string, options: PlanOptions = {}): BuildPlan => planBuild(text, { buildPlatform: AMD64, ...options });

function image(config: ImageConfig['config'], extra: Partial<ImageConfig> = {}): ImageConfig {
  return { architecture: 'amd64', os: 'linux', rootfs: { type: 'layers', diff_ids: [] }, config, ...extra };
}

function errorOf(fn: () => unknown): MyBuildError {
  try {
    fn();
  } catch (err) {
    expect(isInvalidArgument(err)).toBe(true);
    return err as MyBuildError;
  }
  throw new Error('expected an error');
}

describe('stage graph', () => {
  const df = [
    'FROM busybox AS a', //  1
    'RUN a', //              2
    'FROM busybox AS b', //  3
    'RUN b', //              4
    'FROM a AS c', //        5
    'COPY --from=b / /', //  6
    'FROM scratch AS d', //  7
    'RUN --mount=from=c,target=/c true', // 8
    'FROM scratch AS lonely', // 9
  ].join('\n');

  test('the target and what it needs, in order, in parallel groups', () => {
    const p = plan(df, { target: 'd' });
    expect(p.stages.map((s) => s.id)).toEqual(['a', 'b', 'c', 'd']);
    expect(p.target).toBe(3);
    expect(p.parallel).toEqual([[0, 1], [2], [3]]);
    expect(p.stages.find((s) => s.id === 'c')!.dependsOn).toEqual([0, 1]);
    expect(p.stages.find((s) => s.id === 'd')!.dependsOn).toEqual([2]);
  });

  test('the last stage is the default target; unrelated stages are dropped', () => {
    const p = plan(df);
    expect(p.stages.map((s) => s.id)).toEqual(['lonely']);
    expect(p.images).toEqual([]);
  });

  test('--target is case-insensitive and suggests names', () => {
    expect(plan(df, { target: 'C' }).stages.map((s) => s.id)).toEqual(['a', 'b', 'c']);
    const e = errorOf(() => plan(df, { target: 'lonley' }));
    expect(e.oneLine()).toBe('Dockerfile: target stage "lonley" could not be found (hint: did you mean lonely? stages: a, b, c, d, lonely)');
  });

  test('images to fetch, with the platform each is needed for', () => {
    const p = plan('FROM --platform=linux/arm64 alpine AS x\nFROM debian:12\nCOPY --from=x / /\nCOPY --from=nginx / /\n', {
      platform: { os: 'linux', arch: 'arm', variant: 'v7' },
    });
    expect(p.images.map((i) => [i.ref, i.platform, i.resolved, i.usedBy])).toEqual([
      ['alpine', { os: 'linux', arch: 'arm64' }, false, [0]],
      ['debian:12', { os: 'linux', arch: 'arm', variant: 'v7' }, false, [1]],
      ['nginx', { os: 'linux', arch: 'arm', variant: 'v7' }, false, [1]],
    ]);
    expect(p.stages[1]!.image).toMatchObject({ os: 'linux', architecture: 'arm', variant: 'v7' });
  });

  test('a --from that is close to a stage name but is not one is an image, with a warning', () => {
    const p = plan('FROM busybox AS build\nFROM scratch\nCOPY --from=biuld /a /a\n');
    expect(p.stages.map((s) => s.id)).toEqual(['stage-1']);
    expect(p.warnings.map((w) => w.rule)).toContain('FromImageNotStage');
  });
});

describe('base image configs', () => {
  const base = image({ Env: ['PATH=/usr/bin', 'LANG=C'], WorkingDir: '/work', User: 'app', Cmd: ['run'], OnBuild: ['RUN echo trigger'] });
  test('without a config the image counts as empty and is reported unresolved', () => {
    const p = plan('FROM example.com/base\nRUN pwd\n');
    const run = p.stages[0]!.steps[0] as RunStep;
    expect(run).toMatchObject({ workdir: '/', user: '', env: ['PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin'] });
    expect(p.images[0]).toMatchObject({ ref: 'example.com/base', resolved: false });
  });
  test('with a config: env, workdir, user, triggers', () => {
    const p = plan('FROM example.com/base\nRUN pwd\n', { resolveImage: (ref) => (ref === 'example.com/base' ? base : undefined) });
    const [trigger, own] = p.stages[0]!.steps as RunStep[];
    expect(trigger).toMatchObject({ onbuild: true, line: 1, args: ['/bin/sh', '-c', 'echo trigger'] });
    expect(own).toMatchObject({ onbuild: false, workdir: '/work', user: 'app', env: ['PATH=/usr/bin', 'LANG=C'] });
    expect(p.stages[0]!.image.config).toEqual({ User: 'app', Env: ['PATH=/usr/bin', 'LANG=C'], Cmd: ['run'], WorkingDir: '/work' });
    expect(p.images[0]!.resolved).toBe(true);
  });
  test('a trigger that copies from another stage makes that stage needed', () => {
    const withCopy = image({ OnBuild: ['COPY --from=assets /a /a'] });
    const p = plan('FROM busybox AS assets\nRUN x\nFROM example.com/ob\nRUN y\n', { resolveImage: (ref) => (ref === 'example.com/ob' ? withCopy : undefined) });
    expect(p.stages.map((s) => s.id)).toEqual(['assets', 'stage-1']);
    expect(p.stages[1]!.dependsOn).toEqual([0]);
  });
  test('ONBUILD of a base image can reach a stage defined later: an error at FROM', () => {
    const withCopy = image({ OnBuild: ['COPY --from=later /a /a'] });
    const e = errorOf(() => plan('FROM example.com/ob AS first\nFROM busybox AS later\nFROM first\n', { resolveImage: (ref) => (ref === 'example.com/ob' ? withCopy : undefined) }));
    expect(e.where).toBe('Dockerfile:1');
    expect(e.message).toBe('cannot copy from stage "later", it needs to be defined before current stage "first"');
  });
});

describe('expandOnBuild', () => {
  test('triggers become instructions placed after FROM', () => {
    const ins = expandOnBuild(['RUN echo a', 'COPY --chown=1 . /app', 'ARG X=1'], { line: 3 });
    expect(ins.map((i) => [i.kind, i.line])).toEqual([
      ['RUN', 3],
      ['COPY', 3],
      ['ARG', 3],
    ]);
  });
  test('a trigger that is not one instruction, or is invalid, is an error at the FROM line', () => {
    expect(errorOf(() => expandOnBuild(['RUN a\nRUN b'], { line: 7 })).where).toBe('Dockerfile:7');
    const e = errorOf(() => expandOnBuild(['COPY --nope a b'], { line: 2, fileName: 'Containerfile' }));
    expect(e.oneLine()).toBe('Containerfile:2: ONBUILD trigger "COPY --nope a b": unknown flag: --nope (hint: accepted flags: --chown, --from, --chmod, --link, --exclude, --parents)');
    expect(() => expandOnBuild(['ONBUILD RUN x'])).toThrow(/Chaining ONBUILD/);
    expect(() => expandOnBuild(['FROM x'])).toThrow(/FROM isn't allowed/);
  });
  test('heredoc triggers keep their body', () => {
    const [run] = expandOnBuild(['RUN <<EOF\necho hi\nEOF']);
    expect(run).toMatchObject({ kind: 'RUN', files: [{ name: 'EOF', data: 'echo hi\n' }] });
  });
});

describe('build args', () => {
  test('unused build args are reported like docker', () => {
    const p = plan('ARG USED\nFROM scratch\nARG ALSO\n', { buildArgs: { USED: '1', ALSO: '2', ZED: '3', AARDVARK: '4', HTTP_PROXY: 'x', TARGETARCH: 'arm64' } });
    expect(p.warnings.filter((w) => w.rule === 'UnusedBuildArgs').map((w) => w.message)).toEqual([
      '[Warning] One or more build-args [AARDVARK ZED] were not consumed',
    ]);
  });
  test('a build arg overrides a platform arg', () => {
    const p = plan('FROM scratch\nARG TARGETARCH\nENV A=$TARGETARCH\n', { buildArgs: { TARGETARCH: 'riscv64' } });
    expect(p.stages[0]!.image.config.Env).toContain('A=riscv64');
  });
  test('proxy build args reach RUN without being recorded', () => {
    const p = plan('FROM busybox\nRUN wget x\n', { buildArgs: { https_proxy: 'http://p:1' } });
    const run = p.stages[0]!.steps[0] as RunStep;
    expect(run.proxyEnv).toEqual(['HTTPS_PROXY=http://p:1', 'https_proxy=http://p:1']);
    expect(run.env.some((e) => e.includes('proxy'))).toBe(false);
    expect(run.history?.created_by).toBe('RUN /bin/sh -c wget x # buildkit');
  });
});

describe('config per step', () => {
  test('each step carries the config after it; MAINTAINER carries the author', () => {
    const steps = plan('FROM scratch\nENV A=1\nMAINTAINER me\nCMD ["x"]\nENTRYPOINT ["y"]\n').stages[0]!.steps;
    expect(steps.map((s) => s.config.Cmd)).toEqual([undefined, undefined, ['x'], ['x']]);
    expect(steps[0]!.config.Env).toEqual(['PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin', 'A=1']);
    expect(steps[1]).toMatchObject({ kind: 'config', author: 'me' });
    expect(steps[3]!.config.Entrypoint).toEqual(['y']);
  });
});

describe('cache keys', () => {
  test('do not depend on line numbers or comments, do depend on what the step sees', () => {
    const a = plan('FROM busybox\nENV A=1\nRUN make\n').stages[0]!.steps;
    const b = plan('# comment\nFROM busybox\n\nENV A=1\nRUN make\n').stages[0]!.steps;
    const c = plan('FROM busybox\nENV A=2\nRUN make\n').stages[0]!.steps;
    expect(a.map((s) => s.cacheKey)).toEqual(b.map((s) => s.cacheKey));
    expect(a[1]!.cacheKey).not.toBe(c[1]!.cacheKey);
    expect(a[1]!.cacheKey).toMatch(/^[0-9a-f]{64}$/);
  });
  test('proxy settings do not change them', () => {
    const a = plan('FROM busybox\nRUN make\n').stages[0]!.steps[0]!.cacheKey;
    const b = plan('FROM busybox\nRUN make\n', { buildArgs: { HTTP_PROXY: 'http://p' } }).stages[0]!.steps[0]!.cacheKey;
    expect(a).toBe(b);
  });
});

describe('errors', () => {
  test('expansion errors point at the instruction', () => {
    const e = errorOf(() => plan('FROM scratch\n\nWORKDIR ${DIR:?needs DIR}\n'));
    expect(e.where).toBe('Dockerfile:3');
    expect(e.message).toBe('failed to process "${DIR:?needs DIR}": DIR: needs DIR');
  });
  test('a mount from a stage defined later', () => {
    const e = errorOf(() => plan('FROM busybox AS a\nRUN --mount=from=b,target=/b true\nFROM busybox AS b\nFROM a\n'));
    expect(e.oneLine()).toBe('Dockerfile:2: cannot mount from stage "b" to "/b", stage needs to be defined before current command');
  });
  test('the file name is used in locations', () => {
    expect(errorOf(() => plan('FROM scratch\nBOGUS x\n', { fileName: 'docker/app.Dockerfile' })).where).toBe('docker/app.Dockerfile:2');
  });
});
