#!/usr/bin/env node
// The Node.js interop client of cps.v1: the stubs are built at run time from
// protos/ alone (@grpc/proto-loader), every result is checked.
//
//   node clients/node/client.js HOST:PORT
//
// Plaintext by default. TLS is set by environment variables, the same in the
// C++ and Go clients: CPS_CA_CERT (PEM CA that signed the server's
// certificate: TLS on, the server is verified), CPS_CLIENT_CERT and
// CPS_CLIENT_KEY (a client certificate to present, for a server started with
// --client-ca), CPS_SERVER_NAME (the name to verify instead of HOST).
//
// Prints one "OK" line and exits 0, or prints what did not match and exits 1
// (a refused connection included); exits 2 on bad usage or TLS settings.
'use strict';

const fs = require('node:fs');
const path = require('node:path');
const grpc = require('@grpc/grpc-js');
const protoLoader = require('@grpc/proto-loader');
const protobuf = require('protobufjs');

const PROTOS = path.resolve(__dirname, '../../protos');
const GOOGLEAPIS = path.resolve(__dirname, '../third_party/googleapis');
const DEADLINE_MS = 10_000;

// uint64 handles stay exact as decimal strings; enums are their names.
const definition = protoLoader.loadSync('cps/v1/checkpoint_service.proto', {
  includeDirs: [PROTOS],
  longs: String,
  enums: String,
  defaults: true,
  oneofs: true,
});
const { CheckpointService } = grpc.loadPackageDefinition(definition).cps.v1;

// google.rpc.Status, google.rpc.ErrorInfo and cps.v1.IOVectorError, to decode
// the grpc-status-details-bin trailer of a failed call.
const detailTypes = new protobuf.Root();
detailTypes.resolvePath = (origin, target) =>
  [PROTOS, GOOGLEAPIS].map((dir) => path.join(dir, target)).find(fs.existsSync) ??
  target;
detailTypes.loadSync(
  ['google/rpc/status.proto', 'google/rpc/error_details.proto', 'cps/v1/types.proto'],
  { keepCase: true },
);
const RpcStatus = detailTypes.lookupType('google.rpc.Status');

class Mismatch extends Error {}

// Settings the client cannot use (exit 2, nothing is sent).
class Usage extends Error {}

function expect(ok, what) {
  if (!ok) throw new Mismatch(what);
}

function deadline() {
  return { deadline: Date.now() + DEADLINE_MS };
}

// The RPC's name in the proto (the stub's methods are camelCase).
const rpcName = (method) => method[0].toUpperCase() + method.slice(1);

// One unary call as a promise.
function call(client, method, request) {
  return new Promise((resolve, reject) => {
    client[method](request, deadline(), (error, response) => {
      if (error) reject(new Mismatch(`${rpcName(method)} failed: ${describe(error)}`));
      else resolve(response);
    });
  });
}

// The same call, expected to fail: resolves with the gRPC error.
function callFailing(client, method, request) {
  return new Promise((resolve, reject) => {
    client[method](request, deadline(), (error) => {
      if (error) resolve(error);
      else reject(new Mismatch(`${rpcName(method)} succeeded, an error was expected`));
    });
  });
}

// JSON of a decoded message, bytes shown as text.
function show(message) {
  return JSON.stringify(message, (key, value) =>
    value?.type === 'Buffer' ? Buffer.from(value.data).toString() : value);
}

function describe(error) {
  return `${grpc.status[error.code] ?? error.code} (${error.details})`;
}

// The details of a failed call: every google.protobuf.Any of the
// google.rpc.Status in the grpc-status-details-bin trailer, unpacked.
function errorDetails(error) {
  const [bytes] = error.metadata.get('grpc-status-details-bin');
  expect(bytes !== undefined, `no grpc-status-details-bin trailer on ${describe(error)}`);
  const status = RpcStatus.decode(bytes);
  return status.details.map((any) => {
    const type = detailTypes.lookupType(any.type_url.slice(any.type_url.lastIndexOf('/') + 1));
    return { type: type.fullName.slice(1), value: type.decode(any.value) };
  });
}

const sectionId = (id) => ({ id: Buffer.from(id) });

