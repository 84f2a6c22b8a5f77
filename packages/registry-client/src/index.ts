export {
  RegistryClient,
  nextLink,
  type CopyOptions,
  type FetchedManifest,
  type ProgressEvent,
  type PullOptions,
  type PullResult,
  type PushOptions,
  type ReferenceInput,
  type RegistryClientOptions,
  type TagListOptions,
} from './client.js';
export { type Challenge, parseChallenges } from './challenge.js';
export {
  chainCredentials,
  configKeyFor,
  type CredentialProvider,
  type Credentials,
  DOCKER_HUB_CONFIG_KEY,
  dockerConfigCredentials,
  dockerConfigDir,
  type DockerConfigOptions,
  removeCredentials,
  saveCredentials,
  staticCredentials,
} from './credentials.js';
export { defaultRegistriesFile, loadRegistriesConfig, type RegistriesSettings, type RegistryConfig } from './config.js';
export { type DistributionError, RegistryError, redact } from './errors.js';
export { type Timeouts } from './http.js';
export {
  formatPlatform,
  hostPlatform,
  MANIFEST_ACCEPT,
  MAX_MANIFEST_PULL,
  MAX_MANIFEST_PUSH,
  normalizePlatform,
  parseManifest,
  parsePlatform,
  platformMatches,
  selectManifest,
} from './manifest.js';
export { DEFAULT_RETRY, parseRetryAfter, type RetryPolicy } from './retry.js';
export { caContext, DEFAULT_CERTS_DIRS } from './tls.js';
export { type UploadResult } from './upload.js';
export { type SchemeMemo } from './context.js';
export { fileSchemeMemo } from './schemes.js';
