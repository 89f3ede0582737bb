/**
 * V8 flags the API and the worker run with (`npm start`, the images, the bench). A 1 MB young
 * generation instead of V8's 16 MB default keeps an idle service's RSS well below its budget
 * (API < 120 MB, worker < 200 MB) at a small cost in scavenges; BENCHMARKS.md has the figures.
 */
export const SERVICE_NODE_FLAGS: readonly string[] = ['--max-semi-space-size=1'];
