import { delimiter, dirname } from 'node:path';

/**
 * The environment of user build and start commands: PATH (with this Node first), a HOME inside the
 * sandbox, npm's cache and quiet flags, and the deployment's own env variables. Nothing of the
 * service's environment (tokens, connection strings, DATA_DIR) leaks into user code.
 */
export function sandboxEnv(options: { home: string; npmCache: string; variables: Record<string, string>; extra?: Record<string, string> }): Record<string, string> {
  return {
    PATH: [dirname(process.execPath), '/usr/local/bin', '/usr/bin', '/bin'].join(delimiter),
    HOME: options.home,
    LANG: 'C.UTF-8',
    npm_config_cache: options.npmCache,
    npm_config_update_notifier: 'false',
    npm_config_fund: 'false',
    npm_config_audit: 'false',
    ...options.variables,
    ...options.extra,
  };
}
