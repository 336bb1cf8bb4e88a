// The deployment material under deploy/, checked without a cluster or systemd (neither runs
// here): the Kubernetes manifests against schemas of our own for the fields they use and how
// they refer to each other, the environment examples against the server's own config schema,
// and what the HAProxy configuration answers by itself (test/fleet.test.ts runs it).
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { parseAllDocuments } from 'yaml';
import { describe, expect, it } from 'vitest';
import { z } from 'zod';
import { configSchema, loadConfig } from '../server/config.js';
import { ERROR_STATUS, type ErrorCode } from '../server/http/errors.js';
import { PACKAGE_ROOT } from '../worker-pool/util/package-root.js';

const DEPLOY = join(PACKAGE_ROOT, 'deploy');
const K8S = join(DEPLOY, 'kubernetes');

function yamlDocs(path: string): unknown[] {
  const docs = parseAllDocuments(readFileSync(path, 'utf8'));
  for (const d of docs) if (d.errors.length > 0) throw new Error(`${path}: ${d.errors.map((e) => e.message).join('; ')}`);
  return docs.map((d) => d.toJS() as unknown);
}

const name = z.string().regex(/^[a-z0-9]([-a-z0-9]*[a-z0-9])?$/);
const labels = z.record(z.string(), z.string());
const metadata = z.strictObject({ name, namespace: name.optional(), labels: labels.optional(), annotations: labels.optional() });
const ZVIZ_VARIABLES = Object.keys(configSchema.shape);

const envVar = z.strictObject({
  name: z.string(),
  value: z.string().optional(),
  valueFrom: z.strictObject({ secretKeyRef: z.strictObject({ name, key: z.string() }) }).optional(),
});
const probe = z.strictObject({
  httpGet: z.strictObject({ path: z.string().startsWith('/'), port: z.union([z.string(), z.number().int()]) }),
  periodSeconds: z.number().int().positive(),
  failureThreshold: z.number().int().positive(),
  timeoutSeconds: z.number().int().positive(),
});
/** Capabilities ZViz uses, and only those (docs/DEPLOYMENT.md says what each is for). */
const CAPABILITIES = ['SYS_ADMIN', 'NET_ADMIN', 'SETUID', 'SETGID', 'SETPCAP', 'KILL', 'DAC_OVERRIDE', 'CHOWN', 'FOWNER', 'SYS_RESOURCE'] as const;
const container = z.strictObject({
  name,
  image: z.string().min(1),
  imagePullPolicy: z.enum(['Always', 'IfNotPresent', 'Never']),
  command: z.array(z.string()).min(1),
  env: z.array(envVar),
  ports: z.array(z.strictObject({ name, containerPort: z.number().int().min(1).max(65535), protocol: z.literal('TCP') })),
  readinessProbe: probe,
  livenessProbe: probe,
  resources: z.strictObject({ requests: labels, limits: labels }),
  securityContext: z.strictObject({
    privileged: z.literal(false),
    runAsUser: z.literal(0),
    runAsNonRoot: z.literal(false),
    allowPrivilegeEscalation: z.boolean(),
    readOnlyRootFilesystem: z.boolean(),
    capabilities: z.strictObject({ drop: z.tuple([z.literal('ALL')]), add: z.array(z.enum(CAPABILITIES)) }),
    seccompProfile: z.strictObject({ type: z.literal('Unconfined') }),
    appArmorProfile: z.strictObject({ type: z.literal('Unconfined') }),
  }),
  volumeMounts: z.array(z.strictObject({ name, mountPath: z.string().startsWith('/'), readOnly: z.boolean().optional() })),
});
const volume = z.strictObject({
  name,
  hostPath: z.strictObject({ path: z.string().startsWith('/'), type: z.string() }).optional(),
  emptyDir: z.strictObject({ medium: z.literal('Memory').optional() }).optional(),
});
const daemonSetSchema = z.strictObject({
  apiVersion: z.literal('apps/v1'),
  kind: z.literal('DaemonSet'),
  metadata,
  spec: z.strictObject({
    selector: z.strictObject({ matchLabels: labels }),
    updateStrategy: z.strictObject({ type: z.literal('RollingUpdate'), rollingUpdate: z.strictObject({ maxUnavailable: z.number().int().positive() }) }),
    template: z.strictObject({
      metadata: z.strictObject({ labels, annotations: labels.optional() }),
      spec: z.strictObject({
        nodeSelector: labels.optional(),
        terminationGracePeriodSeconds: z.number().int().positive(),
        hostPID: z.literal(false),
        hostNetwork: z.literal(false),
        automountServiceAccountToken: z.literal(false),
        containers: z.array(container).length(1),
        volumes: z.array(volume),
      }),
    }),
  }),
});
const serviceSchema = z.strictObject({
  apiVersion: z.literal('v1'),
  kind: z.literal('Service'),
  metadata,
  spec: z.strictObject({
    selector: labels,
    ports: z.array(z.strictObject({ name, port: z.number().int(), targetPort: z.union([z.string(), z.number().int()]), protocol: z.literal('TCP') })),
  }),
});
const namespaceSchema = z.strictObject({ apiVersion: z.literal('v1'), kind: z.literal('Namespace'), metadata });
const secretSchema = z.strictObject({ apiVersion: z.literal('v1'), kind: z.literal('Secret'), metadata, type: z.literal('Opaque'), stringData: labels });
const kustomizationSchema = z.strictObject({
  apiVersion: z.literal('kustomize.config.k8s.io/v1beta1'),
  kind: z.literal('Kustomization'),
  namespace: name,
  resources: z.array(z.string()),
  labels: z.array(z.strictObject({ pairs: labels })).optional(),
});
const componentSchema = z.strictObject({
  apiVersion: z.literal('kustomize.config.k8s.io/v1alpha1'),
  kind: z.literal('Component'),
  patches: z.array(z.strictObject({ target: z.strictObject({ kind: z.string(), name }), patch: z.string() })),
});

