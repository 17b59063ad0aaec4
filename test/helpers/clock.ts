// Time has one seam: tokengate, the gateway's limiter and fast-jwt under them read the clock through
// Date.now() and nothing else. A test that depends on time fakes Date, and only Date: real timers,
// sockets and Redis keep working. The faked clock stands still until the test moves it, so no assertion
// depends on where a real second or minute falls, or on how fast a busy machine runs.
//
// It starts a minute or two ahead of the real one, at a whole minute (a whole second, and the start of
// an aligned rate-limit window). Sessions in Redis follow it (the Lua scripts get `now` from the caller);
// Redis's own key expiry (PXAT) follows the real clock, which the faked one stays ahead of: keys live a
// little longer than the faked clock says, never shorter. So assert PEXPIRETIME, not PTTL.
import FakeTimers from '@sinonjs/fake-timers'
import type { Test } from 'tap'

export interface Clock {
  /** The faked now (ms since the epoch). */
  now: () => number
  /** Moves the faked clock forward by `ms`. */
  tick: (ms: number) => void
  /** Moves the faked clock forward to `at` (ms since the epoch); never back. */
  to: (at: number) => void
}

/** The next whole minute at least a minute ahead of the real clock. */
export const aheadStart = (): number => (Math.floor(Date.now() / 60_000) + 2) * 60_000

/** Fakes Date for the rest of test `t` (restored at its teardown), starting at `start`. */
export function fakeClock (t: Test, start = aheadStart()): Clock {
  const clock = FakeTimers.install({ now: start, toFake: ['Date'] })
  t.teardown(() => { clock.uninstall() })
  return {
    now: () => clock.now,
    tick: (ms) => { clock.tick(ms) },
    to: (at) => {
      if (at < clock.now) throw new Error(`the faked clock only moves forward (${at} < ${clock.now})`)
      clock.setSystemTime(at)
    }
  }
}
