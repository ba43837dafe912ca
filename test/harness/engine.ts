// Engine-path test harness: drives @pulumi/pulumi's own dynamic-provider gRPC
// server (cmd/dynamic-provider) the way the Pulumi engine does, without the
// CLI's cost per operation. test/engineParity.test.ts checks that its
// preview/up/change/refresh/destroy make the calls the real engine makes, with
// the same fields and property names (its `calls`). Providers are serialized
// with the SDK's own serializeFunction, so the code under test is exactly the
// text that `new pulumi.dynamic.Resource` would store in the state.

import * as childProcess from "node:child_process";
import * as crypto from "node:crypto";
import * as fs from "node:fs";
import * as path from "node:path";
import { createRequire } from "node:module";

import type * as pulumi from "@pulumi/pulumi";
import type * as grpcTypes from "@grpc/grpc-js";
import type * as provpbTypes from "@pulumi/pulumi/proto/provider_pb";
import type * as provgrpcTypes from "@pulumi/pulumi/proto/provider_grpc_pb";
import type * as statuspbTypes from "@pulumi/pulumi/proto/status_pb";
import type * as structpbTypes from "google-protobuf/google/protobuf/struct_pb";
import { protoJson, shapeOf, type CallShape } from "../support/grpcShape";

// Load grpc-js and google-protobuf through @pulumi/pulumi's own resolution so
// the message classes and the channel code are the very instances the SDK's
// generated stubs use (a second copy would make instanceof checks and
// serializers disagree).
const sdkPackageJson = require.resolve("@pulumi/pulumi/package.json");
const sdkRequire = createRequire(sdkPackageJson);
const grpc = sdkRequire("@grpc/grpc-js") as typeof grpcTypes;
const structpb = sdkRequire("google-protobuf/google/protobuf/struct_pb") as typeof structpbTypes;
const provpb = sdkRequire("./proto/provider_pb") as typeof provpbTypes;
const provgrpc = sdkRequire("./proto/provider_grpc_pb") as typeof provgrpcTypes;
const statuspb = sdkRequire("./proto/status_pb") as typeof statuspbTypes;

/** Absolute path of the server script the engine runs for dynamic providers. */
export const SERVER_SCRIPT: string = require.resolve("@pulumi/pulumi/cmd/dynamic-provider/index.js");

/** Value the engine sends for properties that are unknown during preview. */
export const UNKNOWN = "04da6b54-80e4-46f7-96ec-b56ff0331ba9";

/** Key under which dynamic resources store their serialized provider. */
export const PROVIDER_KEY = "__provider";

const SIG_KEY = "4dabf18193072939515e22adb298388d";
const SECRET_SIG = "1b47061264138c4ac30d75fd1eb44270";

/** The type of the default provider the engine runs dynamic resources with. */
const DEFAULT_PROVIDER_TYPE = "pulumi:providers:pulumi-nodejs";

/** Default resource type of `new pulumi.dynamic.Resource(provider, name, props)`. */
export const DYNAMIC_TYPE = "pulumi-nodejs:dynamic:Resource";

/** Type token as dynamic/index.js builds it from the optional module and type arguments. */
export function dynamicType(module?: string, type = "Resource"): string {
    return `pulumi-nodejs:dynamic${module ? `/${module}` : ""}:${type}`;
}

export type Props = Record<string, unknown>;

/** Wraps a value in the engine's secret envelope (as a secret input or config value arrives). */
export function secret<T>(value: T): { [SIG_KEY]: string; value: T } {
    return { [SIG_KEY]: SECRET_SIG, value };
}

export function isSecret(v: unknown): v is { value: unknown } {
    return typeof v === "object" && v !== null && (v as Record<string, unknown>)[SIG_KEY] === SECRET_SIG;
}

