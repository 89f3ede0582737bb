import { defineConfig } from 'vitest/config';

const SYSTEM = ['test/e2e/**/*.test.ts', 'test/load/**/*.test.ts'];

export default defineConfig({
  test: {
    // End-to-end and emulator suites start real processes; give them room, but every test stops by itself.
    testTimeout: 60_000,
    hookTimeout: 60_000,
    pool: 'forks',
    // One temporary directory per run; at the end, no process may still run from it.
    globalSetup: ['test/global-setup.ts'],
    reporters: ['default'],
    projects: [
      {
        extends: true,
        test: {
          name: 'unit',
          include: ['apps/*/test/**/*.test.ts', 'packages/*/test/**/*.test.ts', 'test/**/*.test.ts'],
          exclude: ['**/node_modules/**', ...SYSTEM],
          sequence: { groupOrder: 0 },
        },
      },
      {
        // Each of these starts the API and the worker as processes (or bursts 5,000 requests): one at a
        // time, after the rest, so two of them never starve each other of the machine's cores.
        extends: true,
        test: {
          name: 'system',
          include: SYSTEM,
          fileParallelism: false,
          sequence: { groupOrder: 1 },
        },
      },
    ],
  },
});
