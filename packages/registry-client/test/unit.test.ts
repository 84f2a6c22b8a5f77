/** Pure parts: challenge parsing, Retry-After, redaction, upload Range, Link, platforms, manifests. */
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { MediaType, sha256Of } from '@mybuild/oci';
import { fileSchemeMemo, nextLink, normalizePlatform, parseChallenges, parseManifest, parsePlatform, parseRetryAfter, platformMatches, redact, selectManifest } from '@mybuild/registry-client';
import { mergeScopes } from '../src/auth.js';
import { isLoopbackHost } from '../src/context.js';
import { describeErrorBody } from '../src/errors.js';
import { parseUploadRange, withDigest } from '../src/upload.js';
import { secureContextFor } from '../src/tls.js';

describe('WWW-Authenticate (RFC 7235)', () => {
  it('parses several challenges in one header, quoted commas, any case', () => {
    const c = parseChallenges('Basic realm="a, b", BEARER realm="https://auth.example.com/token",service="registry.example.com",scope="repository:x/y:pull,push repository:z:pull", error="insufficient_scope"');
    expect(c).toEqual([
      { scheme: 'basic', params: { realm: 'a, b' } },
      {
        scheme: 'bearer',
        params: { realm: 'https://auth.example.com/token', service: 'registry.example.com', scope: 'repository:x/y:pull,push repository:z:pull', error: 'insufficient_scope' },
      },
    ]);
  });

  it('handles escapes, tokens, token68, spaces and several header lines', () => {
    expect(parseChallenges('Bearer realm = "x\\"y" , service=svc')).toEqual([{ scheme: 'bearer', params: { realm: 'x"y', service: 'svc' } }]);
    expect(parseChallenges(['Negotiate abc123==', 'Basic realm=r'])).toEqual([
      { scheme: 'negotiate', params: {}, token68: 'abc123==' },
      { scheme: 'basic', params: { realm: 'r' } },
    ]);
    expect(parseChallenges('Basic')).toEqual([{ scheme: 'basic', params: {} }]);
    expect(parseChallenges(undefined)).toEqual([]);
    expect(parseChallenges('Bearer realm="unterminated')).toEqual([{ scheme: 'bearer', params: { realm: 'unterminated' } }]);
  });
});

describe('scopes', () => {
  it('merges actions per resource into one spelling', () => {
    expect(mergeScopes(['repository:a:pull,push', 'repository:a:pull', 'repository:b:pull'])).toEqual(['repository:a:pull,push', 'repository:b:pull']);
    expect(mergeScopes(['repository:a:push', 'repository:a:pull'])).toEqual(['repository:a:pull,push']);
  });
});

describe('Retry-After', () => {
  it('reads seconds and HTTP-dates, leniently', () => {
    const now = Date.parse('Mon, 23 Nov 2026 12:00:00 GMT');
    expect(parseRetryAfter('120', now)).toBe(120_000);
    expect(parseRetryAfter(' 1.5 ', now)).toBe(1500);
    expect(parseRetryAfter('Mon, 23 Nov 2026 12:00:30 GMT', now)).toBe(30_000);
    expect(parseRetryAfter('Mon, 23 Nov 2026 11:00:00 GMT', now)).toBe(0);
    expect(parseRetryAfter('', now)).toBeUndefined();
    expect(parseRetryAfter('soon', now)).toBeUndefined();
    expect(parseRetryAfter(undefined, now)).toBeUndefined();
  });
});

describe('redaction', () => {
  it('removes tokens, passwords and signatures, keeps the rest', () => {
    const text = redact(
      'Authorization: Bearer eyJhbGciOiJFUzI1NiJ9.eyJpc3MiOiJ4In0.c2ln {"token":"abc","access_token":"def","password":"p"} https://user:pw@host/x?X-Amz-Signature=s3cr3t&digest=sha256:1 Basic authentication required',
    );
    expect(text).not.toMatch(/eyJ|abc|def|"p"|s3cr3t|user:pw/);
    expect(text).toContain('digest=sha256:1');
    expect(text).toContain('Basic authentication required');
  });
});