/** Replaces every secret envelope by its plaintext, recursively. */
export function stripSecrets(v: unknown): unknown {
    if (isSecret(v)) {
        return stripSecrets(v.value);
    }
    if (Array.isArray(v)) {
        return v.map(stripSecrets);
    }
    if (typeof v === "object" && v !== null) {
        const out: Props = {};
        for (const [k, x] of Object.entries(v)) {
            out[k] = stripSecrets(x);
        }
        return out;
    }
    return v;
}

// --- provider serialization -------------------------------------------------

const serializedCache = new WeakMap<object, Promise<string>>();

/**
 * The `__provider` string exactly as `new pulumi.dynamic.Resource` produces it
 * (dynamic/index.js: serializeFunction(() => provider, { allowSecrets: true }).text).
 * Cached per provider object, like the SDK's own providerCache.
 */
export function serializeProvider(provider: pulumi.dynamic.ResourceProvider): Promise<string> {
    let text = serializedCache.get(provider);
    if (!text) {
        // Required lazily: loading the whole SDK costs time that tests that
        // only talk gRPC should not pay.
        const sdk = require("@pulumi/pulumi") as typeof pulumi;
        text = sdk.runtime.serializeFunction(() => provider, { allowSecrets: true }).then((sf) => sf.text);
        serializedCache.set(provider, text);
        // A failed serialization must not poison the cache for a retry.
        text.catch(() => serializedCache.delete(provider));
    }
    return text;
}

// --- errors -------------------------------------------------------------------

/** Decoded pulumirpc.ErrorResourceInitFailed (create/update threw an error carrying `id`). */
export interface InitFailure {
    id: string;
    properties: Props;
    reasons: string[];
}

/**
 * A failed provider RPC. `message` is the gRPC status details string, which is
 * what `pulumi up` prints for the failed operation.
 */
export class ProviderCallError extends Error {
    constructor(
        readonly method: string,
        readonly code: number,
        readonly details: string,
        readonly metadata: grpcTypes.Metadata | undefined,
        readonly initFailure: InitFailure | undefined,
    ) {
        super(details);
        this.name = "ProviderCallError";
    }

    /** Symbolic gRPC status name, e.g. "UNKNOWN", "DEADLINE_EXCEEDED". */
    get codeName(): string {
        return (grpc.status as unknown as Record<number, string>)[this.code] ?? String(this.code);
    }
}

function decodeInitFailure(md: grpcTypes.Metadata | undefined): InitFailure | undefined {
    const raw = md?.get("grpc-status-details-bin")[0];
    if (!raw || typeof raw === "string") {
        return undefined;
    }
    const status = statuspb.Status.deserializeBinary(new Uint8Array(raw));
    for (const any of status.getDetailsList()) {
        const unpacked = any.unpack(provpb.ErrorResourceInitFailed.deserializeBinary, "pulumirpc.ErrorResourceInitFailed");
        if (unpacked) {
            return {
                id: unpacked.getId(),
                properties: (unpacked.getProperties()?.toJavaScript() ?? {}) as Props,
                reasons: unpacked.getReasonsList(),
            };
        }
    }
    return undefined;
}

// --- harness ------------------------------------------------------------------

export interface StartOptions {
    /** Working directory of the server; every `require` in a provider text resolves from here. */
    cwd: string;
    /** PULUMI_NODEJS_PROJECT; config keys without a namespace resolve against it. */
    project?: string;
    stack?: string;
    /** Stack config as the engine sends it to Configure: full keys ("libvirt-snapshots:host"), string values. */
    config?: Record<string, string>;
    /** Config values the engine would send as secrets (wrapped in the secret envelope). */
    secretConfig?: Record<string, string>;
    env?: Record<string, string>;
    /** Deadline for each RPC; the server never answers some failures, so tests must not hang. */
    callTimeoutMs?: number;
    /** How long to wait for the port line. */
    startTimeoutMs?: number;
    /** The dynamic-provider server to run; default: the one of the SDK this repo installs. */
    serverScript?: string;
}

export type DiffChanges = "none" | "some" | "unknown";

