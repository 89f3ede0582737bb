import { createInterface } from 'node:readline/promises';
import { parseArgs } from 'node:util';
import type { ParseArgsConfig } from 'node:util';
import { ApiClient } from './api.ts';
import { deploy } from './commands/deploy.ts';
import { cancel, env, logs, ls, open, redeploy, rm, rollback, status } from './commands/operate.ts';
import type { Environment } from './config.ts';
import { normaliseApiUrl, readConfig, resolveConnection, writeConfig } from './config.ts';
import { ApiError, EXIT, UsageError } from './errors.ts';
import type { Io } from './output.ts';

type Options = NonNullable<ParseArgsConfig['options']>;

const COMMON: Options = {
  api: { type: 'string' },
  token: { type: 'string' },
  json: { type: 'boolean', default: false },
  help: { type: 'boolean', short: 'h', default: false },
};

interface Command {
  usage: string;
  summary: string;
  options: Options;
  /** Positional arguments: [min, max]. */
  positionals: [number, number];
}

const COMMANDS: Record<string, Command> = {
  login: {
    usage: 'zepid login [--api URL] [--token TOKEN]',
    summary: 'check and store the API URL and token (in a per-user file, mode 0600); asks for what is not given',
    options: {},
    positionals: [0, 0],
  },
  deploy: {
    usage: 'zepid deploy [dir] [--project ID] [--env ENVIRONMENT] [--env-var KEY=VALUE]… [--detach] [--json] [--timeout 15m] [--quiet] [--cancel-on-abort]',
    summary:
      'deploy a folder (default .): honours .gitignore and .zepidignore, never sends node_modules, .git or build outputs; sends files by sha256 and uploads only what the service has not stored; follows the six steps and prints the URL',
    options: {
      project: { type: 'string' },
      env: { type: 'string' },
      'env-var': { type: 'string', multiple: true, default: [] },
      user: { type: 'string' },
      detach: { type: 'boolean', default: false },
      timeout: { type: 'string', default: '15m' },
      quiet: { type: 'boolean', short: 'q', default: false },
      'cancel-on-abort': { type: 'boolean', default: false },
    },
    positionals: [0, 1],
  },
  redeploy: {
    usage: 'zepid redeploy <deploymentId> [--detach] [--json] [--timeout 15m] [--quiet] [--cancel-on-abort]',
    summary:
      'build that deployment\'s stored source again as a new deployment, with the app\'s current env values (its dependency cache may help; the build runs); follows it like deploy and prints the URL',
    options: {
      detach: { type: 'boolean', default: false },
      timeout: { type: 'string', default: '15m' },
      quiet: { type: 'boolean', short: 'q', default: false },
      'cancel-on-abort': { type: 'boolean', default: false },
    },
    positionals: [1, 1],
  },
  ls: { usage: 'zepid ls [--json]', summary: 'your apps with URL and status', options: {}, positionals: [0, 0] },
  status: { usage: 'zepid status <deploymentId> [--json]', summary: 'a deployment\'s status and steps', options: {}, positionals: [1, 1] },
  logs: {
    usage: 'zepid logs <deploymentId|app> [-f] [--json] [--timeout 15m]',
    summary: 'a deployment\'s log; -f follows it until the deployment ends',
    options: { follow: { type: 'boolean', short: 'f', default: false }, timeout: { type: 'string', default: '15m' } },
    positionals: [1, 1],
  },
  cancel: { usage: 'zepid cancel <deploymentId>', summary: 'cancel a queued or running deployment', options: {}, positionals: [1, 1] },
  rollback: {
    usage: 'zepid rollback <deploymentId> [--snapshot]',
    summary: 'put that deployment\'s image back live, without building (with the app\'s current env values; --snapshot: those it ran with)',
    options: { snapshot: { type: 'boolean', default: false } },
    positionals: [1, 1],
  },
  env: {
    usage: 'zepid env ls|set|rm --project ID [--env ENVIRONMENT] [KEY=VALUE… | NAME…]',
    summary: 'list names of, set or remove an app\'s env variables (values are never shown); set and rm restart the app',
    options: { project: { type: 'string' }, env: { type: 'string' } },
    positionals: [1, 101],
  },
  rm: {
    usage: 'zepid rm <project> [--env ENVIRONMENT] [--yes]',
    summary: 'delete an app (every environment unless --env) with its deployments, images and env variables',
    options: { env: { type: 'string' }, yes: { type: 'boolean', short: 'y', default: false } },
    positionals: [1, 1],
  },
  open: { usage: 'zepid open <deploymentId|app> [--browser]', summary: 'print the URL (and open it with --browser)', options: { browser: { type: 'boolean', default: false } }, positionals: [1, 1] },
};

