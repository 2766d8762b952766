// A js-libp2p peer for p2p-node's interoperability test (p2p-node/tests/interop.rs).
//
// It speaks what p2p-node speaks: TCP, noise, yamux, identify, ping, Kademlia under p2p-node's
// protocol id (`/p2p-cc/kad/1.0.0`, server mode) and gossipsub on the status topic. It dials the
// given peer, then runs each requested check, retrying until it succeeds or the deadline passes,
// and prints one JSON object per line on stdout for each result:
//
//   {"event":"listening","peer_id":…,"addrs":[…]}
//   {"event":"identify","peer_id":…,"agent_version":…,"protocol_version":…,"protocols":[…]}
//   {"event":"ping","peer_id":…,"rtt_ms":…}
//   {"event":"providers","cid":…,"providers":[{"peer_id":…,"addrs":[…]}]}
//   {"event":"find_peer","peer_id":…,"addrs":[…]}
//   {"event":"provided","cid":…}
//   {"event":"gossip","from":…,"topic":…,"data":…}        (data as UTF-8 text)
//   {"event":"published","topic":…,"recipients":…}       (first publish that reached a peer)
//   {"event":"error","what":…,"message":…}               (a failed attempt; attempts continue)
//
// It exits when stdin closes (the test dropped it) or at the deadline, whichever comes first.
//
// Pings: the ping spec says a dialer MUST NOT keep more than one outbound ping stream per peer,
// and rust-libp2p's ping handler keeps one inbound stream per connection (a second replaces
// the first, whose writer then fails). js-libp2p's kad-dht pings every new contact before adding
// it to its routing table; a ping of ours at the same moment made that check fail and left our
// node out of the js routing table (2 of 9 runs at load 7–8). So the explicit ping runs
// only when asked (--ping), and js-libp2p's connection monitor (a ping every 10 s) is off.
//
// Options (all but --dial optional):
//   --dial <multiaddr with /p2p/>   the peer to connect to
//   --ping                          ping it (until one answer)
//   --topic <name>                  gossipsub topic to join (default p2p-cc/status/1)
//   --publish <text>                publish this text on the topic every 500 ms
//   --find-providers <cid>          look the CID's providers up in the DHT
//   --find-peer <peer id>           look a peer up in the DHT (FIND_NODE)
//   --provide <cid>                 announce this node as a provider of the CID
//   --deadline-ms <n>               exit after this long (default 60000)

import './polyfill.mjs'

import { setMaxListeners } from 'node:events'

import { noise } from '@chainsafe/libp2p-noise'
import { yamux } from '@chainsafe/libp2p-yamux'
import { gossipsub } from '@libp2p/gossipsub'
import { identify } from '@libp2p/identify'
import { kadDHT, passthroughMapper } from '@libp2p/kad-dht'
import { peerIdFromString } from '@libp2p/peer-id'
import { ping } from '@libp2p/ping'
import { tcp } from '@libp2p/tcp'
import { multiaddr } from '@multiformats/multiaddr'
import { createLibp2p } from 'libp2p'
import { CID } from 'multiformats/cid'

const KAD_PROTOCOL = '/p2p-cc/kad/1.0.0'
const RETRY_MS = 500
const QUERY_TIMEOUT_MS = 5000

function parseArgs (argv) {
  const options = { topic: 'p2p-cc/status/1', deadlineMs: 60000 }
  const names = {
    '--dial': 'dial',
    '--topic': 'topic',
    '--publish': 'publish',
    '--find-providers': 'findProviders',
    '--find-peer': 'findPeer',
    '--provide': 'provide',
    '--deadline-ms': 'deadlineMs'
  }
  for (let i = 0; i < argv.length; i += 2) {
    if (argv[i] === '--ping') {
      options.ping = true
      i -= 1
      continue
    }
    const name = names[argv[i]]
    if (name === undefined || argv[i + 1] === undefined) {
      throw new Error(`unknown option or missing value: ${argv[i]}`)
    }
    options[name] = argv[i + 1]
  }
  if (options.dial === undefined) {
    throw new Error('--dial <multiaddr> is required')
  }
  options.deadlineMs = Number(options.deadlineMs)
  return options
}

function emit (event) {
  process.stdout.write(JSON.stringify(event) + '\n')
}

function sleep (ms, signal) {
  return new Promise((resolve) => {
    const timer = setTimeout(resolve, ms)
    signal.addEventListener('abort', () => { clearTimeout(timer); resolve() }, { once: true })
  })
}

/** Runs `attempt` every RETRY_MS until it returns true or `signal` aborts; failures are printed. */
async function retry (what, signal, attempt) {
  while (!signal.aborted) {
    try {
      if (await attempt()) {
        return
      }
    } catch (err) {
      emit({ event: 'error', what, message: String(err?.message ?? err) })
    }
    await sleep(RETRY_MS, signal)
  }
}

