// Sends calls with Segment's own Node.js library (@segment/analytics-node, pinned in package-lock.json) to a
// Segment-compatible endpoint, for driptag's relay tests: nothing of driptag's sits between the library and
// the relay.
//
//   node relay-client.mjs RELAY_URL WRITE_KEY CALLS_JSON
//
// CALLS_JSON is a list of [method, params] pairs, params as the library takes them, e.g.
//   [["identify", {"userId": "u1", "traits": {"email": "ann@example.com"}}],
//    ["track", {"userId": "u1", "event": "Signed Up", "properties": {"plan": "pro"}}]]
//
// Prints one JSON line per HTTP request the library made ({"request": {url, method, headers, body}}), per
// answer it got ({"response": {url, status}}) and per error it emitted ({"emitted": ...}), then
// {"delivered": n, "errors": [...]} with the errors the calls' callbacks reported. Exits 0 only
// when the library reported every call delivered, 1 when it reported a failure, 2 on bad arguments.
import { Analytics } from '@segment/analytics-node'

function fail(message) {
  console.error(`relay-client: ${message}`)
  process.exit(2)
}

const [host, writeKey, callsJson] = process.argv.slice(2)
if (!host || !writeKey || !callsJson) {
  fail('usage: node relay-client.mjs RELAY_URL WRITE_KEY CALLS_JSON')
}
let calls
try {
  calls = JSON.parse(callsJson)
} catch (error) {
  fail(`CALLS_JSON is not JSON: ${error.message}`)
}
if (!Array.isArray(calls) || !calls.every((call) => Array.isArray(call) && call.length === 2)) {
  fail('CALLS_JSON must be a list of [method, params] pairs')
}

const analytics = new Analytics({
  writeKey,
  host, // the relay's base URL; the library posts to host + path
  path: '/v1/batch', // the library's default, spelt out
  flushAt: calls.length, // every call in one request
  maxRetries: 0, // a refusal is reported at once instead of after retries with back-off
  httpRequestTimeout: 5000,
})

const print = (line) => process.stdout.write(JSON.stringify(line) + '\n')
analytics.on('http_request', ({ url, method, headers, body }) => print({ request: { url, method, headers, body } }))
analytics.on('http_response', ({ url, status }) => print({ response: { url, status } }))

// The library also emits 'error' for a failed call ("delivery_failure"), after the call's callback and
// before closeAndFlush() resolves. It is printed as its own line ({"emitted": "code: reason"}) and counts as a
// failure; the summary's errors are the callbacks' alone, so the two are never confused.
let emitted = 0
analytics.on('error', (error) => {
  emitted += 1
  print({ emitted: `${error.code}: ${error.reason}` })
})

const errors = []
let delivered = 0

for (const [method, params] of calls) {
  if (typeof analytics[method] !== 'function') {
    fail(`the library has no method ${JSON.stringify(method)}`)
  }
  analytics[method](params, (error) => {
    if (error) {
      errors.push(`${method}: ${error}`)
    } else {
      delivered += 1
    }
  })
}

await analytics.closeAndFlush({ timeout: 10000 })
if (delivered !== calls.length && errors.length === 0) {
  errors.push(`${calls.length - delivered} of ${calls.length} calls were neither delivered nor failed`)
}
print({ delivered, errors })
process.exitCode = errors.length || emitted ? 1 : 0