export interface CheckReply {
    inputs: Props;
    failures: { property: string; reason: string }[];
}
export interface DiffReply {
    changes: DiffChanges;
    replaces: string[];
    deleteBeforeReplace: boolean;
}
export interface CreateReply {
    id: string;
    outs: Props;
}
export interface ReadReply {
    id: string;
    props: Props;
    inputs?: Props;
}
export interface UpdateReply {
    outs: Props;
}

/** What the engine keeps in the state for one resource. */
export interface ResourceState {
    urn: string;
    id: string;
    /** Checked inputs, including `__provider`. */
    inputs: Props;
    /** Outputs, including `__provider` (the text Delete will run). */
    outs: Props;
}

export interface ChangeResult {
    op: "same" | "update" | "replace";
    diff: DiffReply;
    state: ResourceState;
}

/** Server capabilities from its ConfigureResponse. */
export interface Capabilities {
    acceptSecrets: boolean;
    acceptResources: boolean;
    supportsPreview: boolean;
}

/** What call() needs of a request or response to record its shape. */
type JspbMessage = Parameters<typeof protoJson>[0];

/** The enum fields of the responses, by the names protojson writes (`changes: "DIFF_SOME"`). */
const RESPONSE_ENUMS = { changes: provpb.DiffResponse.DiffChanges as unknown as Record<string, number> };

type Unary<Req, Res> = (
    req: Req,
    md: grpcTypes.Metadata,
    opts: Partial<grpcTypes.CallOptions>,
    cb: (err: grpcTypes.ServiceError | null, res?: Res) => void,
) => grpcTypes.ClientUnaryCall;

function toStruct(props: unknown): structpbTypes.Struct {
    // JSON round trip: Struct.fromJavaScript rejects undefined, and the SDK
    // drops undefined properties before they reach the engine anyway.
    const plain = JSON.parse(JSON.stringify(props ?? {})) as Record<string, structpbTypes.JavaScriptValue>;
    return structpb.Struct.fromJavaScript(plain);
}

function fromStruct(s: structpbTypes.Struct | undefined): Props {
    const props = (s?.toJavaScript() ?? {}) as Props;
    transcript.push(JSON.stringify(redactSecretValues(props)));
    return props;
}

/**
 * Everything the provider sent back across every harness in this process:
 * outputs (with values inside Pulumi secret markers set aside, since the engine
 * stores those encrypted), error details and server logs. The secrets hook
 * (test/support/secrets-hook.ts) searches it for the lab's credentials.
 */
export const transcript: string[] = [];

function redactSecretValues(v: unknown): unknown {
    if (isSecret(v)) return "[secret]";
    if (Array.isArray(v)) return v.map(redactSecretValues);
    if (v && typeof v === "object") return Object.fromEntries(Object.entries(v).map(([k, x]) => [k, redactSecretValues(x)]));
    return v;
}

/** Splits `urn:pulumi:STACK::PROJECT::TYPE::NAME` into the request's type and name fields. */
function urnParts(urn: string): { type: string; name: string } {
    const parts = urn.split("::");
    if (parts.length < 4) {
        throw new Error(`not a URN: ${urn}`);
    }
    const qualified = parts[2];
    const type = qualified.slice(qualified.lastIndexOf("$") + 1);
    return { type, name: parts.slice(3).join("::") };
}

export class EngineHarness {
    private readonly logChunks: string[] = [];
    private exitInfo: { code: number | null; signal: NodeJS.Signals | null } | undefined;
    private readonly exited: Promise<void>;
    private client: provgrpcTypes.ResourceProviderClient | undefined;
    private closing: Promise<void> | undefined;
    private caps: Capabilities = { acceptSecrets: false, acceptResources: false, supportsPreview: false };
    private startupTimes = { portMs: NaN, configureMs: NaN };
    /**
     * Every call this harness made, in order, as its shape (test/support/grpcShape.ts: fields and property names,
     * never a value), the form test/engineParity.test.ts compares with the calls the real engine makes.
     */
    readonly calls: CallShape[] = [];

