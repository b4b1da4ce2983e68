import { describe, it } from 'node:test'
import assert from 'node:assert/strict'
import { parsePathInfoJson, referencesFirst } from '../../src/publish/path-info.ts'
import { compileFilter, parseSize } from '../../src/publish/filters.ts'
import { ConfigError } from '../../src/errors.ts'

const A = '/nix/store/033hkwpxlj8hqk5scw7b2pyjv5v5v3s8-top'
const B = '/nix/store/784g196m4qdi75p49kiffd6cr622jj9f-big'

describe('parsePathInfoJson', () => {
  it('reads the array of Nix ≤ 2.18, with an invalid path listed apart', () => {
    const text = JSON.stringify([
      { path: A, narHash: 'sha256-14VA9sm3fgpRrJz2gpou9HiPUCXQMqjUlFgS+8vGERI=', narSize: 1256, references: [B], deriver: '/nix/store/vi11s7l60jpf0lcfyd08cld6d2pbb21w-top.drv', registrationTime: 1, ultimate: true, signatures: ['k-1:abc'] },
      { path: '/nix/store/00000000000000000000000000000000-nope', valid: false }
    ])
    const { infos, invalid } = parsePathInfoJson(text)
    assert.equal(infos.length, 1)
    assert.equal(infos[0]!.storePath, A)
    assert.equal(infos[0]!.narHash.toString(), 'sha256:04hiqv5zn4jqjkaahcnh4m88yy7l5sd85xlwmi8hlzmpr7v411fp')
    assert.deepEqual(infos[0]!.references, [B])
    assert.deepEqual(infos[0]!.sigs, ['k-1:abc'])
    assert.equal(infos[0]!.deriver, '/nix/store/vi11s7l60jpf0lcfyd08cld6d2pbb21w-top.drv')
    assert.deepEqual(invalid, ['/nix/store/00000000000000000000000000000000-nope'])
  })

  it('reads the object keyed by path of later Nix (SRI or nix32), null for an invalid path', () => {
    const text = JSON.stringify({
      [A]: { narHash: 'sha256:04hiqv5zn4jqjkaahcnh4m88yy7l5sd85xlwmi8hlzmpr7v411fp', narSize: 1256, references: [], ca: 'text:sha256:1x', signatures: [] },
      '/nix/store/00000000000000000000000000000000-nope': null
    })
    const { infos, invalid } = parsePathInfoJson(text)
    assert.equal(infos[0]!.narHash.toString(), 'sha256:04hiqv5zn4jqjkaahcnh4m88yy7l5sd85xlwmi8hlzmpr7v411fp')
    assert.equal(infos[0]!.ca, 'text:sha256:1x')
    assert.equal(invalid.length, 1)
  })

  it('refuses what is not path-info JSON', () => {
    assert.throws(() => parsePathInfoJson('error: no'), /not JSON/)
    assert.throws(() => parsePathInfoJson(JSON.stringify([{ path: A }])), /no narHash/)
  })
})

describe('referencesFirst', () => {
  it('puts every path after the paths it refers to, cycles and self-references tolerated', () => {
    const n = (p: string, refs: string[]) => ({ storePath: p, references: refs })
    const items = [n('top', ['lib', 'top', 'bin']), n('bin', ['lib']), n('lib', ['libc']), n('libc', []), n('x', ['y']), n('y', ['x'])]
    const order = referencesFirst(items).map(i => i.storePath)
    assert.equal(order.length, 6)
    const at = (p: string) => order.indexOf(p)
    assert.ok(at('libc') < at('lib') && at('lib') < at('bin') && at('bin') < at('top'), order.join(' '))
  })
})

describe('filters', () => {
  const p = (name: string) => `/nix/store/033hkwpxlj8hqk5scw7b2pyjv5v5v3s8-${name}`
  it('include, exclude and max-size on the name and the NAR size', () => {
    const f = compileFilter({ include: ['hello-*', 'python3-*'], exclude: ['*-doc'], maxSize: 1000 })
    assert.equal(f(p('hello-2.12'), 10), undefined)
    assert.match(f(p('bash-5.2'), 10)!, /no --include/)
    assert.match(f(p('hello-2.12-doc'), 10)!, /--exclude \*-doc/)
    assert.match(f(p('python3-3.11'), 1001)!, /over --max-size/)
    assert.equal(compileFilter({ include: [], exclude: [] })(p('a.b+c'), 1e12), undefined)
    assert.match(compileFilter({ include: ['a.b'], exclude: [] })(p('aXb'), 1)!, /no --include/, 'a dot is literal')
  })
  it('sizes', () => {
    assert.equal(parseSize('1048576', 'x'), 1048576)
    assert.equal(parseSize('512K', 'x'), 512 * 1024)
    assert.equal(parseSize('1.5GiB', 'x'), 1.5 * 1024 ** 3)
    assert.throws(() => parseSize('lots', '--max-size'), (e: Error) => e instanceof ConfigError && /--max-size/.test(e.message))
  })
})