/** A signal for one query: aborts after QUERY_TIMEOUT_MS or when the run ends. */
function querySignal (signal) {
  return AbortSignal.any([signal, AbortSignal.timeout(QUERY_TIMEOUT_MS)])
}

const options = parseArgs(process.argv.slice(2))
const target = multiaddr(options.dial)
const targetPeer = peerIdFromString(target.getComponents().findLast((c) => c.name === 'p2p').value)

const stop = new AbortController()
// Every query's signal listens on this one (AbortSignal.any), several at a time.
setMaxListeners(Infinity, stop.signal)
const deadline = setTimeout(() => stop.abort(), options.deadlineMs)
process.stdin.on('end', () => stop.abort())
process.stdin.on('error', () => stop.abort())
process.stdin.resume()

const node = await createLibp2p({
  addresses: { listen: ['/ip4/127.0.0.1/tcp/0'] },
  transports: [tcp()],
  connectionEncrypters: [noise()],
  streamMuxers: [yamux()],
  connectionMonitor: { enabled: false },
  services: {
    identify: identify(),
    ping: ping(),
    dht: kadDHT({
      protocol: KAD_PROTOCOL,
      clientMode: false,
      // Loopback addresses are all this test has; the default mapper drops private ones.
      peerInfoMapper: passthroughMapper
    }),
    pubsub: gossipsub({ emitSelf: false })
  }
})
// A LAN DHT: serve queries without waiting to learn of a public address.
await node.services.dht.setMode('server')

emit({
  event: 'listening',
  peer_id: node.peerId.toString(),
  addrs: node.getMultiaddrs().map((ma) => ma.toString())
})

node.addEventListener('peer:identify', (evt) => {
  const result = evt.detail
  emit({
    event: 'identify',
    peer_id: result.peerId.toString(),
    agent_version: result.agentVersion ?? null,
    protocol_version: result.protocolVersion ?? null,
    protocols: result.protocols
  })
})

node.services.pubsub.addEventListener('message', (evt) => {
  const message = evt.detail
  emit({
    event: 'gossip',
    from: message.type === 'signed' ? message.from.toString() : null,
    topic: message.topic,
    data: new TextDecoder().decode(message.data)
  })
})
node.services.pubsub.subscribe(options.topic)

const checks = []

checks.push(retry('dial', stop.signal, async () => {
  await node.dial(target, { signal: querySignal(stop.signal) })
  return true
}))

if (options.ping === true) {
  checks.push(retry('ping', stop.signal, async () => {
    if (node.getConnections(targetPeer).length === 0) {
      return false
    }
    const rtt = await node.services.ping.ping(targetPeer, { signal: querySignal(stop.signal) })
    emit({ event: 'ping', peer_id: targetPeer.toString(), rtt_ms: rtt })
    return true
  }))
}

if (options.findProviders !== undefined) {
  const cid = CID.parse(options.findProviders)
  checks.push(retry('find_providers', stop.signal, async () => {
    const providers = []
    for await (const provider of node.contentRouting.findProviders(cid, { signal: querySignal(stop.signal) })) {
      providers.push({
        peer_id: provider.id.toString(),
        addrs: provider.multiaddrs.map((ma) => ma.toString())
      })
    }
    if (providers.length === 0) {
      return false
    }
    emit({ event: 'providers', cid: cid.toString(), providers })
    return true
  }))
}

if (options.findPeer !== undefined) {
  const peer = peerIdFromString(options.findPeer)
  checks.push(retry('find_peer', stop.signal, async () => {
    const info = await node.peerRouting.findPeer(peer, { signal: querySignal(stop.signal) })
    emit({ event: 'find_peer', peer_id: info.id.toString(), addrs: info.multiaddrs.map((ma) => ma.toString()) })
    return true
  }))
}

if (options.provide !== undefined) {
  const cid = CID.parse(options.provide)
  checks.push(retry('provide', stop.signal, async () => {
    if (node.getConnections(targetPeer).length === 0) {
      return false
    }
    await node.contentRouting.provide(cid, { signal: querySignal(stop.signal) })
    emit({ event: 'provided', cid: cid.toString() })
    return true
  }))
}

if (options.publish !== undefined) {
  const data = new TextEncoder().encode(options.publish)
  let reported = false
  checks.push((async () => {
    // Every 500 ms for the whole run: the other side may join the mesh at any time.
    while (!stop.signal.aborted) {
      try {
        const result = await node.services.pubsub.publish(options.topic, data)
        if (!reported && result.recipients.length > 0) {
          reported = true
          emit({ event: 'published', topic: options.topic, recipients: result.recipients.length })
        }
      } catch (err) {
        // NoPeersSubscribedToTopic until the other side's subscription arrives.
      }
      await sleep(RETRY_MS, stop.signal)
    }
  })())
}

await new Promise((resolve) => stop.signal.addEventListener('abort', resolve, { once: true }))
clearTimeout(deadline)
await Promise.allSettled(checks)
await node.stop()
process.exit(0)
