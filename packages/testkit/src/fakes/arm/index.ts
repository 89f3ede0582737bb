/**
 * ARM simulator for the Azure builder and runtime tests: Microsoft.ContainerInstance 2023-05-01,
 * Microsoft.App 2026-07-01 (bodies validated against the 2025-07-01 spec, the newest published as
 * files), storage listKeys and ACR's token endpoints, over TLS on loopback. Each modelled behaviour
 * names its source where it is implemented.
 *
 * Deviations of the stand-ins (what the simulator does not do as Azure does, so a passing test does
 * not show it):
 * - Time is counted in polls, not seconds: a revision provisions, a certificate is issued and an
 *   operation expires after a number of reads, whatever the wall clock says.
 * - Revision running states: `Activating`/`ScaledToZero` for minReplicas 0 come from Microsoft's docs
 *   and the VS Code extension; the health state a scaled-to-zero revision reports is assumed `None`,
 *   and a scaled-to-zero revision never wakes up (the simulator sends it no requests). An app that
 *   crashes only under traffic is not modelled.
 * - The app PUT's operation fails at once when its revision is deactivated; Azure's exact behaviour
 *   then is undocumented. Only app PUT/PATCH take the app's write lock (409 ContainerAppLockConflict);
 *   revision activate/deactivate never conflict.
 * - Removing a secret an active revision uses is refused with 400 `ContainerAppSecretInvalid`; the
 *   exact wording of Azure's message is not known.
 * - Managed certificates: validation is judged from the simulator's DNS table (CNAME needs a CNAME
 *   record, HTTP an A record to the environment or a CNAME); no HTTP challenge is served; TXT
 *   validation is accepted but never checked.
 * - ACI `listLogs` keeps the last 4 MiB (Azure documents "4 MB", base unknown) and does not model
 *   the `tail` parameter or per-line limits.
 * - Response bodies are not validated against the specs, only requests; the Microsoft.App spec is
 *   2025-07-01 while the SDK calls 2026-07-01 (no separate files published for it).
 * - RBAC is not enforced: any token for the ARM audience may call anything, including the
 *   operation-status URLs at subscription scope.
 */
export { startArmSimulator } from './server.ts';
export type { ArmSimulator, ArmSimulatorOptions, FaultSpec, RecordedRequest } from './server.ts';
export type { AciSimulation, BuildScenario, WireContainerGroup } from './aci.ts';
export type { ContainerAppsSimulation, DnsEntry, RevisionOutcome, TrafficChange, WireContainerApp } from './container-apps.ts';
export type { RegistrySimulation } from './registry.ts';
export { FakeTokenCredential } from './credential.ts';
export { CONTAINER_INSTANCE_SPEC, loadSwaggerValidator } from './swagger-validator.ts';
export type { SwaggerBodyValidator } from './swagger-validator.ts';
