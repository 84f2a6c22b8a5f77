import { readFileSync, statSync, writeFileSync } from 'node:fs';
import { isAbsolute, join, resolve } from 'node:path';
import type { SecureContext } from 'node:tls';
import { MyBuildError, errnoCode } from '@mybuild/oci';
import { type BuildEvent, BuildStepError, type OutputSpec, type SecretSource, build, createProgressPrinter, exportImage, parseOutput, parsePlatform, type ProgressUiMode } from '@mybuild/builder';
import type { RegistryClient } from '@mybuild/registry-client';
import type { CommandContext } from '../main.js';
import { parseCommand, usageError } from '../args.js';
import { deferredCaFiles, hasDeferredCa } from '../extraca.js';
import { open } from '../store.js';

const HELP = `Usage: mybuild build [OPTIONS] CONTEXT

Build an image from a Dockerfile, with docker build's (BuildKit's) semantics and no daemon.

  -t, --tag NAME[:TAG]     name the image (repeatable)
  -f, --file FILE          the Dockerfile (default: CONTEXT/Dockerfile; - reads stdin)
  --build-arg K=V          set a build-time variable (repeatable; K alone takes it from the environment)
  --target STAGE           build this stage (and what it needs) only
  --label K=V              add a label to the image (repeatable)
  --no-cache               run every step again
  --pull                   look base images up in the registry even when the store has them
  --network host|none      network of RUN steps (default host)
  --secret id=ID[,src=FILE|,env=VAR]
                           a secret for RUN --mount=type=secret (repeatable); never stored
  --platform OS/ARCH       the platform to build for (default: this machine's)
  -o, --output SPEC        also export the image (repeatable): type=oci,dest=DIR (an OCI layout),
                           type=docker,dest=FILE (a docker-archive), type=registry (push the -t
                           names), type=local,dest=DIR (the root filesystem)
  --push                   push the -t names to their registries (= --output type=registry)
  --compression ALG        layer compression of exported and pushed images: gzip (default),
                           zstd or uncompressed; build layers stay uncompressed in the store
  --iidfile FILE           write the image ID to FILE
  -q, --quiet              print only the image ID (on stdout)
  --progress MODE          auto | plain | tty | rawjson | quiet (on stderr)

The image goes into the local store (tagged with each -t; untagged without). RUN steps run in
a runc sandbox as root; each step's result is cached in the store (cache/), so a second build
of the same input prints CACHED for every step.
`;

