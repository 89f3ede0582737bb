// `node --import=./scripts/precompiled-loader.mjs <entry>.ts`: the project's modules come from the
// JavaScript scripts/precompiled.mjs stripped ahead of time (see there), not from Node's stripper.
import { register } from './precompiled.mjs';

register();
