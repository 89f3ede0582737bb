import type { ArtifactStore } from './artifacts.ts';
import type { Builder } from './builder.ts';
import type { ChangeSignal } from './changes.ts';
import type { DeploymentIntake } from './intake.ts';
import type { JobQueue } from './queue.ts';
import type { Runtime } from './runtime.ts';
import type { SecretStore } from './secrets.ts';
import type { DeploymentStore } from './store.ts';
import type { StreamLeaseStore } from './stream-leases.ts';
import type { Telemetry } from './telemetry.ts';
import type { WebhookStore } from './webhooks.ts';

/** What the API process needs. Each app's wiring (one file) builds this from validated config. */
export interface ApiAdapters {
  store: DeploymentStore;
  queue: JobQueue;
  intake: DeploymentIntake;
  artifacts: ArtifactStore;
  secrets: SecretStore;
  telemetry: Telemetry;
  /** Wakes readers following a deployment (SSE) when the store or a log changed. */
  changes: ChangeSignal;
  /** Webhook endpoints and deliveries. */
  webhooks: WebhookStore;
  /** Open event streams per token, counted across API replicas (the per-token cap). */
  streamLeases: StreamLeaseStore;
}

/** What the worker process needs: the API's ports plus the builder and the runtime. */
export interface WorkerAdapters extends ApiAdapters {
  builder: Builder;
  runtime: Runtime;
}
