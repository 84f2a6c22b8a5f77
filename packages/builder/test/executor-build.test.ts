/**
 * The executor beyond the golden corpus: secrets never reach a layer, the history, the config
 * or the cache; ADD of URLs (a loopback server: mode, time, --checksum, cache); progress as
 * BuildKit prints it; the sandbox's /run option and runc error wording.
 */
import { createServer, type Server } from 'node:http';
import { mkdirSync, readFileSync, readdirSync, statSync, writeFileSync } from 'node:fs';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';
import { PassThrough } from 'node:stream';
import { gunzipSync, gzipSync } from 'node:zlib';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createProgressPrinter, runtimeSpec } from '@mybuild/builder';
import { runcFailure } from '../src/sandbox/runInSandbox.js';
import { type TestStore, canBuild, describePath, failBuild, runBuild, testStore, unpackRootfs } from './executor-helpers.js';

describe('sandbox options a build uses', () => {
  const base = {
    args: ['true'],
    env: [],
    cwd: '/',
    user: { uid: 0, gid: 0, additionalGids: [0] },
    network: 'host' as const,
    hostname: 'x',
    resolvConf: '/r',
    hosts: '/h',
    mounts: [],
  };
  it('leaves the tmpfs off /run for build steps', () => {
    expect(runtimeSpec(base).mounts.map((m) => m.destination)).toContain('/run');
    expect(runtimeSpec({ ...base, runTmpfs: false }).mounts.map((m) => m.destination)).not.toContain('/run');
  });

  it('words runc failures as docker does', () => {
    const e = runcFailure('runc run failed: unable to start container process: exec: "/no/such": stat /no/such: no such file or directory');
    expect(e.code).toBe('NOT_FOUND');
    expect(runcFailure('exec: "make": executable file not found in $PATH').code).toBe('NOT_FOUND');
  });
});