    private constructor(
        private readonly proc: childProcess.ChildProcessWithoutNullStreams,
        readonly project: string,
        readonly stack: string,
        readonly cwd: string,
        /** Deadline per RPC; tests may lower it to observe calls the server never answers. */
        public callTimeoutMs: number,
    ) {
        this.exited = new Promise((resolve) => {
            proc.once("exit", (code, signal) => {
                this.exitInfo = { code, signal };
                resolve();
            });
        });
    }

    static async start(opts: StartOptions): Promise<EngineHarness> {
        const project = opts.project ?? "snapshots-test";
        const stack = opts.stack ?? "dev";
        const env: NodeJS.ProcessEnv = {
            ...process.env,
            ...opts.env,
            // settings.getProject()/getStack() read these; Config.get("key") prefixes the project.
            PULUMI_NODEJS_PROJECT: project,
            PULUMI_NODEJS_STACK: stack,
        };
        // The engine address is required by main() but never dialled.
        const proc = childProcess.spawn(process.execPath, [opts.serverScript ?? SERVER_SCRIPT, "127.0.0.1:1"], {
            cwd: opts.cwd,
            env,
            stdio: ["pipe", "pipe", "pipe"],
        });
        const h = new EngineHarness(proc, project, stack, opts.cwd, opts.callTimeoutMs ?? 60_000);
        try {
            const t0 = performance.now();
            const port = await h.readPort(opts.startTimeoutMs ?? 30_000);
            const t1 = performance.now();
            h.client = new provgrpc.ResourceProviderClient(`127.0.0.1:${port}`, grpc.credentials.createInsecure());
            await h.configure(opts.config ?? {}, opts.secretConfig ?? {});
            h.startupTimes = { portMs: t1 - t0, configureMs: performance.now() - t1 };
        } catch (e) {
            await h.close();
            throw e;
        }
        return h;
    }

    /** First stdout line is the port; everything else (both streams) goes to the log buffer. */
    private readPort(timeoutMs: number): Promise<number> {
        return new Promise((resolve, reject) => {
            let pending = "";
            let found = false;
            const timer = setTimeout(() => fail(`no port line within ${timeoutMs} ms`), timeoutMs);
            const fail = (why: string) => {
                if (!found) {
                    found = true;
                    clearTimeout(timer);
                    reject(new Error(`dynamic-provider server: ${why}\n${this.logs()}`));
                }
            };
            this.proc.stderr.setEncoding("utf8");
            this.proc.stdout.setEncoding("utf8");
            this.proc.stderr.on("data", (d: string) => this.logChunks.push(d));
            this.proc.stdout.on("data", (d: string) => {
                if (found) {
                    this.logChunks.push(d);
                    return;
                }
                pending += d;
                const nl = pending.indexOf("\n");
                if (nl < 0) {
                    return;
                }
                const line = pending.slice(0, nl).trim();
                const rest = pending.slice(nl + 1);
                if (rest) {
                    this.logChunks.push(rest);
                }
                const port = Number(line);
                if (!Number.isInteger(port) || port <= 0) {
                    fail(`unexpected first stdout line ${JSON.stringify(line)}`);
                    return;
                }
                found = true;
                clearTimeout(timer);
                resolve(port);
            });
            this.proc.once("error", (e) => fail(`spawn failed: ${e.message}`));
            this.proc.once("exit", (code, signal) => fail(`exited (code ${code}, signal ${signal}) before printing its port`));
        });
    }

    /** Everything the server wrote to stdout (after the port line) and stderr. */
    logs(): string {
        return this.logChunks.join("");
    }

    get pid(): number {
        if (this.proc.pid === undefined) {
            throw new Error("server has no pid");
        }
        return this.proc.pid;
    }

    /** Exit code/signal once the server has exited, else undefined. */
    get exit(): { code: number | null; signal: NodeJS.Signals | null } | undefined {
        return this.exitInfo;
    }

    /** Spawn-to-port-line time and the first Configure round trip (includes connecting). */
    get startup(): { portMs: number; configureMs: number } {
        return { ...this.startupTimes };
    }

