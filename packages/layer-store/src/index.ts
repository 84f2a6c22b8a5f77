export * from './api.js';
export * from './native.js';
