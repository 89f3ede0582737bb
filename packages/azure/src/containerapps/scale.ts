import type { ContainerSize, Environment } from '@zepid/core';

export interface ScaleProfile {
  minReplicas: number;
  maxReplicas: number;
  cpu: number;
  memory: string;
}

/**
 * Replicas and size per environment (the Deploy V3 design): development may scale to zero, production
 * keeps two replicas warm. Every cpu/memory pair is one Container Apps accepts (memory = 2 × cpu GiB).
 */
export const SCALE_PROFILES: Readonly<Record<Environment, ScaleProfile>> = {
  development: { minReplicas: 0, maxReplicas: 2, cpu: 0.5, memory: '1Gi' },
  staging: { minReplicas: 1, maxReplicas: 3, cpu: 1, memory: '2Gi' },
  production: { minReplicas: 2, maxReplicas: 10, cpu: 2, memory: '4Gi' },
};

/** Concurrent requests per replica before the HTTP rule adds one. */
export const HTTP_CONCURRENT_REQUESTS = 100;

/** The environment's profile; an explicit containerSize of the request replaces cpu and memory only. */
export function scaleFor(environment: Environment, containerSize: ContainerSize | null, overrides?: Partial<Record<Environment, ScaleProfile>>): ScaleProfile {
  const profile = overrides?.[environment] ?? SCALE_PROFILES[environment];
  return containerSize === null ? { ...profile } : { ...profile, cpu: containerSize.cpu, memory: containerSize.memory };
}