    get capabilities(): Capabilities {
        return { ...this.caps };
    }

    /** VmRSS of the server process in kB. */
    memoryRssKb(): number {
        const status = fs.readFileSync(`/proc/${this.pid}/status`, "utf8");
        const m = /^VmRSS:\s+(\d+)\s+kB$/m.exec(status);
        if (!m) {
            throw new Error(`no VmRSS in /proc/${this.pid}/status`);
        }
        return Number(m[1]);
    }

    urn(type: string, name: string): string {
        return `urn:pulumi:${this.stack}::${this.project}::${type}::${name}`;
    }

    private call<Req, Res>(method: string, fn: Unary<Req, Res>, req: Req): Promise<Res> {
        const client = this.client;
        if (!client) {
            return Promise.reject(new Error("harness is not connected"));
        }
        return new Promise((resolve, reject) => {
            fn.call(client, req, new grpc.Metadata(), { deadline: Date.now() + this.callTimeoutMs }, (err, res) => {
                this.calls.push({
                    method,
                    request: shapeOf(protoJson(req as JspbMessage)),
                    response: err ? "error" : shapeOf(protoJson(res as JspbMessage, RESPONSE_ENUMS)),
                });
                if (err) {
                    const init = decodeInitFailure(err.metadata);
                    transcript.push(err.details ?? "", JSON.stringify(redactSecretValues(init ?? null)));
                    reject(new ProviderCallError(method, err.code, err.details, err.metadata, init));
                } else if (res === undefined) {
                    reject(new Error(`${method}: empty response`));
                } else {
                    resolve(res);
                }
            });
        });
    }

    /** Properties as sent: secrets stay wrapped only for a server that accepts them. */
    private wire(props: unknown): structpbTypes.Struct {
        return toStruct(this.caps.acceptSecrets ? props : stripSecrets(props));
    }

    private async configure(config: Record<string, string>, secretConfig: Record<string, string>): Promise<void> {
        const args: Props = { ...config };
        for (const [k, v] of Object.entries(secretConfig)) {
            args[k] = secret(v);
        }
        const req = new provpb.ConfigureRequest();
        req.setArgs(toStruct(args));
        // The engine configures the stack's default provider of the package "pulumi-nodejs", and names it so.
        req.setUrn(this.urn(DEFAULT_PROVIDER_TYPE, "default"));
        req.setName("default");
        req.setType(DEFAULT_PROVIDER_TYPE);
        req.setId(crypto.randomUUID());
        // The legacy map the engine still fills, keyed "<provider package>:config:<key>"; a dynamic provider gets
        // the whole stack config with its namespaces, so "libvirt-snapshots:host" is "pulumi-nodejs:config:libvirt-snapshots:host"
        // (sdk/go/common/resource/plugin/provider_plugin.go, Configure; pkg/resource/deploy/target.go, GetPackageConfig).
        const vars = req.getVariablesMap();
        for (const [k, v] of Object.entries({ ...config, ...secretConfig })) {
            vars.set(`pulumi-nodejs:config:${k}`, v);
        }
        req.setAcceptsecrets(true);
        req.setAcceptresources(true);
        req.setSendsOldInputs(true);
        req.setSendsOldInputsToDelete(true);
        const client = this.client!;
        const res = await this.call<provpbTypes.ConfigureRequest, provpbTypes.ConfigureResponse>("Configure", client.configure, req);
        this.caps = {
            acceptSecrets: res.getAcceptsecrets(),
            acceptResources: res.getAcceptresources(),
            supportsPreview: res.getSupportspreview(),
        };
    }

