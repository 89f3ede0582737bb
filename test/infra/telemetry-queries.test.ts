import { describe, expect, it } from 'vitest';
import { DEPLOYMENT_DIMENSIONS, ENVIRONMENTS, ERROR_CODES, STEP_OUTCOMES, STEPS, TELEMETRY_EVENTS, TELEMETRY_METRICS } from '../../packages/core/src/index.ts';
import { balancedBlock, stripComments } from './bicep-source.ts';
import { kqlDiagnostics } from './kql-analyzer.ts';
import { readRepoFile } from './repo-files.ts';
import type { KqlStatement, PlatformMetricUse, WorkbookItem } from './telemetry-queries.ts';
import {
  bicepMultilineStrings,
  comparedWith,
  ENVIRONMENT_FILTER,
  kqlStatements,
  metricAlertUses,
  metricsItemUses,
  workbookItems,
} from './telemetry-queries.ts';

// The dashboard and the alerts against what the code sends: a tile that reads an event, metric or
// dimension nobody sends stays empty without an error, and an alert on it never fires. Names come
// from TELEMETRY_EVENTS / TELEMETRY_METRICS (packages/core/src/ports/telemetry.ts), which also type
// what the API and the worker may send.

/**
 * Platform metrics the tiles and alerts may use, with their dimensions, from Microsoft's supported-metrics
 * lists. `exportable`: the "DS Export" column, whether a diagnostic setting writes the metric to Log
 * Analytics (AzureMetrics), always without its dimensions. Only metrics checked against the page are here:
 * a query on another one fails until someone checks it and adds it.
 */
const PLATFORM_METRICS: Record<string, { source: string; metrics: Record<string, { dimensions: string[]; exportable: boolean }> }> = {
  'microsoft.servicebus/namespaces': {
    source: 'https://learn.microsoft.com/azure/azure-monitor/reference/supported-metrics/microsoft-servicebus-namespaces-metrics',
    metrics: {
      AbandonMessage: { dimensions: ['EntityName'], exportable: true },
      CompleteMessage: { dimensions: ['EntityName'], exportable: true },
      IncomingBytes: { dimensions: ['EntityName'], exportable: true },
      IncomingMessages: { dimensions: ['EntityName'], exportable: true },
      ActiveConnections: { dimensions: [], exportable: false },
      ActiveMessages: { dimensions: ['EntityName'], exportable: false },
      ConnectionsClosed: { dimensions: ['EntityName'], exportable: false },
      ConnectionsOpened: { dimensions: ['EntityName'], exportable: false },
      DeadletteredMessages: { dimensions: ['EntityName'], exportable: false },
    },
  },
  'microsoft.app/containerapps': {
    source: 'https://learn.microsoft.com/azure/azure-monitor/reference/supported-metrics/microsoft-app-containerapps-metrics',
    metrics: {
      Requests: { dimensions: ['revisionName', 'podName', 'statusCodeCategory', 'statusCode'], exportable: true },
    },
  },
};

/** Metrics items cannot filter by deployment environment: the Service Bus queue serves all of them. */
const SHARED_ACROSS_ENVIRONMENTS = ['dead-letter-count'];

const WORKBOOK_FILE = 'infra/workbooks/deployments.workbook.json';
const ALERTS_FILE = 'infra/modules/alerts.bicep';

const workbook = () => workbookItems((JSON.parse(readRepoFile(WORKBOOK_FILE)) as { items: WorkbookItem[] }).items);
const kqlTiles = () => workbook().filter((item) => item.type === 3);
const alertQueries = () => bicepMultilineStrings(readRepoFile(ALERTS_FILE));

const EVENT_NAMES: readonly string[] = Object.keys(TELEMETRY_EVENTS);
const METRIC_NAMES: readonly string[] = Object.keys(TELEMETRY_METRICS);
const extrasOf = (name: string): readonly string[] =>
  (TELEMETRY_EVENTS as Record<string, readonly string[]>)[name] ?? (TELEMETRY_METRICS as Record<string, readonly string[]>)[name] ?? [];

