#!/usr/bin/env node
// Runs the compiled CLI when installed from a package, the TypeScript sources in a checkout
// (Node >= 24 runs them directly; it refuses to inside node_modules, hence dist/ there).
import { existsSync } from 'node:fs'
const dist = new URL('../dist/cli/main.js', import.meta.url)
await import(existsSync(dist) ? dist : new URL('../src/cli/main.ts', import.meta.url))
