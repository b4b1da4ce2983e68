import { describe, it } from 'node:test'
import assert from 'node:assert/strict'
import { FormatError } from '../../src/errors.ts'
import { netrcCredentials, parseNetrc } from '../../src/util/netrc.ts'

describe('netrc', () => {
  const text = `# private caches
machine cache.example.org login ci password tok1
machine Attic.Example.org
  password "a token with spaces \\"quoted\\""
macdef init
cd /pub
get file

machine other.example account x login u2 password p2
default login anon password guest
`
  const entries = parseNetrc(text)

  it('reads machines, quoted tokens, comments; skips macdef bodies and accounts', () => {
    assert.deepEqual(entries, [
      { machine: 'cache.example.org', login: 'ci', password: 'tok1' },
      { machine: 'attic.example.org', password: 'a token with spaces "quoted"' },
      { machine: 'other.example', login: 'u2', password: 'p2' },
      { login: 'anon', password: 'guest' }
    ])
  })

  it('finds a host whatever its case, else the default entry', () => {
    assert.deepEqual(netrcCredentials(entries, 'CACHE.example.org'), { login: 'ci', password: 'tok1' })
    assert.deepEqual(netrcCredentials(entries, 'attic.example.org'), { login: '', password: 'a token with spaces "quoted"' })
    assert.deepEqual(netrcCredentials(entries, 'elsewhere.example'), { login: 'anon', password: 'guest' })
    assert.equal(netrcCredentials(parseNetrc('machine a login x password y'), 'b'), undefined)
  })

  it('a keyword without its value, or a stray word, is a FormatError', () => {
    assert.throws(() => parseNetrc('machine a login'), FormatError)
    assert.throws(() => parseNetrc('machine a passwd x'), (err: Error) => err instanceof FormatError && /unexpected 'passwd'/.test(err.message))
  })
})
