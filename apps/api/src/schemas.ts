import Type from 'typebox';
import type { Static } from 'typebox';
import { APP_STATUSES, DEPLOYMENT_ID_PATTERN, DEPLOYMENT_KINDS, DEPLOYMENT_STATUSES, ENV_NAME_PATTERN, ENV_SCOPES, ENVIRONMENTS, ID_PATTERN, LIMITS, STEP_STATUSES, STEPS } from '@zepid/core';

/** Response and parameter schemas: validation, TypeScript types and the OpenAPI document from one source. */

const literals = <const T extends readonly string[]>(values: T) => Type.Enum(values);

/** A deployment's status, as the status, list and accepted answers carry it. */
export const DeploymentStatusView = Type.Enum(DEPLOYMENT_STATUSES, {
  description:
    'queued → in_progress → completed | failed | cancelled | superseded. `superseded`: a deployment of the same app submitted later is already live, ' +
    'and an app\'s live deployment only moves forward, so this one never took the traffic (errorCode SUPERSEDED names the live one); final, not retryable.',
});

export const ErrorBody = Type.Object(
  {
    success: Type.Literal(false),
    error: Type.String({ description: 'Stable error code, e.g. VALIDATION_ERROR, NOT_FOUND, QUOTA_EXCEEDED.' }),
    message: Type.String(),
    details: Type.Optional(
      Type.Unknown({
        description: 'For VALIDATION_ERROR: [{field, message}], one per violation. For SOURCE_FILES_MISSING: {missing: [{path, sha256}]}, every file to send again with content.',
      }),
    ),
    timestamp: Type.String({ format: 'date-time' }),
  },
  { $id: 'ErrorBody', description: 'Every 4xx/5xx answer.' },
);
export type ErrorBody = Static<typeof ErrorBody>;

export const errorResponses = (...statuses: number[]) =>
  Object.fromEntries(statuses.map((status) => [status, Type.Ref('ErrorBody')]));

/** The Idempotency-Key header of the endpoints that create a deployment. */
export const idempotencyHeaders = (description: string) =>
  Type.Object({
    'idempotency-key': Type.Optional(Type.String({ minLength: 1, maxLength: LIMITS.idempotencyKeyLength, pattern: '^[\\x21-\\x7e]+$', description })),
  });

export const DeploymentIdParams = Type.Object({
  id: Type.String({ pattern: DEPLOYMENT_ID_PATTERN, maxLength: 30, description: 'Deployment id, `dep_` + 26 characters.' }),
});

export const DeploymentIdQuery = Type.Object({
  id: Type.String({ pattern: DEPLOYMENT_ID_PATTERN, maxLength: 30, description: 'Deployment id.' }),
});

export const ProjectParams = Type.Object({
  projectId: Type.String({ pattern: ID_PATTERN, maxLength: LIMITS.idLength }),
});

export const PageQuery = Type.Object({
  limit: Type.Optional(Type.Integer({ minimum: 1, maximum: LIMITS.pageSize, default: LIMITS.defaultPageSize })),
  cursor: Type.Optional(Type.String({ minLength: 1, maxLength: LIMITS.cursorLength, description: 'nextCursor of the previous page.' })),
});

export const StepView = Type.Object({
  status: literals(STEP_STATUSES),
  startedAt: Type.Union([Type.String(), Type.Null()]),
  finishedAt: Type.Union([Type.String(), Type.Null()]),
  error: Type.Union([Type.String(), Type.Null()]),
  timestamp: Type.Union([Type.String(), Type.Null()], { description: 'v1 field: when the step last changed.' }),
});

const Nullable = <T extends Parameters<typeof Type.Union>[0][number]>(schema: T) => Type.Union([schema, Type.Null()]);

export const DnsRecordView = Type.Object({
  type: Type.String(),
  name: Type.String(),
  value: Type.String(),
});

export const SourceView = Type.Object(
  {
    digest: Type.String({ description: '`sha256:` + hex over the sorted (path, file sha256) pairs: identical sources share it.' }),
    fileCount: Type.Integer(),
    bytes: Type.Integer({ description: 'All files together.' }),
    storedFiles: Type.Integer({
      description: 'Files whose content this deployment newly stored (a content shared by several paths counts once); 0 when the organization had every one already.',
    }),
    storedBytes: Type.Integer({ description: 'Bytes this deployment newly stored; 0 for a redeploy of unchanged files.' }),
  },
  { description: 'The deployment\'s source. Each file content is stored once per organization.' },
);

export const ReuseView = Type.Object(
  {
    buildFrom: Nullable(
      Type.String({
        description: 'The deployment that built the image this one runs: its build step reused that image instead of building (same source digest, build settings and env values). Null when it built its own, or has not finished its build step.',
      }),
    ),
    revisionKept: Type.Boolean({
      description: 'true when the revision already serving that image with the same settings and env values was kept: no new revision, nothing restarted.',
    }),
  },
  { description: 'What this deployment took over from an identical earlier one instead of doing again.' },
);

