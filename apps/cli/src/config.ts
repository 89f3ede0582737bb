import { chmod, mkdir, readFile, rename, writeFile } from 'node:fs/promises';
import { homedir } from 'node:os';
import { dirname, join } from 'node:path';
import { UsageError } from './errors.ts';

/** What `zepid login` keeps: where the API is and the token to use (the token is a secret: mode 0600). */
export interface StoredConfig {
  apiUrl?: string;
  token?: string;
}

export interface Connection {
  apiUrl: string;
  token: string;
}

/** The process environment the CLI reads, passed in so that tests and the commands never reach for process.env. */
export type Environment = Readonly<Record<string, string | undefined>>;

/** `$ZEPID_CONFIG`, else `$XDG_CONFIG_HOME/zepid/config.json`, else `~/.config/zepid/config.json`. */
export function configPath(env: Environment): string {
  if (env.ZEPID_CONFIG) return env.ZEPID_CONFIG;
  const base = env.XDG_CONFIG_HOME || join(env.HOME || homedir(), '.config');
  return join(base, 'zepid', 'config.json');
}

export async function readConfig(env: Environment): Promise<StoredConfig> {
  let text: string;
  try {
    text = await readFile(configPath(env), 'utf8');
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') return {};
    throw error;
  }
  try {
    const parsed = JSON.parse(text) as StoredConfig;
    return { apiUrl: typeof parsed.apiUrl === 'string' ? parsed.apiUrl : undefined, token: typeof parsed.token === 'string' ? parsed.token : undefined };
  } catch {
    throw new UsageError(`${configPath(env)} is not valid JSON: run zepid login again`);
  }
}

/** Writes the file owner-only from its first byte (a temp file created 0600, then renamed over the old one). */
export async function writeConfig(env: Environment, config: StoredConfig): Promise<string> {
  const path = configPath(env);
  await mkdir(dirname(path), { recursive: true, mode: 0o700 });
  const temp = `${path}.${process.pid}.tmp`;
  await writeFile(temp, `${JSON.stringify(config, null, 2)}\n`, { mode: 0o600 });
  await chmod(temp, 0o600);
  await rename(temp, path);
  return path;
}

/** Flags win over the environment, which wins over the stored login. */
export async function resolveConnection(env: Environment, flags: { api?: string; token?: string }): Promise<Connection> {
  const stored = await readConfig(env);
  // An empty variable counts as unset, as shells make it easy to export one by mistake.
  const apiUrl = flags.api ?? (env.ZEPID_API_URL || undefined) ?? stored.apiUrl;
  const token = flags.token ?? (env.ZEPID_TOKEN || undefined) ?? stored.token;
  if (!apiUrl) throw new UsageError('No API URL: run `zepid login`, set ZEPID_API_URL, or pass --api');
  if (!token) throw new UsageError('No token: run `zepid login`, set ZEPID_TOKEN, or pass --token');
  return { apiUrl: normaliseApiUrl(apiUrl), token };
}

export function normaliseApiUrl(value: string): string {
  let url: URL;
  try {
    url = new URL(value);
  } catch {
    throw new UsageError(`API URL ${JSON.stringify(value)} is not a URL (e.g. http://127.0.0.1:3010)`);
  }
  if (url.protocol !== 'http:' && url.protocol !== 'https:') throw new UsageError(`API URL must be http(s): ${value}`);
  return url.href.replace(/\/+$/, '');
}
