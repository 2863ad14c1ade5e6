// Drives tus-js-client (the tus project's JavaScript client) under Node against the
// registry, for the tests: one file in `parallel` partial uploads joined by a final one.
//
//   node tus_js_client.js ENDPOINT TOKEN FILE PARALLEL METADATA_JSON
//
// Prints `url <final upload URL>` on success; exits 1 with the error otherwise.
const fs = require('fs')
const tus = require('tus-js-client')

const [endpoint, token, path, parallel, metadata] = process.argv.slice(2)
const file = fs.readFileSync(path)
const upload = new tus.Upload(file, {
  endpoint,
  headers: { Authorization: `Bearer ${token}` },
  metadata: JSON.parse(metadata),
  parallelUploads: Number(parallel),
  retryDelays: [0, 500, 1000],
  onError(error) {
    console.error(`error ${error}`)
    process.exit(1)
  },
  onSuccess() {
    console.log(`url ${upload.url}`)
  },
})
upload.start()
