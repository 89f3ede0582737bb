import { randomUUID } from 'node:crypto';
import type { ArmResponse } from './http.ts';

/**
 * ARM long-running operations: the first answer is 201/202 with an `Azure-AsyncOperation` (status
 * document) and/or `Location` (202 until done, then the result) URL; the operation stays
 * `InProgress` for a few polls and then applies its effect (the resource's provisioningState moves).
 */
interface Operation {
  id: string;
  pollsLeft: number;
  status: 'InProgress' | 'Succeeded' | 'Failed';
  error: { code: string; message: string } | undefined;
  complete: () => void;
  /** Body of the final Location poll (the resource), or undefined for 204. */
  result: (() => unknown) | undefined;
  /** When set, decides the outcome once the fixed polls are spent: the operation waits on the resource. */
  progress: (() => OperationProgress) | undefined;
  startTime: string;
}

/** What an operation that waits on its resource reports at a poll. */
export type OperationProgress = 'InProgress' | 'Succeeded' | { code: string; message: string };

export interface StartedOperation {
  id: string;
  headers: Record<string, string>;
}

export class Operations {
  private readonly operations = new Map<string, Operation>();

  /**
   * `statusPath` and `resultPath` are the URL paths (with `{id}`) of the provider's operation
   * status and result endpoints; a missing one means the answer does not carry that header.
   */
  start(input: {
    base: string;
    statusPath?: string;
    resultPath?: string;
    apiVersion: string;
    polls: number;
    complete: () => void;
    error?: { code: string; message: string };
    result?: () => unknown;
    /** The operation ends only when this says so (e.g. Container Apps' PUT, once the revision provisions). */
    progress?: () => OperationProgress;
  }): StartedOperation {
    const id = randomUUID();
    this.operations.set(id, {
      id,
      pollsLeft: Math.max(0, input.polls),
      status: 'InProgress',
      error: input.error,
      complete: input.complete,
      result: input.result,
      progress: input.progress,
      startTime: new Date().toISOString(),
    });
    const headers: Record<string, string> = {};
    if (input.statusPath !== undefined) headers['azure-asyncoperation'] = `${input.base}${input.statusPath.replace('{id}', id)}?api-version=${input.apiVersion}`;
    if (input.resultPath !== undefined) headers.location = `${input.base}${input.resultPath.replace('{id}', id)}?api-version=${input.apiVersion}`;
    return { id, headers };
  }

  /** GET of the Azure-AsyncOperation URL. */
  status(id: string): ArmResponse | null {
    const operation = this.advance(id);
    if (operation === null) return null;
    return {
      status: 200,
      body: {
        id,
        name: id,
        status: operation.status,
        startTime: operation.startTime,
        ...(operation.status === 'InProgress' ? {} : { endTime: new Date().toISOString() }),
        ...(operation.status === 'Failed' && operation.error !== undefined ? { error: operation.error } : {}),
      },
    };
  }

  /** GET of the Location URL. */
  result(id: string): ArmResponse | null {
    const operation = this.advance(id);
    if (operation === null) return null;
    if (operation.status === 'InProgress') return { status: 202 };
    if (operation.status === 'Failed') return { status: 400, body: { error: operation.error ?? { code: 'Failed', message: 'The operation failed' } } };
    const body = operation.result?.();
    return body === undefined ? { status: 204 } : { status: 200, body };
  }

  /**
   * Whether the operation is still running, its resource looked at now (time passes between a
   * client's requests whether or not it polls): ARM refuses a second write to the resource meanwhile.
   */
  inProgress(id: string): boolean {
    const operation = this.operations.get(id);
    if (operation === undefined || operation.status !== 'InProgress') return false;
    if (operation.progress === undefined) return operation.pollsLeft > 0;
    const saved = operation.pollsLeft;
    operation.pollsLeft = 0;
    this.advance(id);
    operation.pollsLeft = saved;
    return operation.status === 'InProgress';
  }

  private advance(id: string): Operation | null {
    const operation = this.operations.get(id);
    if (operation === undefined) return null;
    if (operation.status === 'InProgress') {
      if (operation.pollsLeft > 0) {
        operation.pollsLeft -= 1;
      } else if (operation.progress !== undefined) {
        const progress = operation.progress();
        if (progress === 'Succeeded') {
          operation.status = 'Succeeded';
          operation.complete();
        } else if (progress !== 'InProgress') {
          operation.status = 'Failed';
          operation.error = progress;
        }
      } else {
        operation.status = operation.error === undefined ? 'Succeeded' : 'Failed';
        operation.complete();
      }
    }
    return operation;
  }
}
