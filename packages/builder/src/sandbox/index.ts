export {
  runInSandbox,
  secretMount,
  defaultSandboxStateDir,
  isSandboxExit,
  SandboxExitError,
  DEFAULT_PATH,
  type SandboxMount,
  type SandboxOptions,
  type SandboxResult,
} from './runInSandbox.js';
export { resolveUser, type ResolvedUser } from './user.js';
export { runtimeSpec, nofileLimit, NOFILE, DEFAULT_CAPABILITIES, MASKED_PATHS, READONLY_PATHS, type RuntimeSpec, type RuntimeMount, type SandboxLimits } from './runtimeSpec.js';
export { rootPath } from './rootPath.js';
