/**
 * narswarm as a library: the substituter, its configuration, and the errors it throws. The Nix
 * formats are exported separately as `narswarm/nix`.
 */
export * from './errors.ts'
export { loadConfig, type Config } from './cli/config.ts'
export { startSubstituter, type RunningSubstituter } from './cli/serve.ts'
export { createLogger, silentLogger, type Logger } from './log.ts'
export { Substituter } from './server/substituter.ts'
export { createApp } from './server/app.ts'
export { Upstream } from './upstream/upstream.ts'
export { parseUpstreamSpec, type UpstreamConfig } from './upstream/spec.ts'
