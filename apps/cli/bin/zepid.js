#!/usr/bin/env node
/* global process, URL */
// In a checkout of the repository the TypeScript sources run directly (Node >= 22.18 strips types);
// the published package has no sources but the compiled dist/ (Node strips no types under node_modules).
import { existsSync } from 'node:fs';

const sources = new URL('../src/main.ts', import.meta.url);
const { main } = await import(existsSync(sources) ? sources.href : new URL('../dist/main.js', import.meta.url).href);
process.exitCode = await main(process.argv.slice(2));
