/**
 * Node flags the API and the worker run with (`npm start`, the images, the bench):
 * - a 4 MB semi-space (young generation) instead of V8's 16 MB default keeps the services' RSS
 *   below budget (API < 120 MB, worker < 200 MB); 1 MB kept it lower still, but every request's
 *   garbage then paid for far more scavenges: 8 MB cut CPU per status read by ~1.3× and per POST by
 *   ~1.1× (BENCHMARKS.md), 4 MB takes most of that within the memory budget;
 * - no Maglev (V8's mid-tier optimizing compiler; TurboFan still optimizes hot code): a cold API
 *   taking its first burst (50 POST /deploy and their status polls) grew to 121–127 MB with it, the
 *   compiler's memory never given back, and to 108–114 MB without it, at the same POST and status
 *   throughput against the peers (BENCHMARKS.md, fifth pass);
 * - the project's TypeScript modules come from JavaScript stripped ahead of time
 *   (scripts/precompiled.mjs; `npm start` and the image build run the precompile), which keeps
 *   Node's TypeScript stripper (~25 MB) out of the services. Without the cache they still run:
 *   Node strips what it finds no entry for.
 * BENCHMARKS.md has the figures. The path is relative: services start in the project's root.
 */
export const SERVICE_NODE_FLAGS: readonly string[] = ['--max-semi-space-size=4', '--no-maglev', '--import=./scripts/precompiled-loader.mjs'];
