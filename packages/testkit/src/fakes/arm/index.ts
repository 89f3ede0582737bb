/**
 * ARM simulator for the Azure builder and runtime tests: Microsoft.ContainerInstance 2023-05-01,
 * Microsoft.App 2026-07-01, storage listKeys and ACR's token endpoints, over TLS on loopback.
 */
export { startArmSimulator } from './server.ts';
export type { ArmSimulator, ArmSimulatorOptions, FaultSpec, RecordedRequest } from './server.ts';
export type { AciSimulation, BuildScenario, WireContainerGroup } from './aci.ts';
export type { ContainerAppsSimulation, DnsEntry, RevisionOutcome, TrafficChange, WireContainerApp } from './container-apps.ts';
export type { RegistrySimulation } from './registry.ts';
export { FakeTokenCredential } from './credential.ts';
export { CONTAINER_INSTANCE_SPEC, loadSwaggerValidator } from './swagger-validator.ts';
export type { SwaggerBodyValidator } from './swagger-validator.ts';
