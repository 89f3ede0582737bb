/**
 * A small reader for the Bicep files in infra/: no Bicep compiler can run here (GitHub's ci.yml
 * compiles them), so the structural checks work on the source text. It understands just enough
 * Bicep: comments, strings (including ''' multi-line strings), brackets, decorators, and the
 * top-level `param`, `output`, `module` and `import` statements.
 */

/** The source with comments blanked out (same length and line breaks, so offsets stay valid). */
export function stripComments(source: string): string {
  let out = '';
  let i = 0;
  while (i < source.length) {
    const rest = source.slice(i, i + 3);
    if (rest === "'''") {
      const end = source.indexOf("'''", i + 3);
      const stop = end === -1 ? source.length : end + 3;
      out += source.slice(i, stop);
      i = stop;
    } else if (source[i] === "'") {
      let j = i + 1;
      while (j < source.length && source[j] !== "'") j += source[j] === '\\' ? 2 : 1;
      out += source.slice(i, j + 1);
      i = j + 1;
    } else if (source.startsWith('//', i)) {
      const end = source.indexOf('\n', i);
      const stop = end === -1 ? source.length : end;
      out += ' '.repeat(stop - i);
      i = stop;
    } else if (source.startsWith('/*', i)) {
      const end = source.indexOf('*/', i + 2);
      const stop = end === -1 ? source.length : end + 2;
      out += source.slice(i, stop).replace(/[^\n]/g, ' ');
      i = stop;
    } else {
      out += source[i];
      i += 1;
    }
  }
  return out;
}

/** Bracket depth change of one line, ignoring brackets inside strings. */
function depthChange(line: string): number {
  let depth = 0;
  let inString = false;
  for (let i = 0; i < line.length; i += 1) {
    const char = line[i];
    if (inString) {
      if (char === '\\') i += 1;
      else if (char === "'") inString = false;
    } else if (char === "'") inString = true;
    else if (char === '{' || char === '[' || char === '(') depth += 1;
    else if (char === '}' || char === ']' || char === ')') depth -= 1;
  }
  return depth;
}

export interface TopLevelStatement {
  /** The first line of the statement, trimmed. */
  line: string;
  /** Decorators written just before it (the `@name` of each). */
  decorators: string[];
  /** 1-based line number. */
  lineNumber: number;
}

/** Statements at the top level of a file, each with the decorators above it. */
export function topLevelStatements(source: string): TopLevelStatement[] {
  const statements: TopLevelStatement[] = [];
  let depth = 0;
  let pending: string[] = [];
  // ''' strings span lines and may hold anything: blank them, keeping line breaks, before counting.
  const structure = stripComments(source).replace(/'''[\s\S]*?'''/g, (text) => text.replace(/[^\n]/g, ' '));
  structure.split('\n').forEach((raw, index) => {
    const line = raw.trim();
    if (depth === 0 && line !== '') {
      const decorator = /^@(\w+)/.exec(line);
      if (decorator?.[1] !== undefined) pending.push(decorator[1]);
      else {
        statements.push({ line, decorators: pending, lineNumber: index + 1 });
        pending = [];
      }
    }
    depth += depthChange(raw);
  });
  return statements;
}

export interface BicepParam {
  name: string;
  decorators: string[];
  hasDefault: boolean;
  lineNumber: number;
}

export function params(source: string): BicepParam[] {
  return topLevelStatements(source).flatMap((statement) => {
    const match = /^param\s+(\w+)\s+([^=]+?)(\s*=.*)?$/.exec(statement.line);
    if (match?.[1] === undefined || match[2] === undefined) return [];
    const nullable = match[2].trim().endsWith('?');
    return [{ name: match[1], decorators: statement.decorators, hasDefault: match[3] !== undefined || nullable, lineNumber: statement.lineNumber }];
  });
}