    async check(urn: string, olds: Props, news: Props, opts: { randomSeed?: Uint8Array } = {}): Promise<CheckReply> {
        const { type, name } = urnParts(urn);
        const req = new provpb.CheckRequest();
        req.setUrn(urn);
        req.setType(type);
        req.setName(name);
        req.setOlds(this.wire(olds));
        req.setNews(this.wire(news));
        req.setRandomseed(opts.randomSeed ?? crypto.randomBytes(32));
        const res = await this.call<provpbTypes.CheckRequest, provpbTypes.CheckResponse>("Check", this.client!.check, req);
        return {
            inputs: fromStruct(res.getInputs()),
            failures: res.getFailuresList().map((f) => ({ property: f.getProperty(), reason: f.getReason() })),
        };
    }

    /** `olds` are the old outputs (state), `news` the new checked inputs. */
    async diff(
        urn: string,
        id: string,
        olds: Props,
        news: Props,
        opts: { oldInputs?: Props; ignoreChanges?: string[] } = {},
    ): Promise<DiffReply> {
        const { type, name } = urnParts(urn);
        const req = new provpb.DiffRequest();
        req.setUrn(urn);
        req.setType(type);
        req.setName(name);
        req.setId(id);
        req.setOlds(this.wire(olds));
        req.setNews(this.wire(news));
        if (opts.oldInputs) {
            req.setOldInputs(this.wire(opts.oldInputs));
        }
        req.setIgnorechangesList(opts.ignoreChanges ?? []);
        const res = await this.call<provpbTypes.DiffRequest, provpbTypes.DiffResponse>("Diff", this.client!.diff, req);
        const C = provpb.DiffResponse.DiffChanges;
        const changes: DiffChanges = res.getChanges() === C.DIFF_SOME ? "some" : res.getChanges() === C.DIFF_NONE ? "none" : "unknown";
        return { changes, replaces: res.getReplacesList(), deleteBeforeReplace: res.getDeletebeforereplace() };
    }

    async create(urn: string, news: Props, opts: { timeoutSec?: number } = {}): Promise<CreateReply> {
        const { type, name } = urnParts(urn);
        const req = new provpb.CreateRequest();
        req.setUrn(urn);
        req.setType(type);
        req.setName(name);
        req.setProperties(this.wire(news));
        req.setTimeout(opts.timeoutSec ?? 0);
        // The server reports supportsPreview=false, so the engine never sends preview creates.
        req.setPreview(false);
        const res = await this.call<provpbTypes.CreateRequest, provpbTypes.CreateResponse>("Create", this.client!.create, req);
        return { id: res.getId(), outs: fromStruct(res.getProperties()) };
    }

    /** `props` are the state's outputs; an empty id in the reply means the resource is gone. */
    async read(urn: string, id: string, props: Props, opts: { inputs?: Props } = {}): Promise<ReadReply> {
        const { type, name } = urnParts(urn);
        const req = new provpb.ReadRequest();
        req.setUrn(urn);
        req.setType(type);
        req.setName(name);
        req.setId(id);
        req.setProperties(this.wire(props));
        if (opts.inputs) {
            req.setInputs(this.wire(opts.inputs));
        }
        const res = await this.call<provpbTypes.ReadRequest, provpbTypes.ReadResponse>("Read", this.client!.read, req);
        const reply: ReadReply = { id: res.getId(), props: fromStruct(res.getProperties()) };
        if (res.hasInputs()) {
            reply.inputs = fromStruct(res.getInputs());
        }
        return reply;
    }

    async update(
        urn: string,
        id: string,
        olds: Props,
        news: Props,
        opts: { oldInputs?: Props; timeoutSec?: number } = {},
    ): Promise<UpdateReply> {
        const { type, name } = urnParts(urn);
        const req = new provpb.UpdateRequest();
        req.setUrn(urn);
        req.setType(type);
        req.setName(name);
        req.setId(id);
        req.setOlds(this.wire(olds));
        req.setNews(this.wire(news));
        if (opts.oldInputs) {
            req.setOldInputs(this.wire(opts.oldInputs));
        }
        req.setTimeout(opts.timeoutSec ?? 0);
        req.setPreview(false);
        const res = await this.call<provpbTypes.UpdateRequest, provpbTypes.UpdateResponse>("Update", this.client!.update, req);
        return { outs: fromStruct(res.getProperties()) };
    }

