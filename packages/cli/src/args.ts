import { parseArgs, type ParseArgsConfig } from 'node:util';
import { MyBuildError } from '@mybuild/oci';

export interface GlobalOptions {
  root: string | undefined;
  debug: boolean;
  insecureRegistries: string[];
  progress: 'auto' | 'plain' | 'tty' | 'rawjson' | 'quiet';
}

type Options = NonNullable<ParseArgsConfig['options']>;

/** Asked for with `-h`/`--help`: main prints `text` and exits 0 (thrown so that no command repeats that step). */
export class HelpRequest extends Error {
  constructor(readonly text: string) {
    super('help');
  }
}

/** Parse a command's flags (docker style: flags may follow positionals). Unknown flags are one-line errors. */
export type Parsed<O extends Options> = ReturnType<typeof parseArgs<{ args: string[]; options: O; allowPositionals: true; strict: true }>>;

/** `-h`/`--help` is every command's: it throws a {@link HelpRequest} carrying `help`. */
export function parseCommand<O extends Options>(command: string, args: string[], options: O, help: string): Parsed<O> {
  let parsed: Parsed<O>;
  try {
    parsed = parseArgs({ args, options: { ...options, help: { type: 'boolean', short: 'h' } }, allowPositionals: true, strict: true }) as Parsed<O>;
  } catch (err) {
    const msg = (err as Error).message.split('\n')[0] ?? 'bad arguments';
    throw new MyBuildError('INVALID_ARGUMENT', `${command}: ${msg.replace(/^Unknown option/, 'unknown flag')}`, {
      hint: `see mybuild ${command} --help`,
    });
  }
  if ((parsed.values as { help?: boolean }).help) throw new HelpRequest(help);
  return parsed;
}

export function usageError(command: string, message: string, usage: string): MyBuildError {
  return new MyBuildError('INVALID_ARGUMENT', `${command}: ${message}`, { hint: `usage: mybuild ${usage}` });
}
