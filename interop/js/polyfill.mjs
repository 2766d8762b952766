// Node 20 lacks two APIs js-libp2p 3 uses (both arrived in Node 22): `Promise.withResolvers`
// (libp2p, its services, yamux, noise, mortice) and `Set.prototype.difference` (kad-dht's
// closest-peers tracking). Imported before anything else by peer.mjs; a no-op on Node >= 22.

if (typeof Promise.withResolvers !== 'function') {
  Promise.withResolvers = function withResolvers () {
    let resolve
    let reject
    const promise = new this((res, rej) => {
      resolve = res
      reject = rej
    })
    return { promise, resolve, reject }
  }
}

if (typeof Set.prototype.difference !== 'function') {
  // The TC39 method takes any set-like; kad-dht only passes Sets.
  Object.defineProperty(Set.prototype, 'difference', {
    configurable: true,
    writable: true,
    value: function difference (other) {
      const result = new Set()
      for (const value of this) {
        if (!other.has(value)) {
          result.add(value)
        }
      }
      return result
    }
  })
}
