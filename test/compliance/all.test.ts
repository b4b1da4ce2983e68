/**
 * The Mapper and Backend compliance suites over every scheme registered in src/registry.ts, from
 * the harnesses in harnesses.ts. A scheme without a harness fails here: a new plug-in is not done
 * until it passes the suite its kind of plug-in promises.
 */
import { after, describe, it } from 'node:test'
import assert from 'node:assert/strict'
import { BACKEND_SCHEMES, MAPPER_SCHEMES } from '../../src/registry.ts'
import { backendCompliance } from './backend.ts'
import { BACKEND_HARNESSES, MAPPER_HARNESSES, type Suites } from './harnesses.ts'
import { mapperCompliance } from './mapper.ts'

const stops: Array<() => Promise<void>> = []
after(async () => { for (const stop of stops) await stop() })

async function load<H> (kind: string, schemes: readonly string[], harnesses: Record<string, () => Promise<Suites<H>>>): Promise<Array<[string, Suites<H> | undefined]>> {
  const loaded: Array<[string, Suites<H> | undefined]> = []
  for (const scheme of schemes) {
    const suites = await harnesses[scheme]?.()
    if (suites?.stop !== undefined) stops.push(suites.stop)
    loaded.push([scheme, suites])
  }
  describe(`every registered ${kind} scheme has a compliance harness`, () => {
    for (const [scheme, suites] of loaded) {
      it(`${kind} ${scheme}:`, () => assert.ok(suites !== undefined && suites.suites.length > 0, `no compliance harness for the ${kind} scheme '${scheme}': add one to test/compliance/harnesses.ts`))
    }
    it('no harness for a scheme that is not registered', () => assert.deepEqual(Object.keys(harnesses).filter(s => !schemes.includes(s)), []))
  })
  return loaded
}

for (const [, suites] of await load('mapper', MAPPER_SCHEMES, MAPPER_HARNESSES)) {
  for (const { label, harness } of suites?.suites ?? []) mapperCompliance(label, harness)
}
for (const [, suites] of await load('backend', BACKEND_SCHEMES, BACKEND_HARNESSES)) {
  for (const { label, harness } of suites?.suites ?? []) backendCompliance(label, harness)
}