function help(): string {
  const width = Math.max(...Object.keys(COMMANDS).map((name) => name.length));
  return [
    'zepid: deploy a folder to Zepid Deploy, and follow and operate what is deployed',
    '',
    'Usage: zepid <command> [options]     zepid <command> --help',
    '',
    ...Object.entries(COMMANDS).map(([name, command]) => `  ${name.padEnd(width)}  ${command.summary}`),
    '',
    'Every command takes --api URL and --token TOKEN (else ZEPID_API_URL / ZEPID_TOKEN, else `zepid login`) and --json.',
    `Exit codes: ${EXIT.ok} done/live, ${EXIT.failed} failed or cancelled (or the API refused), ${EXIT.usage} usage or auth error, ${EXIT.timeout} timed out (the deployment goes on).`,
    '',
  ].join('\n');
}

/** `90`, `90s`, `5m`, `1h` → milliseconds. */
export function parseDuration(value: string): number {
  const match = /^(\d+(?:\.\d+)?)(ms|s|m|h)?$/.exec(value.trim());
  if (match === null) throw new UsageError(`--timeout takes a duration like 90s, 15m or 1h, got ${JSON.stringify(value)}`);
  const unit = { ms: 1, s: 1000, m: 60_000, h: 3_600_000 }[(match[2] ?? 's') as 'ms' | 's' | 'm' | 'h'];
  return Math.round(Number(match[1]) * unit);
}

async function ask(question: string, hidden = false): Promise<string> {
  if (process.stdin.isTTY !== true) throw new UsageError(`${question.trim()} — not a terminal: pass it as a flag`);
  const rl = createInterface({ input: process.stdin, output: process.stderr, terminal: true });
  if (hidden) {
    // Echo nothing while the token is typed.
    (rl as unknown as { _writeToOutput: (text: string) => void })._writeToOutput = (text: string) => {
      if (text.includes(question)) process.stderr.write(question);
    };
  }
  try {
    return await rl.question(question);
  } finally {
    rl.close();
    if (hidden) process.stderr.write('\n');
  }
}

export interface MainDeps {
  io: Io;
  env: Environment;
  confirm?: (question: string) => Promise<string>;
}

