import { endianness } from 'node:os';
import { MyBuildError } from './errors.js';
import type { Descriptor, Platform } from './types.js';

const ARCH_ALIASES: Record<string, { architecture: string; variant?: string }> = {
  x86_64: { architecture: 'amd64' },
  'x86-64': { architecture: 'amd64' },
  x64: { architecture: 'amd64' },
  ia32: { architecture: '386' },
  aarch64: { architecture: 'arm64' },
  armhf: { architecture: 'arm', variant: 'v7' },
  armel: { architecture: 'arm', variant: 'v6' },
  i386: { architecture: '386' },
  i686: { architecture: '386' },
};

/** Fill in the default variants (arm64 → v8, arm → v7, amd64 v1 → none) and map arch aliases, as containerd's platforms package does. */
export function normalizePlatform(p: Platform): Platform {
  const os = p.os.toLowerCase();
  let architecture = p.architecture.toLowerCase();
  let variant = p.variant?.toLowerCase() || undefined;
  const alias = ARCH_ALIASES[architecture];
  if (alias) {
    architecture = alias.architecture;
    variant ??= alias.variant;
  }
  if (architecture === 'arm64' && (variant === undefined || variant === '8')) variant = 'v8';
  if (architecture === 'arm' && variant === undefined) variant = 'v7';
  if (architecture === 'arm' && /^[5-8]$/.test(variant ?? '')) variant = `v${variant}`;
  if (architecture === 'amd64' && variant === 'v1') variant = undefined;
  const out: Platform = { ...p, os, architecture };
  if (variant === undefined) delete out.variant;
  else out.variant = variant;
  return out;
}


/** Parse `os/arch[/variant]` (e.g. `linux/arm64/v8`). */
export function parsePlatform(spec: string): Platform {
  const parts = spec.split('/');
  if (parts.length < 2 || parts.length > 3 || parts.some((p) => !/^[A-Za-z0-9_.-]+$/.test(p))) {
    throw new MyBuildError('INVALID_ARGUMENT', `invalid platform ${JSON.stringify(spec.slice(0, 80))}`, {
      hint: 'a platform looks like os/arch[/variant], e.g. linux/amd64 or linux/arm64/v8',
    });
  }
  const [os, architecture, variant] = parts as [string, string, string | undefined];
  return normalizePlatform({ os, architecture, ...(variant === undefined ? {} : { variant }) });
}

/** The platform of this machine, as an image names it (process.arch x64 → amd64, arm64 → arm64/v8). */
export function hostPlatform(): Platform {
  const map: Record<string, string> = {
    x64: 'amd64',
    arm64: 'arm64',
    arm: 'arm',
    ia32: '386',
    ppc64: endianness() === 'LE' ? 'ppc64le' : 'ppc64',
    s390x: 's390x',
    riscv64: 'riscv64',
    loong64: 'loong64',
    mips: 'mips',
    mipsel: 'mipsle',
  };
  return normalizePlatform({ os: 'linux', architecture: map[process.arch] ?? process.arch });
}

export function formatPlatform(p: Platform): string {
  return `${p.os}/${p.architecture}${p.variant ? `/${p.variant}` : ''}`;
}

/**
 * How well `have` fits `want`: 0 = no match; 2 = exact (variant equal); 1 = `want` names no
 * variant and `have` has one.
 */
export function platformScore(have: Platform | undefined, want: Platform): number {
  if (!have) return 0;
  const h = normalizePlatform(have);
  const w = normalizePlatform(want);
  if (h.os !== w.os || h.architecture !== w.architecture) return 0;
  if (h.variant === w.variant) return 2;
  return w.variant === undefined ? 1 : 0;
}

/** The best manifest of an index for `want` (first one wins a tie), or undefined. */
export function selectPlatform(manifests: readonly Descriptor[], want: Platform): Descriptor | undefined {
  let best: Descriptor | undefined;
  let bestScore = 0;
  for (const m of manifests) {
    const s = platformScore(m.platform, want);
    if (s > bestScore) {
      best = m;
      bestScore = s;
    }
  }
  return best;
}
