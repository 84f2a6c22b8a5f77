export * from './api.js';
export * from './native.js';
export * from './paths.js';
export * from './lock.js';
