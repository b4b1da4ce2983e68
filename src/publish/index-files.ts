/**
 * The index as static files (`narswarm index export` / `import`): the same paths the HTTP index
 * API answers, so any static web server, a git repository or IPFS can host an export and the
 * `http+` mapper reads it unchanged —
 *
 *   DIR/narswarm/v1/narinfo/<hashPart>            the signed narinfo, byte for byte
 *   DIR/narswarm/v1/locators/<nix32 sha256>       {"locators":[…]} under the NarHash (and FileHash)
 *   DIR/narswarm/v1/SHA256SUMS                    every other file: `<sha256 hex>  <path>` (sha256sum -c)
 *   DIR/narswarm/v1/SHA256SUMS.sig                one `<key name>:<base64 ed25519>` line per key
 *
 * The manifest signature covers the whole set, locators included (narinfos carry their own
 * signatures; locators have none). An export replaces the previous one in one rename. An import
 * reads nothing outside DIR: a symlink in the export that leads out of it is refused.
 */
import { createHash } from 'node:crypto'
import { mkdir, rename, rm, writeFile } from 'node:fs/promises'
import { join, resolve } from 'node:path'
import { randomBytes } from 'node:crypto'
import { FormatError, SignatureError } from '../errors.ts'
import { NixHash } from '../nix/hash.ts'
import { NarInfo } from '../nix/narinfo.ts'
import { sign, trustedKeyMap, verifySignature, type SecretKey } from '../nix/signature.ts'
import type { Locator, Mapper } from '../types.ts'
import { parseLocatorsJson } from '../mapper/common.ts'
import { ConfinedDirectory } from '../util/confined.ts'

const ROOT = join('narswarm', 'v1')
const MANIFEST = 'SHA256SUMS'

export interface ExportResult { entries: number, narInfos: number, files: number }

export async function exportIndex (mapper: Mapper, dir: string, signKeys: Array<SecretKey | string>, signal?: AbortSignal): Promise<ExportResult> {
  if (mapper.entries === undefined) throw new FormatError(`mapper ${mapper.name} cannot be listed, so it cannot be exported`)
  const final = join(dir, ROOT)
  const temp = `${final}.tmp-${randomBytes(4).toString('hex')}`
  await mkdir(join(temp, 'narinfo'), { recursive: true })
  await mkdir(join(temp, 'locators'), { recursive: true })
  const sums: string[] = []
  const put = async (path: string, text: string): Promise<void> => {
    await writeFile(join(temp, path), text)
    sums.push(`${createHash('sha256').update(text).digest('hex')}  ${path}`)
  }
  let entries = 0
  let narInfos = 0
  try {
    for await (const entry of mapper.entries(signal === undefined ? {} : { signal })) {
      entries++
      const body = `${JSON.stringify({ locators: entry.locators })}\n`
      const keys = new Set<string>()
      if (entry.locators.length > 0) keys.add(entry.narHash.toNix32())
      for (const text of entry.narInfos) {
        const info = NarInfo.parse(text)
        await put(`narinfo/${info.hashPart}`, text)
        narInfos++
        if (entry.locators.length > 0 && info.fileHash?.algorithm === 'sha256') keys.add(info.fileHash.toNix32())
      }
      for (const key of keys) await put(`locators/${key}`, body)
    }
    const manifest = `${sums.sort((a, b) => a.slice(66) < b.slice(66) ? -1 : 1).join('\n')}\n`
    await writeFile(join(temp, MANIFEST), manifest)
    await writeFile(join(temp, `${MANIFEST}.sig`), signKeys.map(k => `${sign(k, manifest)}\n`).join(''))
    // Swap: the old export stays whole until the new one is complete.
    const old = `${final}.old-${randomBytes(4).toString('hex')}`
    await rename(final, old).catch((err: NodeJS.ErrnoException) => { if (err.code !== 'ENOENT') throw err })
    await rename(temp, final)
    await rm(old, { recursive: true, force: true })
  } catch (err) {
    await rm(temp, { recursive: true, force: true })
    throw err
  }
  return { entries, narInfos, files: sums.length }
}

