/**
 * Microsoft's own KQL parser and binder (Kusto.Language, published to npm as
 * @kusto/language-service-next, the one the portal's editors use) with the Application Insights
 * tables the queries read: a query with a syntax error, an unknown column, function or `let`
 * name reports it here instead of as an empty tile or a rule Azure refuses at deployment.
 */
import { createRequire } from 'node:module';

/** The columns of the classic Application Insights tables the dashboard and alerts read
 * (https://learn.microsoft.com/azure/azure-monitor/app/convert-classic-resource#table-structure). */
const COMMON = [
  'timestamp:datetime',
  'name:string',
  'itemType:string',
  'customDimensions:dynamic',
  'operation_Name:string',
  'operation_Id:string',
  'operation_ParentId:string',
  'cloud_RoleName:string',
  'cloud_RoleInstance:string',
  'appName:string',
  'itemId:string',
  'itemCount:int',
].join(', ');
export const APP_INSIGHTS_TABLES: Record<string, string> = {
  customEvents: `(${COMMON}, customMeasurements:dynamic)`,
  customMetrics: `(${COMMON}, value:real, valueCount:int, valueSum:real, valueMin:real, valueMax:real, valueStdDev:real)`,
};

interface Diagnostic {
  Severity: string;
  Code: string;
  Message: string;
  Start: number;
  Length: number;
}
interface KustoLanguage {
  GlobalState: { Default: { WithDatabase(database: unknown): unknown } };
  KustoCode: { ParseAndAnalyze(text: string, globals: unknown): { GetDiagnostics(): { Count: number; getItem(index: number): Diagnostic } } };
  Symbols: {
    TableSymbol: { $ctor7: new (name: string, schema: string, description: string | null) => unknown };
    DatabaseSymbol: { ctor: new (name: string, members: unknown[]) => unknown };
  };
}

let globals: unknown = null;
let language: KustoLanguage | null = null;

function load(): { language: KustoLanguage; globals: unknown } {
  if (language === null) {
    // Bridge.NET output: the two scripts define the globals `Bridge` and `Kusto` when loaded.
    const require = createRequire(import.meta.url);
    require('@kusto/language-service-next/bridge.min.js');
    require('@kusto/language-service-next/Kusto.Language.Bridge.min.js');
    language = (globalThis as unknown as { Kusto: { Language: KustoLanguage } }).Kusto.Language;
    const tables = Object.entries(APP_INSIGHTS_TABLES).map(([name, schema]) => new language!.Symbols.TableSymbol.$ctor7(name, schema, null));
    globals = language.GlobalState.Default.WithDatabase(new language.Symbols.DatabaseSymbol.ctor('appinsights', tables));
  }
  return { language, globals };
}

/** Errors and warnings of a query against the Application Insights tables, each with the text it points at. */
export function kqlDiagnostics(query: string): string[] {
  const { language: kusto, globals: state } = load();
  const diagnostics = kusto.KustoCode.ParseAndAnalyze(query, state).GetDiagnostics();
  const found: string[] = [];
  for (let index = 0; index < diagnostics.Count; index += 1) {
    const diagnostic = diagnostics.getItem(index);
    found.push(`${diagnostic.Severity} ${diagnostic.Code}: ${diagnostic.Message} at "${query.slice(diagnostic.Start, diagnostic.Start + diagnostic.Length)}"`);
  }
  return found;
}