export const BuildView = Type.Object(
  {
    kind: literals(['static', 'node', 'dockerfile'] as const),
    framework: Type.String({ description: 'What was detected: `vite-react`, `next`, `sveltekit`, `nuxt`, `astro`, `react-router`, `create-react-app`, `express`, `static-html`, `node` (no framework known), `dockerfile`, …' }),
    packageManager: Nullable(Type.String({ description: '`npm`, or the pinned tool fetched from the npm registry (`pnpm@10.34.9`, `yarn@1.22.22`, `@yarnpkg/cli-dist@4.18.1`, `bun@1.4.5`); null without a package.json.' })),
    packageManagerReason: Nullable(Type.String({ description: 'Why that manager and version (lockfile, packageManager field, pin).' })),
    install: Nullable(Type.String({ description: 'Runs with dev dependencies.' })),
    build: Nullable(Type.String({ description: 'Runs with NODE_ENV=production.' })),
    start: Nullable(Type.String({ description: 'Null for a static site, which the service serves itself. Runs with NODE_ENV=production.' })),
    outputDir: Nullable(Type.String({ description: 'Static site: the directory served (`.` for plain HTML). Node app: what the build must write for the start command. Null: the first of dist, build, out, public with an index.html (once built: the one found).' })),
  },
  { description: 'The build plan the validate step decided: what was detected and what runs. Null until validate has run.' },
);

/** What a deployment does, and whether it can be rolled back to (issue 12). */
const KindFields = {
  kind: Type.Enum(DEPLOYMENT_KINDS, {
    description: '`build`: source → image → revision (POST /deploy). `rollback`: an earlier deployment\'s image back live, no build. `config`: the live image restarted with new env values, no build.',
  }),
  rollbackOf: Nullable(Type.String({ description: '`rollback`: the deployment whose image it put back live.' })),
  imageOf: Nullable(Type.String({ description: '`rollback` and `config`: the deployment that built the image it runs.' })),
  redeployOf: Nullable(Type.String({ description: '`build` made by POST /deploy/:id/redeploy: the deployment whose stored source it built again.' })),
  createdBy: Nullable(
    Type.Object(
      {
        tokenId: Type.String({ description: '`tok_` + the first 12 hex characters of the token\'s SHA-256 (the token itself is never stored).' }),
        tokenName: Nullable(Type.String({ description: 'The name given to the token in DEPLOY_API_TOKENS (`orgId/name:token`); `dev` for the local dev token.' })),
      },
      { description: 'Who started the deployment: the API token of the request that created it (POST /deploy, rollback, redeploy, an env change). Null for deployments recorded before this field.' },
    ),
  ),
  canRollback: Type.Boolean({
    description: 'POST /deploy/:id/rollback would be accepted: completed, with an image that image retention has not removed (the newest KEEP_IMAGES_PER_APP completed deployments of an app and its live one keep theirs).',
  }),
};

export const StatusView = Type.Object({
  deploymentId: Type.String(),
  projectId: Type.String(),
  environment: literals(ENVIRONMENTS),
  status: DeploymentStatusView,
  ...KindFields,
  currentStep: Nullable(literals(STEPS)),
  progress: Type.Integer({ minimum: 0, maximum: 100, description: 'Completed steps by weight; the running step counts by its time against what it took lately (never reaching its full share).' }),
  attempt: Type.Integer({ minimum: 1 }),
  cancelRequested: Type.Boolean(),
  source: SourceView,
  steps: Type.Object(Object.fromEntries(STEPS.map((step) => [step, StepView])) as Record<(typeof STEPS)[number], typeof StepView>),
  logs: Type.Array(Type.String(), { description: `The last ${LIMITS.statusLogLines} log lines.` }),
  error: Nullable(Type.String()),
  errorCode: Nullable(Type.String()),
  url: Nullable(Type.String()),
  image: Nullable(Type.String()),
  revision: Nullable(Type.String()),
  reuse: ReuseView,
  build: Nullable(BuildView),
  dnsRecords: Type.Array(DnsRecordView, { description: 'DNS records to add before the custom domain can be bound.' }),
  createdAt: Type.String(),
  startedAt: Nullable(Type.String()),
  finishedAt: Nullable(Type.String()),
  timestamp: Type.String({ description: 'When the deployment last changed.' }),
});
export type StatusView = Static<typeof StatusView>;

export const DeploymentSummary = Type.Object({
  deploymentId: Type.String(),
  projectId: Type.String(),
  environment: literals(ENVIRONMENTS),
  status: DeploymentStatusView,
  ...KindFields,
  currentStep: Nullable(literals(STEPS)),
  progress: Type.Integer(),
  attempt: Type.Integer(),
  source: SourceView,
  url: Nullable(Type.String()),
  error: Nullable(Type.String()),
  errorCode: Nullable(Type.String()),
  createdAt: Type.String(),
  finishedAt: Nullable(Type.String()),
});
export type DeploymentSummary = Static<typeof DeploymentSummary>;

