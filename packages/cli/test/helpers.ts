import { spawn, execFile } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import { existsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';

export const CLI = fileURLToPath(new URL('../dist/mybuild.cjs', import.meta.url));
/**
 * The CLI's cache directory in tests (its code cache, the plain-http registry memo): under the
 * checkout's .cache/, not the user's ~/.cache (the tests start registries on many ports).
 */
export const TEST_XDG_CACHE = fileURLToPath(new URL('../../../.cache/test-xdg-cache', import.meta.url));
export const execFileP = promisify(execFile);

export interface CliResult {
  code: number;
  stdout: string;
  stderr: string;
}

/**
 * Run the bundled CLI (built by `make build`) with `--root root`, as the `mybuild` command
 * (dist/mybuild.cjs executed: its shell lines start Node), or with `via: 'node'` as
 * `node dist/mybuild.cjs`.
 */
export function cli(root: string, args: string[], opts: { input?: Buffer; env?: NodeJS.ProcessEnv; via?: 'command' | 'node' } = {}): Promise<CliResult> {
  if (!existsSync(CLI)) throw new Error(`${CLI} is missing: run 'make build' first`);
  const argv = ['--root', root, ...args];
  return new Promise((resolve, reject) => {
    const child = spawn(opts.via === 'node' ? process.execPath : CLI, opts.via === 'node' ? [CLI, ...argv] : argv, {
      // the command starts the `node` first in PATH: this one, the tests' own
      env: { ...process.env, PATH: `${dirname(process.execPath)}:${process.env.PATH ?? ''}`, MYBUILD_PROGRESS: 'plain', XDG_CACHE_HOME: TEST_XDG_CACHE, ...opts.env },
      stdio: ['pipe', 'pipe', 'pipe'],
    });
    const out: Buffer[] = [];
    const err: Buffer[] = [];
    child.stdout.on('data', (c: Buffer) => out.push(c));
    child.stderr.on('data', (c: Buffer) => err.push(c));
    child.on('error', reject);
    child.on('close', (code) => resolve({ code: code ?? -1, stdout: Buffer.concat(out).toString(), stderr: Buffer.concat(err).toString() }));
    child.stdin.end(opts.input);
  });
}

/** cli() that must succeed; the error names the command and its stderr. */
export async function ok(root: string, args: string[], opts: { input?: Buffer } = {}): Promise<string> {
  const r = await cli(root, args, opts);
  if (r.code !== 0) throw new Error(`mybuild ${args.join(' ')} exited ${r.code}: ${r.stderr}`);
  return r.stdout;
}

export async function tempDir(prefix = 'mybuild-test-'): Promise<{ dir: string; cleanup: () => Promise<void> }> {
  const dir = await mkdtemp(join(tmpdir(), prefix));
  return { dir, cleanup: () => rm(dir, { recursive: true, force: true }) };
}

export async function run(cmd: string, args: string[], opts: { cwd?: string } = {}): Promise<string> {
  try {
    const { stdout } = await execFileP(cmd, args, { maxBuffer: 64 * 1024 * 1024, ...opts });
    return stdout;
  } catch (err) {
    const e = err as { stderr?: string; message: string };
    throw new Error(`${cmd} ${args.join(' ')} failed: ${e.stderr || e.message}`);
  }
}
