/**
 * A {@link SchemeMemo} kept in a small JSON file, so that one command's finding (this loopback
 * registry speaks plain http) serves the next: `{"http": {"127.0.0.1:5000": <ms since epoch>}}`.
 * Entries last a week; only loopback hosts are read or written; an unreadable or malformed file
 * counts as empty, and a failed write is ignored (it is only a first guess, see SchemeMemo).
 */
import { mkdirSync, readFileSync, renameSync, unlinkSync, writeFileSync } from 'node:fs';
import { dirname } from 'node:path';
import { isLoopbackHost, type SchemeMemo } from './context.js';

const TTL_MS = 7 * 24 * 3600 * 1000;
const MAX_ENTRIES = 64;

export function fileSchemeMemo(file: string, now: () => number = Date.now): SchemeMemo {
  let entries: Map<string, number> | undefined;
  const load = (): Map<string, number> => {
    if (entries) return entries;
    entries = new Map();
    try {
      const raw: unknown = JSON.parse(readFileSync(file, 'utf8'));
      const http = (raw as { http?: unknown } | null)?.http;
      if (http && typeof http === 'object' && !Array.isArray(http)) {
        for (const [host, at] of Object.entries(http)) {
          if (typeof at === 'number' && Number.isFinite(at) && isLoopbackHost(host) && entries.size < MAX_ENTRIES) entries.set(host, at);
        }
      }
    } catch {
      // missing or unreadable: nothing remembered
    }
    return entries;
  };
  const save = (e: Map<string, number>): void => {
    const newest = [...e].sort((a, b) => b[1] - a[1]).slice(0, MAX_ENTRIES);
    const tmp = `${file}.${process.pid}.tmp`;
    try {
      mkdirSync(dirname(file), { recursive: true, mode: 0o700 });
      writeFileSync(tmp, `${JSON.stringify({ http: Object.fromEntries(newest) })}\n`, { mode: 0o600, flag: 'wx' });
      renameSync(tmp, file);
    } catch {
      try {
        unlinkSync(tmp);
      } catch {
        // nothing written
      }
    }
  };
  return {
    get(host) {
      if (!isLoopbackHost(host)) return undefined;
      const at = load().get(host);
      return at !== undefined && now() - at < TTL_MS && at <= now() ? 'http:' : undefined;
    },
    set(host, protocol) {
      if (!isLoopbackHost(host)) return;
      const e = load();
      const at = e.get(host);
      if (protocol === 'http:') {
        if (at !== undefined && at <= now() && now() - at < TTL_MS / 2) return; // fresh enough: no write
        e.set(host, now());
      } else {
        if (at === undefined) return;
        e.delete(host);
      }
      save(e);
    },
  };
}
