export * from './frontend/index.js';
export * from './sandbox/index.js';