describe('error bodies', () => {
  it('caps distribution errors, names HTML pages, keeps the first text line', () => {
    const many = JSON.stringify({ errors: Array.from({ length: 5 }, (_, i) => ({ code: 'DENIED', message: `no ${i}` })) });
    expect(describeErrorBody(Buffer.from(many), 'application/json').text).toBe('DENIED: no 0; DENIED: no 1; DENIED: no 2 (+2 more)');
    expect(describeErrorBody(Buffer.from('<html><title>Sign in</title></html>'), 'text/html').text).toBe('an HTML page "Sign in"');
    expect(describeErrorBody(Buffer.from('oops\nstack'), 'text/plain').text).toBe('oops');
    expect(describeErrorBody(Buffer.from('{"error":"invalid_grant","error_description":"bad refresh token"}'), 'application/json').text).toBe('bad refresh token');
  });
});

describe('upload URLs', () => {
  it('appends digest with & when the Location has a query, verbatim', () => {
    const d = sha256Of('x');
    expect(withDigest(new URL('https://r/v2/a/blobs/uploads/u?_state=a%2Bb%3D%3D'), d).href).toBe(`https://r/v2/a/blobs/uploads/u?_state=a%2Bb%3D%3D&digest=${encodeURIComponent(d)}`);
    expect(withDigest(new URL('https://r/v2/a/blobs/uploads/u'), d).href).toBe(`https://r/v2/a/blobs/uploads/u?digest=${encodeURIComponent(d)}`);
  });

  it('reads Range as 0-N or bytes=0-N, 0-0 meaning nothing yet', () => {
    expect(parseUploadRange('0-1023', true)).toBe(1024);
    expect(parseUploadRange('bytes=0-99', true)).toBe(100);
    expect(parseUploadRange('0-0', true)).toBe(0);
    expect(parseUploadRange('0-0', false)).toBe(1);
    expect(parseUploadRange(undefined, true)).toBeUndefined();
  });

  it('knows loopback hosts', () => {
    expect(['localhost:5000', '127.0.0.1:1', '127.9.9.9', '[::1]:5000', '::1'].every(isLoopbackHost)).toBe(true);
    expect(['10.0.0.1:5000', 'example.com', '[::2]:5000'].some(isLoopbackHost)).toBe(false);
  });
});

describe('Link headers', () => {
  it('finds rel="next" among several links, verbatim', () => {
    expect(nextLink('</v2/x/tags/list?n=2&last=b%2Fc>; rel="next"')).toBe('/v2/x/tags/list?n=2&last=b%2Fc');
    expect(nextLink('<https://a/prev>; rel="prev", <https://a/next?x=1>; type="a"; rel="next"')).toBe('https://a/next?x=1');
    expect(nextLink('<https://a/p>; rel=next')).toBe('https://a/p');
    expect(nextLink('<https://a/p>; rel="prev"')).toBeUndefined();
  });
});

describe('platforms', () => {
  it('normalises aliases and default variants', () => {
    expect(normalizePlatform({ os: 'linux', architecture: 'aarch64' })).toMatchObject({ architecture: 'arm64', variant: 'v8' });
    expect(parsePlatform('linux/armhf')).toMatchObject({ architecture: 'arm', variant: 'v7' });
    expect(platformMatches({ os: 'linux', architecture: 'arm64' }, { os: 'linux', architecture: 'arm64', variant: 'v8' })).toBe(true);
    expect(platformMatches({ os: 'linux', architecture: 'arm', variant: 'v6' }, parsePlatform('linux/arm'))).toBe(false);
    expect(() => parsePlatform('linux')).toThrow(/invalid platform/);
  });

  it('skips attestations and lists what exists when nothing matches', () => {
    const d = (arch: string, os = 'linux') => ({ mediaType: MediaType.OciManifest, digest: sha256Of(arch + os), size: 1, platform: { os, architecture: arch } });
    const index = { schemaVersion: 2 as const, manifests: [d('unknown', 'unknown'), d('amd64'), d('arm64')] };
    expect(selectManifest(index, parsePlatform('linux/arm64'), 'x').digest).toBe(sha256Of('arm64linux'));
    expect(() => selectManifest(index, parsePlatform('linux/ppc64le'), 'x')).toThrow(expect.objectContaining({ hint: expect.stringContaining('linux/amd64, linux/arm64/v8') }));
  });
});