/** What is wrong with one statement against the code's names; empty when nothing. */
function telemetryProblems(statement: KqlStatement): string[] {
  const problems: string[] = [];
  const sent = statement.table === 'customEvents' ? EVENT_NAMES : statement.table === 'customMetrics' ? METRIC_NAMES : null;
  if (statement.table === 'AzureMetrics') {
    const catalog = PLATFORM_METRICS['microsoft.servicebus/namespaces'];
    if (statement.metricNames.length === 0) problems.push('reads AzureMetrics without naming a MetricName');
    for (const metric of statement.metricNames) {
      if (catalog?.metrics[metric]?.exportable !== true) {
        problems.push(`AzureMetrics never holds ${metric}: diagnostic settings do not export it (${catalog?.source ?? ''})`);
      }
    }
    return problems;
  }
  if (sent === null) return [`reads ${statement.table}, which this check does not know`];
  if (statement.names.length === 0) problems.push(`reads ${statement.table} without keeping only names the code sends`);
  for (const name of statement.names) if (!sent.includes(name)) problems.push(`${statement.table} has no ${name}: the code sends ${sent.join(', ')}`);
  const known = new Set<string>([...DEPLOYMENT_DIMENSIONS, ...statement.names.flatMap(extrasOf)]);
  for (const key of statement.dimensions) {
    if (!known.has(key)) problems.push(`customDimensions.${key} is not sent with ${statement.names.join(', ')}`);
  }
  for (const step of comparedWith(statement.text, 'Step')) if (!(STEPS as readonly string[]).includes(step)) problems.push(`no step ${step}`);
  for (const code of comparedWith(statement.text, 'ErrorCode')) if (!(code in ERROR_CODES)) problems.push(`no error code ${code}`);
  // An empty outcome is a row sent before StepDuration had one.
  for (const outcome of comparedWith(statement.text, 'Outcome')) {
    if (outcome !== '' && !(STEP_OUTCOMES as readonly string[]).includes(outcome)) problems.push(`no step outcome ${outcome}`);
  }
  return problems;
}

function platformMetricProblems(use: PlatformMetricUse): string[] {
  const catalog = PLATFORM_METRICS[use.namespace.toLowerCase()];
  const metric = catalog?.metrics[use.metric];
  if (catalog === undefined || metric === undefined) return [`${use.where}: ${use.namespace}/${use.metric} is not in the checked list`];
  return use.dimensions.filter((dimension) => !metric.dimensions.includes(dimension)).map((dimension) => `${use.where}: ${use.metric} has no dimension ${dimension} (${catalog.source})`);
}

describe('the query reader (self-check)', () => {
  it('finds tables, names, dimensions and the Environment filter, and reports what the code does not send', () => {
    const [queued, finished] = kqlStatements(
      [
        'let queued = customEvents | where name == "DeploymentQueued"; // comment: name == "Ignored"',
        'customEvents',
        '| where name in ("DeploymentCompleted", "DeploymentExploded")',
        ENVIRONMENT_FILTER,
        '| extend a = tostring(customDimensions.url), b = customDimensions["colour"]',
        '| where Step == "compile" and ErrorCode in ("TIMEOUT", "SLOW") and Outcome != "aborted"',
      ].join('\n'),
    );
    expect(queued).toMatchObject({ table: 'customEvents', names: ['DeploymentQueued'], appliesEnvironmentFilter: false });
    expect(finished).toMatchObject({ table: 'customEvents', names: ['DeploymentCompleted', 'DeploymentExploded'], appliesEnvironmentFilter: true });
    expect(finished?.dimensions).toEqual(['environment', 'url', 'colour']);
    expect(telemetryProblems(queued as KqlStatement)).toEqual([]);
    expect(telemetryProblems(finished as KqlStatement)).toEqual([
      expect.stringContaining('customEvents has no DeploymentExploded'),
      'customDimensions.colour is not sent with DeploymentCompleted, DeploymentExploded',
      'no step compile',
      'no error code SLOW',
      'no step outcome aborted',
    ]);
  });

  it('reports AzureMetrics reads of a metric diagnostic settings do not export, and unchecked tables', () => {
    const [deadLetters] = kqlStatements('AzureMetrics | where MetricName == "DeadletteredMessages"');
    expect(telemetryProblems(deadLetters as KqlStatement)).toEqual([expect.stringContaining('AzureMetrics never holds DeadletteredMessages')]);
    const [incoming] = kqlStatements('AzureMetrics | where MetricName in ("IncomingMessages")');
    expect(telemetryProblems(incoming as KqlStatement)).toEqual([]);
    const [traces] = kqlStatements('traces | take 1');
    expect(telemetryProblems(traces as KqlStatement)).toEqual(['reads traces, which this check does not know']);
  });

  it('reads the platform metric and dimensions of a metric alert', () => {
    const source = "criteria: { allOf: [ { metricNamespace: 'Microsoft.ServiceBus/namespaces'\n metricName: 'ActiveMessages'\n dimensions: [ { name: 'Queue'\n operator: 'Include' } ]\n timeAggregation: 'Maximum' } ] }";
    const uses = metricAlertUses(source);
    expect(uses).toEqual([{ where: 'metric alert on ActiveMessages', namespace: 'Microsoft.ServiceBus/namespaces', metric: 'ActiveMessages', dimensions: ['Queue'] }]);
    expect(uses.flatMap(platformMetricProblems)).toEqual([expect.stringContaining('ActiveMessages has no dimension Queue')]);
  });
});

