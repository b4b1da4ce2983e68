/**
 * A bzip2 decoder whose output is pulled in pieces of the caller's size, so memory and the time of
 * one call are bounded whatever the input claims (a 266-byte bzip2 file can expand to 200 MiB).
 * The decoding is that of bzip2.js by antimatter15 as vendored in unbzip2-stream 1.4.3 (MIT, after
 * Rob Landley's micro-bunzip), reorganised: a block (at most 900 kB of BWT data) is decoded into
 * its table in one step, and its output, which run-length coding can make ~51 times larger, is
 * produced on demand from that table, resuming where the last call stopped. Concatenated streams
 * are read in turn, as `bzip2 -d` does.
 *
 * Its licence, kept as the MIT licence asks (unbzip2-stream's LICENSE, verbatim):
 *
 *   Copyright (c) 2017 by Jan Boelsche (jan@lagomorph.de)
 *
 *   based on bzip2.js - a small bzip2 decompression implementation
 *   Copyright 2011 by antimatter15 (antimatter15@gmail.com)
 *
 *   Based on micro-bunzip by Rob Landley (rob@landley.net).
 *
 *   Permission is hereby granted, free of charge, to any person obtaining a
 *   copy of this software and associated documentation files (the "Software"),
 *   to deal in the Software without restriction, including without limitation
 *   the rights to use, copy, modify, merge, publish, distribute, sublicense,
 *   and/or sell copies of the Software, and to permit persons to whom the
 *   Software is furnished to do so, subject to the following conditions:
 *
 *   The above copyright notice and this permission notice shall be included
 *   in all copies or substantial portions of the Software.
 *
 *   THE SOFTWARE IS PROVIDED "AS IS", WITHOUT WARRANTY OF ANY KIND,
 *   EXPRESS OR IMPLIED, INCLUDING BUT NOT LIMITED TO THE WARRANTIES OF
 *   MERCHANTABILITY, FITNESS FOR A PARTICULAR PURPOSE AND NONINFRINGEMENT.
 *   IN NO EVENT SHALL THE AUTHORS OR COPYRIGHT HOLDERS BE LIABLE FOR ANY CLAIM,
 *   DAMAGES OR OTHER LIABILITY, WHETHER IN AN ACTION OF CONTRACT,
 *   TORT OR OTHERWISE, ARISING FROM, OUT OF OR IN CONNECTION WITH
 *   THE SOFTWARE OR THE USE OR OTHER DEALINGS IN THE SOFTWARE.
 */
const MAX_HUFCODE_BITS = 20
const MAX_SYMBOLS = 258
const GROUP_SIZE = 50
/** Huffman symbols decoded per `read`: a few milliseconds of work. */
const SYMBOLS_PER_READ = 65536

const CRC_TABLE = (() => {
  const t = new Int32Array(256)
  for (let i = 0; i < 256; i++) {
    let c = i << 24
    for (let k = 0; k < 8; k++) c = (c & 0x80000000) !== 0 ? (c << 1) ^ 0x04c11db7 : c << 1
    t[i] = c
  }
  return t
})()

class Bzip2Error extends Error {}

interface BlockState { origPtr: number, symTotal: number, nSelectors: number, groups: HufGroup[], g: HufGroup, runPos: number, run: number, count: number, left: number, selector: number }
interface HufGroup { permute: Int32Array, limit: Int32Array, base: Int32Array, minLen: number, maxLen: number }

export class Bzip2Decoder {
  // Input: a queue of chunks read bit by bit.
  #chunks: Uint8Array[] = []
  #buffered = 0
  #byte = 0
  /** Bits read ahead of the decoder: the low `#accBits` bits of `#acc`. */
  #acc = 0
  #accBits = 0
  #ended = false
  // Stream and block state.
  #blockSize = 0
  #streamCRC = 0
  #streams = 0
  #tt: Int32Array | undefined
  #byteCount = new Int32Array(256)
  #symToByte = new Uint8Array(256)
  #mtfSymbol = new Int32Array(256)
  #selectors = new Uint8Array(0x8000)
  // Output state of the current block (inverse BWT and run-length decoding).
  #left = 0
  #pos = 0
  #current = 0
  #run = 0
  #copies = 0
  #outbyte = 0
  #crc = 0
  #blockCRC = 0
  #done = false
  #waiting = false
  /** The symbol decoding of the current block, while it is under way. */
  #block: BlockState | undefined