function readPem(variable) {
  try {
    return fs.readFileSync(process.env[variable]);
  } catch (error) {
    throw new Usage(`${variable}: ${error.message}`);
  }
}

// [credentials, channel options]: plaintext, or TLS when CPS_CA_CERT is set
// (see the top of the file). An empty variable counts as unset.
function transport() {
  const { CPS_CA_CERT: ca, CPS_CLIENT_CERT: cert, CPS_CLIENT_KEY: key } = process.env;
  const serverName = process.env.CPS_SERVER_NAME;
  if (!ca) {
    if (cert || key || serverName) {
      throw new Usage('CPS_CLIENT_CERT, CPS_CLIENT_KEY and CPS_SERVER_NAME need CPS_CA_CERT (TLS)');
    }
    return [grpc.credentials.createInsecure(), {}];
  }
  if (!cert !== !key) throw new Usage('CPS_CLIENT_CERT and CPS_CLIENT_KEY go together');
  let credentials;
  try {
    credentials = grpc.credentials.createSsl(
      readPem('CPS_CA_CERT'),
      key ? readPem('CPS_CLIENT_KEY') : null,
      cert ? readPem('CPS_CLIENT_CERT') : null,
    );
  } catch (error) {
    if (error instanceof Usage) throw error;
    throw new Usage(`CPS_CA_CERT, CPS_CLIENT_CERT, CPS_CLIENT_KEY: ${error.message}`);
  }
  // The name checked in the server's certificate (and sent as SNI).
  const options = serverName ? { 'grpc.ssl_target_name_override': serverName } : {};
  return [credentials, options];
}

async function run(target) {
  const [credentials, options] = transport();
  const client = new CheckpointService(target, credentials, options);
  try {
    await session(client);
  } finally {
    client.close();
  }
}

async function session(client) {
  const { serviceHandle, version } = await call(client, 'initialize', {
    version: { releaseCode: 'B', majorVersion: 1 },
  });
  expect(version.releaseCode === 'B' && version.majorVersion === 1,
    `Initialize answered version ${show(version)}`);

  // The session's callback stream, open for the whole session: Finalize ends it.
  const stream = client.callbacks({ serviceHandle }, { deadline: Date.now() + 3 * DEADLINE_MS });
  // Errors reach the iterator; this listener keeps the cancel() below from
  // raising an unhandled 'error' event when the session stops early.
  stream.on('error', () => {});
  try {
    await checkpointLifecycle(client, serviceHandle, stream[Symbol.asyncIterator]());
  } finally {
    stream.cancel();
  }
}