export async function run(ctx: CommandContext): Promise<number> {
  const { values, positionals } = parseCommand('build', ctx.args, {
    tag: { type: 'string', short: 't', multiple: true },
    file: { type: 'string', short: 'f' },
    'build-arg': { type: 'string', multiple: true },
    target: { type: 'string' },
    label: { type: 'string', multiple: true },
    'no-cache': { type: 'boolean' },
    pull: { type: 'boolean' },
    network: { type: 'string' },
    secret: { type: 'string', multiple: true },
    platform: { type: 'string' },
    iidfile: { type: 'string' },
    output: { type: 'string', short: 'o', multiple: true },
    push: { type: 'boolean' },
    compression: { type: 'string' },
    quiet: { type: 'boolean', short: 'q' },
  }, HELP);
  if (positionals.length !== 1) throw usageError('build', positionals.length ? 'takes one context directory' : 'needs a context directory', 'build [OPTIONS] CONTEXT');
  const contextDir = resolve(positionals[0]!);
  let isDir = false;
  try {
    isDir = statSync(contextDir).isDirectory();
  } catch {
    isDir = false;
  }
  if (!isDir) throw new MyBuildError('INVALID_ARGUMENT', `context ${JSON.stringify(positionals[0])} is not a directory`, { hint: 'give the directory holding the files COPY uses, usually "."' });

  const network = values.network ?? 'host';
  if (network !== 'host' && network !== 'none') {
    throw new MyBuildError('INVALID_ARGUMENT', `unsupported --network ${JSON.stringify(network)}`, { hint: 'use host or none (docker\'s "default" is host here)' });
  }
  const { text: dockerfile, path: dockerfilePath, name: fileName } = readDockerfile(values.file, contextDir);
  const buildArgs = keyValues('--build-arg', values['build-arg'] ?? [], true);
  const labels = keyValues('--label', values.label ?? [], false);
  const secrets = parseSecrets(values.secret ?? []);
  const outputs: OutputSpec[] = (values.output ?? []).map(parseOutput);
  if (values.push) outputs.push({ type: 'registry' });
  const compression = values.compression;
  if (compression !== undefined && compression !== 'gzip' && compression !== 'zstd' && compression !== 'uncompressed') {
    throw new MyBuildError('INVALID_ARGUMENT', `unsupported --compression ${JSON.stringify(compression)}`, { hint: 'use gzip, zstd or uncompressed' });
  }
  for (const o of outputs) {
    if (o.compression === undefined && compression !== undefined) o.compression = compression === 'uncompressed' ? 'none' : compression;
    if (o.type === 'registry' && (o.names ?? values.tag ?? []).length === 0) {
      throw new MyBuildError('INVALID_ARGUMENT', 'pushing needs a name: give -t NAME', { hint: 'mybuild build -t registry.example.com/team/app:1.2 --push .' });
    }
  }
  const mode = ctx.global.progress; // checked by the global flag parser
  const uiMode = (values.quiet ? 'quiet' : mode === 'auto' ? (process.stderr.isTTY && !process.env.CI ? 'tty' : 'plain') : mode) as ProgressUiMode;

  const store = await open(ctx.global);
  let client: RegistryClient | undefined;
  const printer = createProgressPrinter(uiMode);
  const abort = new AbortController();
  const onSignal = () => abort.abort(new MyBuildError('FAILED_PRECONDITION', 'build interrupted'));
  process.once('SIGINT', onSignal);
  process.once('SIGTERM', onSignal);
  // The registry client is loaded only when a base image has to be pulled (a cached build stays fast).
  const registry = async (): Promise<RegistryClient> => {
    const { registryClient } = await import('../registry.js');
    client ??= registryClient(ctx.global);
    return client;
  };
  // NODE_EXTRA_CA_CERTS kept from Node's start: trusted for ADD URLs too (the registry client,
  // with the context maker, is loaded only when one is fetched)
  const httpsContext = hasDeferredCa()
    ? async (): Promise<SecureContext | undefined> => {
        const files = deferredCaFiles();
        return files.length === 0 ? undefined : (await import('@mybuild/registry-client')).caContext(files);
      }
    : undefined;
  try {
    const result = await build({
      store,
      contextDir,
      dockerfile,
      ...(dockerfilePath !== undefined ? { dockerfilePath } : {}),
      fileName,
      buildArgs,
      labels,
      ...(values.target !== undefined ? { target: values.target } : {}),
      ...(values.platform !== undefined ? { platform: parsePlatform(values.platform) } : {}),
      tags: values.tag ?? [],
      noCache: values['no-cache'] === true,
      pull: values.pull === true,
      network,
      secrets,
      registry,
      ...(httpsContext ? { httpsContext } : {}),
      onEvent: (e) => {
        if (e.type !== 'warning') lastVertex = Math.max(lastVertex, e.id);
        printer.onEvent(e);
      },
      signal: abort.signal,
    });
    for (const o of outputs) {
      const id = printerVertex(printer, o);
      const r = await exportImage(
        { store, manifest: result.manifest, tags: result.tags, registry, onStatus: (text) => printer.onEvent({ type: 'status', id, text }) },
        o,
      );
      printer.onEvent({ type: 'done', id });
      for (const p of r.pushed) if (!values.quiet) process.stdout.write(`${p.name}: digest: ${p.digest} size: ${p.size}\n`);
    }
    printer.end();
    if (values.iidfile !== undefined) writeFileSync(values.iidfile, result.imageId);
    if (values.quiet) process.stdout.write(`${result.imageId}\n`);
    return 0;
  } catch (err) {
    printer.end();
    if (err instanceof BuildStepError && err.lastLines.length > 0 && uiMode !== 'quiet' && uiMode !== 'rawjson') printer.failure(err.step, err.lastLines);
    throw err;
  } finally {
    process.removeListener('SIGINT', onSignal);
    process.removeListener('SIGTERM', onSignal);
    client?.close();
  }
}

let lastVertex = 0;

