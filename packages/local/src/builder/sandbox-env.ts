import { delimiter } from 'node:path';

/**
 * Variables of the worker's environment that builds get, so they reach what the host reaches
 * (a proxy, a private CA, a registry mirror). Anything else is named in BUILD_ENV_PASSTHROUGH.
 */
export const BUILD_ENV_DEFAULT_PASSTHROUGH = [
  'HTTP_PROXY',
  'HTTPS_PROXY',
  'NO_PROXY',
  'http_proxy',
  'https_proxy',
  'no_proxy',
  'NODE_EXTRA_CA_CERTS',
  'SSL_CERT_FILE',
  'npm_config_registry',
  'npm_config_cafile',
  'NPM_CONFIG_REGISTRY',
  'NPM_CONFIG_CAFILE',
] as const;

/**
 * The environment of user build and start commands: PATH with the worker's own Node and npm first
 * (toolchain.ts) and a tool's bin directory before them when the package manager is not npm, a HOME
 * inside the sandbox, npm's cache and quiet flags, the pass-through variables (builds only) and the
 * deployment's own env variables. Nothing else of the service's environment (tokens, connection
 * strings, DATA_DIR) reaches user code.
 */
export function sandboxEnv(options: {
  home: string;
  npmCache: string;
  /** Directory holding node, npm and npx (toolchain.ts). */
  nodeBin: string;
  variables: Record<string, string>;
  /** Directories before the Node one on PATH (a package manager's bin). */
  pathBefore?: readonly string[];
  /** The pass-through variables; given to builds. */
  passthrough?: Readonly<Record<string, string>>;
  extra?: Record<string, string>;
}): Record<string, string> {
  const env: Record<string, string> = {
    PATH: [...(options.pathBefore ?? []), options.nodeBin, '/usr/local/bin', '/usr/bin', '/bin'].join(delimiter),
    HOME: options.home,
    LANG: 'C.UTF-8',
    npm_config_cache: options.npmCache,
    npm_config_update_notifier: 'false',
    npm_config_fund: 'false',
    npm_config_audit: 'false',
    ...options.passthrough,
    ...options.variables,
    ...options.extra,
  };
  // Every command runs under RLIMIT_AS (LOCAL_LIMIT_MEMORY_MB), and by default V8 reserves ~10 GiB
  // of address space per WebAssembly memory for its trap-handler bounds checks: under 16 GiB a
  // second one fails ("WebAssembly.Instance(): Out of memory"), which broke Astro, React Router and
  // Nuxt builds (rolldown, es-module-lexer) and yarn 4's install (libzip). Node's documented way
  // out for a limited address space: explicit bounds checks instead. The deployment's own
  // NODE_OPTIONS come after it.
  env.NODE_OPTIONS = [WASM_WITHOUT_TRAP_HANDLER, env.NODE_OPTIONS ?? ''].join(' ').trim();
  return env;
}

export const WASM_WITHOUT_TRAP_HANDLER = '--disable-wasm-trap-handler';