describe.skipIf(!canBuild)('builds', () => {
  let t: TestStore;
  let ctx: string;
  let server: Server;
  let url: string;
  let served = 'downloaded content\n';
  beforeAll(async () => {
    t = await testStore('mybuild-build-');
    ctx = join(t.dir, 'ctx');
    mkdirSync(ctx);
    server = createServer((req, res) => {
      if (req.url === '/file.txt') {
        res.writeHead(200, { 'Last-Modified': 'Tue, 01 Jan 2019 00:00:00 GMT', 'Content-Type': 'text/plain' });
        res.end(served);
      } else if (req.url === '/encoded.txt') {
        // sent gzip-encoded whatever was asked (as an object stored with that metadata is)
        res.writeHead(200, { 'Content-Encoding': 'gzip' });
        res.end(gzipSync('decoded on the way\n'));
      } else if (req.url === '/cut.bin') {
        res.writeHead(200, { 'Content-Length': '100000' });
        res.write(Buffer.alloc(1000, 1));
        setTimeout(() => res.destroy(), 20);
      } else {
        res.writeHead(404);
        res.end();
      }
    });
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  });
  afterAll(async () => {
    await new Promise<void>((r) => server?.close(() => r()));
    await t?.cleanup();
  });

  it('never puts a secret in a layer, the history, the config or the build cache', async () => {
    const value = 'S3CRET-never-in-a-layer-7f3a';
    const file = join(t.dir, 'secret.txt');
    writeFileSync(file, value);
    const dockerfile = `FROM busybox
RUN --mount=type=secret,id=tok cp /run/secrets/tok /copied && echo "len $(wc -c < /run/secrets/tok)"
RUN --mount=type=secret,id=tok,env=TOK echo "$TOK" | wc -c > /env-len
RUN --mount=type=secret,id=val,target=/etc/val.txt,mode=0440,uid=1000 stat -c '%a %u' /etc/val.txt > /val-stat
`;
    const { result } = await runBuild(t, {
      contextDir: ctx,
      dockerfile,
      secrets: { tok: { file }, val: { value: Buffer.from(value) } },
      tags: ['secret-test:latest'],
    });
    const img = await t.store.images.resolve('secret-test:latest');
    // (a build's layers are deferred blobs: read, not opened as files)
    const tars = await Promise.all(
      img.manifest.layers.map(async (layer) => {
        const blob = await t.store.content.readBytes(layer.digest, 64 << 20);
        return blob[0] === 0x1f ? gunzipSync(blob) : blob;
      }),
    );
    for (const tar of tars) {
      // the first RUN copied it on purpose: that layer has it, no other
      const has = tar.includes(value);
      if (has) expect(tar.includes(Buffer.from('copied'))).toBe(true);
    }
    expect(tars.filter((tar) => tar.includes(value)).length).toBe(1);
    expect(JSON.stringify(result.config)).not.toContain(value);
    for (const name of readdirSync(join(t.store.paths.cache, 'build'))) expect(readFileSync(join(t.store.paths.cache, 'build', name), 'utf8')).not.toContain(value);
    const rootfs = await unpackRootfs(t, 'secret-test:latest');
    expect(readFileSync(join(rootfs, 'val-stat'), 'utf8')).toBe('440 1000\n');
    expect(readFileSync(join(rootfs, 'env-len'), 'utf8')).toBe(`${value.length + 1}\n`);
    expect(describePath(rootfs, '/etc/val.txt')).toBeUndefined();
    expect(describePath(rootfs, '/run/secrets')).toBeUndefined();
  });

  it('ADDs a URL: mode 0600, its Last-Modified time, cached while the content is the same', async () => {
    const dockerfile = `FROM busybox\nADD ${url}/file.txt /dl/\nRUN cat /dl/file.txt\n`;
    const first = await runBuild(t, { contextDir: ctx, dockerfile, tags: ['add-url:latest'] });
    expect(first.result.stepsRun).toBe(2);
    const rootfs = await unpackRootfs(t, 'add-url:latest');
    expect(describePath(rootfs, '/dl/file.txt')).toEqual({ type: 'file', mode: '0600', owner: '0:0', text: served });
    expect(statSync(join(rootfs, 'dl/file.txt')).mtimeMs).toBe(Date.parse('2019-01-01T00:00:00Z'));
    const again = await runBuild(t, { contextDir: ctx, dockerfile, tags: ['add-url:latest'] });
    expect(again.result.stepsCached).toBe(2);
    served = 'new content\n';
    const changed = await runBuild(t, { contextDir: ctx, dockerfile, tags: ['add-url:latest'] });
    expect(changed.result.stepsRun).toBe(2);
  });

  it('ADD of a URL: a gzip Content-Encoding is decoded; a body cut short is a located error and nothing is kept', async () => {
    const ok = await runBuild(t, { contextDir: ctx, dockerfile: `FROM busybox\nADD ${url}/encoded.txt /e.txt\n`, tags: ['add-enc:latest'] });
    expect(ok.result.stepsRun).toBe(1);
    expect(describePath(await unpackRootfs(t, 'add-enc:latest'), '/e.txt')).toMatchObject({ type: 'file', text: 'decoded on the way\n' });
    const before = readdirSync(t.store.paths.tmp);
    const cut = await failBuild(t, { contextDir: ctx, dockerfile: `FROM busybox\nADD ${url}/cut.bin /c\n` });
    expect((cut.error as { where?: string }).where).toBe('Dockerfile:2');
    expect(cut.error.message).toMatch(new RegExp(`downloading ${url}/cut\\.bin failed: `));
    expect(readdirSync(t.store.paths.tmp)).toEqual(before);
  });

  it('checks ADD --checksum', async () => {
    const dockerfile = `FROM busybox\nADD --checksum=sha256:${'0'.repeat(64)} ${url}/file.txt /f\n`;
    const { error } = await failBuild(t, { contextDir: ctx, dockerfile });
    expect((error as { where?: string }).where).toBe('Dockerfile:2');
    expect(error.message).toContain('not the --checksum');
    const missing = await failBuild(t, { contextDir: ctx, dockerfile: `FROM busybox\nADD ${url}/nothing /f\n` });
    expect(missing.error.message).toContain('HTTP 404');
  });

  it('prints progress as BuildKit does (plain)', async () => {
    const dockerfile = 'FROM busybox AS one\nRUN echo hello from one\nFROM busybox\nCOPY --from=one /bin/busybox /b\nRUN echo two; exit 4\n';
    const out = new PassThrough();
    let text = '';
    out.on('data', (c: Buffer) => (text += c.toString()));
    const printer = createProgressPrinter('plain', out as unknown as NodeJS.WritableStream);
    const { events } = await failBuild(t, { contextDir: ctx, dockerfile });
    for (const e of events) printer.onEvent(e);
    printer.end();
    expect(text).toMatch(/^#1 \[internal\] load build definition from Dockerfile\n#1 transferring dockerfile: \d+B done\n#1 DONE \d+\.\ds\n\n/);
    expect(text).toMatch(/#\d+ \[one 1\/2\] FROM docker\.io\/library\/busybox:latest@sha256:[0-9a-f]{64}\n#\d+ CACHED\n/);
    expect(text).toMatch(/#(\d+) \[one 2\/2\] RUN echo hello from one\n(#\1 +\d+\.\d hello from one\n)#\1 DONE \d+\.\ds\n/);
    expect(text).toMatch(/#\d+ \[stage-1 2\/3\] COPY --from=one \/bin\/busybox \/b\n/);
    expect(text).toMatch(/#(\d+) \[stage-1 3\/3\] RUN echo two; exit 4\n#\1 +\d+\.\d two\n#\1 ERROR: process "\/bin\/sh -c echo two; exit 4" did not complete successfully: exit code: 4\n/);
  });
});
