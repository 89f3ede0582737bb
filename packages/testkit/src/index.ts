/** Contract suites every adapter of a port must pass, and test helpers shared by the packages. */
export * from './assertions.ts';
export * from './records.ts';
export * from './store-contract.ts';
export * from './queue-contract.ts';
export * from './artifact-contract.ts';
export * from './tls.ts';
export * from './sse.ts';
export * from './webhook-contract.ts';
export * from './stream-lease-contract.ts';
