import { type Digest, parseDigest } from './digest.js';
import { MyBuildError } from './errors.js';

/**
 * An image reference in the docker/distribution grammar, normalised:
 * `alpine` → domain `docker.io`, path `library/alpine`, tag `latest`.
 */
export interface Reference {
  /** Registry host as the user names it (`docker.io`, `localhost:5000`, `[::1]:5000`). */
  readonly domain: string;
  /** Repository path inside the registry (`library/alpine`, `team/app`). */
  readonly path: string;
  readonly tag: string | undefined;
  readonly digest: Digest | undefined;
}

export const DOCKER_HUB_DOMAIN = 'docker.io';
/** The host that serves Docker Hub's registry API. */
export const DOCKER_HUB_API_HOST = 'registry-1.docker.io';

const PATH_COMPONENT = /^[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*$/;
const DOMAIN_COMPONENT = /^(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])$/;
const TAG = /^[\w][\w.-]{0,127}$/;
const PORT = /^[0-9]+$/;
const IPV6 = /^\[[0-9a-fA-F:.]+\]$/;

function bad(input: string, why: string, hint?: string): MyBuildError {
  return new MyBuildError('INVALID_ARGUMENT', `invalid reference ${JSON.stringify(input.slice(0, 300))}: ${why}`, {
    hint: hint ?? 'a reference looks like [registry[:port]/]repository[:tag][@sha256:digest], repository in lowercase',
  });
}

function validDomain(domain: string): boolean {
  let host = domain;
  let port: string | undefined;
  if (domain.startsWith('[')) {
    const end = domain.indexOf(']');
    if (end < 0) return false;
    host = domain.slice(0, end + 1);
    const rest = domain.slice(end + 1);
    if (rest !== '') {
      if (!rest.startsWith(':')) return false;
      port = rest.slice(1);
    }
    if (!IPV6.test(host)) return false;
  } else {
    const colon = domain.lastIndexOf(':');
    if (colon >= 0) {
      host = domain.slice(0, colon);
      port = domain.slice(colon + 1);
    }
    if (!host.split('.').every((c) => DOMAIN_COMPONENT.test(c))) return false;
  }
  return port === undefined || PORT.test(port);
}

function looksLikeDomain(first: string): boolean {
  return first.includes('.') || first.includes(':') || first === 'localhost' || first.startsWith('[') || first !== first.toLowerCase();
}

/** Parse and normalise a reference. A reference with neither tag nor digest gets no tag (see {@link withDefaultTag}). */
export function parseReference(input: string): Reference {
  if (input.length === 0) throw bad(input, 'empty');
  if (/\s/.test(input)) throw bad(input, 'contains whitespace');
  let rest = input;
  let digest: Digest | undefined;
  const at = rest.indexOf('@');
  if (at >= 0) {
    const d = rest.slice(at + 1);
    rest = rest.slice(0, at);
    try {
      digest = parseDigest(d);
    } catch {
      throw bad(input, `bad digest ${JSON.stringify(d.slice(0, 80))}`);
    }
  }
  let tag: string | undefined;
  const lastSlash = rest.lastIndexOf('/');
  const lastColon = rest.lastIndexOf(':');
  if (lastColon > lastSlash) {
    tag = rest.slice(lastColon + 1);
    rest = rest.slice(0, lastColon);
    if (!TAG.test(tag)) throw bad(input, `bad tag ${JSON.stringify(tag.slice(0, 80))}`, 'a tag is up to 128 letters, digits, _, . or -, not starting with . or -');
  }
  if (rest.length === 0) throw bad(input, 'no repository name');
  const parts = rest.split('/');
  let domain = DOCKER_HUB_DOMAIN;
  if (parts.length > 1 && looksLikeDomain(parts[0]!)) {
    domain = parts.shift()!;
    if (!validDomain(domain)) throw bad(input, `bad registry host ${JSON.stringify(domain)}`);
  }
  if (domain === 'index.docker.io' || domain === 'registry-1.docker.io') domain = DOCKER_HUB_DOMAIN;
  for (const p of parts) {
    if (!PATH_COMPONENT.test(p)) {
      throw bad(input, p !== p.toLowerCase() ? 'repository name must be lowercase' : `bad path component ${JSON.stringify(p.slice(0, 80))}`);
    }
  }
  let path = parts.join('/');
  if (domain === DOCKER_HUB_DOMAIN && parts.length === 1) path = `library/${path}`;
  if (domain.length + 1 + path.length > 255) throw bad(input, 'name longer than 255 characters');
  return { domain, path, tag, digest };
}

/** The reference with tag `latest` when it has neither a tag nor a digest. */
export function withDefaultTag(ref: Reference): Reference {
  return ref.tag === undefined && ref.digest === undefined ? { ...ref, tag: 'latest' } : ref;
}

/** Parse, then default the tag: what `docker pull NAME` means. */
export function parseNormalizedReference(input: string): Reference {
  return withDefaultTag(parseReference(input));
}

/** Fully qualified name without tag/digest: `docker.io/library/alpine`. */
export function repositoryName(ref: Reference): string {
  return `${ref.domain}/${ref.path}`;
}

/** Fully qualified string form: `docker.io/library/alpine:latest`. */
export function formatReference(ref: Reference): string {
  let s = repositoryName(ref);
  if (ref.tag !== undefined) s += `:${ref.tag}`;
  if (ref.digest !== undefined) s += `@${ref.digest}`;
  return s;
}

/** Short form docker prints: `alpine:latest`, `localhost:5000/team/app:1.2`. */
export function familiarName(ref: Reference): string {
  let name: string;
  if (ref.domain === DOCKER_HUB_DOMAIN) {
    name = ref.path.startsWith('library/') && ref.path.split('/').length === 2 ? ref.path.slice('library/'.length) : ref.path;
  } else {
    name = repositoryName(ref);
  }
  return name;
}

export function familiarReference(ref: Reference): string {
  let s = familiarName(ref);
  if (ref.tag !== undefined) s += `:${ref.tag}`;
  if (ref.digest !== undefined) s += `@${ref.digest}`;
  return s;
}

/** The host to talk HTTP to for a reference's domain. */
export function apiHost(domain: string): string {
  return domain === DOCKER_HUB_DOMAIN ? DOCKER_HUB_API_HOST : domain;
}