export interface ImportOptions {
  /** Keys one of which must have signed the manifest; empty accepts an unsigned export. */
  trustedKeys: readonly string[]
  signal?: AbortSignal
}

export interface ImportResult { narInfos: number, locators: number, signedBy: string[] }

export async function importIndex (dir: string, mapper: Mapper, options: ImportOptions): Promise<ImportResult> {
  if (mapper.record === undefined) throw new FormatError(`mapper ${mapper.name} cannot record`)
  const root = join(dir, ROOT)
  // Every read stays inside `dir`: a symlink in the export that leads out is refused.
  const confined = new ConfinedDirectory(resolve(dir))
  const manifest = await confined.readText(join(root, MANIFEST))
  if (manifest === undefined) throw new FormatError(`${join(root, MANIFEST)}: no such file (not an index export?)`)
  const sigs = (await confined.readText(join(root, `${MANIFEST}.sig`)) ?? '').split('\n').filter(Boolean)
  const keys = trustedKeyMap(options.trustedKeys)
  const signedBy = sigs.filter(s => keys.size > 0 && verifySignature(s, manifest, keys) === 'valid').map(s => s.slice(0, s.indexOf(':')))
  if (options.trustedKeys.length > 0 && signedBy.length === 0) {
    throw new SignatureError(`${join(root, MANIFEST)} is not signed by any trusted key (${sigs.length} signature${sigs.length === 1 ? '' : 's'}: ${sigs.map(s => s.slice(0, s.indexOf(':'))).join(', ') || 'none'})`)
  }
  // Every file is read and checked against the manifest before anything is recorded.
  const narInfos: NarInfo[] = []
  const narInfoTexts = new Map<NarInfo, string>()
  const locators = new Map<string, Locator[]>()
  for (const line of manifest.split('\n').filter(Boolean)) {
    const m = /^([0-9a-f]{64}) {2}((narinfo|locators)\/[0-9a-z]+)$/.exec(line)
    if (m === null) throw new FormatError(`${MANIFEST}: unexpected line '${line.slice(0, 120)}'`)
    options.signal?.throwIfAborted()
    const text = await confined.readText(join(root, m[2]!))
    if (text === undefined) throw new FormatError(`${m[2]}: listed in ${MANIFEST} but missing`)
    if (createHash('sha256').update(text).digest('hex') !== m[1]) throw new FormatError(`${m[2]}: does not match its checksum in ${MANIFEST}`)
    const name = m[2]!.slice(m[3]!.length + 1)
    if (m[3] === 'narinfo') {
      const info = NarInfo.parse(text)
      if (info.hashPart !== name) throw new FormatError(`${m[2]}: describes ${info.storePath}`)
      narInfos.push(info)
      narInfoTexts.set(info, text)
    } else {
      locators.set(name, parseLocatorsJson(text, m[2]!))
    }
  }
  let recorded = 0
  const used = new Set<string>()
  const signal = options.signal
  for (const info of narInfos) {
    const key = info.narHash.toNix32()
    const list = locators.get(key) ?? []
    used.add(key)
    if (info.fileHash !== undefined) used.add(info.fileHash.toNix32())
    for (const [i, locator] of list.entries()) {
      await mapper.record(info.narHash, locator, i === 0 ? { narInfo: narInfoTexts.get(info)!, ...(signal === undefined ? {} : { signal }) } : (signal === undefined ? {} : { signal }))
      recorded++
    }
  }
  // Locators that no narinfo names: kept under their key, taken as a NarHash.
  for (const [key, list] of locators) {
    if (used.has(key)) continue
    for (const locator of list) { await mapper.record(NixHash.parseDigest('sha256', key), locator, signal === undefined ? {} : { signal }); recorded++ }
  }
  return { narInfos: narInfos.length, locators: recorded, signedBy }
}