describe('workbook tiles read what the code sends', () => {
  it('has the tiles docs/operations.md describes, and no other', () => {
    const tiles = workbook().filter((item) => item.type === 3 || item.type === 10);
    expect(tiles.length).toBeGreaterThanOrEqual(10);
    // The docs name each tile by its title (before any parenthesis or colon), in bold, one table row each.
    const titles = tiles.map((item) => (item.content.title ?? '').split(/[(:]/)[0]?.trim() ?? '');
    const docs = readRepoFile('docs/operations.md');
    const section = docs.slice(docs.indexOf('### Dashboard'), docs.indexOf('\n## ', docs.indexOf('### Dashboard')));
    const described = [...section.matchAll(/^\| \*\*([^*]+)\*\* \|/gm)].map((match) => match[1]);
    expect(described).toEqual(titles);
  });

  it('every event and metric name and every customDimensions key a tile uses is one the code sends', () => {
    const problems = kqlTiles().flatMap((item) =>
      kqlStatements(item.content.query ?? '').flatMap((statement) => telemetryProblems(statement).map((problem) => `${item.name}: ${problem}`)),
    );
    expect(problems).toEqual([]);
    const used = new Set(kqlTiles().flatMap((item) => kqlStatements(item.content.query ?? '').flatMap((statement) => statement.names)));
    // Every name the code sends has a tile.
    expect([...EVENT_NAMES, ...METRIC_NAMES].filter((name) => !used.has(name))).toEqual([]);
  });

  it('every tile applies the Environment parameter, in every statement that reads telemetry', () => {
    expect(DEPLOYMENT_DIMENSIONS).toContain('environment');
    const missing = kqlTiles().flatMap((item) =>
      kqlStatements(item.content.query ?? '')
        .filter((statement) => !statement.appliesEnvironmentFilter)
        .map((statement) => `${item.name}: ${statement.text.split('\n')[0] ?? ''}`),
    );
    expect(missing).toEqual([]);
    const others = workbook().filter((item) => item.type === 10);
    expect(others.map((item) => item.name)).toEqual(SHARED_ACROSS_ENVIRONMENTS);
    for (const item of others) expect(item.content.title).toMatch(/all environments/);
  });

  it('the Environment parameter offers exactly the environments of the code', () => {
    const parameters = workbook().flatMap((item) => item.content.parameters ?? []);
    const environment = parameters.find((parameter) => parameter.name === 'Environment');
    expect(JSON.parse(environment?.jsonData ?? '[]')).toEqual([...ENVIRONMENTS]);
  });

  it('no query reads a platform metric from Log Analytics that diagnostic settings cannot export; metrics items use real metrics and dimensions', () => {
    const azureMetrics = kqlTiles().flatMap((item) => kqlStatements(item.content.query ?? '')).filter((statement) => statement.table === 'AzureMetrics');
    expect(azureMetrics.flatMap(telemetryProblems)).toEqual([]);
    const uses = workbook()
      .filter((item) => item.type === 10)
      .flatMap(metricsItemUses);
    expect(uses.map((use) => `${use.namespace}/${use.metric} by ${use.dimensions.join(',')}`)).toEqual(['microsoft.servicebus/namespaces/DeadletteredMessages by EntityName']);
    expect(uses.flatMap(platformMetricProblems)).toEqual([]);
  });

  it('the dead-letter tile charts the Maximum of the queue passed in, on the namespace passed in', () => {
    const [item] = workbook().filter((tile) => tile.name === 'dead-letter-count');
    // 3 is Maximum in the portal's metric aggregation enum (1 Sum, 2 Minimum, 3 Maximum, 4 Average, 7 Count).
    expect(item?.content.metrics?.[0]?.aggregation).toBe(3);
    expect(item?.content.resourceIds).toEqual(['__SERVICE_BUS_NAMESPACE_ID__']);
    expect(item?.content.filters).toEqual([{ id: '1', key: 'EntityName', operator: 0, values: ['__QUEUE_NAME__'] }]);
    const module = stripComments(readRepoFile('infra/modules/workbook.bicep'));
    expect(module).toMatch(/'__SERVICE_BUS_NAMESPACE_ID__',\s*serviceBusNamespaceId/);
    expect(module).toMatch(/'__QUEUE_NAME__',\s*queueName/);
    const main = stripComments(readRepoFile('infra/main.bicep'));
    const params = balancedBlock(main, main.indexOf("module workbook 'modules/workbook.bicep'"));
    expect(params).toMatch(/serviceBusNamespaceId:\s*serviceBus\.outputs\.id/);
    expect(params).toMatch(/queueName:\s*serviceBus\.outputs\.queueName/);
  });
});

describe('alerts read what the code sends and fire per environment', () => {
  it('every event name and customDimensions key a log alert uses is one the code sends', () => {
    const statements = alertQueries().flatMap(kqlStatements);
    expect(statements.length).toBeGreaterThan(0);
    expect(statements.flatMap(telemetryProblems)).toEqual([]);
  });

  it('every metric alert uses a platform metric and dimensions that exist', () => {
    const uses = metricAlertUses(readRepoFile(ALERTS_FILE));
    expect(uses.map((use) => use.metric).sort()).toEqual(['DeadletteredMessages', 'Requests']);
    expect(uses.flatMap(platformMetricProblems)).toEqual([]);
  });

  it('the failure alert runs once per environment of the code, filtered to it; only production pages', () => {
    const source = stripComments(readRepoFile(ALERTS_FILE));
    const start = source.indexOf('var failureAlertEnvironments = [');
    const environments = [...source.slice(start, source.indexOf('\n]', start)).matchAll(/\{\s*name:\s*'(\w+)',\s*severity:\s*(\d),\s*page:\s*(true|false)\s*\}/g)].map(
      (match) => ({ name: match[1], severity: Number(match[2]), page: match[3] === 'true' }),
    );
    expect(environments.map((environment) => environment.name).sort()).toEqual([...ENVIRONMENTS].sort());
    expect(environments.filter((environment) => environment.page).map((environment) => environment.name)).toEqual(['production']);
    expect(environments.find((environment) => environment.name === 'production')?.severity).toBe(1);
    for (const query of alertQueries()) expect(query).toContain('| where tostring(customDimensions.environment) == "__ENVIRONMENT__"');
    const rule = balancedBlock(source, source.indexOf("resource failureRate 'Microsoft.Insights/scheduledQueryRules"));
    expect(source).toMatch(/resource failureRate '[^']+' = \[\s*for target in failureAlertEnvironments:/);
    expect(rule).toMatch(/replace\(replace\(failureRateQuery, '__ENVIRONMENT__', target\.name\), '__MINIMUM_FAILED__', string\(failureMinimumCount\)\)/);
    expect(rule).toMatch(/actionGroups:\s*target\.page \? pageActionGroupIds : notifyActionGroupIds/);
  });

  it('the failure alert needs a minimum of failures, not of finished deployments, so an outage at low volume fires', () => {
    const [query] = alertQueries();
    // Kept rows need `Failed >= minimum`; nothing else filters rows after summarize.
    const afterSummarize = (query ?? '').slice((query ?? '').indexOf('| summarize'));
    expect([...afterSummarize.matchAll(/\|\s*where\s+(.*)/g)].map((match) => match[1]?.trim())).toEqual(['Failed >= __MINIMUM_FAILED__']);
    const main = readRepoFile('infra/main.bicep');
    const minimum = Number(/param failureMinimumCount int = (\d+)/.exec(main)?.[1]);
    const percent = Number(/param failureRateThresholdPercent int = (\d+)/.exec(main)?.[1]);
    // Two deployments an hour, both failing: minimum met and 100 % is above the threshold.
    expect(minimum).toBeLessThanOrEqual(2);
    expect(percent).toBeLessThan(100);
  });
});

describe('every query compiles against the Application Insights tables (Kusto.Language)', () => {
  it('the analyzer reports syntax errors and unknown columns (self-check)', () => {
    expect(kqlDiagnostics('customEvents | where name == "DeploymentQueued" | take 1')).toEqual([]);
    expect(kqlDiagnostics('customMetrics | summarize max(valueMaximum)')).toEqual([expect.stringContaining('"valueMaximum"')]);
    expect(kqlDiagnostics('customEvents | extend a = round(1.0, 1')).toEqual([expect.stringContaining('KS005')]);
  });

  // {Environment} as the workbook expands it: '*' for "all", quoted and comma-separated otherwise.
  const selections = ["'*'", ENVIRONMENTS.map((environment) => `'${environment}'`).join(',')];
  it.each(kqlTiles().map((item) => [item.name, item.content.query ?? '']))('workbook tile %s', (_name, query) => {
    for (const selection of selections) expect(kqlDiagnostics(query.replaceAll('{Environment}', selection))).toEqual([]);
  });

  it('the log alert queries, with their placeholders replaced as alerts.bicep does', () => {
    const minimum = /param failureMinimumCount int = (\d+)/.exec(readRepoFile('infra/main.bicep'))?.[1] ?? '';
    expect(minimum).not.toBe('');
    for (const query of alertQueries()) {
      for (const environment of ENVIRONMENTS) {
        const expanded = query.replaceAll('__ENVIRONMENT__', environment).replaceAll('__MINIMUM_FAILED__', minimum);
        expect(expanded).not.toMatch(/__\w+__/);
        expect(kqlDiagnostics(expanded)).toEqual([]);
      }
    }
  });
});
