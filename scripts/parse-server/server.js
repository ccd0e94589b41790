// Starts one Parse Server app of the agros-sync test setup on 127.0.0.1.
// Usage: node server.js a|b, with the variables of env.sh exported.
// start.sh runs one process per app, because parse-server keeps its Parse SDK
// client (app id, server URL) in process-wide state.
'use strict';

const path = require('node:path');

function requireEnv(name) {
  const value = process.env[name];
  if (value === undefined || value === '') {
    console.error(`server.js: environment variable ${name} is missing; source scripts/parse-server/env.sh first`);
    process.exit(2);
  }
  return value;
}

const appName = process.argv[2];
if (appName !== 'a' && appName !== 'b') {
  console.error(`server.js: invalid app name ${JSON.stringify(appName)}; expected "a" or "b"`);
  process.exit(2);
}
const suffix = appName.toUpperCase();

const port = Number(requireEnv(`AGROS_PARSE_PORT_${suffix}`));
const stateDir = requireEnv('AGROS_STATE_DIR');
const pgPort = requireEnv('AGROS_PG_PORT');
const pgUser = requireEnv('AGROS_PG_USER');
const database = requireEnv(`AGROS_PARSE_DATABASE_${suffix}`);

const logsFolder = path.join(stateDir, `logs-${appName}`);
// parse-server 9.10.0 opens its default logger in ./logs while the module
// loads, before the logsFolder option applies, unless this variable is set.
process.env.PARSE_SERVER_LOGS_FOLDER = logsFolder;
const { ParseServer } = require('parse-server');

const loopbackIps = ['127.0.0.1', '::1'];

const options = {
  appId: requireEnv(`AGROS_PARSE_APP_ID_${suffix}`),
  masterKey: requireEnv(`AGROS_PARSE_MASTER_KEY_${suffix}`),
  restAPIKey: requireEnv(`AGROS_PARSE_REST_KEY_${suffix}`),
  // parse-server 9.10.0 rejects a configuration whose maintenanceKey equals the masterKey.
  maintenanceKey: requireEnv(`AGROS_PARSE_MAINTENANCE_KEY_${suffix}`),
  databaseURI: `postgres://${pgUser}@127.0.0.1:${pgPort}/${database}`,

  host: '127.0.0.1',
  port,
  mountPath: '/parse',
  serverURL: `http://127.0.0.1:${port}/parse`,

  allowCustomObjectId: appName === 'a',
  // Rejects a repeated X-Parse-Request-Id with error code 159
  // (DUPLICATE_REQUEST). In 9.10.0 only POST and PUT on classes, users,
  // installations, functions and jobs check it, not /batch.
  // NOTE: on PostgreSQL, parse-server 9.10.0 never deletes expired ids, so an
  // id stays rejected after the ttl until start.sh recreates the database.
  idempotencyOptions: { paths: ['.*'], ttl: 300 },
  // parse-server passes maxUploadSize to express.json() as the body limit too,
  // so REST requests up to 20 MB are parsed.
  maxUploadSize: '20mb',

  // These lists are the 9.10.0 defaults, stated here so the tests do not
  // depend on them: master and maintenance keys work from loopback only.
  masterKeyIps: loopbackIps,
  maintenanceKeyIps: loopbackIps,

  logsFolder,
  mountGraphQL: false,

  // The options below set the future defaults that parse-server 9.10.0 names
  // in its DeprecationWarning at startup, which silences those warnings.
  readOnlyMasterKeyIps: loopbackIps,
  allowAggregationForReadOnlyMasterKey: false,
  enableProductPurchaseLegacyApi: false,
  fileUpload: { allowedFileUrlDomains: [] },
  pages: { encodePageParamHeaders: true },
  installation: { duplicateDeviceTokenActionEnforceAuth: true },
  protectedFieldsOwnerExempt: false,
  protectedFieldsTriggerExempt: true,
  protectedFieldsSaveResponseExempt: false,
  requestComplexity: {
    includeDepth: 10,
    includeCount: 100,
    subqueryDepth: 10,
    queryDepth: 10,
    graphQLDepth: 20,
    graphQLFields: 200,
    batchRequestLimit: 100,
  },
};

ParseServer.startApp(options)
  .then(() => {
    console.log(`agros-sync test Parse Server ${options.appId} listening on ${options.serverURL} (pid ${process.pid})`);
  })
  .catch(error => {
    console.error(`server.js: Parse Server ${options.appId} failed to start:`, error);
    process.exit(1);
  });
