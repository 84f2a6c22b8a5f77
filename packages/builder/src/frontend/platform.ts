/** Platform strings (`linux/arm64/v8`), parsed and normalised like containerd's platforms package. */

export interface PlatformSpec {
  os: string;
  arch: string;
  variant?: string;
}

const KNOWN_OS = new Set([
  'aix',
  'android',
  'darwin',
  'dragonfly',
  'freebsd',
  'hurd',
  'illumos',
  'ios',
  'js',
  'linux',
  'nacl',
  'netbsd',
  'openbsd',
  'plan9',
  'solaris',
  'wasip1',
  'windows',
  'zos',
]);
const KNOWN_ARCH = new Set([
  '386',
  'amd64',
  'amd64p32',
  'arm',
  'armbe',
  'arm64',
  'arm64be',
  'ppc64',
  'ppc64le',
  'loong64',
  'mips',
  'mipsle',
  'mips64',
  'mips64le',
  'mips64p32',
  'mips64p32le',
  'ppc',
  'riscv',
  'riscv64',
  's390',
  's390x',
  'sparc',
  'sparc64',
  'wasm',
]);

/** The machine this process runs on, as a build platform. */
export function hostPlatform(): PlatformSpec {
  switch (process.arch) {
    case 'x64':
      return { os: 'linux', arch: 'amd64' };
    case 'arm64':
      return { os: 'linux', arch: 'arm64' };
    case 'arm':
      return { os: 'linux', arch: 'arm', variant: 'v7' };
    case 'ia32':
      return { os: 'linux', arch: '386' };
    case 'ppc64':
      return { os: 'linux', arch: 'ppc64le' };
    default:
      return { os: 'linux', arch: process.arch };
  }
}

/** Normalises architecture names and variants (x86_64 → amd64, aarch64 → arm64, arm → arm/v7). */
export function normalizePlatform(p: PlatformSpec): PlatformSpec {
  const os = p.os.toLowerCase();
  let arch = p.arch.toLowerCase();
  let variant = (p.variant ?? '').toLowerCase();
  switch (arch) {
    case 'i386':
      arch = '386';
      variant = '';
      break;
    case 'x86_64':
    case 'x86-64':
    case 'amd64':
      arch = 'amd64';
      if (variant === 'v1') variant = '';
      break;
    case 'aarch64':
    case 'arm64':
      arch = 'arm64';
      if (variant === '8' || variant === 'v8' || variant === 'v8.0') variant = '';
      break;
    case 'armhf':
      arch = 'arm';
      variant = 'v7';
      break;
    case 'armel':
      arch = 'arm';
      variant = 'v6';
      break;
    case 'arm':
      if (variant === '' || variant === '7') variant = 'v7';
      else if (variant === '5' || variant === '6' || variant === '8') variant = 'v' + variant;
      break;
  }
  return variant ? { os, arch, variant } : { os, arch };
}

/** `os[/arch[/variant]]` or `arch`; throws an Error with containerd's wording. */
export function parsePlatform(spec: string, host: PlatformSpec = hostPlatform()): PlatformSpec {
  if (spec.includes('*')) throw new Error(`${JSON.stringify(spec)}: wildcards not yet supported: invalid argument`);
  const parts = spec.split('/');
  const bad = () => new Error(`${JSON.stringify(spec)}: unknown operating system or architecture: invalid argument`);
  for (const part of parts) {
    if (!/^[A-Za-z0-9_.-]+$/.test(part)) throw new Error(`${JSON.stringify(part)}: invalid platform component: invalid argument`);
  }
  if (parts.length === 1) {
    const os = parts[0]!.toLowerCase();
    if (KNOWN_OS.has(os)) return normalizePlatform({ os, arch: host.arch, ...(host.variant ? { variant: host.variant } : {}) });
    const n = normalizePlatform({ os: host.os, arch: parts[0]! });
    if (KNOWN_ARCH.has(n.arch)) return n;
    throw bad();
  }
  if (parts.length === 2) return normalizePlatform({ os: parts[0]!, arch: parts[1]! });
  if (parts.length === 3) return normalizePlatform({ os: parts[0]!, arch: parts[1]!, variant: parts[2]! });
  throw new Error(`${JSON.stringify(spec)}: cannot parse platform specifier: invalid argument`);
}

export function formatPlatform(p: PlatformSpec): string {
  return p.variant ? `${p.os}/${p.arch}/${p.variant}` : `${p.os}/${p.arch}`;
}