export const AcceptedBody = Type.Object({
  success: Type.Literal(true),
  deploymentId: Type.String(),
  status: DeploymentStatusView,
  attempt: Type.Integer(),
  message: Type.String(),
  timestamp: Type.String(),
  estimatedDuration: Type.String({ description: 'What the organization\'s last completed deployments took (e.g. "4 s to 40 s (last 12 completed deployments)"); a fixed text before any completed.' }),
  statusUrl: Type.String(),
});

export const LogLineView = Type.Object({
  timestamp: Type.String(),
  step: Nullable(Type.String()),
  level: Type.String(),
  message: Type.String(),
});

// ---- apps (issue 12) ---------------------------------------------------------------------------

export const EnvironmentField = Type.Enum(ENVIRONMENTS, { description: 'The app\'s environment; `development` when absent (as in POST /deploy).' });

export const AppView = Type.Object(
  {
    appName: Type.String({ description: 'The app\'s id: `<project>-<hash>-<environment>`.' }),
    projectId: Type.String(),
    environment: literals(ENVIRONMENTS),
    url: Nullable(Type.String({ description: 'The live deployment\'s URL.' })),
    status: Type.Enum(APP_STATUSES, {
      description: '`deleting`: DELETE /projects/:projectId was asked. `deploying`: its newest deployment is queued or running. `live`: a deployment of it is live. `failed`: none is live (its deployments failed, or it has none yet).',
    }),
    liveDeploymentId: Nullable(Type.String({ description: 'The deployment whose revision takes the app\'s traffic.' })),
    updatedAt: Type.String(),
  },
  { description: 'An app: one project in one environment, what has a URL.' },
);

export const AppsPage = Type.Object({ apps: Type.Array(AppView), nextCursor: Nullable(Type.String()) });

export const EnvNameParams = Type.Object({
  projectId: Type.String({ pattern: ID_PATTERN, maxLength: LIMITS.idLength }),
  name: Type.String({ pattern: ENV_NAME_PATTERN, maxLength: LIMITS.envNameLength, description: 'Env variable name: letters, digits and _, not starting with a digit.' }),
});

export const EnvScopeField = Type.Enum(ENV_SCOPES, {
  description: '`runtime` (read by the running app: a change restarts the live image, no build) or `build` (read by the build, e.g. VITE_*: a change builds the live source again). Default for a new name: `build` for VITE_, NEXT_PUBLIC_, PUBLIC_, NUXT_PUBLIC_, REACT_APP_, GATSBY_ names, else `runtime`; a name keeps its scope until one is given.',
});

export const ApplyField = Type.Enum(['restart', 'none'] as const, {
  description: '`restart` (default): the live app takes the new values now (a `config` deployment, or a `build` one when a build-scoped variable changed). `none`: store them for the next deployment.',
});

export const EnvValue = Type.String({ maxLength: LIMITS.envValueBytes, description: `A secret: stored in the secret store, never returned or logged. At most ${LIMITS.envValueBytes} bytes, no NUL.` });

export const EnvVariableView = Type.Object({
  name: Type.String(),
  scope: literals(ENV_SCOPES),
  updatedAt: Type.String({ description: 'When its value (or scope) last changed.' }),
});

export const EnvListView = Type.Object({
  projectId: Type.String(),
  appName: Type.String(),
  environment: literals(ENVIRONMENTS),
  variables: Type.Array(
    Type.Object({
      ...EnvVariableView.properties,
      appliedToLive: Type.Boolean({ description: 'The live deployment runs with this value: it was set before that deployment was made.' }),
    }),
  ),
  envUpdatedAt: Nullable(Type.String({ description: 'Last change of the app\'s variables; null before any was stored (then they are those of the live deployment).' })),
  liveDeploymentId: Nullable(Type.String({ description: 'The deployment that runs with them (its revision takes the traffic).' })),
});

export const EnvChangeView = Type.Object({
  success: Type.Literal(true),
  projectId: Type.String(),
  appName: Type.String(),
  environment: literals(ENVIRONMENTS),
  variables: Type.Array(EnvVariableView, { description: 'All the app\'s variables after the change: names and scopes, never values.' }),
  deploymentId: Nullable(Type.String({ description: 'The deployment that applies the change (status at /deploy/:id/status); null when none started.' })),
  kind: Nullable(Type.Enum(['config', 'build'] as const, { description: '`config`: restart of the live image, no build. `build`: a build-scoped variable changed, so the live source is built again.' })),
  rebuild: Type.Boolean({ description: 'true when the change needs a build (kind `build`); the message says which variable.' }),
  message: Type.String(),
});