    /** `props` are the state's outputs, whose `__provider` is the code that runs. */
    async delete(urn: string, id: string, props: Props, opts: { oldInputs?: Props; timeoutSec?: number } = {}): Promise<void> {
        const { type, name } = urnParts(urn);
        const req = new provpb.DeleteRequest();
        req.setUrn(urn);
        req.setType(type);
        req.setName(name);
        req.setId(id);
        req.setProperties(this.wire(props));
        if (opts.oldInputs) {
            req.setOldInputs(this.wire(opts.oldInputs));
        }
        req.setTimeout(opts.timeoutSec ?? 0);
        await this.call("Delete", this.client!.delete as Unary<provpbTypes.DeleteRequest, unknown>, req);
    }

    // --- engine-like lifecycle steps -------------------------------------------

    /** Inputs as the program registers them: user props plus the serialized provider. */
    async programInputs(provider: pulumi.dynamic.ResourceProvider, inputs: Props): Promise<Props> {
        if (PROVIDER_KEY in inputs) {
            throw new Error("A dynamic resource must not define the __provider key");
        }
        return { ...inputs, [PROVIDER_KEY]: await serializeProvider(provider) };
    }

    private async checked(urn: string, olds: Props, news: Props): Promise<Props> {
        const res = await this.check(urn, olds, news);
        if (res.failures.length > 0) {
            const lines = res.failures.map((f) => `${f.property}: ${f.reason}`).join("; ");
            throw new Error(`check failed for ${urn}: ${lines}`);
        }
        return res.inputs;
    }

    /**
     * `pulumi preview` of a resource to create: Check(olds {}) only. The server reports supportsPreview=false, so the
     * engine sends no Create with `preview` set. Returns the checked inputs; throws on check failures, as preview fails.
     */
    async preview(name: string, provider: pulumi.dynamic.ResourceProvider, inputs: Props, opts: { type?: string } = {}): Promise<Props> {
        const urn = this.urn(opts.type ?? DYNAMIC_TYPE, name);
        return this.checked(urn, {}, await this.programInputs(provider, inputs));
    }

    /** Create step: serialize → Check(olds {}) → Create. Throws on check failures. */
    async up(name: string, provider: pulumi.dynamic.ResourceProvider, inputs: Props, opts: { type?: string } = {}): Promise<ResourceState> {
        const urn = this.urn(opts.type ?? DYNAMIC_TYPE, name);
        const news = await this.checked(urn, {}, await this.programInputs(provider, inputs));
        const { id, outs } = await this.engineCreate(urn, news);
        return { urn, id, inputs: news, outs };
    }

    /** Create plus the engine's own check on the reply. */
    private async engineCreate(urn: string, news: Props): Promise<CreateReply> {
        const res = await this.create(urn, news);
        if (res.id === "") {
            // Text of the engine's error (pkg/resource/plugin/provider_plugin.go).
            throw new Error(`plugin for package 'pulumi-nodejs' returned empty resource.ID from create '${urn}'`);
        }
        return res;
    }

    /**
     * A later `pulumi up` of an existing resource: Check(old inputs, new) → Diff(old outputs)
     * → same / Update / replace. A replacement checks the new inputs again with no old ones
     * (the engine recomputes defaults it had carried over: pkg/resource/deploy/step_generator.go),
     * then creates with those and deletes the old one (delete first when deleteBeforeReplace).
     * With changes "unknown" the engine compares old and new inputs itself (including `__provider`).
     */
    async change(state: ResourceState, provider: pulumi.dynamic.ResourceProvider, inputs: Props): Promise<ChangeResult> {
        const registered = await this.programInputs(provider, inputs);
        const news = await this.checked(state.urn, state.inputs, registered);
        const diff = await this.diff(state.urn, state.id, state.outs, news, { oldInputs: state.inputs });
        if (diff.replaces.length > 0) {
            const replacement = await this.checked(state.urn, {}, registered);
            if (diff.deleteBeforeReplace) {
                await this.destroy(state);
            }
            const { id, outs } = await this.engineCreate(state.urn, replacement);
            if (!diff.deleteBeforeReplace) {
                await this.destroy(state);
            }
            return { op: "replace", diff, state: { urn: state.urn, id, inputs: replacement, outs } };
        }
        const changed =
            diff.changes === "some" ||
            (diff.changes === "unknown" && JSON.stringify(sortKeys(state.inputs)) !== JSON.stringify(sortKeys(news)));
        if (!changed) {
            // A same step records the new inputs and keeps the old outputs.
            return { op: "same", diff, state: { ...state, inputs: news } };
        }
        const { outs } = await this.update(state.urn, state.id, state.outs, news, { oldInputs: state.inputs });
        return { op: "update", diff, state: { ...state, inputs: news, outs } };
    }

