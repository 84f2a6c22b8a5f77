/**
 * NODE_EXTRA_CA_CERTS without its start-up cost. Node 20 reads that file, and builds its whole
 * CA store with it, as it starts: 30–50 ms on every command, TLS or not. The `mybuild` command
 * (the shell lines at the top of loader.cjs) moves the variable to MYBUILD_NODE_EXTRA_CA_CERTS
 * before Node starts; {@link takeDeferredCa}, the first thing the process does, puts it back for
 * the processes mybuild starts, and mybuild's own TLS connections (registries, ADD URLs: the
 * callers of {@link deferredCaFiles}) trust the file beside Node's default store, as Node
 * would, building that store only when one is opened. Run as
 * `node dist/mybuild.cjs`, Node reads the variable itself and none of this applies.
 */
import { accessSync, constants, statSync } from 'node:fs';
import { errnoCode } from '@mybuild/oci';

let deferred: string | undefined;

/** Take the launcher's MYBUILD_NODE_EXTRA_CA_CERTS out of `env`, and put NODE_EXTRA_CA_CERTS back. */
export function takeDeferredCa(env: NodeJS.ProcessEnv = process.env): void {
  const file = env.MYBUILD_NODE_EXTRA_CA_CERTS;
  if (file === undefined) return;
  delete env.MYBUILD_NODE_EXTRA_CA_CERTS;
  // Node read a NODE_EXTRA_CA_CERTS that is still set at start itself.
  if (file === '' || env.NODE_EXTRA_CA_CERTS !== undefined) return;
  env.NODE_EXTRA_CA_CERTS = file;
  deferred = file;
}

/** Whether the launcher kept NODE_EXTRA_CA_CERTS from Node (read nothing yet). */
export function hasDeferredCa(): boolean {
  return deferred !== undefined;
}

let files: string[] | undefined;

/**
 * The deferred file as a list of CA files for the registry client: empty when nothing was
 * deferred, or when the file cannot be read (then a warning, as Node gives, once).
 */
export function deferredCaFiles(): string[] {
  if (files) return files;
  files = [];
  if (deferred === undefined) return files;
  try {
    // as Node does: a file that cannot be read is left out (read itself at the first https request)
    if (!statSync(deferred).isFile()) throw Object.assign(new Error('not a file'), { code: 'EISDIR' });
    accessSync(deferred, constants.R_OK);
    files.push(deferred);
  } catch (err) {
    process.stderr.write(`mybuild: warning: ignoring extra certs from ${deferred} (NODE_EXTRA_CA_CERTS): ${errnoCode(err) ?? (err as Error).message}\n`);
  }
  return files;
}