/** The CLI; returns the exit code. `deps` lets tests run it in-process with their own streams and environment. */
export async function main(argv: readonly string[], deps: MainDeps = { io: process, env: process.env }): Promise<number> {
  const { io } = deps;
  const [name, ...rest] = argv;
  if (name === undefined || name === '--help' || name === '-h' || name === 'help') {
    io.stdout.write(help());
    return name === undefined ? EXIT.usage : EXIT.ok;
  }
  if (name === '--version' || name === '-v') {
    io.stdout.write('zepid 3.0.0\n');
    return EXIT.ok;
  }
  const command = COMMANDS[name];
  if (command === undefined) {
    io.stderr.write(`zepid: unknown command ${JSON.stringify(name)}\n\n${help()}`);
    return EXIT.usage;
  }
  try {
    let parsed;
    try {
      parsed = parseArgs({ args: [...rest], options: { ...COMMON, ...command.options }, allowPositionals: true, strict: true });
    } catch (error) {
      throw new UsageError((error as Error).message);
    }
    const { values, positionals } = parsed;
    if (values.help === true) {
      io.stdout.write(`${command.usage}\n\n${command.summary}\n`);
      return EXIT.ok;
    }
    if (positionals.length < command.positionals[0] || positionals.length > command.positionals[1]) throw new UsageError(`usage: ${command.usage}`);
    const flag = (key: string): string | undefined => (typeof values[key] === 'string' ? values[key] : undefined);
    const json = values.json === true;

    if (name === 'login') {
      const stored = await readConfig(deps.env);
      const apiUrl = normaliseApiUrl(flag('api') ?? (deps.env.ZEPID_API_URL || undefined) ?? ((await ask(`API URL${stored.apiUrl ? ` [${stored.apiUrl}]` : ''}: `)) || stored.apiUrl || ''));
      const token = flag('token') ?? (deps.env.ZEPID_TOKEN || undefined) ?? (await ask('Token: ', true));
      const api = new ApiClient({ apiUrl, token });
      const { organizationId } = await api.request<{ organizationId: string }>('GET', '/status');
      const path = await writeConfig(deps.env, { apiUrl, token });
      io.stderr.write(`logged in to ${apiUrl} as organization ${organizationId}; saved in ${path} (mode 0600)\n`);
      return EXIT.ok;
    }

    const api = new ApiClient(await resolveConnection(deps.env, { api: flag('api'), token: flag('token') }));
    const [first] = positionals;
    /** How `deploy` and `redeploy` follow the deployment they start (the same flags for both). */
    const following = () => ({
      detach: values.detach === true,
      json,
      timeoutMs: parseDuration(flag('timeout') ?? '15m'),
      logs: values.quiet !== true,
      cancelOnAbort: values['cancel-on-abort'] === true,
      githubOutput: deps.env.GITHUB_OUTPUT || undefined,
    });
    switch (name) {
      case 'deploy':
        return await deploy(api, io, {
          dir: first ?? '.',
          project: flag('project'),
          environment: flag('env'),
          envVars: (values['env-var'] as string[] | undefined) ?? [],
          user: flag('user') ?? deps.env.USER ?? 'cli',
          ...following(),
        });
      case 'redeploy':
        return await redeploy(api, io, first as string, following());
      case 'ls':
        return await ls(api, io, json);
      case 'status':
        return await status(api, io, first as string, json);
      case 'logs':
        return await logs(api, io, first as string, { follow: values.follow === true, json, timeoutMs: parseDuration(flag('timeout') ?? '15m') });
      case 'cancel':
        return await cancel(api, io, first as string, json);
      case 'rollback':
        return await rollback(api, io, first as string, { snapshot: values.snapshot === true, json });
      case 'env': {
        const [action, ...pairs] = positionals as [string, ...string[]];
        if (!['ls', 'set', 'rm'].includes(action)) throw new UsageError(`usage: ${command.usage}`);
        const project = flag('project');
        if (project === undefined) throw new UsageError('zepid env needs --project');
        return await env(api, io, { action, project, pairs, environment: flag('env'), json });
      }
      case 'rm':
        return await rm(api, io, { project: first as string, environment: flag('env'), yes: values.yes === true, json, confirm: deps.confirm ?? ((question) => ask(question)) });
      case 'open':
        return await open(api, io, first as string, values.browser === true);
      default:
        throw new UsageError(`unknown command ${name}`);
    }
  } catch (error) {
    if (error instanceof UsageError) {
      io.stderr.write(`zepid ${name}: ${error.message}\n`);
      return EXIT.usage;
    }
    if (error instanceof ApiError) {
      io.stderr.write(`zepid ${name}: ${error.code}: ${error.message}\n`);
      return error.exitCode;
    }
    throw error;
  }
}

