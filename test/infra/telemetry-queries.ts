/**
 * Reads the queries of the workbook and the alert rules: which tables each KQL statement reads, the
 * event or metric names it keeps, the customDimensions keys it reads, whether it applies the
 * workbook's Environment filter; and which platform metrics the metric tiles and metric alerts use.
 * Just enough KQL for the queries in infra/: statements split on `;`, comments dropped, names
 * compared with `==`/`!=`/`in (…)`. telemetry-queries.test.ts checks the results against the code.
 */
import { stripComments } from './bicep-source.ts';

/** The workbook's Environment filter, as every tile on Application Insights writes it. */
export const ENVIRONMENT_FILTER = '| where "*" in ({Environment}) or tostring(customDimensions.environment) in ({Environment})';

export interface KqlStatement {
  /** The table the statement starts from (after an optional `let name =`). */
  table: string;
  /** Strings compared with the `name` column. */
  names: string[];
  /** Strings compared with the `MetricName` column (AzureMetrics). */
  metricNames: string[];
  /** Keys read as customDimensions.key or customDimensions["key"]. */
  dimensions: string[];
  appliesEnvironmentFilter: boolean;
  text: string;
}

function quoted(list: string): string[] {
  return [...list.matchAll(/"([^"]*)"/g)].map((match) => match[1] ?? '');
}

/** Strings a column is compared with: `column == "x"`, `column != "x"`, `column in ("x", "y")`. */
export function comparedWith(text: string, column: string): string[] {
  const found: string[] = [];
  for (const match of text.matchAll(new RegExp(`\\b${column}\\s*(?:==|!=|=~)\\s*"([^"]*)"`, 'g'))) found.push(match[1] ?? '');
  for (const match of text.matchAll(new RegExp(`\\b${column}\\s+(?:!in|in)~?\\s*\\(([^)]*)\\)`, 'g'))) found.push(...quoted(match[1] ?? ''));
  return found;
}

export function kqlStatements(query: string): KqlStatement[] {
  const text = query
    .split('\n')
    .map((line) => line.replace(/\/\/.*$/, ''))
    .join('\n');
  return text
    .split(';')
    .map((statement) => statement.trim())
    .filter((statement) => statement !== '')
    .map((statement) => {
      const table = /^(?:let\s+\w+\s*=\s*)?([A-Za-z_]\w*)/.exec(statement)?.[1] ?? '';
      return {
        table,
        names: comparedWith(statement, 'name'),
        metricNames: comparedWith(statement, 'MetricName'),
        dimensions: [...statement.matchAll(/customDimensions(?:\.(\w+)|\[\s*["'](\w+)["']\s*\])/g)].map((match) => match[1] ?? match[2] ?? ''),
        appliesEnvironmentFilter: statement.split('\n').some((line) => line.trim() === ENVIRONMENT_FILTER),
        text: statement,
      };
    });
}

export interface WorkbookItem {
  type: number;
  name: string;
  content: {
    query?: string;
    title?: string;
    items?: WorkbookItem[];
    parameters?: { name: string; jsonData?: string }[];
    resourceType?: string;
    resourceIds?: string[];
    metrics?: { namespace: string; metric: string; aggregation: number; splitBy?: string | string[] | null }[];
    filters?: { key: string; operator: number; values: string[] }[];
  };
}

/** Every item of a workbook, groups (type 12) opened. */
export function workbookItems(items: WorkbookItem[]): WorkbookItem[] {
  return items.flatMap((item) => [item, ...workbookItems(item.content.items ?? [])]);
}

export interface PlatformMetricUse {
  where: string;
  namespace: string;
  metric: string;
  dimensions: string[];
}

/** The platform metrics a workbook metrics item (type 10) charts, with the dimensions it filters or splits by. */
export function metricsItemUses(item: WorkbookItem): PlatformMetricUse[] {
  const filterKeys = (item.content.filters ?? []).map((filter) => filter.key);
  return (item.content.metrics ?? []).map((metric) => {
    // Metric ids are `<namespace>-<category>-<name>`; Service Bus metrics have no category: `<namespace>--<name>`.
    const name = metric.metric.slice(metric.metric.lastIndexOf('-') + 1);
    const split = metric.splitBy === undefined || metric.splitBy === null ? [] : [metric.splitBy].flat();
    return { where: `workbook item ${item.name}`, namespace: metric.namespace, metric: name, dimensions: [...filterKeys, ...split] };
  });
}

/** The platform metrics the metric alerts of a Bicep file use (`metricNamespace`, `metricName`, `dimensions[].name`). */
export function metricAlertUses(source: string): PlatformMetricUse[] {
  const clean = stripComments(source);
  const uses: PlatformMetricUse[] = [];
  for (const match of clean.matchAll(/metricNamespace:\s*'([^']+)'\s*metricName:\s*'([^']+)'([\s\S]*?)timeAggregation:/g)) {
    const dimensions = [...(match[3] ?? '').matchAll(/\{\s*name:\s*'([^']+)'/g)].map((dimension) => dimension[1] ?? '');
    uses.push({ where: `metric alert on ${match[2] ?? ''}`, namespace: match[1] ?? '', metric: match[2] ?? '', dimensions });
  }
  return uses;
}

/** The ''' multi-line strings of a Bicep file: the log alert queries. */
export function bicepMultilineStrings(source: string): string[] {
  return [...stripComments(source).matchAll(/'''([\s\S]*?)'''/g)].map((match) => match[1] ?? '');
}
