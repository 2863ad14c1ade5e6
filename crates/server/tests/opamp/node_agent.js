// An agent on @elastic/opamp-client-node (Elastic's OpAMP client for Node.js), for the
// tests: it connects with a bearer token, describes itself and sends heartbeats every
// 300 ms; after ~1.5 s it shuts down. Every warning or error the client logs is counted:
// an answer it could not read (wrong content type, undecodable protobuf, an HTTP error)
// shows there.
//
//     node node_agent.js ENDPOINT TOKEN SERVICE_NAME
//
// Prints {"instance_uid": "<32 hex>", "problems": [...]}.

const {createOpAMPClient} = require('@elastic/opamp-client-node');

const [endpoint, token, service] = process.argv.slice(2);
const problems = [];
const record = (level) => (...args) =>
    problems.push(`${level}: ${args.map((a) => (a instanceof Error ? a.message : JSON.stringify(a))).join(' ')}`);
const log = {
    trace() {},
    debug() {},
    info() {},
    warn: record('warn'),
    error: record('error'),
    fatal: record('fatal'),
    child() {
        return log;
    },
};

async function main() {
    const client = createOpAMPClient({
        endpoint,
        headers: {Authorization: `Bearer ${token}`},
        heartbeatIntervalSeconds: 0.3,
        log,
    });
    client.setAgentDescription({
        identifyingAttributes: {'service.name': service},
        nonIdentifyingAttributes: {'os.type': 'linux', 'host.arch': 'arm64'},
    });
    client.start();
    await new Promise((resolve) => setTimeout(resolve, 1500));
    const uid = Buffer.from(client._instanceUid).toString('hex');
    await client.shutdown();
    console.log(JSON.stringify({instance_uid: uid, problems}));
}

main().catch((err) => {
    console.error(err);
    process.exit(1);
});
