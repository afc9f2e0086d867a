// One node of gatewatch's TEST broker cluster: aedes over Redis. Tests and benchmarks only.
//
// Several nodes started with the same --redis form one broker: mqemitter-redis carries every
// publish to every node (Redis pub/sub), aedes-persistence-redis keeps retained messages,
// persistent sessions, their subscriptions and offline QoS 1 messages in Redis, so a client may
// reconnect to any node. No $share and no MQTT 5 (aedes 1.x speaks 3.1.1).
//
//   node node.mjs --port 18831 --redis redis://127.0.0.1:6379 [--host 127.0.0.1] [--id node-1]
//
// The node refuses payloads over 128 KiB + room for the header (what firmware/mosquitto sets
// with max_packet_size), so code that passes here also fits the production brokers' limit.
// It prints "listening <port>" once it accepts connections, and exits on SIGTERM/SIGINT.
import { createServer } from 'node:net'
import { Aedes } from 'aedes'
import mqemitterRedis from 'mqemitter-redis'
import persistenceRedis from 'aedes-persistence-redis'

const MAX_PAYLOAD = 128 * 1024

function arg (name, fallback) {
  const i = process.argv.indexOf('--' + name)
  return i > 0 && i + 1 < process.argv.length ? process.argv[i + 1] : fallback
}

const port = parseInt(arg('port', '1883'), 10)
const host = arg('host', '127.0.0.1')
const redisUrl = arg('redis', 'redis://127.0.0.1:6379')
const id = arg('id', 'node-' + port)
// a node that dies leaves its clients' wills for the others to publish after 3 heartbeats
const heartbeat = parseInt(arg('heartbeat-ms', '2000'), 10)

if (!(port > 0 && port < 65536)) {
  console.error('--port must be a TCP port, not %s', arg('port'))
  process.exit(2)
}

// ioredis reconnects forever on its own: a Redis restart stalls the node, it does not kill it
const redisOpts = { connectionString: redisUrl, maxRetriesPerRequest: null }
const mq = mqemitterRedis(redisOpts)
// Redis away (restarted, or its host down): log and carry on, ioredis reconnects by itself; an
// unhandled 'error' event would otherwise end the node
let lastWarn = 0
function redisDown (err) {
  if (Date.now() - lastWarn > 5000) {
    lastWarn = Date.now()
    console.error('redis: %s (retrying)', err && err.message)
  }
}
mq.state.on('error', redisDown)
const persistence = persistenceRedis({ ...redisParts(redisUrl), maxRetriesPerRequest: null, maxSessionDelivery: 100000 })

function redisParts (url) {
  const u = new URL(url)
  return { host: u.hostname, port: parseInt(u.port || '6379', 10), db: parseInt((u.pathname || '/0').slice(1) || '0', 10) }
}

const broker = await Aedes.createBroker({
  id,
  mq,
  persistence,
  heartbeatInterval: heartbeat,
  maxClientsIdLength: 128,
  concurrency: 1000,
  authorizePublish (client, packet, callback) {
    if (packet.payload && packet.payload.length > MAX_PAYLOAD) {
      callback(new Error('payload over 128 KiB'))
      return
    }
    callback(null)
  }
})

broker.on('connectionError', () => {})
broker.on('clientError', () => {})
process.on('uncaughtException', (err) => {
  // keep serving through a Redis outage; anything else is a real bug: say so and end
  if (err && (err.code === 'ECONNREFUSED' || err.code === 'ECONNRESET' || /Connection is closed/.test(err.message))) {
    redisDown(err)
    return
  }
  console.error(err)
  process.exit(1)
})

const server = createServer(broker.handle)
server.maxConnections = 100000
server.listen(port, host, () => {
  console.log('listening %d', port)
})

function stop () {
  server.close()
  broker.close(() => process.exit(0))
  setTimeout(() => process.exit(0), 2000).unref()
}
process.on('SIGTERM', stop)
process.on('SIGINT', stop)
