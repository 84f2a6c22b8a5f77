/**
 * @mybuild/oci's createHash and randomBytes: node:crypto's, unless a provider gives sha256
 * hashes or random bytes (the store's addon does); a provider that fails, or gives something
 * unusable, falls back to node:crypto.
 */
import { createHash as nodeCreateHash } from 'node:crypto';
import { afterEach, describe, expect, it } from 'vitest';
import { createHash, type Hasher, randomBytes, useCryptoProviders } from '@mybuild/oci';

afterEach(() => useCryptoProviders({}));

describe('crypto providers', () => {
  it('a sha256 provider serves sha256 only; one that throws or declines leaves it to node:crypto', () => {
    const made: string[] = [];
    const fake = (): Hasher => {
      const inner = nodeCreateHash('sha256');
      made.push('sha256');
      const h: Hasher = {
        update: (d, e) => (inner.update(typeof d === 'string' ? Buffer.from(d, e) : d), h),
        digest: ((enc?: 'hex') => (enc ? inner.digest(enc) : inner.digest())) as Hasher['digest'],
      };
      return h;
    };
    useCryptoProviders({ sha256: fake });
    expect(createHash('sha256').update('abc').digest('hex')).toBe('ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad');
    expect(createHash('sha512').update('abc').digest('hex')).toBe(nodeCreateHash('sha512').update('abc').digest('hex'));
    expect(made).toEqual(['sha256']);

    useCryptoProviders({
      sha256: () => {
        throw new Error('no addon');
      },
    });
    expect(createHash('sha256').update('abc').digest('hex')).toMatch(/^ba7816bf/);
    useCryptoProviders({ sha256: () => undefined });
    expect(createHash('sha256').update('abc').digest().length).toBe(32);
  });

  it('random bytes come from the provider when it gives as many as asked, else from node:crypto', () => {
    useCryptoProviders({ randomBytes: (n) => Buffer.alloc(n, 7) });
    expect(randomBytes(4)).toEqual(Buffer.from([7, 7, 7, 7]));
    useCryptoProviders({ randomBytes: () => Buffer.alloc(1) });
    expect(randomBytes(16).length).toBe(16);
    useCryptoProviders({
      randomBytes: () => {
        throw new Error('no addon');
      },
    });
    const a = randomBytes(16);
    expect(a.length).toBe(16);
    expect(a.equals(randomBytes(16))).toBe(false);
  });
});
