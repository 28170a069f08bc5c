'use strict'
// Drives a Redis server through BullMQ: one Queue (its own connection) per
// producer; one Queue and one Worker (manual fetching: getNextJob +
// moveToCompleted) per lifecycle worker; a Worker with a processor, which
// waits blocking on Redis, as the latency consumer.
const { Queue, Worker } = require('bullmq')
const { Window, latencyResult, nowMs, pacedProducer, runDriver } = require('./common')

const QUEUE = 'bench'

async function enqueue (args, connection) {
  const queues = Array.from({ length: args.concurrency }, () => new Queue(QUEUE, { connection }))
  await Promise.all(queues.map(q => q.waitUntilReady()))
  const data = { p: 'x'.repeat(args.payloadBytes) }
  const window = new Window(args.warmup, args.seconds)
  await Promise.all(queues.map(async q => {
    while (!window.done()) {
      await q.add('job', data)
      window.record()
    }
  }))
  await Promise.all(queues.map(q => q.close()))
  return { ops_per_s: window.count / args.seconds }
}

async function lifecycle (args, connection) {
  const clients = Array.from({ length: args.concurrency }, (_, i) => ({
    queue: new Queue(QUEUE, { connection }),
    worker: new Worker(QUEUE, null, { connection, autorun: false }),
    token: `bench-worker-${i}`
  }))
  await Promise.all(clients.map(c => Promise.all([c.queue.waitUntilReady(), c.worker.waitUntilReady()])))
  const data = { p: 'x'.repeat(args.payloadBytes) }
  const window = new Window(args.warmup, args.seconds)
  await Promise.all(clients.map(async c => {
    while (!window.done()) {
      await c.queue.add('job', data)
      // Every worker adds before it takes, so a job is always there or on its
      // way; getNextJob blocks on Redis until one is.
      let job
      while (!job) job = await c.worker.getNextJob(c.token)
      await job.moveToCompleted('done', c.token, false)
      window.record()
    }
  }))
  await Promise.all(clients.map(c => Promise.all([c.queue.close(), c.worker.close(true)])))
  return { ops_per_s: window.count / args.seconds }
}

async function latency (args, connection) {
  const queue = new Queue(QUEUE, { connection })
  const sentAt = new Map()
  const measured = new Set()
  const latenciesMs = []
  let allReceived
  const received = new Promise(resolve => { allReceived = resolve })
  let producerDone = false
  const worker = new Worker(QUEUE, async job => {
    const t = nowMs()
    const seq = job.data.seq
    if (measured.has(seq)) latenciesMs.push(t - sentAt.get(seq))
    sentAt.delete(seq)
    if (producerDone && sentAt.size === 0) allReceived()
  }, { connection, concurrency: 1 })
  await Promise.all([queue.waitUntilReady(), worker.waitUntilReady()])
  const pad = 'x'.repeat(args.payloadBytes)
  const window = new Window(args.warmup, args.seconds)
  await pacedProducer(args, window, sentAt, measured, seq => queue.add('job', { seq, p: pad }))
  producerDone = true
  if (sentAt.size === 0) allReceived()
  await received
  await Promise.all([queue.close(), worker.close()])
  return latencyResult(args, measured, latenciesMs)
}

runDriver(async args => {
  const connection = { host: '127.0.0.1', port: args.port, maxRetriesPerRequest: null }
  const scenarios = { enqueue, lifecycle, latency }
  return scenarios[args.scenario](args, connection)
})
