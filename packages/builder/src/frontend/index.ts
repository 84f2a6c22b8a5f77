/**
 * The builder's front end: Dockerfile text → typed instructions → build plan (pure data),
 * plus `.dockerignore` matching. BuildKit's Dockerfile frontend is the reference.
 */
export { planBuild, expandOnBuild, finalizeConfig, DEFAULT_PATH_ENV } from './planner.js';
export type {
  BuildPlan,
  ConfigStep,
  CopySourceItem,
  CopyStep,
  FileSource,
  HistoryStep,
  ImageRequirement,
  PlanOptions,
  PlanStep,
  PlanWarning,
  PlannedStage,
  RunMount,
  RunStep,
  StageBase,
  StageImage,
  WorkdirStep,
} from './plan-types.js';
export { parseDockerfile, INSTRUCTION_NAMES } from './instructions.js';
export type {
  AddInstruction,
  ArgDefinition,
  ArgInstruction,
  CmdInstruction,
  CopyInstruction,
  EntrypointInstruction,
  EnvInstruction,
  ExposeInstruction,
  FromInstruction,
  HealthcheckInstruction,
  HealthcheckSpec,
  InlineFile,
  Instruction,
  KeyValue,
  LabelInstruction,
  MaintainerInstruction,
  OnbuildInstruction,
  ParsedDockerfile,
  RunInstruction,
  ShellDependentCmdLine,
  ShellInstruction,
  SourceContent,
  StageDefinition,
  StopSignalInstruction,
  UserInstruction,
  VolumeInstruction,
  WorkdirInstruction,
} from './instructions.js';
export type { Directive, Heredoc } from './parser.js';
export type { CacheSharing, MountType } from './mounts.js';
export { ShellLex, LexError, envFromList, envFromMap, EMPTY_ENV } from './lexer.js';
export type { EnvGetter, LexOptions, ProcessResult } from './lexer.js';
export { parsePlatform, formatPlatform, normalizePlatform, hostPlatform } from './platform.js';
export type { PlatformSpec } from './platform.js';
export { IgnoreMatcher, parseIgnoreFile, loadDockerignore } from './dockerignore.js';
export type { IgnorePattern, LoadedIgnore } from './dockerignore.js';
