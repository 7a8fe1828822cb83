import t from 'tap'
import { Readable } from 'node:stream'
import { boundedLines, type Line } from '../../src/cli/bounded-lines.js'

const LIMITS = { maxLineBytes: 16, maxLines: 5 }
async function lines (chunks: Array<string | Buffer>, limits = LIMITS): Promise<Line[]> {
  const got: Line[] = []
  for await (const l of boundedLines(Readable.from(chunks), 'users.jsonl', limits)) got.push(l)
  return got
}

t.test('splits LF and CRLF lines across chunks, numbering blank lines too', async (t) => {
  t.same(await lines(['\uFEFFab', 'c\r\n\nd', 'e\n', 'f']), [
    { number: 1, text: 'abc' }, { number: 2, text: '' }, { number: 3, text: 'de' }, { number: 4, text: 'f' }
  ])
  t.same(await lines(['x\n']), [{ number: 1, text: 'x' }], 'a final line break makes no empty line')
  t.same(await lines([]), [])
  const euro = Buffer.from('€\n')
  t.same(await lines([euro.subarray(0, 1), euro.subarray(1)]), [{ number: 1, text: '€' }], 'a character split between chunks')
})

t.test('a line over the byte limit fails before it is buffered whole', async (t) => {
  t.same(await lines(['a'.repeat(16) + '\n']), [{ number: 1, text: 'a'.repeat(16) }], 'exactly the limit')
  await t.rejects(lines(['ok\n', 'a'.repeat(10), 'a'.repeat(7)]), { code: 'BASTION_ERR_INVALID_INPUT', message: 'line 2: longer than 16 bytes' })
  // An endless line without a break: the generator stops at the limit, not at the end of input.
  let pulled = 0
  async function * endless (): AsyncGenerator<Buffer> { for (let i = 0; i < 1000; i++) { pulled++; yield Buffer.from('aaaa') } }
  await t.rejects((async () => { for await (const _ of boundedLines(endless(), 'pipe', LIMITS)) void _ })(), { message: 'line 1: longer than 16 bytes' })
  t.ok(pulled < 10, `read ${pulled} chunks`)
})

t.test('more lines than the limit, or bytes that are not UTF-8, fail naming them', async (t) => {
  t.equal((await lines(['\n\n\n\n\n'])).length, 5, 'exactly the limit')
  await t.rejects(lines(['\n\n\n\n\n\n']), { message: 'users.jsonl has more than 5 lines: split it into several imports' })
  await t.rejects(lines(['ok\n', Buffer.from([0x61, 0xc3, 0x28, 0x0a])]), { message: 'line 2: not UTF-8 text' })
})

t.test('a read error names the input', async (t) => {
  const failing = new Readable({ read () { this.destroy(new Error('EIO: i/o error')) } })
  await t.rejects((async () => { for await (const _ of boundedLines(failing, 'users.jsonl', LIMITS)) void _ })(), { message: 'cannot read users.jsonl: EIO: i/o error' })
})
