/** Types of scripts/precompiled.mjs (JavaScript on purpose: see there). */
export declare const ROOT: string;
export declare const CACHE_DIR: string;
export declare function cacheKey(relativePath: string, source: string): string;
export declare function precompile(options?: { root?: string }): { compiled: number; reused: number; removed: number; cache: string };
export declare function register(options?: { root?: string }): boolean;
