#!/usr/bin/env node
/* global process, URL */
// The published package runs the compiled dist/ (Node does not strip types under node_modules); a
// checkout of the repository runs the TypeScript sources directly (Node >= 22.18 strips types).
import { existsSync } from 'node:fs';

const compiled = new URL('../dist/main.js', import.meta.url);
const { main } = await import(existsSync(compiled) ? compiled.href : new URL('../src/main.ts', import.meta.url).href);
process.exitCode = await main(process.argv.slice(2));
