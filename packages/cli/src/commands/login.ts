import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { createInterface } from 'node:readline/promises';
import { MyBuildError } from '@mybuild/oci';
import { configKeyFor, type Credentials, dockerConfigDir, saveCredentials } from '@mybuild/registry-client';
import type { CommandContext } from '../main.js';
import { parseCommand, usageError } from '../args.js';
import { registryClient, registryHost } from '../registry.js';

const HELP = `Usage: mybuild login [-u USER] [--password-stdin | -p PASSWORD] [REGISTRY]

Log in to a registry (Docker Hub when REGISTRY is omitted). The credentials are checked
with the registry first, then stored as 'docker login' stores them: in the credential
helper config.json names, else base64 in config.json's "auths" (mode 0600), where
config.json is $DOCKER_CONFIG/config.json or ~/.docker/config.json.

  -u, --username USER    user name (asked on a terminal when missing)
  --password-stdin       read the password from standard input
  -p, --password PASS    the password on the command line (insecure: it shows in ps and
                         shell history; use --password-stdin)
`;

export async function run(ctx: CommandContext): Promise<number> {
  const { values, positionals } = parseCommand('login', ctx.args, {
    username: { type: 'string', short: 'u' },
    password: { type: 'string', short: 'p' },
    'password-stdin': { type: 'boolean' },
  }, HELP);
  if (positionals.length > 1) throw usageError('login', 'takes at most one registry', 'login [-u USER] [--password-stdin] [REGISTRY]');
  const host = registryHost(positionals[0]);
  const fromStdin = values['password-stdin'] === true;
  if (fromStdin && values.password !== undefined) throw usageError('login', '--password and --password-stdin exclude each other', 'login -u USER --password-stdin REGISTRY');
  if (fromStdin && values.username === undefined) throw usageError('login', '--password-stdin needs --username', 'login -u USER --password-stdin REGISTRY');
  if (values.password !== undefined) process.stderr.write('WARNING! Using --password via the CLI is insecure. Use --password-stdin.\n');

  let username = values.username;
  if (username === undefined) {
    if (!process.stdin.isTTY) throw usageError('login', 'needs a user name', 'login -u USER --password-stdin REGISTRY');
    username = (await ask('Username: ')).trim();
  }
  if (username === '') throw usageError('login', 'the user name is empty', 'login -u USER --password-stdin REGISTRY');
  let password: string;
  if (fromStdin) {
    password = (await readStdin()).replace(/\n$/, '').replace(/\r$/, '');
  } else if (values.password !== undefined) {
    password = values.password;
  } else {
    if (!process.stdin.isTTY) throw usageError('login', 'needs a password', 'login -u USER --password-stdin REGISTRY');
    password = await askHidden('Password: ');
  }
  if (password === '') throw usageError('login', 'the password is empty', 'login -u USER --password-stdin REGISTRY');

  const creds: Credentials = { username, password };
  const client = registryClient(ctx.global);
  try {
    await client.checkLogin(host, creds);
  } catch (err) {
    // Whatever answered (the registry, its token service), the fix is the same.
    if (err instanceof MyBuildError && err.code === 'UNAUTHORIZED') {
      throw new MyBuildError('UNAUTHORIZED', /^login\b/.test(err.message) ? err.message : `login: ${err.message}`, { where: host, hint: `check the user name and password for ${host}` });
    }
    throw err;
  } finally {
    client.close();
  }
  await saveCredentials(host, creds);
  if (await storedInPlainText(host)) {
    process.stderr.write(`WARNING! Your password is stored unencrypted in ${join(dockerConfigDir(), 'config.json')}. Configure a credential helper (credsStore) to avoid it.\n`);
  }
  process.stdout.write('Login Succeeded\n');
  return 0;
}

/** True when config.json names no credential helper for the host (the password is in `auths`). */
async function storedInPlainText(host: string): Promise<boolean> {
  try {
    const config = JSON.parse(await readFile(join(dockerConfigDir(), 'config.json'), 'utf8')) as { credsStore?: string; credHelpers?: Record<string, string> };
    return !config.credsStore && !config.credHelpers?.[configKeyFor(host)];
  } catch {
    return true;
  }
}

async function readStdin(): Promise<string> {
  const chunks: Buffer[] = [];
  let n = 0;
  for await (const c of process.stdin as AsyncIterable<Buffer>) {
    n += c.length;
    if (n > 64 * 1024) throw new MyBuildError('INVALID_ARGUMENT', 'login: the password on standard input is longer than 64 KiB');
    chunks.push(c);
  }
  return Buffer.concat(chunks).toString('utf8');
}

async function ask(question: string): Promise<string> {
  const rl = createInterface({ input: process.stdin, output: process.stderr, terminal: true });
  try {
    return await rl.question(question);
  } finally {
    rl.close();
  }
}

/** Read a line from the terminal without echoing it. */
function askHidden(question: string): Promise<string> {
  const stdin = process.stdin;
  process.stderr.write(question);
  stdin.setRawMode(true);
  stdin.setEncoding('utf8');
  stdin.resume();
  let value = '';
  return new Promise((resolve, reject) => {
    const finish = () => {
      stdin.off('data', onData);
      stdin.setRawMode(false);
      stdin.pause();
      process.stderr.write('\n');
    };
    const onData = (chunk: string) => {
      for (const ch of chunk) {
        if (ch === '\r' || ch === '\n' || ch === '\u0004') {
          finish();
          resolve(value);
          return;
        }
        if (ch === '\u0003') {
          finish();
          reject(new MyBuildError('INVALID_ARGUMENT', 'login: interrupted'));
          return;
        }
        if (ch === '\u007f' || ch === '\b') value = value.slice(0, -1);
        else value += ch;
      }
    };
    stdin.on('data', onData);
  });
}
