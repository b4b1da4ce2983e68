/**
 * The routes for people and monitoring on the substituter's listener: `/` (the status page),
 * `/health` (JSON for probes), `/status.json` (everything the page shows) and `/metrics`
 * (Prometheus text format). Nix never asks for these paths.
 */
import type { ServerResponse } from 'node:http'
import { health, nodeStatus, type StatusSources } from './node-status.ts'
import { renderStatusPage } from './status-page.ts'
import { sendText } from './respond.ts'

export const OPS_ROUTES = ['/', '/health', '/status.json', '/metrics'] as const

/** Answers `path` when it is one of OPS_ROUTES; returns false otherwise, leaving `res` untouched. */
export async function handleOpsRequest (path: string, res: ServerResponse, sources: StatusSources): Promise<boolean> {
  switch (path) {
    case '/':
      sendText(res, renderStatusPage(nodeStatus(sources)), 'text/html; charset=utf-8', 'no-store')
      return true
    case '/health':
      sendText(res, `${JSON.stringify(health(nodeStatus(sources)))}\n`, 'application/json', 'no-store')
      return true
    case '/status.json':
      sendText(res, `${JSON.stringify(nodeStatus(sources), null, 1)}\n`, 'application/json', 'no-store')
      return true
    case '/metrics':
      sendText(res, await sources.observer.registry.metrics(), sources.observer.registry.contentType, 'no-store')
      return true
    default:
      return false
  }
}