function only<T extends z.ZodType>(schema: T, path: string): z.infer<T> {
  const docs = yamlDocs(path);
  expect(docs).toHaveLength(1);
  const r = schema.safeParse(docs[0]);
  if (!r.success) throw new Error(`${path}: ${r.error.issues.map((i) => `${i.path.join('.')}: ${i.message}`).join('; ')}`);
  return r.data;
}

describe('deploy/kubernetes', () => {
  it('each manifest matches its schema, and the kustomize base lists files that exist', () => {
    const k = only(kustomizationSchema, join(K8S, 'kustomization.yaml'));
    expect(k.resources.sort()).toEqual(['daemonset.yaml', 'namespace.yaml', 'service.yaml']);
    for (const r of k.resources) expect(existsSync(join(K8S, r)), r).toBe(true);
    only(namespaceSchema, join(K8S, 'namespace.yaml'));
    only(serviceSchema, join(K8S, 'service.yaml'));
    only(secretSchema, join(K8S, 'secret.example.yaml'));
    only(daemonSetSchema, join(K8S, 'daemonset.yaml'));
    only(componentSchema, join(K8S, 'privileged', 'kustomization.yaml'));
  });

  it('the DaemonSet is consistent: selector, probes on its port, mounts of its volumes, secret keys, known variables', () => {
    const ds = only(daemonSetSchema, join(K8S, 'daemonset.yaml'));
    const svc = only(serviceSchema, join(K8S, 'service.yaml'));
    const secret = only(secretSchema, join(K8S, 'secret.example.yaml'));
    const pod = ds.spec.template;
    const c = pod.spec.containers[0]!;
    expect(pod.metadata.labels).toMatchObject(ds.spec.selector.matchLabels);
    expect(pod.metadata.labels).toMatchObject(svc.spec.selector);
    expect(c.readinessProbe.httpGet.path).toBe('/readyz');
    expect(c.livenessProbe.httpGet.path).toBe('/healthz');
    const portNames = c.ports.map((p) => p.name);
    for (const p of [c.readinessProbe, c.livenessProbe]) expect(portNames).toContain(p.httpGet.port);
    for (const p of svc.spec.ports) expect(portNames).toContain(p.targetPort);
    const volumes = pod.spec.volumes.map((v) => v.name);
    for (const m of c.volumeMounts) expect(volumes, m.name).toContain(m.name);
    // The state directory is on the node, so a restarted pod keeps its host id.
    const stateDir = c.env.find((e) => e.name === 'ZVIZ_STATE_DIR')?.value;
    const stateMount = c.volumeMounts.find((m) => m.mountPath === stateDir);
    expect(pod.spec.volumes.find((v) => v.name === stateMount?.name)?.hostPath).toBeDefined();
    for (const e of c.env) {
      expect(ZVIZ_VARIABLES, e.name).toContain(e.name);
      expect((e.value === undefined) !== (e.valueFrom === undefined), e.name).toBe(true);
      if (e.valueFrom) {
        expect(e.valueFrom.secretKeyRef.name).toBe(secret.metadata.name);
        expect(Object.keys(secret.stringData)).toContain(e.valueFrom.secretKeyRef.key);
      }
    }
    expect(c.securityContext.capabilities.add).toEqual([...new Set(c.securityContext.capabilities.add)]);
    // The drain finishes before the kubelet's SIGKILL.
    const drainMs = Number(c.env.find((e) => e.name === 'ZVIZ_DRAIN_MS')?.value);
    expect(pod.spec.terminationGracePeriodSeconds * 1000).toBeGreaterThan(drainMs);
    // A draining pod keeps answering until its readiness probe has failed (and then some),
    // within the drain deadline.
    const noticeMs = Number(c.env.find((e) => e.name === 'ZVIZ_DRAIN_NOTICE_MS')?.value);
    expect(noticeMs).toBeGreaterThan(c.readinessProbe.periodSeconds * c.readinessProbe.failureThreshold * 1000);
    expect(noticeMs).toBeLessThan(drainMs);
    // Everything the server reads from the environment parses.
    const env = Object.fromEntries(c.env.map((e) => [e.name, e.value ?? (e.valueFrom ? secret.stringData[e.valueFrom.secretKeyRef.key] : '')]));
    expect(() => loadConfig(env)).not.toThrow();
    // The root file system is read-only: every directory the server writes is a volume.
    expect(c.securityContext.readOnlyRootFilesystem).toBe(true);
    const config = loadConfig(env);
    const mounted = (dir: string): boolean => c.volumeMounts.some((m) => dir === m.mountPath || dir.startsWith(m.mountPath + '/'));
    for (const dir of [config.stateDir, config.bundleCacheDir, '/run/zviz', '/run/netns', '/tmp']) expect(mounted(dir), dir).toBe(true);
  });
});

