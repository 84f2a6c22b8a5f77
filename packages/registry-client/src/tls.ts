/**
 * Per-registry TLS material the way docker and podman find it:
 * `<certsDir>/HOST[:PORT]/*.crt` are CA certificates, `*.cert` + `*.key` client pairs
 * (the directory name carries the port exactly as the reference does), plus CA files
 * named in options or `MYBUILD_CA_FILE`.
 */
import { readdirSync, readFileSync } from 'node:fs';
import { createSecureContext, rootCertificates, type SecureContext } from 'node:tls';
import { join } from 'node:path';
import { errnoCode, MyBuildError } from '@mybuild/oci';

export const DEFAULT_CERTS_DIRS = ['/etc/docker/certs.d', '/etc/containers/certs.d'];

export interface TlsMaterial {
  /** CA certificates: Node's roots plus the extra ones (undefined when there are no extra ones). */
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
  return { ca: extra.length > 0 ? [...rootCertificates, ...extra] : undefined, cert, key };
}

/**
 * The TLS context of `host`'s material, made once on first call. Material Node cannot use (a
 * file that is no PEM certificate, a key that does not match) fails here with the host named.
 */
export function secureContextOnce(host: string, m: TlsMaterial): () => SecureContext {
  let made: SecureContext | undefined;
  return () => {
    if (made) return made;
    try {
      made = createSecureContext({ ...(m.ca ? { ca: m.ca } : {}), ...(m.cert ? { cert: m.cert } : {}), ...(m.key ? { key: m.key } : {}) });
    } catch (err) {
      throw new MyBuildError('INVALID_ARGUMENT', `TLS material for ${host} is not usable: ${(err as Error).message}`, {
        hint: `check the CA files and the client certificate and key (certs.d/${host}/, MYBUILD_CA_FILE)`,
      });
    }
    return made;
  };
}
