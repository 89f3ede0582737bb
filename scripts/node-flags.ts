/**
 * Node flags the API and the worker run with (`npm start`, the images, the bench):
 * - a 1 MB young generation instead of V8's 16 MB default keeps an idle service's RSS well below
 *   its budget (API < 120 MB, worker < 200 MB) at a small cost in scavenges;
 * - the project's TypeScript modules come from JavaScript stripped ahead of time
 *   (scripts/precompiled.mjs; `npm start` and the image build run the precompile), which keeps
 *   Node's TypeScript stripper (~25 MB) out of the services. Without the cache they still run:
 *   Node strips what it finds no entry for.
 * BENCHMARKS.md has the figures. The path is relative: services start in the project's root.
 */
export const SERVICE_NODE_FLAGS: readonly string[] = ['--max-semi-space-size=1', '--import=./scripts/precompiled-loader.mjs'];
