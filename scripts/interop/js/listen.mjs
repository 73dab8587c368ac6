// Run a js-libp2p node (TCP + Noise + Yamux, identify, ping) that listens on loopback, so that a
// vivim-node can dial it (`vivim-node run --bootstrap <addr>`).
//
//   node listen.mjs [--listen /ip4/127.0.0.1/tcp/0] [--pings N]
//
// stdout carries one JSON object per line:
//   {"event":"listening","peer_id":...,"addrs":[...]}             once, when ready to be dialed
//   {"event":"connect","peer_id":...,"remote_addr":...,"direction":...,"encryption":...,
//    "multiplexer":...}                                           a peer connected
//   {"event":"identify","peer_id":...,"agent_version":...,"protocols":[...],...}
//                                                                 we identified a peer (identify
//                                                                 runs on every new connection)
//   {"event":"ping","peer_id":...,"ping_rtts_ms":[...],"ping_errors":[...]}
//                                                                 we pinged it back over that
//                                                                 connection, after identify
//   {"event":"disconnect","peer_id":...}
//   {"event":"error","stage":...,"error":...}
// It runs until stdin is closed or it gets SIGTERM/SIGINT, then stops the node and exits 0.

import { noise } from '@chainsafe/libp2p-noise'
import { yamux } from '@chainsafe/libp2p-yamux'
import { identify } from '@libp2p/identify'
import { ping } from '@libp2p/ping'
import { tcp } from '@libp2p/tcp'
import { createLibp2p } from 'libp2p'

function usage (message) {
  process.stderr.write(`listen.mjs: ${message}\n`)
  process.stderr.write('usage: node listen.mjs [--listen MULTIADDR] [--pings N]\n')
  process.exit(2)
}

function parseArgs (argv) {
  const opts = { listen: '/ip4/127.0.0.1/tcp/0', pings: 3 }
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i]
    if (arg === '--listen') opts.listen = argv[++i]
    else if (arg === '--pings') opts.pings = Number.parseInt(argv[++i], 10)
    else usage(`unexpected argument ${arg}`)
  }
  if (opts.listen === undefined) usage('--listen needs a multiaddr')
  if (!(opts.pings >= 0)) usage('--pings must be a non-negative integer')
  return opts
}

function emit (event) {
  process.stdout.write(JSON.stringify(event) + '\n')
}

function errorText (err) {
  return `${err?.name ?? 'Error'}: ${err?.message ?? err}`
}

async function pingBack (node, peerId, count) {
  const rtts = []
  const errors = []
  for (let i = 0; i < count; i++) {
    try {
      rtts.push(await node.services.ping.ping(peerId, { signal: AbortSignal.timeout(5000) }))
    } catch (err) {
      errors.push(errorText(err))
    }
  }
  emit({ event: 'ping', peer_id: peerId.toString(), ping_rtts_ms: rtts, ping_errors: errors })
}

async function main () {
  const opts = parseArgs(process.argv.slice(2))
  const node = await createLibp2p({
    addresses: { listen: [opts.listen] },
    transports: [tcp()],
    connectionEncrypters: [noise()],
    streamMuxers: [yamux()],
    services: { identify: identify(), ping: ping() }
  })

  node.addEventListener('connection:open', evt => {
    const conn = evt.detail
    emit({
      event: 'connect',
      peer_id: conn.remotePeer.toString(),
      remote_addr: conn.remoteAddr.toString(),
      direction: conn.direction,
      encryption: conn.encryption ?? null,
      multiplexer: conn.multiplexer ?? null
    })
  })
  node.addEventListener('peer:identify', evt => {
    const id = evt.detail
    emit({
      event: 'identify',
      peer_id: id.peerId.toString(),
      agent_version: id.agentVersion ?? null,
      protocol_version: id.protocolVersion ?? null,
      protocols: [...id.protocols].sort(),
      listen_addrs: id.listenAddrs.map(a => a.toString()),
      observed_addr: id.observedAddr?.toString() ?? null
    })
    if (opts.pings > 0) {
      pingBack(node, id.peerId, opts.pings).catch(err => {
        emit({ event: 'error', stage: 'ping', error: errorText(err) })
      })
    }
  })
  node.addEventListener('peer:disconnect', evt => {
    emit({ event: 'disconnect', peer_id: evt.detail.toString() })
  })

  emit({
    event: 'listening',
    peer_id: node.peerId.toString(),
    addrs: node.getMultiaddrs().map(a => a.toString())
  })

  await new Promise(resolve => {
    process.once('SIGTERM', resolve)
    process.once('SIGINT', resolve)
    process.stdin.on('end', resolve)
    process.stdin.on('close', resolve)
    process.stdin.resume()
  })
  await node.stop()
}

main().then(() => {
  process.exit(0)
}, err => {
  emit({ event: 'error', stage: 'setup', error: errorText(err) })
  process.stderr.write(`listen.mjs failed: ${err?.stack ?? err}\n`)
  process.exit(1)
})
