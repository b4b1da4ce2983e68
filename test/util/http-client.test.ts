import { describe, it } from 'node:test'
import assert from 'node:assert/strict'
import { splitCredentials } from '../../src/util/http-client.ts'

describe('credentials in a URL', () => {
  it('become a Basic authorization, %-escapes decoded, and leave the URL', () => {
    const { url, authorization } = splitCredentials('https://ci%40example:tok%3An@cache.example.org:8443/prefix/')
    assert.equal(url, 'https://cache.example.org:8443/prefix/')
    assert.equal(authorization, `Basic ${Buffer.from('ci@example:tok:n').toString('base64')}`)
  })
  it('a token alone (no user), as attic and netrc-style setups use', () => {
    assert.equal(splitCredentials('https://:secret@cache.example.org').authorization, `Basic ${Buffer.from(':secret').toString('base64')}`)
  })
  it('a URL without them is left as it is', () => {
    assert.deepEqual(splitCredentials('http://127.0.0.1:5000/x'), { url: 'http://127.0.0.1:5000/x' })
  })
})
