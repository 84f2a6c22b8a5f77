import { readFileSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { isoTime } from '@mybuild/oci';

describe('isoTime', () => {
  it('is exactly what toISOString writes, for any instant', () => {
    const fixed = [
      0, -1, 1, 999, 1000, 86_399_999, Date.UTC(2024, 1, 29, 23, 59, 59, 999), Date.UTC(2000, 0, 1), Date.UTC(1969, 11, 31, 23, 59, 59, 1),
      Date.UTC(9999, 11, 31, 23, 59, 59, 999), Date.UTC(10000, 0, 1), Date.UTC(-1, 0, 1), Date.UTC(0, 0, 1), -62_198_755_200_001, 8.64e15, -8.64e15,
    ];
    let seed = 42;
    const random = () => {
      seed = (seed * 1_103_515_245 + 12_345) % 2 ** 31;
      return seed / 2 ** 31;
    };
    const sampled = Array.from({ length: 5000 }, () => Math.floor((random() - 0.3) * 400 * 365 * 86_400_000));
    for (const ms of [...fixed, ...sampled]) expect(isoTime(ms), String(ms)).toBe(new Date(ms).toISOString());
    const before = Date.now();
    const now = Date.parse(isoTime());
    expect(now).toBeGreaterThanOrEqual(before);
    expect(now).toBeLessThanOrEqual(Date.now());
  });

  it('is what the packages use to date what they write (toISOString would load the time zone from ICU on a cold start)', () => {
    const packages = fileURLToPath(new URL('../../', import.meta.url));
    const offenders: string[] = [];
    const walk = (dir: string): void => {
      for (const e of readdirSync(dir, { withFileTypes: true })) {
        const p = join(dir, e.name);
        if (e.isDirectory()) walk(p);
        else if (e.name.endsWith('.ts') && !p.endsWith(join('oci', 'src', 'time.ts'))) {
          readFileSync(p, 'utf8').split('\n').forEach((line, i) => {
            if (/\.toISOString\(|\.toJSON\(\)|JSON\.stringify\([^)]*new Date\(/.test(line)) offenders.push(`${p.slice(packages.length)}:${i + 1}`);
          });
        }
      }
    };
    for (const pkg of readdirSync(packages)) walk(join(packages, pkg, 'src'));
    expect(offenders).toEqual([]);
  });
});
