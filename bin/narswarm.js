#!/usr/bin/env node
// Checks the Node version first, with nothing loaded that an older Node lacks (node:sqlite, zstd,
// type stripping), so that an old Node gets one line saying what is needed instead of a stack
// trace. Then runs the TypeScript sources in a checkout (Node >= 24 runs them directly, so an edit
// counts at once even where `npm start` left a dist/ behind), the compiled CLI when installed from
// a package (no sources there, and Node refuses to strip types inside node_modules).
import { existsSync, readFileSync } from 'node:fs'
const engines = JSON.parse(readFileSync(new URL('../package.json', import.meta.url), 'utf8')).engines.node
const needed = Number(/\d+/.exec(engines)[0])
if (Number(process.versions.node.split('.')[0]) < needed) {
  process.stderr.write(`narswarm needs Node.js ${needed} or later (${engines}); this is Node.js ${process.versions.node} at ${process.execPath}\n`)
  process.exit(1)
}
const sources = new URL('../src/cli/main.ts', import.meta.url)
const checkout = existsSync(sources) && !sources.pathname.includes('/node_modules/')
await import(checkout ? sources : new URL('../dist/cli/main.js', import.meta.url))
