export * from './frontend/index.js';
export * from './sandbox/index.js';
export * from './executor/index.js';