describe('deploy/systemd', () => {
  const unit = readFileSync(join(DEPLOY, 'systemd', 'zviz.service'), 'utf8');
  const settings = new Map(
    unit
      .split('\n')
      .filter((l) => /^[A-Za-z]+=/.test(l))
      .map((l) => [l.slice(0, l.indexOf('=')), l.slice(l.indexOf('=') + 1)] as const),
  );

  it('delegates the cgroup subtree and sets no option that breaks sandboxes', () => {
    expect(settings.get('Delegate')).toBe('yes');
    for (const breaking of ['ProtectControlGroups', 'ProtectKernelTunables', 'RestrictNamespaces', 'PrivateUsers', 'PrivateDevices', 'PrivateNetwork', 'SystemCallFilter', 'MemoryDenyWriteExecute', 'UMask']) {
      expect(settings.has(breaking), breaking).toBe(false);
    }
    expect(settings.get('KillSignal')).toBe('SIGTERM');
  });

  it('the environment example parses with the server config schema', () => {
    const env = Object.fromEntries(
      readFileSync(join(DEPLOY, 'systemd', 'zviz.env.example'), 'utf8')
        .split('\n')
        .filter((l) => /^ZVIZ_[A-Z_]+=/.test(l))
        .map((l) => [l.slice(0, l.indexOf('=')), l.slice(l.indexOf('=') + 1)]),
    );
    for (const k of Object.keys(env)) expect(ZVIZ_VARIABLES, k).toContain(k);
    const config = loadConfig(env);
    expect(config.redisUrl).toMatch(/^redis\+sentinel:\/\//);
    // The stop timeout covers the drain.
    expect(Number(settings.get('TimeoutStopSec')) * 1000).toBeGreaterThan(config.drainMs);
  });
});

describe('deploy/haproxy', () => {
  const lines = readFileSync(join(DEPLOY, 'haproxy', 'haproxy.cfg'), 'utf8')
    .split('\n')
    .map((l) => l.trim())
    .filter((l) => l !== '' && !l.startsWith('#'));

  it.each([
    [503, 'no host ready', true],
    [408, 'a POST /invoke body it waited for did not come in time', false],
  ])("answers its own %i (%s) in ZViz's error shape", (status, _why, retryAfter) => {
    const line = lines.find((l) => l.startsWith(`http-error status ${status} `));
    expect(line).toBeDefined();
    expect(line).toContain('content-type application/json');
    if (retryAfter) expect(line).toMatch(/ hdr Retry-After \d+$/);
    // The body is a double-quoted haproxy string with \" escapes.
    const quoted = / string "((?:[^"\\]|\\.)*)"/.exec(line!)![1]!;
    const body = JSON.parse(quoted.replace(/\\(.)/g, '$1')) as { error: { code: ErrorCode; message: string } };
    expect(Object.keys(body)).toEqual(['error']);
    expect(ERROR_STATUS[body.error.code]).toBe(status);
    expect(body.error.message).toMatch(/^Cannot /);
  });

  it('retries only what cannot have run: a refused connection and a 503 (server/http/errors.test.ts pins what a 503 means)', () => {
    const retryOn = lines.filter((l) => l.startsWith('retry-on '));
    expect(retryOn).toHaveLength(1);
    // Not 500/502/504, empty-response, junk-response, response-timeout, all-retryable-errors:
    // each can follow a request the host read and ran.
    expect(retryOn[0]!.split(/\s+/).slice(1).sort()).toEqual(['503', 'conn-failure']);
    expect(lines.some((l) => /^http-(request|response) .*l7-retry/.test(l) && !l.startsWith('http-request disable-l7-retry'))).toBe(false);
  });

  it('hashes on the function: the X-ZViz-Function header, else the body of POST /invoke; round robin without one', () => {
    const backend = lines.slice(lines.indexOf('backend zviz'));
    expect(backend).toContain('balance hash var(txn.fn)');
    expect(backend).toContain('hash-type consistent');
    const sets = backend.filter((l) => l.startsWith('http-request set-var(txn.fn) '));
    expect(sets).toEqual([
      'http-request set-var(txn.fn) req.hdr(X-ZViz-Function)',
      "http-request set-var(txn.fn) req.body,json_query('$.function') if { method POST } { path /invoke } !{ var(txn.fn) -m found }",
    ]);
    // Only POST /invoke without the header waits for its body (an upload streams through), bounded in time and size.
    const waits = backend.filter((l) => l.includes('wait-for-body'));
    expect(waits).toEqual(['http-request wait-for-body time 10s if { method POST } { path /invoke } !{ var(txn.fn) -m found }']);
    expect(lines.some((l) => l.includes('http-buffer-request'))).toBe(false);
    const bufsize = Number(lines.find((l) => l.startsWith('tune.bufsize '))?.split(/\s+/)[1]);
    expect(bufsize).toBeGreaterThanOrEqual(16_384);
    expect(bufsize).toBeLessThanOrEqual(256 * 1024);
  });

  it('opens a connection per request to a host (no request lost on a keep-alive connection the host closes)', () => {
    expect(lines).toContain('option http-server-close');
    expect(lines.some((l) => l.startsWith('http-reuse'))).toBe(false);
  });
});
