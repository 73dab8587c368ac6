// Dial a libp2p peer (e.g. a vivim-node) from js-libp2p: TCP + Noise + Yamux, then identify and
// ping it, and print one JSON line with what we learned.
//
//   node dial.mjs <multiaddr ending /p2p/<peer id>> [--pings N] [--timeout-ms MS] [--hold]
//
// Output (stdout, one line):
//   {"ok":true,"local_peer_id":...,"peer_id":...,"agent_version":...,"protocol_version":...,
//    "protocols":[...],"listen_addrs":[...],"observed_addr":...,"connection":{...},
//    "ping_rtts_ms":[...],"ping_errors":[...]}
// On failure: {"ok":false,"error":"..."} on stdout, the message on stderr, and exit status 1.
//
// --hold keeps the connection open after the result line until stdin is closed, so that the caller
// can look at the remote side (e.g. the node's /v1/peers) while we are still connected.

import { noise } from '@chainsafe/libp2p-noise'
import { yamux } from '@chainsafe/libp2p-yamux'
import { identify } from '@libp2p/identify'
import { ping } from '@libp2p/ping'
import { tcp } from '@libp2p/tcp'
import { multiaddr } from '@multiformats/multiaddr'
import { createLibp2p } from 'libp2p'

function usage (message) {
  process.stderr.write(`dial.mjs: ${message}\n`)
  process.stderr.write('usage: node dial.mjs <multiaddr> [--pings N] [--timeout-ms MS] [--hold]\n')
  process.exit(2)
}

function parseArgs (argv) {
  const opts = { target: undefined, pings: 5, timeoutMs: 20000, hold: false }
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i]
    if (arg === '--pings') opts.pings = Number.parseInt(argv[++i], 10)
    else if (arg === '--timeout-ms') opts.timeoutMs = Number.parseInt(argv[++i], 10)
    else if (arg === '--hold') opts.hold = true
    else if (arg.startsWith('--')) usage(`unknown option ${arg}`)
    else if (opts.target === undefined) opts.target = arg
    else usage(`unexpected argument ${arg}`)
  }
  if (opts.target === undefined) usage('missing multiaddr')
  if (!(opts.pings >= 1)) usage('--pings must be a positive integer')
  if (!(opts.timeoutMs >= 1)) usage('--timeout-ms must be a positive integer')
  return opts
}

function fail (stage, err) {
  const message = `${stage}: ${err?.name ?? 'Error'}: ${err?.message ?? err}`
  process.stdout.write(JSON.stringify({ ok: false, stage, error: message }) + '\n')
  process.stderr.write(`dial.mjs failed at ${message}\n`)
  if (err?.stack) process.stderr.write(`${err.stack}\n`)
  process.exitCode = 1
}

async function stdinClosed () {
  process.stdin.resume()
  await new Promise(resolve => {
    process.stdin.on('end', resolve)
    process.stdin.on('close', resolve)
  })
}

async function main () {
  const opts = parseArgs(process.argv.slice(2))
  let target
  try {
    target = multiaddr(opts.target)
  } catch (err) {
    usage(`not a multiaddr: ${opts.target} (${err.message})`)
  }
  if (target.getComponents().find(c => c.name === 'p2p') === undefined) {
    usage(`the multiaddr must end with /p2p/<peer id>: ${opts.target}`)
  }

  const node = await createLibp2p({
    // Dial only: no listen address.
    addresses: { listen: [] },
    transports: [tcp()],
    connectionEncrypters: [noise()],
    streamMuxers: [yamux()],
    services: {
      // Identify is run explicitly below, so that we hold its result (and its error, if any).
      identify: identify({ runOnConnectionOpen: false }),
      ping: ping()
    }
  })
  const signal = AbortSignal.timeout(opts.timeoutMs)
  let stage = 'dial'
  try {
    const connection = await node.dial(target, { signal })
    stage = 'identify'
    const id = await node.services.identify.identify(connection, { signal })
    stage = 'ping'
    const rtts = []
    const pingErrors = []
    for (let i = 0; i < opts.pings; i++) {
      try {
        rtts.push(await node.services.ping.ping(target, { signal }))
      } catch (err) {
        pingErrors.push(`${err.name}: ${err.message}`)
      }
    }
    const result = {
      ok: rtts.length > 0,
      local_peer_id: node.peerId.toString(),
      peer_id: id.peerId.toString(),
      agent_version: id.agentVersion ?? null,
      protocol_version: id.protocolVersion ?? null,
      protocols: [...id.protocols].sort(),
      listen_addrs: id.listenAddrs.map(a => a.toString()),
      observed_addr: id.observedAddr?.toString() ?? null,
      connection: {
        remote_addr: connection.remoteAddr.toString(),
        direction: connection.direction,
        encryption: connection.encryption ?? null,
        multiplexer: connection.multiplexer ?? null
      },
      ping_rtts_ms: rtts,
      ping_errors: pingErrors
    }
    if (!result.ok) {
      result.stage = 'ping'
      result.error = `all ${opts.pings} pings failed: ${pingErrors[0]}`
    }
    process.stdout.write(JSON.stringify(result) + '\n')
    if (!result.ok) {
      process.stderr.write(`dial.mjs failed at ping: ${result.error}\n`)
      process.exitCode = 1
    } else if (opts.hold) {
      stage = 'hold'
      await stdinClosed()
    }
  } catch (err) {
    fail(stage, err)
  } finally {
    await node.stop()
  }
}

main().catch(err => {
  fail('setup', err)
})
