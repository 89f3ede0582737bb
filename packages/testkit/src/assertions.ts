import { DeployError } from '@zepid/core';
import { expect } from 'vitest';

/** The DeployError `promise` rejects with; fails the test when it resolves or rejects with anything else. */
export async function rejection(promise: Promise<unknown>): Promise<DeployError> {
  try {
    await promise;
  } catch (error) {
    expect(error).toBeInstanceOf(DeployError);
    return error as DeployError;
  }
  throw new Error('expected the call to fail');
}
