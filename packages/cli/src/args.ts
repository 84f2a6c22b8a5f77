import { parseArgs, type ParseArgsConfig } from 'node:util';
import { MyBuildError } from '@mybuild/oci';

export interface GlobalOptions {
  root: string | undefined;
  debug: boolean;
  insecureRegistries: string[];
  progress: 'auto' | 'plain' | 'tty' | 'rawjson' | 'quiet';
}

type Options = NonNullable<ParseArgsConfig['options']>;

/** Parse a command's flags (docker style: flags may follow positionals). Unknown flags are one-line errors. */
export type Parsed<O extends Options> = ReturnType<typeof parseArgs<{ args: string[]; options: O; allowPositionals: true; strict: true }>>;

export function parseCommand<O extends Options>(command: string, args: string[], options: O): Parsed<O> {
  try {
    return parseArgs({ args, options, allowPositionals: true, strict: true });
  } catch (err) {
    const msg = (err as Error).message.split('\n')[0] ?? 'bad arguments';
    throw new MyBuildError('INVALID_ARGUMENT', `${command}: ${msg.replace(/^Unknown option/, 'unknown flag')}`, {
      hint: `see mybuild ${command} --help`,
    });
  }
}

export function usageError(command: string, message: string, usage: string): MyBuildError {
  return new MyBuildError('INVALID_ARGUMENT', `${command}: ${message}`, { hint: `usage: mybuild ${usage}` });
}
