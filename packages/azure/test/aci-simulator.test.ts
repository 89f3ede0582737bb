import { ContainerInstanceManagementClient } from '@azure/arm-containerinstance';
import type { ContainerGroup } from '@azure/arm-containerinstance';
import { trustTestCertificate } from '@zepid/testkit';
import { existsSync, readFileSync } from 'node:fs';
import { CONTAINER_INSTANCE_SPEC, loadSwaggerValidator, startArmSimulator } from '@zepid/testkit/fakes/arm/index.ts';
import { SHARED_CONTAINER_INSTANCE_SPEC, VENDORED_CONTAINER_INSTANCE_SPEC } from '@zepid/testkit/fakes/arm/swagger-validator.ts';
import { describe, expect, it } from 'vitest';

/**
 * The builder tests lean on the simulator refusing what ARM refuses; these show it does, so a
 * builder test passing means the body it sent is one the real API takes.
 */
describe('ARM simulator: Microsoft.ContainerInstance bodies', () => {
  const validator = loadSwaggerValidator(CONTAINER_INSTANCE_SPEC, { secretMaps: ['SecretVolume'] });
  const valid = {
    location: 'westeurope',
    tags: { deploymentId: 'dep_x' },
    properties: {
      osType: 'Linux',
      restartPolicy: 'Never',
      containers: [
        {
          name: 'kaniko',
          properties: {
            image: 'ghcr.io/osscontainertools/kaniko:v1.28.3-debug',
            command: ['/kaniko/executor'],
            resources: { requests: { cpu: 2, memoryInGB: 4 } },
            environmentVariables: [{ name: 'AZURE_STORAGE_ACCESS_KEY', secureValue: 'storage-key-value' }],
            volumeMounts: [{ name: 'docker-config', mountPath: '/kaniko/.docker', readOnly: true }],
          },
        },
      ],
      volumes: [{ name: 'docker-config', secret: { 'config.json': 'eyJhdXRocyI6e319' } }],
    },
  };

  it('validates against the official spec: the vendored copy is byte-identical to ../shared', () => {
    if (existsSync(SHARED_CONTAINER_INSTANCE_SPEC)) {
      expect(CONTAINER_INSTANCE_SPEC).toBe(SHARED_CONTAINER_INSTANCE_SPEC);
      expect(readFileSync(VENDORED_CONTAINER_INSTANCE_SPEC, 'utf8')).toBe(readFileSync(SHARED_CONTAINER_INSTANCE_SPEC, 'utf8'));
    } else {
      expect(CONTAINER_INSTANCE_SPEC).toBe(VENDORED_CONTAINER_INSTANCE_SPEC);
    }
  });

  it('accepts a body the spec allows', () => {
    expect(validator.validate('ContainerGroup', valid)).toEqual([]);
  });

  it('refuses unknown properties, wrong enums, wrong types and missing required ones, at any depth', () => {
    const body = structuredClone(valid) as Record<string, unknown> & typeof valid;
    (body as Record<string, unknown>).extra = true;
    (body.properties as Record<string, unknown>).restartPolicy = 'Sometimes';
    (body.properties.containers[0]?.properties.resources.requests as Record<string, unknown>).cpus = 1;
    (body.properties.containers[0]?.properties as Record<string, unknown>).image = 42;
    delete (body.properties as Partial<typeof valid.properties>).osType;
    const problems = validator.validate('ContainerGroup', body);
    expect(problems).toEqual(
      expect.arrayContaining([
        expect.stringContaining("'extra'"),
        expect.stringContaining('/properties/restartPolicy'),
        expect.stringContaining("'cpus'"),
        expect.stringContaining('/properties/containers/0/properties/image must be string'),
        expect.stringContaining("required property 'osType'"),
      ]),
    );
  });

  it('blanks x-ms-secret values and secret volume contents when a body is kept', () => {
    const kept = JSON.stringify(validator.redact('ContainerGroup', valid));
    expect(kept).not.toContain('storage-key-value');
    expect(kept).not.toContain('eyJhdXRocyI6e319');
    expect(kept).toContain('AZURE_STORAGE_ACCESS_KEY');
  });

  it('answers an invalid body with 400 InvalidRequestContent, like ARM, and lists it as invalid', async () => {
    trustTestCertificate();
    const sim = await startArmSimulator();
    try {
      const client = new ContainerInstanceManagementClient(sim.credential, sim.subscriptionId, {
        endpoint: sim.url,
        $host: sim.url,
        credentialScopes: 'https://management.azure.com/.default',
        retryOptions: { maxRetries: 0 },
      });
      const group: ContainerGroup = {
        location: sim.location,
        osType: 'Linux',
        // cpu 0 passes the SDK's serializer; the spec allows it, ARM's range check does not.
        containers: [{ name: 'kaniko', image: 'busybox', resources: { requests: { cpu: 0, memoryInGB: 1 } } }],
      };
      await expect(client.containerGroups.beginCreateOrUpdate(sim.resourceGroup, 'build-x', group)).rejects.toMatchObject({ statusCode: 400 });
      // A property the spec does not have, smuggled past the SDK's serializer.
      const response = await fetch(`${sim.url}/subscriptions/${sim.subscriptionId}/resourceGroups/${sim.resourceGroup}/providers/Microsoft.ContainerInstance/containerGroups/build-y?api-version=2023-05-01`, {
        method: 'PUT',
        headers: { 'content-type': 'application/json', authorization: `Bearer ${(await sim.credential.getToken('https://management.azure.com/.default'))?.token ?? ''}` },
        body: JSON.stringify({ ...valid, location: sim.location, properties: { ...valid.properties, restartPolicyy: 'Never' } }),
      });
      expect(response.status).toBe(400);
      expect(((await response.json()) as { error: { code: string } }).error.code).toBe('InvalidRequestContent');
      expect(sim.invalidRequests().map((request) => request.error?.code)).toEqual(['InvalidContainerResources', 'InvalidRequestContent']);
      expect(JSON.stringify(sim.requests)).not.toContain('storage-key-value');
    } finally {
      await sim.close();
    }
  });

  it('refuses ARM calls made with a token for another audience', async () => {
    trustTestCertificate();
    const sim = await startArmSimulator();
    try {
      const client = new ContainerInstanceManagementClient(sim.credential, sim.subscriptionId, {
        endpoint: sim.url,
        $host: sim.url,
        // The SDK's default scope would be `<endpoint>/.default`, which ARM does not accept.
        retryOptions: { maxRetries: 0 },
      });
      await expect(client.containerGroups.get(sim.resourceGroup, 'build-x')).rejects.toMatchObject({ statusCode: 401 });
    } finally {
      await sim.close();
    }
  });
});
