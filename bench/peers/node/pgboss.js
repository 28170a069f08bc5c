'use strict'
// Drives PostgreSQL through pg-boss 9: one PgBoss instance whose pool holds
// one connection per client (max = concurrency); send() per job, and for the
// lifecycle fetch() + complete(). The latency consumer is a second PgBoss
// instance's work() handler polling at pg-boss's shortest interval (100 ms),
// taking up to BATCH jobs per poll so that it keeps up with the producer:
// pg-boss has no blocking fetch.
const PgBoss = require('pg-boss')
const { Window, latencyResult, nowMs, pacedProducer, runDriver } = require('./common')

const QUEUE = 'bench'
const POLL_INTERVAL_MS = 100 // the minimum pg-boss 9 accepts for newJobCheckInterval
const BATCH = 100

async function startBoss (uri, poolSize) {
  const boss = new PgBoss({ connectionString: uri, max: poolSize })
  boss.on('error', err => process.stderr.write(`pg-boss: ${err.stack || err}\n`))
  await boss.start()
  return boss
}

async function enqueue (args) {
  const boss = await startBoss(args.uri, args.concurrency)
  const data = { p: 'x'.repeat(args.payloadBytes) }
  const window = new Window(args.warmup, args.seconds)
  await Promise.all(Array.from({ length: args.concurrency }, async () => {
    while (!window.done()) {
      await boss.send(QUEUE, data)
      window.record()
    }
  }))
  await boss.stop({ graceful: false, destroy: true })
  return { ops_per_s: window.count / args.seconds }
}

async function lifecycle (args) {
  const boss = await startBoss(args.uri, args.concurrency)
  const data = { p: 'x'.repeat(args.payloadBytes) }
  const window = new Window(args.warmup, args.seconds)
  await Promise.all(Array.from({ length: args.concurrency }, async () => {
    while (!window.done()) {
      await boss.send(QUEUE, data)
      // Every worker sends before it fetches, so a job is there or on its way
      // (fetch skips rows another fetch holds locked, so it can come back
      // empty for a moment).
      let job = null
      while (!job) job = await boss.fetch(QUEUE)
      await boss.complete(job.id)
      window.record()
    }
  }))
  await boss.stop({ graceful: false, destroy: true })
  return { ops_per_s: window.count / args.seconds }
}

async function latency (args) {
  const producer = await startBoss(args.uri, 2)
  const consumer = await startBoss(args.uri, 2)
  const sentAt = new Map()
  const measured = new Set()
  const latenciesMs = []
  let allReceived
  const received = new Promise(resolve => { allReceived = resolve })
  let producerDone = false
  const options = { newJobCheckInterval: POLL_INTERVAL_MS, batchSize: BATCH }
  await consumer.work(QUEUE, options, async jobs => {
    const t = nowMs()
    for (const job of jobs) {
      const seq = job.data.seq
      if (measured.has(seq)) latenciesMs.push(t - sentAt.get(seq))
      sentAt.delete(seq)
    }
    if (producerDone && sentAt.size === 0) allReceived()
  })
  const pad = 'x'.repeat(args.payloadBytes)
  const window = new Window(args.warmup, args.seconds)
  await pacedProducer(args, window, sentAt, measured, seq => producer.send(QUEUE, { seq, p: pad }))
  producerDone = true
  if (sentAt.size === 0) allReceived()
  await received
  await Promise.all([producer.stop({ graceful: false, destroy: true }),
    consumer.stop({ graceful: false, destroy: true })])
  return latencyResult(args, measured, latenciesMs)
}

runDriver(async args => {
  const scenarios = { enqueue, lifecycle, latency }
  return scenarios[args.scenario](args)
})