  push (input: Uint8Array): void {
    if (input.length === 0) return
    this.#chunks.push(input)
    this.#buffered += input.length
  }

  end (): void { this.#ended = true }

  /** True when the whole input has been decoded (after `end`). */
  get done (): boolean { return this.#done }

  /** True when `read` can make no progress until more input is pushed (or `end` is called). */
  get needsInput (): boolean { return this.#waiting }

  /**
   * Decodes up to `out.length` bytes into `out` and returns how many, doing a bounded amount of
   * work (at most one slice of a block's Huffman symbols, or `out.length` bytes): 0 bytes with
   * neither `needsInput` nor `done` means call again. Throws Bzip2Error on input that is not bzip2.
   */
  read (out: Uint8Array): number {
    let n = 0
    this.#waiting = false
    while (n < out.length) {
      if (this.#left > 0 || this.#copies > 0) {
        n = this.#emit(out, n)
        if (this.#left === 0 && this.#copies === 0) this.#finishBlock()
        continue
      }
      if (this.#block !== undefined) {
        this.#decodeSymbols(SYMBOLS_PER_READ)
        if (this.#block !== undefined) break
        continue
      }
      if (!this.#advance()) { this.#waiting = !this.#done; break }
    }
    return n
  }

  /** Reads the next header or block when enough input is there; false when it must wait (or is done). */
  #advance (): boolean {
    if (this.#done) return false
    const remaining = this.#remaining()
    if (this.#blockSize === 0) {
      if (remaining === 0 && this.#ended) {
        if (this.#streams === 0) throw new Bzip2Error('empty input')
        this.#done = true
        return false
      }
      if (remaining < 4 && !this.#ended) return false
      if (this.#bits(24) !== 0x425a68) throw new Bzip2Error('no bzip2 magic number')
      const level = this.#bits(8) - 48
      if (level < 1 || level > 9) throw new Bzip2Error('not a bzip2 stream')
      this.#blockSize = level
      this.#streamCRC = 0
      this.#streams++
      return true
    }
    // A block is decoded in one step, so all of it must be here: a compressed block never
    // exceeds its uncompressed size by more than this margin.
    if (remaining < 25000 + 100000 * this.#blockSize && !this.#ended) return false
    this.#beginBlock()
    return true
  }

  /** The next `n` ≤ 24 bits, most significant first. */
  #bits (n: number): number {
    while (this.#accBits < n) {
      const chunk = this.#chunks[0]
      if (chunk === undefined) throw new Bzip2Error('input ended prematurely')
      if (this.#byte >= chunk.length) {
        this.#chunks.shift()
        this.#buffered -= chunk.length
        this.#byte = 0
        continue
      }
      this.#acc = (this.#acc << 8) | chunk[this.#byte++]!
      this.#accBits += 8
    }
    this.#accBits -= n
    return (this.#acc >>> this.#accBits) & ((1 << n) - 1)
  }

  /** Bytes of input not yet read. */
  #remaining (): number { return this.#buffered - this.#byte + (this.#accBits >> 3) }

  /** Reads a block's header and Huffman tables (or the end of a stream). */
  #beginBlock (): void {
    const magicHi = this.#bits(24)
    const magicLo = this.#bits(24)
    if (magicHi === 0x177245 && magicLo === 0x385090) {
      const finalCRC = ((this.#bits(16) << 16) | this.#bits(16)) | 0
      if (finalCRC !== this.#streamCRC) throw new Bzip2Error('stream CRC mismatch')
      this.#accBits -= this.#accBits & 7
      this.#blockSize = 0
      return
    }
    if (magicHi !== 0x314159 || magicLo !== 0x265359) throw new Bzip2Error('not valid bzip2 data')
    const bufsize = 100000 * this.#blockSize
    if (this.#tt === undefined || this.#tt.length !== bufsize) this.#tt = new Int32Array(bufsize)
    const bits = (n: number): number => this.#bits(n)
    const symToByte = this.#symToByte
    const mtfSymbol = this.#mtfSymbol
    const byteCount = this.#byteCount
    const selectors = this.#selectors
    this.#blockCRC = ((bits(16) << 16) | bits(16)) | 0
    if (bits(1) !== 0) throw new Bzip2Error('unsupported obsolete version')
    const origPtr = bits(24)
    if (origPtr > bufsize) throw new Bzip2Error('initial position larger than the block')
    let t = bits(16)
    let symTotal = 0
    for (let i = 0; i < 16; i++) {
      if ((t & (1 << (15 - i))) !== 0) {
        const k = bits(16)
        for (let j = 0; j < 16; j++) if ((k & (1 << (15 - j))) !== 0) symToByte[symTotal++] = 16 * i + j
      }
    }
    const groupCount = bits(3)
    if (groupCount < 2 || groupCount > 6) throw new Bzip2Error('bad number of Huffman groups')
    const nSelectors = bits(15)
    if (nSelectors === 0) throw new Bzip2Error('no selectors')
    for (let i = 0; i < groupCount; i++) mtfSymbol[i] = i
    for (let i = 0; i < nSelectors; i++) {
      let j = 0
      for (; bits(1) !== 0; j++) if (j >= groupCount) throw new Bzip2Error('bad selector')
      const uc = mtfSymbol[j]!
      for (let k = j - 1; k >= 0; k--) mtfSymbol[k + 1] = mtfSymbol[k]!
      mtfSymbol[0] = uc
      selectors[i] = uc
    }
    const symCount = symTotal + 2
    const groups: HufGroup[] = []
    const length = new Uint8Array(MAX_SYMBOLS)
    const temp = new Uint16Array(MAX_HUFCODE_BITS + 1)
    for (let j = 0; j < groupCount; j++) {
      t = bits(5)
      for (let i = 0; i < symCount; i++) {
        for (;;) {
          if (t < 1 || t > MAX_HUFCODE_BITS) throw new Bzip2Error('bad Huffman code length')
          if (bits(1) === 0) break
          if (bits(1) === 0) t++
          else t--
        }
        length[i] = t
      }
      let minLen = length[0]!
      let maxLen = length[0]!
      for (let i = 1; i < symCount; i++) {
        if (length[i]! > maxLen) maxLen = length[i]!
        else if (length[i]! < minLen) minLen = length[i]!
      }
      const g: HufGroup = { permute: new Int32Array(MAX_SYMBOLS), limit: new Int32Array(MAX_HUFCODE_BITS + 1), base: new Int32Array(MAX_HUFCODE_BITS + 1), minLen, maxLen }
      groups[j] = g
      let pp = 0
      for (let i = minLen; i <= maxLen; i++) for (let s = 0; s < symCount; s++) if (length[s] === i) g.permute[pp++] = s
      for (let i = minLen; i <= maxLen; i++) temp[i] = g.limit[i] = 0
      for (let i = 0; i < symCount; i++) temp[length[i]!]!++
      pp = 0
      let tt = 0
      for (let i = minLen; i < maxLen; i++) {
        pp += temp[i]!
        g.limit[i] = pp - 1
        pp <<= 1
        tt += temp[i]!
        g.base[i + 1] = pp - tt
      }
      g.limit[maxLen] = pp + temp[maxLen]! - 1
      g.base[minLen] = 0
    }
    for (let i = 0; i < 256; i++) { mtfSymbol[i] = i; byteCount[i] = 0 }
    this.#block = { origPtr, symTotal, nSelectors, groups, g: groups[0]!, runPos: 0, run: 0, count: 0, left: 0, selector: 0 }
  }

  /**
   * Decodes up to `budget` Huffman symbols of the current block; when the block's symbols are all
   * read, prepares its inverse BWT for `#emit`.
   */
  #decodeSymbols (budget: number): void {
    const b = this.#block!
    const buf = this.#tt!
    const bufsize = buf.length
    const bits = (n: number): number => this.#bits(n)
    const symToByte = this.#symToByte
    const mtfSymbol = this.#mtfSymbol
    const byteCount = this.#byteCount
    const selectors = this.#selectors
    const { symTotal, nSelectors, groups } = b
    let { g, runPos, run, count, left, selector } = b
    let finished = false
    while (budget-- > 0) {
      if (left-- === 0) {
        left = GROUP_SIZE - 1
        if (selector >= nSelectors) throw new Bzip2Error('ran out of selectors')
        const next = groups[selectors[selector++]!]
        if (next === undefined) throw new Bzip2Error('bad selector')
        g = next
      }
      let i = g.minLen
      let j = bits(i)
      for (;;) {
        if (i > g.maxLen) throw new Bzip2Error('bad Huffman code')
        if (j <= g.limit[i]!) break
        i++
        j = (j << 1) | bits(1)
      }
      j -= g.base[i]!
      if (j < 0 || j >= MAX_SYMBOLS) throw new Bzip2Error('bad Huffman symbol')
      const nextSym = g.permute[j]!
      if (nextSym === 0 || nextSym === 1) {
        if (runPos === 0) { runPos = 1; run = 0 }
        run += nextSym === 0 ? runPos : 2 * runPos
        runPos <<= 1
        if (run > bufsize) throw new Bzip2Error('run longer than the block')
        continue
      }
      if (runPos !== 0) {
        runPos = 0
        if (count + run > bufsize) throw new Bzip2Error('run longer than the block')
        const uc = symToByte[mtfSymbol[0]!]!
        byteCount[uc]! += run
        buf.fill(uc, count, count + run)
        count += run
      }
      if (nextSym > symTotal) { finished = true; break }
      if (count >= bufsize) throw new Bzip2Error('block longer than its size')
      const k = nextSym - 1
      let uc = mtfSymbol[k]!
      for (let m = k - 1; m >= 0; m--) mtfSymbol[m + 1] = mtfSymbol[m]!
      mtfSymbol[0] = uc
      uc = symToByte[uc]!
      byteCount[uc]!++
      buf[count++] = uc
    }
    Object.assign(b, { g, runPos, run, count, left, selector })
    if (!finished) return
    this.#block = undefined
    const origPtr = b.origPtr
    if (origPtr < 0 || origPtr >= count) throw new Bzip2Error('initial position outside the block')
    let j = 0
    for (let i = 0; i < 256; i++) {
      const k = j + byteCount[i]!
      byteCount[i] = j
      j = k
    }
    for (let i = 0; i < count; i++) {
      const uc = buf[i]! & 0xff
      buf[byteCount[uc]!]! |= i << 8
      byteCount[uc]!++
    }
    this.#left = count
    this.#pos = buf[origPtr]! >> 8
    this.#current = buf[origPtr]! & 0xff
    this.#run = -1
    this.#copies = 0
    this.#crc = -1
  }

  /** Output of the current block from `out[n]` on, as far as it fits; returns the new `n`. */
  #emit (out: Uint8Array, n: number): number {
    const buf = this.#tt!
    let left = this.#left
    let pos = this.#pos
    let current = this.#current
    let run = this.#run
    let copies = this.#copies
    let outbyte = this.#outbyte
    let crc = this.#crc
    const end = out.length
    for (;;) {
      while (copies > 0 && n < end) {
        copies--
        crc = (crc << 8) ^ CRC_TABLE[((crc >>> 24) ^ outbyte) & 0xff]!
        out[n++] = outbyte
      }
      if (copies > 0 || left === 0) break
      left--
      const previous = current
      pos = buf[pos]!
      current = pos & 0xff
      pos >>= 8
      if (run++ === 3) {
        copies = current
        outbyte = previous
        current = -1
      } else {
        copies = 1
        outbyte = current
      }
      if (current !== previous) run = 0
    }
    this.#left = left
    this.#pos = pos
    this.#current = current
    this.#run = run
    this.#copies = copies
    this.#outbyte = outbyte
    this.#crc = crc
    return n
  }

  #finishBlock (): void {
    const crc = (this.#crc ^ -1) >>> 0
    if ((crc | 0) !== this.#blockCRC) throw new Bzip2Error('block CRC mismatch')
    this.#streamCRC = (crc ^ ((this.#streamCRC << 1) | (this.#streamCRC >>> 31))) | 0
  }
}
