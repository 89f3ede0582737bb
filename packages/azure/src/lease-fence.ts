import { AsyncLocalStorage } from 'node:async_hooks';
import type { PipelinePolicy } from '@azure/core-rest-pipeline';
import type { LeaseCheck } from '@zepid/core';
import { DeployError } from '@zepid/core';

/**
 * Fences every ARM request an adapter sends on behalf of a job (packages/core/src/lease.ts): the
 * job's lease check is asked right before each request leaves — the adapter's own calls, and the
 * SDK's long-running-operation polls and retries, which no call site of ours sees. A request of a run
 * that lost its lease is not sent. The job's check travels with the call through AsyncLocalStorage
 * (`run`), so the SDK clients, shared by all jobs, need no per-job state.
 *
 * What remains is the window between the check and the request on the wire (a stall right there lets
 * that one request out late): the new owner tolerates it (see builder.ts, a group deleted under a
 * running build is created again).
 */
export class LeaseFence {
  private readonly scope = new AsyncLocalStorage<LeaseCheck>();

  /** Runs `operation` with every ARM request in it fenced by `fence`. */
  run<T>(fence: LeaseCheck, operation: () => Promise<T>): Promise<T> {
    return this.scope.run(fence, operation);
  }

  /** For the clients' `additionalPolicies`, per retry: each attempt on the wire is checked. */
  readonly policy: PipelinePolicy = {
    name: 'zepidLeaseFence',
    sendRequest: async (request, next) => {
      const fence = this.scope.getStore();
      if (fence !== undefined && !(await fence(`${request.method} ${new URL(request.url).pathname}`))) {
        throw new DeployError('CANCELLED', 'This run lost its lease: the ARM request was not sent');
      }
      return next(request);
    },
  };
}
