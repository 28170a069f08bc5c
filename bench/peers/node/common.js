'use strict'
// What the Node drivers share: their flags (set by the Python `run` scripts),
// the measured window, percentiles and the JSON line they hand back.

function parseArgs (argv) {
  const known = {
    '--scenario': 'scenario',
    '--seconds': 'seconds',
    '--concurrency': 'concurrency',
    '--payload-bytes': 'payloadBytes',
    '--warmup': 'warmup',
    '--rate': 'rate',
    '--port': 'port',
    '--uri': 'uri'
  }
  const args = {}
  for (let i = 0; i < argv.length; i += 2) {
    const key = known[argv[i]]
    if (!key || i + 1 >= argv.length) {
      throw new Error(`unknown flag or missing value: ${argv[i]}`)
    }
    args[key] = argv[i + 1]
  }
  for (const key of ['seconds', 'concurrency', 'payloadBytes', 'warmup', 'rate', 'port']) {
    if (key in args) args[key] = Number(args[key])
  }
  for (const key of ['scenario', 'seconds', 'concurrency', 'payloadBytes', 'warmup', 'rate']) {
    if (args[key] === undefined || Number.isNaN(args[key])) {
      throw new Error(`missing or bad value for ${key}`)
    }
  }
  return args
}

function nowMs () {
  return performance.now()
}

// The measured interval [begin, end) on the monotonic clock; counts the
// operations that finish inside it.
class Window {
  constructor (warmupS, seconds) {
    this.begin = nowMs() + warmupS * 1000
    this.end = this.begin + seconds * 1000
    this.count = 0
  }

  done () {
    return nowMs() >= this.end
  }

  inside (t) {
    return t >= this.begin && t < this.end
  }

  record () {
    if (this.inside(nowMs())) this.count++
  }
}

// Nearest-rank percentile of a sorted, non-empty array.
function percentile (sorted, p) {
  const rank = Math.max(1, Math.ceil(sorted.length * p / 100))
  return sorted[rank - 1]
}

function sleepMs (ms) {
  return new Promise(resolve => setTimeout(resolve, Math.max(0, ms)))
}

// Runs one producer at args.rate jobs/s: put(seq) resolves once the job is
// stored. Resolves with the sequence numbers put inside the window and the
// send instants of all of them.
async function pacedProducer (args, window, sentAt, measured, put) {
  const start = nowMs()
  let seq = 0
  while (!window.done()) {
    await sleepMs(start + seq * 1000 / args.rate - nowMs())
    if (window.done()) break
    const t = nowMs()
    if (t >= window.begin) measured.add(seq)
    sentAt.set(seq, t)
    await put(seq)
    seq++
  }
}

function latencyResult (args, measured, latenciesMs) {
  if (latenciesMs.length === 0) throw new Error('no job was put inside the measured window')
  latenciesMs.sort((a, b) => a - b)
  return {
    ops_per_s: latenciesMs.length / args.seconds,
    rate_per_s: measured.size / args.seconds,
    p50_ms: percentile(latenciesMs, 50),
    p99_ms: percentile(latenciesMs, 99)
  }
}

// Runs main(args), prints its result as one JSON line and exits; on an error
// prints it on stderr and exits 1.
function runDriver (main) {
  let args
  try {
    args = parseArgs(process.argv.slice(2))
  } catch (err) {
    process.stderr.write(`${err.message}\n`)
    process.exit(2)
  }
  main(args).then(result => {
    process.stdout.write(JSON.stringify(result) + '\n', () => process.exit(0))
  }, err => {
    process.stderr.write(`${err.stack || err}\n`)
    process.exit(1)
  })
}

module.exports = { Window, latencyResult, nowMs, pacedProducer, percentile, runDriver, sleepMs }