// Everything after Initialize, down to Finalize.
async function checkpointLifecycle(client, serviceHandle, callbacks) {
  const checkpointName = 'node-interop';
  const { checkpointHandle } = await call(client, 'checkpointOpen', {
    serviceHandle,
    checkpointName,
    checkpointOpenFlags: ['OPEN_FLAG_CREATE', 'OPEN_FLAG_READ', 'OPEN_FLAG_WRITE'],
    checkpointCreationAttributes: {
      creationFlags: ['CREATION_FLAG_WR_ACTIVE_REPLICA'],
      checkpointSize: 4096,
      maxSections: 4,
      maxSectionSize: 1024,
      maxSectionIdSize: 16,
      retentionDuration: { forever: true },
    },
  });

  const ids = ['alpha', 'beta'];
  for (const id of ids) {
    const created = await call(client, 'sectionCreate', {
      checkpointHandle,
      sectionCreationAttributes: { sectionId: sectionId(id) },
    });
    expect(created.sectionId.id.toString() === id, `SectionCreate returned ${show(created)}`);
  }

  // One write, an iovector of two elements; then read both back in one call.
  const data = [Buffer.from('hello from Node.js'), Buffer.from([0, 0xff, 1, 0xfe])];
  await call(client, 'checkpointWrite', {
    checkpointHandle,
    ioVector: ids.map((id, i) => ({ sectionId: sectionId(id), dataBuffer: data[i] })),
  });
  const read = await call(client, 'checkpointRead', {
    checkpointHandle,
    ioVector: ids.map((id) => ({ sectionId: sectionId(id) })),
  });
  expect(read.ioVector.length === 2, `CheckpointRead returned ${read.ioVector.length} elements`);
  read.ioVector.forEach((element, i) => {
    expect(element.dataBuffer.equals(data[i]) && element.readSize === String(data[i].length),
      `section ${ids[i]} reads back ${show(element)}`);
  });

  // The error case: reading a missing section (second element) is NOT_FOUND
  // with the seed's reason and the index of the element.
  const error = await callFailing(client, 'checkpointRead', {
    checkpointHandle,
    ioVector: [{ sectionId: sectionId('alpha') }, { sectionId: sectionId('missing') }],
  });
  expect(error.code === grpc.status.NOT_FOUND, `missing section: ${describe(error)}`);
  const details = errorDetails(error);
  const info = details.find((d) => d.type === 'google.rpc.ErrorInfo')?.value;
  expect(info?.domain === 'cps.v1' && info?.reason === 'CL_CKPT_ERR_NOT_EXIST',
    `ErrorInfo ${show(info)}`);
  const index = details.find((d) => d.type === 'cps.v1.IOVectorError')?.value;
  expect(index?.erroneous_vector_index === 1, `IOVectorError ${show(index)}`);

  // Immediate consumption: an overwrite of "beta" arrives on the stream.
  await call(client, 'immediateConsumptionRegister', { checkpointHandle });
  await call(client, 'sectionOverwrite', {
    checkpointHandle,
    sectionId: sectionId('beta'),
    dataBuffer: Buffer.from('overwritten'),
  });
  const next = await callbacks.next();
  expect(!next.done && next.value.callbacks.length > 0,
    'the Callbacks stream ended without the notification');
  for (const callback of next.value.callbacks) {
    expect(callback.kind === 'notification', `unexpected callback ${show(callback)}`);
    const { notification } = callback;
    const changed = notification.changedSections;
    expect(notification.checkpointName === checkpointName &&
      notification.checkpointHandle === checkpointHandle &&
      changed.length === 1 &&
      changed[0].sectionId.id.toString() === 'beta' &&
      changed[0].change === 'SECTION_CHANGE_OVERWRITTEN',
    `notification ${show(notification)}`);
  }

  // Iterate every section: the ids come back in creation order.
  const { sectionIterationHandle } = await call(client, 'sectionIterationInitialize', {
    checkpointHandle,
    sectionsChosen: 'SECTIONS_CHOSEN_ANY',
  });
  const seen = [];
  for (;;) {
    const step = await call(client, 'sectionIterationNext', { sectionIterationHandle });
    if (step.noMoreSections) break;
    expect(seen.length < 16, 'SectionIterationNext never says no_more_sections');
    seen.push(step.sectionDescriptor.sectionId.id.toString());
  }
  expect(seen.join() === ids.join(), `iteration returned [${seen}], wanted [${ids}]`);
  await call(client, 'sectionIterationFinalize', { sectionIterationHandle });

  // Close, delete, finalize; Finalize ends the callback stream cleanly.
  await call(client, 'checkpointClose', { checkpointHandle });
  await call(client, 'checkpointDelete', { serviceHandle, checkpointName });
  await call(client, 'finalize', { serviceHandle });
  try {
    for (let rest = await callbacks.next(); !rest.done; rest = await callbacks.next());
  } catch (ended) {
    throw new Mismatch(`the Callbacks stream did not end cleanly: ${describe(ended)}`);
  }
}

async function main() {
  const target = process.argv[2];
  if (!target || process.argv.length !== 3) {
    console.error('usage: node client.js HOST:PORT');
    return 2;
  }
  try {
    await run(target);
  } catch (error) {
    if (error instanceof Usage) {
      console.error(`cps-node-client: ${error.message}`);
      return 2;
    }
    if (!(error instanceof Mismatch)) throw error;
    console.error(`cps-node-client: FAILED: ${error.message}`);
    return 1;
  }
  console.log('cps-node-client: OK (session, open, sections, iovector write/read, ' +
    'NOT_FOUND details, notification, iteration, close, delete, finalize)');
  return 0;
}

main().then((code) => { process.exitCode = code; });
