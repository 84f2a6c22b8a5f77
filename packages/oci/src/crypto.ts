/**
 * node:crypto, loaded at its first use: requiring it costs 3-5 ms (fourteen internal modules),
 * on every command that imports it at start-up. sha256 hashes and random bytes may come from a
 * provider instead (the store's addon registers OpenSSL's own SHA256 and getrandom(2)), so that
 * a fully cached build or `mybuild version` never loads node:crypto at all.
 */
import { createRequire } from 'node:module';
import type * as NodeCrypto from 'node:crypto';

let loaded: typeof NodeCrypto | undefined;

/** node:crypto itself. */
export function nodeCrypto(): typeof NodeCrypto {
  loaded ??= createRequire(import.meta.url)('node:crypto') as typeof NodeCrypto;
  return loaded;
}

/** What the packages do with a hash (node:crypto's Hash is one). */
export interface Hasher {
  update(data: string | Uint8Array, inputEncoding?: BufferEncoding): Hasher;
  digest(): Buffer;
  digest(encoding: NodeCrypto.BinaryToTextEncoding): string;
}

export interface CryptoProviders {
  /** A fresh sha256 hash, or undefined to use node:crypto's. */
  sha256?: () => Hasher | undefined;
  /** `size` random bytes from a cryptographic source, or undefined to use node:crypto's. */
  randomBytes?: (size: number) => Buffer | undefined;
}

let providers: CryptoProviders = {};

/** Let sha256 hashes and random bytes come from elsewhere (see above); a provider that throws counts as absent. */
export function useCryptoProviders(p: CryptoProviders): void {
  providers = { ...p };
}

export function createHash(algorithm: string): Hasher {
  if (algorithm === 'sha256' && providers.sha256) {
    try {
      const h = providers.sha256();
      if (h) return h;
    } catch {
      // node:crypto's, below
    }
  }
  return nodeCrypto().createHash(algorithm);
}

export function randomBytes(size: number): Buffer {
  if (providers.randomBytes) {
    try {
      const b = providers.randomBytes(size);
      if (b && b.length === size) return b;
    } catch {
      // node:crypto's, below
    }
  }
  return nodeCrypto().randomBytes(size);
}

export function randomUUID(): string {
  return nodeCrypto().randomUUID();
}
