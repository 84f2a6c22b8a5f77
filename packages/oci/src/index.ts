export * from './errors.js';
export * from './digest.js';
export * from './mediatypes.js';
export * from './types.js';
export * from './reference.js';
export * from './blob.js';
export * from './platform.js';
export * from './time.js';
