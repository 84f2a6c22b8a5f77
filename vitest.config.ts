import { defineConfig } from 'vitest/config';
import { fileURLToPath } from 'node:url';

const pkg = (name: string) => fileURLToPath(new URL(`./packages/${name}/src/index.ts`, import.meta.url));

export default defineConfig({
  resolve: {
    alias: {
      '@mybuild/oci': pkg('oci'),
      '@mybuild/layer-store': pkg('layer-store'),
      '@mybuild/registry-client': pkg('registry-client'),
      '@mybuild/builder': pkg('builder'),
      // test fixtures (fixtures/src): import '@mybuild/fixtures/images.mjs'
      '@mybuild/fixtures': fileURLToPath(new URL('./fixtures/src', import.meta.url)),
    },
  },
  test: {
    include: ['packages/*/test/**/*.test.ts', 'fixtures/test/**/*.test.ts'],
    pool: 'forks',
    testTimeout: 60_000,
    hookTimeout: 120_000,
    globalSetup: [],
  },
});