describe('manifests', () => {
  it('refuses schema 1, bad JSON and bad descriptors; infers a missing media type', () => {
    expect(() => parseManifest(Buffer.from('{"schemaVersion":1}'), undefined, 'r')).toThrow(expect.objectContaining({ code: 'UNSUPPORTED' }));
    expect(() => parseManifest(Buffer.from('{}'), MediaType.DockerSchema1Signed, 'r')).toThrow(/schema 1/);
    expect(() => parseManifest(Buffer.from('nope'), undefined, 'r')).toThrow(/not JSON/);
    const bad = { schemaVersion: 2, mediaType: MediaType.OciManifest, config: { mediaType: MediaType.OciConfig, digest: 'sha256:xyz', size: 1 }, layers: [] };
    expect(() => parseManifest(Buffer.from(JSON.stringify(bad)), undefined, 'r')).toThrow(/digest/);
    const index = { schemaVersion: 2, manifests: [] };
    expect(parseManifest(Buffer.from(JSON.stringify(index)), 'application/json', 'r').mediaType).toBe(MediaType.OciIndex);
  });
});

describe('isTransientNetworkError', () => {
  it('retries resets and timeouts, not refused connections or unreachable hosts', async () => {
    const { isTransientNetworkError } = await import('../src/retry.js');
    const err = (code: string) => Object.assign(new Error(code), { code });
    expect(isTransientNetworkError(err('ECONNRESET'))).toBe(true);
    expect(isTransientNetworkError(err('ETIMEDOUT'))).toBe(true);
    expect(isTransientNetworkError(new Error('x', { cause: err('ECONNRESET') }))).toBe(true);
    expect(isTransientNetworkError(err('ECONNREFUSED'))).toBe(false);
    expect(isTransientNetworkError(err('EHOSTUNREACH'))).toBe(false);
  });
});

describe('fileSchemeMemo', () => {
  it('remembers loopback hosts only, for a week, and survives a malformed file', () => {
    const dir = mkdtempSync(join(tmpdir(), 'mybuild-memo-'));
    const file = join(dir, 'registries-http.json');
    let now = 1_000_000_000_000;
    try {
      writeFileSync(file, '{"http": {"127.0.0.1:5000": "yes", "registry.example.com": 1, "localhost:1": 999999999999}}');
      const m = fileSchemeMemo(file, () => now);
      expect(m.get('127.0.0.1:5000')).toBeUndefined(); // not a time
      expect(m.get('registry.example.com')).toBeUndefined(); // not loopback
      expect(m.get('localhost:1')).toBe('http:');
      m.set('registry.example.com', 'http:');
      m.set('[::1]:5000', 'http:');
      const saved = JSON.parse(readFileSync(file, 'utf8'));
      expect(Object.keys(saved.http).sort()).toEqual(['[::1]:5000', 'localhost:1']);
      now += 8 * 24 * 3600 * 1000;
      expect(fileSchemeMemo(file, () => now).get('[::1]:5000')).toBeUndefined(); // older than a week
      m.set('localhost:1', undefined);
      expect(fileSchemeMemo(file, () => now).get('localhost:1')).toBeUndefined();

      writeFileSync(file, 'not json');
      expect(fileSchemeMemo(file).get('localhost:1')).toBeUndefined();
      writeFileSync(file, '[1, 2]');
      expect(fileSchemeMemo(file).get('localhost:1')).toBeUndefined();
      // an unwritable place: no error, nothing remembered
      const bad = fileSchemeMemo(join(file, 'under-a-file.json'));
      expect(() => bad.set('localhost:2', 'http:')).not.toThrow();
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe('TLS contexts', () => {
  it('makes one context for the same material, and names what a bad one was for', () => {
    const ca = ['# no certificate in this text'];
    const a = secureContextFor('a.example.com', { ca, cert: undefined, key: undefined });
    expect(secureContextFor('b.example.com', { ca: [...ca], cert: undefined, key: undefined })).toBe(a);
    expect(secureContextFor('b.example.com', { ca: ['# another'], cert: undefined, key: undefined })).not.toBe(a);
    const bad = () => secureContextFor('c.example.com', { ca: undefined, cert: 'not a certificate', key: 'not a key' });
    expect(bad).toThrow(expect.objectContaining({ code: 'INVALID_ARGUMENT', message: expect.stringContaining('TLS material for c.example.com is not usable') }));
  });
});
