import { MyBuildError } from '@mybuild/oci';
import { type GlobalOptions, HelpRequest } from './args.js';
import type { ProgressMode } from './progress.js';

export const VERSION = '0.1.0';

export interface CommandContext {
  global: GlobalOptions;
  args: string[];
}

type CommandModule = { run(ctx: CommandContext): Promise<number | void> };

/** Each command lives in its own module, loaded on demand so `mybuild version` stays fast. */
const COMMANDS: Record<string, { summary: string; load: () => Promise<CommandModule> }> = {
  build: { summary: 'Build an image from a Dockerfile', load: () => import('./commands/build.js') },
  images: { summary: 'List images in the local store', load: () => import('./commands/images.js') },
  inspect: { summary: 'Show an image\'s manifest and config as JSON (docker://REF: from a registry)', load: () => import('./commands/inspect.js') },
  tag: { summary: 'Create a tag DST that refers to SRC', load: () => import('./commands/tag.js') },
  rmi: { summary: 'Remove one or more image tags', load: () => import('./commands/rmi.js') },
  save: { summary: 'Save images to a docker-archive or OCI archive', load: () => import('./commands/save.js') },
  load: { summary: 'Load images from a docker-archive or OCI archive', load: () => import('./commands/load.js') },
  pull: { summary: 'Download an image from a registry into the store', load: () => import('./commands/pull.js') },
  push: { summary: 'Upload an image from the store to a registry', load: () => import('./commands/push.js') },
  copy: { summary: 'Copy an image from one registry reference to another', load: () => import('./commands/copy.js') },
  tags: { summary: 'List the tags of a repository in a registry', load: () => import('./commands/tags.js') },
  login: { summary: 'Log in to a registry (stores credentials in docker\'s config.json)', load: () => import('./commands/login.js') },
  logout: { summary: 'Remove the credentials stored for a registry', load: () => import('./commands/logout.js') },
  unpack: { summary: 'Unpack an image\'s root filesystem into a directory', load: () => import('./commands/unpack.js') },
  prune: { summary: 'Remove blobs, snapshots and ingests no image needs', load: () => import('./commands/prune.js') },
  du: { summary: 'Show disk usage of the store, shared and unique bytes per image', load: () => import('./commands/du.js') },
  version: { summary: 'Show the mybuild version', load: () => import('./commands/version.js') },
};

const GLOBAL_HELP = `Usage: mybuild [--root DIR] [--debug] [--progress MODE] COMMAND [ARGS...]

A daemonless container image toolkit.

Global options:
  --root DIR                 store root (default: $MYBUILD_ROOT, /var/lib/mybuild as root,
                             $XDG_DATA_HOME/mybuild otherwise)
  --insecure-registry HOST   allow plain http / unverified TLS for HOST[:PORT] (repeatable;
                             loopback registries may use plain http anyway)
  --progress MODE            auto | plain | tty | rawjson | quiet (default auto)
  --debug                    show stack traces on errors, and one line per registry request
                             (credentials are never shown)

Registries: credentials come from docker's config.json ($DOCKER_CONFIG or ~/.docker;
'mybuild login' writes it); $MYBUILD_CONFIG/registries.json sets mirrors, insecure
registries and CA files per registry; /etc/docker/certs.d/HOST:PORT/ holds CAs and client
certificates; MYBUILD_REGISTRY_CONCURRENCY sets the blob transfers at once (default 6).

Commands:
${Object.entries(COMMANDS)
  .map(([n, c]) => `  ${n.padEnd(10)} ${c.summary}`)
  .join('\n')}

Run 'mybuild COMMAND --help' for a command's flags.
`;

function parseGlobal(argv: string[]): { global: GlobalOptions; rest: string[] } {
  const global: GlobalOptions = {
    root: undefined,
    debug: false,
    insecureRegistries: [],
    progress: (process.env.MYBUILD_PROGRESS as ProgressMode | undefined) ?? 'auto',
  };
  const rest: string[] = [];
  let i = 0;
  const value = (flag: string): string => {
    const eq = argv[i]!.indexOf('=');
    if (eq >= 0) return argv[i]!.slice(eq + 1);
    const v = argv[++i];
    if (v === undefined) throw new MyBuildError('INVALID_ARGUMENT', `${flag} needs a value`);
    return v;
  };
  // Global flags may come before the command and anywhere after it.
  for (; i < argv.length; i++) {
    const a = argv[i]!;
    if (a === '--') {
      rest.push(...argv.slice(i));
      break;
    }
    const flag = a.split('=')[0];
    if (flag === '--root') global.root = value('--root');
    else if (flag === '--debug' || a === '-D') global.debug = true;
    else if (flag === '--insecure-registry') global.insecureRegistries.push(value('--insecure-registry'));
    else if (flag === '--progress') global.progress = value('--progress') as ProgressMode;
    else rest.push(a);
  }
  if (!['auto', 'plain', 'tty', 'rawjson', 'quiet'].includes(global.progress)) {
    throw new MyBuildError('INVALID_ARGUMENT', `unknown --progress mode ${JSON.stringify(global.progress)}`, { hint: 'use auto, plain, tty, rawjson or quiet' });
  }
  return { global, rest };
}

export async function main(argv: string[]): Promise<number> {
  let debug = argv.includes('--debug') || argv.includes('-D');
  try {
    const { global, rest } = parseGlobal(argv);
    debug = global.debug;
    const [name, ...args] = rest;
    if (name === undefined || name === 'help' || name === '--help' || name === '-h') {
      process.stdout.write(GLOBAL_HELP);
      return name === undefined ? 1 : 0;
    }
    if (name === '--version' || name === '-v') return (await COMMANDS.version!.load()).run({ global, args: [] }).then((c) => c ?? 0);
    const cmd = COMMANDS[name];
    if (!cmd) {
      const close = Object.keys(COMMANDS).find((c) => c.startsWith(name.slice(0, 2)));
      throw new MyBuildError('INVALID_ARGUMENT', `unknown command ${JSON.stringify(name)}`, {
        hint: close ? `did you mean 'mybuild ${close}'?` : "see 'mybuild --help'",
      });
    }
    const mod = await cmd.load();
    return (await mod.run({ global, args })) ?? 0;
  } catch (err) {
    if (err instanceof HelpRequest) {
      process.stdout.write(err.text);
      return 0;
    }
    process.stderr.write(`${formatError(err, debug)}\n`);
    return err instanceof MyBuildError && err.code === 'INVALID_ARGUMENT' ? 2 : 1;
  }
}

export function formatError(err: unknown, debug: boolean): string {
  if (err instanceof MyBuildError) {
    const line = `mybuild: error: ${err.oneLine()}`;
    return debug ? `${line}\n${err.stack ?? ''}${err.cause ? `\ncaused by: ${String((err.cause as Error).stack ?? err.cause)}` : ''}` : line;
  }
  const e = err as NodeJS.ErrnoException;
  const msg = (e?.message ?? String(err)).split('\n')[0];
  const line = `mybuild: error: ${msg}`;
  return debug ? `${line}\n${e?.stack ?? ''}` : `${line} (run with --debug for details)`;
}
