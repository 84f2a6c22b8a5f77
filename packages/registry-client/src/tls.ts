/**
 * Per-registry TLS material the way docker and podman find it:
 * `<certsDir>/HOST[:PORT]/*.crt` are CA certificates, `*.cert` + `*.key` client pairs
 * (the directory name carries the port exactly as the reference does), plus CA files
 * named in options or `MYBUILD_CA_FILE`.
 */
import { readdirSync, readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import type { SecureContext } from 'node:tls';
import { join } from 'node:path';
import { errnoCode, MyBuildError } from '@mybuild/oci';

export const DEFAULT_CERTS_DIRS = ['/etc/docker/certs.d', '/etc/containers/certs.d'];

export interface TlsMaterial {
  /** CA texts (PEM) trusted beside Node's default store (undefined when there are none). */
  ca: string[] | undefined;
  cert: string | undefined;
  key: string | undefined;
}

function read(file: string): string {
  try {
    return readFileSync(file, 'utf8');
  } catch (err) {
    throw new MyBuildError('INVALID_ARGUMENT', `cannot read TLS file ${file}: ${errnoCode(err) ?? (err as Error).message}`);
  }
}

/** The file's text in a list, or an empty list when it cannot be read (NODE_EXTRA_CA_CERTS: Node only warns then). */
export function readIfReadable(file: string): string[] {
  try {
    return [readFileSync(file, 'utf8')];
  } catch {
    return [];
  }
}

/** TLS material for `host` (`name:port` as in the reference) from certs dirs and CA files. */
export function tlsMaterial(host: string, certsDirs: readonly string[], caFiles: readonly string[]): TlsMaterial {
  const extra: string[] = caFiles.map(read);
  let cert: string | undefined;
  let key: string | undefined;
  for (const base of certsDirs) {
    const dir = join(base, host);
    let names: string[];
    try {
      names = readdirSync(dir).sort();
    } catch (err) {
      if (errnoCode(err) === 'ENOENT' || errnoCode(err) === 'ENOTDIR') continue;
      throw err;
    }
    for (const name of names) {
      if (name.endsWith('.crt')) extra.push(read(join(dir, name)));
      else if (name.endsWith('.cert') && cert === undefined) {
        const keyName = `${name.slice(0, -'.cert'.length)}.key`;
        if (!names.includes(keyName)) {
          throw new MyBuildError('INVALID_ARGUMENT', `client certificate ${join(dir, name)} has no matching key ${keyName}`);
        }
        cert = read(join(dir, name));
        key = read(join(dir, keyName));
      } else if (name.endsWith('.key') && !names.includes(`${name.slice(0, -'.key'.length)}.cert`)) {
        throw new MyBuildError('INVALID_ARGUMENT', `client key ${join(dir, name)} has no matching certificate`);
      }
    }
  }
  return { ca: extra.length > 0 ? extra : undefined, cert, key };
}

/** node:tls, loaded when a context is first made (plain http needs none). */
const tls = (): typeof import('node:tls') => createRequire(import.meta.url)('node:tls') as typeof import('node:tls');

/** Contexts made, by their material: hosts that share CAs and certificate share one. */
const contexts = new Map<string, SecureContext>();

interface NativeContext {
  addCACert?: (pem: string) => void;
}

/**
 * A context that trusts what Node trusts by default (its roots, or OpenSSL's store when Node is
 * built or run to use that one, and NODE_EXTRA_CA_CERTS when Node read it) and the extra CA
 * texts beside it, as docker adds certs.d CAs to the system pool. Node offers no documented
 * call for "the default store and more" (the `ca` option replaces the store): the context's
 * native `addCACert` does it, as Node does itself for the `ca` option; without it, the `ca`
 * option with Node's roots and the extra texts. (The store such a context gets is made from
 * Node's roots without NODE_EXTRA_CA_CERTS: the client puts that file among the extra texts.)
 */
function makeContext(m: TlsMaterial): SecureContext {
  const pair = { ...(m.cert ? { cert: m.cert } : {}), ...(m.key ? { key: m.key } : {}) };
  const extra = m.ca ?? [];
  const { createSecureContext, rootCertificates } = tls();
  if (extra.length === 0) return createSecureContext(pair);
  const made = createSecureContext(pair);
  const native = (made as unknown as { context?: NativeContext }).context;
  if (typeof native?.addCACert !== 'function') return createSecureContext({ ...pair, ca: [...rootCertificates, ...extra] });
  for (const pem of extra) native.addCACert(pem);
  return made;
}

/**
 * The TLS context of `what`'s material (a host's): the one made before for the same material,
 * or a new one. Material Node cannot use (a key that does not match its certificate) fails
 * here, with `what` named.
 */
export function secureContextFor(what: string, m: TlsMaterial): SecureContext {
  const id = JSON.stringify([m.ca ?? [], m.cert ?? '', m.key ?? '']);
  let made = contexts.get(id);
  if (made) return made;
  try {
    made = makeContext(m);
  } catch (err) {
    throw new MyBuildError('INVALID_ARGUMENT', `TLS material for ${what} is not usable: ${(err as Error).message}`, {
      hint: 'check the CA files (certs.d/HOST/*.crt, MYBUILD_CA_FILE, NODE_EXTRA_CA_CERTS) and the client certificate and key',
    });
  }
  contexts.set(id, made);
  return made;
}

/**
 * A context trusting Node's default store and the CA files named (for https connections other
 * than a registry's, such as ADD of a URL).
 */
export function caContext(files: readonly string[]): SecureContext {
  return secureContextFor(`CA files ${files.join(', ')}`, { ca: files.map(read), cert: undefined, key: undefined });
}
