// A real browser for the tests that need one: Debian's chromium (or CHROMIUM_PATH) driven by playwright-core.
// On a machine without one those tests are skipped, and say so in one line; `.ci/run` installs it, so CI
// never skips them.
import { existsSync } from 'node:fs'
import type { Browser } from 'playwright-core'
import type { Test } from 'tap'
import { tempDir } from './spawn.js'

export const CHROMIUM = [process.env.CHROMIUM_PATH, '/usr/bin/chromium', '/usr/bin/chromium-browser', '/usr/bin/google-chrome']
  .find(p => p !== undefined && p !== '' && existsSync(p))

// CI (.ci/run) sets TOKENGATE_REQUIRE_BROWSER=1: there a missing browser fails the test instead of skipping it.
if (CHROMIUM === undefined && process.env.TOKENGATE_REQUIRE_BROWSER === '1') throw new Error('TOKENGATE_REQUIRE_BROWSER=1 but no Chromium was found')

/** For t.test's `skip` option: false, or the one line a skipped test prints. */
export const noBrowser: string | false = CHROMIUM === undefined ? 'no Chromium on this machine (apt-get install chromium, or set CHROMIUM_PATH)' : false

/**
 * Headless Chromium, closed at the test's teardown. Its profile goes in a temp dir of the test helpers (playwright
 * makes it under os.tmpdir() at launch), so a test file that fails or times out leaves no profile behind either.
 */
export async function launchBrowser (t: Test): Promise<Browser> {
  const { chromium } = await import('playwright-core')
  const tmp = process.env.TMPDIR
  process.env.TMPDIR = tempDir('chromium')
  let browser: Browser
  try {
    browser = await chromium.launch({
      executablePath: CHROMIUM,
      headless: true,
      args: ['--no-sandbox', '--disable-gpu', '--disable-background-networking', '--disable-component-update', '--no-first-run']
    })
  } finally {
    if (tmp === undefined) delete process.env.TMPDIR
    else process.env.TMPDIR = tmp
  }
  t.teardown(async () => await browser.close())
  return browser
}
