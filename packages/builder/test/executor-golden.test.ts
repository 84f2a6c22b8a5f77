/**
 * Golden build cases (BuildKit's testfiles layout), run for real: runc, overlay snapshots, the
 * store. Each case is
 *
 *   fixtures/dockerfiles/build/<case>/Dockerfile
 *   fixtures/dockerfiles/build/<case>/context/...      the build context (optional)
 *   fixtures/dockerfiles/build/<case>/expected.json
 *
 * expected.json: `options` (buildArgs, target, labels, secrets by id → file in the case dir,
 * network), `setup` (shell commands run in the copied context first: modes, owners, links git
 * cannot hold), `fs` (path → entry, or null for "absent"), `config` (the image config's
 * `config`), `history` ([created_by, empty_layer] pairs, base image entries left out) and
 * `logs` (strings the step output must contain).
 *
 * fixtures/dockerfiles/build/fail/<case>/ holds builds that must fail: expected.json has
 * `where` (`Dockerfile:LINE`), `message` (a substring of the one-line error) and `code`.
 *
 * The expectations are docker's (BuildKit's) results, checked against `buildah bud` where in
 * doubt. `MYBUILD_UPDATE_GOLDEN=1` writes the observed fs/config/history into expected.json.
 */
import { execFileSync } from 'node:child_process';
import { cpSync, existsSync, mkdtempSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { MyBuildError } from '@mybuild/oci';
import type { BuildEvent, SecretSource } from '@mybuild/builder';
import { type FsEntry, type TestStore, canBuild, describePath, failBuild, runBuild, testStore, unpackRootfs } from './executor-helpers.js';

const ROOT = fileURLToPath(new URL('../../../fixtures/dockerfiles/build/', import.meta.url));
const UPDATE = process.env['MYBUILD_UPDATE_GOLDEN'] === '1';

interface CaseOptions {
  buildArgs?: Record<string, string>;
  target?: string;
  labels?: Record<string, string>;
  secrets?: Record<string, string>;
  network?: 'host' | 'none';
}

interface Expected {
  options?: CaseOptions;
  setup?: string;
  fs?: Record<string, FsEntry | null>;
  config?: unknown;
  history?: [string, boolean][];
  logs?: string[];
}

interface ExpectedFailure {
  options?: CaseOptions;
  setup?: string;
  where: string;
  message: string;
  code?: string;
}

function cases(dir: string): string[] {
  if (!existsSync(dir)) return [];
  return readdirSync(dir, { withFileTypes: true })
    .filter((e) => e.isDirectory() && e.name !== 'fail' && existsSync(join(dir, e.name, 'Dockerfile')))
    .map((e) => e.name)
    .sort();
}

function prepareContext(t: TestStore, caseDir: string, setup: string | undefined): string {
  const ctx = mkdtempSync(join(t.dir, 'ctx-'));
  if (existsSync(join(caseDir, 'context'))) cpSync(join(caseDir, 'context'), ctx, { recursive: true, verbatimSymlinks: true });
  if (setup) execFileSync('/bin/sh', ['-ec', setup], { cwd: ctx });
  return ctx;
}

function buildOptions(caseDir: string, ctx: string, o: CaseOptions = {}) {
  const secrets: Record<string, SecretSource> = {};
  for (const [id, file] of Object.entries(o.secrets ?? {})) secrets[id] = { file: join(caseDir, file) };
  return {
    contextDir: ctx,
    dockerfile: readFileSync(join(caseDir, 'Dockerfile'), 'utf8'),
    ...(o.buildArgs ? { buildArgs: o.buildArgs } : {}),
    ...(o.target ? { target: o.target } : {}),
    ...(o.labels ? { labels: o.labels } : {}),
    ...(o.network ? { network: o.network } : {}),
    secrets,
  };
}

function logText(events: BuildEvent[]): string {
  return events
    .filter((e): e is Extract<BuildEvent, { type: 'log' }> => e.type === 'log')
    .map((e) => e.data.toString('utf8'))
    .join('');
}

describe.skipIf(!canBuild)('golden builds', () => {
  let t: TestStore;
  beforeAll(async () => {
    t = await testStore('mybuild-golden-');
  });
  afterAll(async () => {
    await t?.cleanup();
  });

  test('the corpus is there', () => {
    expect(cases(ROOT).length).toBeGreaterThanOrEqual(10);
    expect(cases(join(ROOT, 'fail')).length).toBeGreaterThanOrEqual(8);
  });

  for (const name of cases(ROOT)) {
    test(name, async () => {
      const caseDir = join(ROOT, name);
      const file = join(caseDir, 'expected.json');
      const expected = JSON.parse(readFileSync(file, 'utf8')) as Expected;
      const ctx = prepareContext(t, caseDir, expected.setup);
      const tag = `golden/${name}:latest`;
      const { result, events } = await runBuild(t, { ...buildOptions(caseDir, ctx, expected.options), tags: [tag] });
      const rootfs = await unpackRootfs(t, tag);
      const fs: Record<string, FsEntry | null> = {};
      for (const path of Object.keys(expected.fs ?? {})) fs[path] = describePath(rootfs, path) ?? null;
      const baseHistory = 1;
      const history = (result.config.history ?? []).slice(baseHistory).map((h) => [h.created_by ?? '', h.empty_layer === true] as [string, boolean]);
      if (UPDATE) {
        writeFileSync(file, `${JSON.stringify({ ...expected, fs, config: result.config.config, history }, null, 2)}\n`);
        return;
      }
      expect(fs).toEqual(expected.fs ?? {});
      if (expected.config !== undefined) expect(result.config.config).toEqual(expected.config);
      if (expected.history !== undefined) expect(history).toEqual(expected.history);
      // every layer the config lists is in the manifest, in order
      expect(result.config.rootfs.diff_ids.length).toBe(history.filter(([, empty]) => !empty).length + baseHistory);
      const logs = logText(events);
      for (const s of expected.logs ?? []) expect(logs).toContain(s);
    });
  }

  for (const name of cases(join(ROOT, 'fail'))) {
    test(`fail/${name}`, async () => {
      const caseDir = join(ROOT, 'fail', name);
      const expected = JSON.parse(readFileSync(join(caseDir, 'expected.json'), 'utf8')) as ExpectedFailure;
      const ctx = prepareContext(t, caseDir, expected.setup);
      const before = await t.store.images.list();
      const { error } = await failBuild(t, { ...buildOptions(caseDir, ctx, expected.options), tags: [`golden-fail/${name}:latest`] });
      expect(error).toBeInstanceOf(MyBuildError);
      const e = error as MyBuildError;
      expect(e.where).toBe(expected.where);
      expect(e.oneLine()).toContain(expected.message);
      if (expected.code) expect(e.code).toBe(expected.code);
      // the store is as it was: no new tag
      expect(await t.store.images.list()).toEqual(before);
    });
  }
});