export function outputs(source: string): string[] {
  return topLevelStatements(source).flatMap((statement) => {
    const match = /^output\s+(\w+)\s/.exec(statement.line);
    return match?.[1] === undefined ? [] : [match[1]];
  });
}

/** Names of exported `var`, `type` and `func` declarations. */
export function exportedNames(source: string): string[] {
  return topLevelStatements(source).flatMap((statement) => {
    const match = /^(?:var|type|func)\s+(\w+)/.exec(statement.line);
    return match?.[1] !== undefined && statement.decorators.includes('export') ? [match[1]] : [];
  });
}

export interface BicepImport {
  names: string[];
  path: string;
}

export function imports(source: string): BicepImport[] {
  return topLevelStatements(source).flatMap((statement) => {
    const match = /^import\s+\{([^}]*)\}\s+from\s+'([^']+)'/.exec(statement.line);
    if (match?.[1] === undefined || match[2] === undefined) return [];
    return [{ names: match[1].split(',').map((name) => name.trim()).filter(Boolean), path: match[2] }];
  });
}

/** The text from the `{` at or after `start` to its matching `}`, both included. */
export function balancedBlock(source: string, start: number): string {
  const open = source.indexOf('{', start);
  if (open === -1) throw new Error(`no block after offset ${start}`);
  let depth = 0;
  let inString = false;
  for (let i = open; i < source.length; i += 1) {
    const char = source[i];
    if (inString) {
      if (char === '\\') i += 1;
      else if (char === "'") inString = false;
    } else if (char === "'") inString = true;
    else if (char === '{' || char === '[' || char === '(') depth += 1;
    else if (char === '}' || char === ']' || char === ')') {
      depth -= 1;
      if (depth === 0) return source.slice(open, i + 1);
    }
  }
  throw new Error(`unbalanced block at offset ${open}`);
}

/** Keys of an object literal's first level: `{ a: 1, b: { c: 2 } }` gives a, b. */
export function topLevelKeys(block: string): string[] {
  const keys: string[] = [];
  let depth = 0;
  for (const raw of block.split('\n')) {
    const line = raw.trim();
    if (depth === 1) {
      const key = /^'?([\w-]+)'?\s*:/.exec(line);
      if (key?.[1] !== undefined) keys.push(key[1]);
    }
    depth += depthChange(raw);
  }
  return keys;
}

export interface ModuleUse {
  symbol: string;
  path: string;
  /** Keys of its `params: { … }` block. */
  params: string[];
}

export function modules(source: string): ModuleUse[] {
  const clean = stripComments(source);
  const uses: ModuleUse[] = [];
  for (const match of clean.matchAll(/^module\s+(\w+)\s+'([^']+)'\s*=/gm)) {
    if (match[1] === undefined || match[2] === undefined) continue;
    const body = balancedBlock(clean, match.index + match[0].length);
    const paramsAt = /^\s*params\s*:/m.exec(body);
    uses.push({ symbol: match[1], path: match[2], params: paramsAt === null ? [] : topLevelKeys(balancedBlock(body, paramsAt.index)) });
  }
  return uses;
}

/** `{ name: 'X', value: … }` / `{ name: 'X', secretRef: … }` entries: the variables a container app sets. */
export function containerEnvNames(source: string): string[] {
  return [...stripComments(source).matchAll(/\{\s*name:\s*'([A-Z][A-Z0-9_]*)'\s*,\s*(?:value|secretRef):/g)].map((match) => match[1] ?? '');
}

/** 1-based line where brackets stop balancing (a closer without an opener), the last line if some stay open, or null. */
export function unbalancedLine(source: string): number | null {
  const lines = stripComments(source)
    .replace(/'''[\s\S]*?'''/g, (text) => text.replace(/[^\n]/g, ' '))
    .split('\n');
  let depth = 0;
  for (const [index, raw] of lines.entries()) {
    depth += depthChange(raw);
    if (depth < 0) return index + 1;
  }
  return depth === 0 ? null : lines.length;
}
