/**
 * `mybuild build` through the bundled CLI: BuildKit-style plain progress, CACHED on a second
 * build, a failing RUN as one located error line (with the step's last output above it) and an
 * unchanged store, flags (-f, --build-arg, --target, --label, -q, --iidfile, --secret, -o).
 */
import { existsSync, mkdirSync, mkdtempSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:https';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { writeBusyboxImage } from '@mybuild/fixtures/images.mjs';
import { cli, ok, run, tempDir } from './helpers.js';
import { createCa } from '../../../fixtures/src/pki.js';
import { startRegistry } from '../../../fixtures/src/registry.js';

const canBuild = process.getuid?.() === 0 && existsSync('/usr/sbin/runc') && existsSync('/bin/busybox');

describe.skipIf(!canBuild)('mybuild build', () => {
  let t: { dir: string; cleanup: () => Promise<void> };
  let root: string;
  let ctx: string;

  beforeAll(async () => {
    t = await tempDir('mybuild-cli-build-');
    root = join(t.dir, 'store');
    const archive = join(t.dir, 'busybox.tar');
    await writeBusyboxImage('oci-archive', archive, { tag: 'busybox:latest' });
    await ok(root, ['load', '-i', archive]);
    ctx = join(t.dir, 'ctx');
    mkdirSync(join(ctx, 'src'), { recursive: true });
    writeFileSync(join(ctx, 'src', 'main.sh'), 'echo "hello from the image"\n');
    writeFileSync(
      join(ctx, 'Dockerfile'),
      'FROM busybox\nARG WHO=world\nENV WHO=$WHO\nWORKDIR /app\nCOPY src/ ./\nRUN echo "building for $WHO"\nCMD ["sh", "/app/main.sh"]\n',
    );
  });
  afterAll(async () => t?.cleanup());

  test('builds with plain progress, then every step is CACHED', async () => {
    const r = await cli(root, ['build', '--progress', 'plain', '-t', 'cli-app:1', '--build-arg', 'WHO=tests', '--label', 'team=qa', ctx]);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).toBe('');
    expect(r.stderr).toMatch(/#\d+ \[1\/4\] FROM docker\.io\/library\/busybox:latest@sha256:[0-9a-f]{64}\n/);
    expect(r.stderr).toMatch(/#(\d+) \[4\/4\] RUN echo "building for \$WHO"\n#\1 +\d+\.\d building for tests\n#\1 DONE \d+\.\ds\n/);
    expect(r.stderr).toContain('naming to docker.io/library/cli-app:1 done');
    const images = await ok(root, ['images']);
    expect(images).toMatch(/cli-app\s+1\s/);
    const inspect = JSON.parse(await ok(root, ['inspect', 'cli-app:1'])) as { Config: { config: { Labels: Record<string, string>; Env: string[] } } }[];
    expect(inspect[0]!.Config.config.Labels).toEqual({ team: 'qa' });
    expect(inspect[0]!.Config.config.Env).toContain('WHO=tests');

    const again = await cli(root, ['build', '--progress', 'plain', '-t', 'cli-app:1', '--build-arg', 'WHO=tests', '--label', 'team=qa', ctx]);
    expect(again.code, again.stderr).toBe(0);
    expect(again.stderr.match(/CACHED/g)?.length).toBe(4);
    expect(again.stderr).not.toMatch(/#\d+ +\d+\.\d building/);
  });

  test('prune keeps the build cache: after rmi + prune the same build is still all CACHED', async () => {
    const args = ['build', '--progress', 'plain', '-t', 'cli-app:prune', '--build-arg', 'WHO=prune', ctx];
    expect((await cli(root, args)).code).toBe(0);
    await ok(root, ['rmi', 'cli-app:prune']);
    await ok(root, ['prune']);
    const again = await cli(root, args);
    expect(again.code, again.stderr).toBe(0);
    expect(again.stderr.match(/CACHED/g)?.length).toBe(4);
    await ok(root, ['inspect', 'cli-app:prune']);
  });

  test('prune -a drops the build cache and what only it kept; tagged images stay whole', async () => {
    const args = ['build', '--progress', 'plain', '-t', 'cli-app:all', '--build-arg', 'WHO=all', ctx];
    expect((await cli(root, args)).code).toBe(0);
    const kept = await cli(root, ['build', '--progress', 'plain', '-t', 'cli-app:kept', '--build-arg', 'WHO=kept', ctx]);
    expect(kept.code, kept.stderr).toBe(0);
    await ok(root, ['rmi', 'cli-app:all']);
    const out = JSON.parse(await ok(root, ['prune', '-a', '--format', 'json'])) as { blobsRemoved: number; snapshotsRemoved: number; buildCacheRecordsRemoved: number };
    expect(out.buildCacheRecordsRemoved).toBeGreaterThan(0);
    expect(out.blobsRemoved).toBeGreaterThan(0); // cli-app:all's own layers, kept by its cache records until now
    expect(existsSync(join(root, 'cache', 'build'))).toBe(false);
    // the image still tagged is whole: its layers unpack
    const dest = join(t.dir, 'unpacked-kept');
    await ok(root, ['unpack', 'cli-app:kept', dest]);
    expect(readFileSync(join(dest, 'app', 'main.sh'), 'utf8')).toBe('echo "hello from the image"\n');
    // and nothing is CACHED any more: the steps run again
    const again = await cli(root, args);
    expect(again.code, again.stderr).toBe(0);
    expect(again.stderr.match(/CACHED/g)?.length ?? 0).toBeLessThanOrEqual(1); // the FROM only
    expect(again.stderr).toMatch(/#\d+ +\d+\.\d building for all\n/);
    expect(await ok(root, ['prune', '-a'])).toMatch(/^Deleted \d+ blobs, \d+ snapshots, \d+ ingests, \d+ build cache records\n/);
  });

  test('push of a built image compresses its layers (gzip) as docker push does; the pushed digest reads back', async () => {
    const reg = await startRegistry();
    try {
      const r = await cli(root, ['build', '-q', '-t', 'cli-app:push', ctx]);
      expect(r.code, r.stderr).toBe(0);
      const local = JSON.parse(await ok(root, ['inspect', 'cli-app:push'])) as { Manifest: { layers: { mediaType: string }[] } }[];
      // the base layer came compressed; the build's own layers are kept uncompressed in the store
      expect(local[0]!.Manifest.layers.some((l) => l.mediaType === 'application/vnd.oci.image.layer.v1.tar')).toBe(true);
      const out = await ok(root, ['push', 'cli-app:push', `${reg.host}/team/cli-app:1`]);
      const digest = /digest: (sha256:[0-9a-f]{64})/.exec(out)?.[1];
      expect(digest).toBeDefined();
      const raw = JSON.parse(await run('skopeo', ['inspect', '--raw', '--tls-verify=false', `docker://${reg.host}/team/cli-app:1`])) as { layers: { mediaType: string }[] };
      expect(raw.layers.length).toBe(local[0]!.Manifest.layers.length);
      expect(raw.layers.every((l) => l.mediaType === 'application/vnd.oci.image.layer.v1.tar+gzip')).toBe(true);
      const remote = JSON.parse(await run('skopeo', ['inspect', '--tls-verify=false', `docker://${reg.host}/team/cli-app:1`])) as { Digest: string };
      expect(remote.Digest).toBe(digest);
      // a second push sends the same manifest (compressed blobs are remembered)
      const again = await ok(root, ['push', 'cli-app:push', `${reg.host}/team/cli-app:1`]);
      expect(again).toContain(digest!);
    } finally {
      await reg.stop();
    }
  });

  test('-q prints the image ID; --iidfile writes it', async () => {
    const iid = join(t.dir, 'iid');
    const r = await cli(root, ['build', '-q', '--iidfile', iid, '-t', 'cli-app:q', ctx]);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stderr).toBe('');
    expect(r.stdout).toMatch(/^sha256:[0-9a-f]{64}\n$/);
    expect(readFileSync(iid, 'utf8')).toBe(r.stdout.trim());
  });

  test('a failing RUN: its last lines, one located error line, exit 1, the store unchanged', async () => {
    const fctx = join(t.dir, 'fail');
    mkdirSync(fctx, { recursive: true });
    writeFileSync(join(fctx, 'Dockerfile.fail'), 'FROM busybox\nRUN echo one\nRUN echo "compiling..." && echo "error: it broke" >&2 && exit 3\nRUN echo never\n');
    const before = await ok(root, ['images', '-q']);
    const r = await cli(root, ['build', '--progress', 'plain', '-f', join(fctx, 'Dockerfile.fail'), '-t', 'broken:1', fctx]);
    expect(r.code).toBe(1);
    const lines = r.stderr.trimEnd().split('\n');
    expect(lines.at(-1)).toBe(
      `mybuild: error: ${join(fctx, 'Dockerfile.fail')}:3: RUN echo "compiling..." && echo "error: it broke" >&2 && exit 3: process "/bin/sh -c echo \\"compiling...\\" && echo \\"error: it broke\\" >&2 && exit 3" did not complete successfully: exit code: 3`.replace(/\\"/g, '"'),
    );
    expect(r.stderr).toContain(' > [3/4] RUN echo "compiling..."');
    expect(r.stderr).toMatch(/------\n > \[3\/4\] RUN [^\n]*:\n(compiling\.\.\.\nerror: it broke\n|error: it broke\ncompiling\.\.\.\n)------\n/);
    expect(r.stderr).not.toContain('echo never');
    expect(await ok(root, ['images', '-q'])).toBe(before);
  });

  test('--target, --secret, rawjson progress and an OCI output', async () => {
    const sctx = join(t.dir, 'secret');
    mkdirSync(sctx, { recursive: true });
    writeFileSync(
      join(sctx, 'Dockerfile'),
      'FROM busybox AS base\nRUN --mount=type=secret,id=tok test "$(cat /run/secrets/tok)" = s3cr3t && echo ok > /ok\nFROM base AS final\nRUN exit 9\n',
    );
    const out = join(t.dir, 'oci-out');
    const r = await cli(root, ['build', '--progress', 'rawjson', '--target', 'base', '--secret', 'id=tok,env=TOK_VALUE', '-o', `type=oci,dest=${out}`, '-t', 'sec:1', sctx], {
      env: { TOK_VALUE: 's3cr3t' },
    });
    expect(r.code, r.stderr).toBe(0);
    const events = r.stderr.trim().split('\n').map((l) => JSON.parse(l) as { type: string; name?: string });
    expect(events.some((e) => e.type === 'vertex' && e.name === '[base 2/2] RUN --mount=type=secret,id=tok test "$(cat /run/secrets/tok)" = s3cr3t && echo ok > /ok')).toBe(true);
    expect(r.stderr).not.toContain('s3cr3t"');
    expect(existsSync(join(out, 'index.json'))).toBe(true);
  });

  test('ADD of an https URL: NODE_EXTRA_CA_CERTS trusted (the command keeps it from Node and trusts it itself), redirects followed', async () => {
    const ca = createCa(mkdtempSync(join(t.dir, 'pki-')));
    const pair = ca.issue('downloads', 'server');
    const server = createServer({ cert: readFileSync(pair.cert), key: readFileSync(pair.key) }, (req, res) => {
      if (req.url === '/latest') res.writeHead(302, { location: '/files/tool-1.txt' }).end();
      else if (req.url === '/files/tool-1.txt') res.writeHead(200, { 'last-modified': 'Tue, 01 Jan 2019 00:00:00 GMT' }).end('tool 1\n');
      else res.writeHead(404).end();
    });
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    try {
      const dctx = mkdtempSync(join(t.dir, 'ctx-https-'));
      writeFileSync(join(dctx, 'Dockerfile'), `FROM scratch\nADD https://127.0.0.1:${(server.address() as AddressInfo).port}/latest /tool.txt\n`);
      const untrusted = await cli(root, ['build', '-q', dctx], { env: { NODE_EXTRA_CA_CERTS: undefined } });
      expect(untrusted.code).toBe(1);
      expect(untrusted.stderr.trim().split('\n')).toHaveLength(1);
      expect(untrusted.stderr).toMatch(/^mybuild: error: Dockerfile:2: ADD .*: downloading https:\/\/127\.0\.0\.1:\d+\/latest failed: .*certificate.*NODE_EXTRA_CA_CERTS/);
      for (const via of ['command', 'node'] as const) {
        const out = join(dctx, `out-${via}`);
        const r = await cli(root, ['build', '--no-cache', '-o', `type=local,dest=${out}`, dctx], { env: { NODE_EXTRA_CA_CERTS: ca.cert }, via });
        expect(r.code, r.stderr).toBe(0);
        expect(readFileSync(join(out, 'tool.txt'), 'utf8')).toBe('tool 1\n');
        expect(statSync(join(out, 'tool.txt')).mtimeMs).toBe(Date.parse('2019-01-01T00:00:00Z'));
      }
    } finally {
      await new Promise<void>((r) => server.close(() => r()));
    }
  });

  test('usage errors exit 2 with one line', async () => {
    const r = await cli(root, ['build', '--no-such-flag', ctx]);
    expect(r.code).toBe(2);
    expect(r.stderr.trim().split('\n')).toHaveLength(1);
    const n = await cli(root, ['build', '--network', 'bridge', ctx]);
    expect(n.code).toBe(2);
    expect(n.stderr).toContain('unsupported --network "bridge"');
    const missing = await cli(root, ['build', join(t.dir, 'nope')]);
    expect(missing.code).toBe(2);
  });
});