/** A progress vertex for an export (numbered after the build's own). */
function printerVertex(printer: { onEvent: (e: BuildEvent) => void }, o: OutputSpec): number {
  const id = ++lastVertex;
  const what = o.type === 'registry' ? 'pushing to registry' : o.type === 'oci' ? `exporting to oci layout ${o.dest}` : o.type === 'docker' ? `exporting to docker-archive ${o.dest}` : `exporting to ${o.type} ${o.dest ?? ''}`;
  printer.onEvent({ type: 'vertex', id, name: what.trim() });
  return id;
}

/** The Dockerfile: `-f FILE` (relative to the working directory, as docker), `-f -` (stdin), or CONTEXT/Dockerfile. */
function readDockerfile(file: string | undefined, contextDir: string): { text: string; path: string | undefined; name: string } {
  if (file === '-') return { text: readFileSync(0, 'utf8'), path: undefined, name: 'Dockerfile' };
  const path = file === undefined ? join(contextDir, 'Dockerfile') : isAbsolute(file) ? file : resolve(file);
  try {
    return { text: readFileSync(path, 'utf8'), path, name: file === undefined ? 'Dockerfile' : file };
  } catch (err) {
    if (errnoCode(err) === 'ENOENT') {
      throw new MyBuildError('NOT_FOUND', `no Dockerfile at ${path}`, { hint: file === undefined ? 'add one to the context, or name it with -f' : 'check the -f path (relative to the current directory)' });
    }
    if (errnoCode(err) === 'EISDIR') throw new MyBuildError('INVALID_ARGUMENT', `${path} is a directory, not a Dockerfile`);
    throw err;
  }
}

/** `K=V` pairs; with `fromEnv`, a lone `K` takes its value from the environment (docker's --build-arg). */
function keyValues(flag: string, list: string[], fromEnv: boolean): Record<string, string> {
  const out: Record<string, string> = {};
  for (const kv of list) {
    const eq = kv.indexOf('=');
    if (eq === 0) throw new MyBuildError('INVALID_ARGUMENT', `${flag} ${JSON.stringify(kv)}: missing name`, { hint: `use ${flag} NAME=VALUE` });
    if (eq < 0) {
      if (!fromEnv) out[kv] = '';
      else if (process.env[kv] !== undefined) out[kv] = process.env[kv]!;
      continue;
    }
    out[kv.slice(0, eq)] = kv.slice(eq + 1);
  }
  return out;
}

/** `--secret id=ID[,src=FILE|,source=FILE|,env=VAR]` (BuildKit's CSV form; `type=file|env` accepted). */
function parseSecrets(list: string[]): Record<string, SecretSource> {
  const out: Record<string, SecretSource> = {};
  for (const spec of list) {
    const fields = new Map<string, string>();
    for (const part of spec.split(',')) {
      const eq = part.indexOf('=');
      if (eq < 0) throw new MyBuildError('INVALID_ARGUMENT', `--secret: ${JSON.stringify(part)} is not key=value`, { hint: '--secret id=ID,src=FILE' });
      fields.set(part.slice(0, eq).trim().toLowerCase(), part.slice(eq + 1));
    }
    const id = fields.get('id');
    const src = fields.get('src') ?? fields.get('source');
    const env = fields.get('env');
    const type = fields.get('type');
    if (!id) throw new MyBuildError('INVALID_ARGUMENT', '--secret needs id=', { hint: '--secret id=ID,src=FILE' });
    if (type !== undefined && type !== 'file' && type !== 'env') throw new MyBuildError('INVALID_ARGUMENT', `--secret: unknown type ${JSON.stringify(type)}`, { hint: 'type=file or type=env' });
    if (env !== undefined || type === 'env') {
      const name = env ?? src ?? id;
      const value = process.env[name];
      if (value === undefined) throw new MyBuildError('NOT_FOUND', `--secret ${id}: environment variable ${name} is not set`);
      out[id] = { value: Buffer.from(value) };
    } else {
      const file = src ?? (process.env[id] !== undefined ? undefined : id);
      if (file === undefined) out[id] = { value: Buffer.from(process.env[id]!) };
      else out[id] = { file: resolve(file) };
    }
  }
  return out;
}