    /** `pulumi refresh`: see refreshStep(); undefined when the provider reports the resource gone. */
    async refresh(state: ResourceState): Promise<ResourceState | undefined> {
        return (await this.refreshStep(state)).state;
    }

    /**
     * `pulumi refresh` of one resource: Read; then, unless the provider reports it gone, Diff as the engine computes
     * the refresh's diff (pkg/resource/deploy/step.go, RefreshStep): the refreshed inputs and outputs as the old ones,
     * the state's inputs as the new. `diff` is that Diff's answer as the provider gave it (the engine shows it
     * inverted); the state keeps what Read returned either way.
     */
    async refreshStep(state: ResourceState): Promise<{ state: ResourceState | undefined; diff?: DiffReply }> {
        const res = await this.read(state.urn, state.id, state.outs, { inputs: state.inputs });
        if (res.id === "") {
            return { state: undefined };
        }
        const refreshed = { urn: state.urn, id: res.id, inputs: res.inputs ?? state.inputs, outs: res.props };
        const diff = await this.diff(refreshed.urn, refreshed.id, refreshed.outs, state.inputs, { oldInputs: refreshed.inputs });
        return { state: refreshed, diff };
    }

    /** `pulumi destroy` of one resource: Delete with the state's outputs. */
    async destroy(state: ResourceState): Promise<void> {
        await this.delete(state.urn, state.id, state.outs, { oldInputs: state.inputs });
    }

    /** Kills the server and waits for it to exit. Safe to call twice. */
    close(): Promise<void> {
        if (!this.closing) {
            this.closing = (async () => {
                this.client?.close();
                if (!this.exitInfo) {
                    this.proc.kill("SIGTERM");
                    const timer = setTimeout(() => this.proc.kill("SIGKILL"), 5_000);
                    await this.exited;
                    clearTimeout(timer);
                }
                transcript.push(this.logs());
            })();
        }
        return this.closing;
    }
}

function sortKeys(v: unknown): unknown {
    if (Array.isArray(v)) {
        return v.map(sortKeys);
    }
    if (typeof v === "object" && v !== null) {
        return Object.fromEntries(
            Object.keys(v)
                .sort()
                .map((k) => [k, sortKeys((v as Props)[k])]),
        );
    }
    return v;
}

/**
 * Root of the pulumi-libvirt-snapshots checkout: the cwd from which the real
 * providers' `require("pulumi-libvirt-snapshots/impl")` resolves (through the
 * workspace symlink in node_modules).
 */
export const PACKAGE_ROOT: string = findPackageRoot(__dirname, "pulumi-libvirt-snapshots");

function findPackageRoot(from: string, name: string): string {
    for (let dir = from; ; dir = path.dirname(dir)) {
        try {
            const pkg = JSON.parse(fs.readFileSync(path.join(dir, "package.json"), "utf8")) as { name?: string };
            if (pkg.name === name) {
                return dir;
            }
        } catch {
            // no package.json here; keep walking up
        }
        if (path.dirname(dir) === dir) {
            throw new Error(`no package.json named ${name} above ${from}`);
        }
    }
}
