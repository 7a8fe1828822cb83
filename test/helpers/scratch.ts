// Throwaway folders for a test file: all under one folder in the system temp dir, which is
// removed when the file's tests end (tap's root teardown), pass or fail.
import t from 'tap'
import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'

/** Returns a maker of fresh folders inside one `prefix*` folder removed at the end of the file. */
export function scratch (prefix: string): () => string {
  const root = mkdtempSync(join(tmpdir(), prefix))
  t.teardown(() => { rmSync(root, { recursive: true, force: true }) })
  return () => mkdtempSync(join(root, 'd-'))
}
