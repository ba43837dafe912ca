// A recorded state (record.ts: what the engine-path harness stored for each resource of the
// scenario) made into a Pulumi deployment that `pulumi stack import` accepts (apiVersion 3), so the
// real CLI can refresh, update and destroy what an earlier release made:
// - the stack resource, the default pulumi-nodejs provider (which serves every dynamic resource,
//   with the stack's config), then each resource in creation order, as the engine writes them;
// - each resource's id, inputs and outputs as recorded, the `__provider` shim text unchanged (that
//   text is what users' stacks hold);
// - the secrets (secret stack config such as the private key; the connection and a RestorePoint's
//   targets, which today's classes keep secret) marked as secrets in plain text, which the CLI
//   encrypts with the stack's secrets provider on import.
import * as crypto from "node:crypto";
import { typeOf } from "../support/pulumiCli";
import type { RecordedState } from "./record";
import { UPGRADE_RESOURCES, type UpgradeType } from "./scenario";

/** The signature key and value of a secret in a deployment (`{ SIG: SECRET, plaintext | ciphertext }`). */
export const SECRET_SIG_KEY = "4dabf18193072939515e22adb298388d";
export const SECRET_SIG = "1b47061264138c4ac30d75fd1eb44270";

/**
 * The outputs each class makes secret (provider/index.ts: secretOpts, the additionalSecretOutputs every constructor
 * passes); the same keys are secret inputs there (secretInput).
 */
export const SECRET_KEYS: Record<UpgradeType | "DomainBackup", readonly string[]> = {
    DomainSnapshot: ["connection"],
    DomainCheckpoint: ["connection"],
    SnapshotRevert: ["connection"],
    RestorePoint: ["connection", "targets"],
    DomainBackup: ["connection"],
};

export const STACK_TYPE = "pulumi:pulumi:Stack";
export const NODEJS_PROVIDER_TYPE = "pulumi:providers:pulumi-nodejs";

export interface DeploymentResource {
    urn: string;
    custom: boolean;
    id?: string;
    type: string;
    inputs?: Record<string, unknown>;
    outputs?: Record<string, unknown>;
    parent?: string;
    provider?: string;
    dependencies?: string[];
    additionalSecretOutputs?: string[];
}

/** `pulumi stack export`'s format, which `pulumi stack import` reads. */
export interface Deployment {
    version: 3;
    deployment: {
        manifest: { time: string; magic: string; version: string };
        /** The stack's own (`pulumi stack export` of the stack shows it): the CLI encrypts plain-text secrets with it. */
        secrets_providers?: { type: string; state: unknown };
        resources: DeploymentResource[];
    };
}

export interface Target {
    project: string;
    stack: string;
    /**
     * The stack's config (`pulumi config --json`: key → { value, secret }). The engine gives the default provider of a
     * dynamic resource the whole stack config as its inputs and outputs (pkg/resource/deploy/target.go,
     * GetPackageConfig), and `pulumi refresh` and `pulumi destroy` configure the provider from the state, not from
     * the config: without it they run every resource against local virsh.
     */
    config?: Record<string, { value: string; secret?: boolean }>;
    /** Required when the record holds a secret: without it the CLI can't encrypt one on import. */
    secretsProviders?: { type: string; state: unknown };
    /** The default provider's id (the engine makes a random UUID). */
    providerId?: string;
}

/** A URN in the target's stack. */
export function urn(t: Pick<Target, "project" | "stack">, type: string, name: string): string {
    return `urn:pulumi:${t.stack}::${t.project}::${type}::${name}`;
}

export function stackUrn(t: Pick<Target, "project" | "stack">): string {
    return urn(t, STACK_TYPE, `${t.project}-${t.stack}`);
}

export function defaultProviderUrn(t: Pick<Target, "project" | "stack">): string {
    return urn(t, NODEJS_PROVIDER_TYPE, "default");
}

function isHarnessSecret(v: unknown): v is { value: unknown } {
    return typeof v === "object" && v !== null && (v as Record<string, unknown>)[SECRET_SIG_KEY] === SECRET_SIG && "value" in v;
}

/** A secret as a deployment to import may hold it: the CLI encrypts it when it saves the state. */
function plaintextSecret(value: unknown): Record<string, unknown> {
    return { [SECRET_SIG_KEY]: SECRET_SIG, plaintext: JSON.stringify(unwrapped(value)) };
}

function unwrapped(v: unknown): unknown {
    if (isHarnessSecret(v)) return unwrapped(v.value);
    if (Array.isArray(v)) return v.map(unwrapped);
    if (v && typeof v === "object") return Object.fromEntries(Object.entries(v).map(([k, x]) => [k, unwrapped(x)]));
    return v;
}

/** Secret envelopes of the gRPC form (`value`), anywhere, and the keys the class keeps secret, as plain-text secrets. */
function withSecrets(props: Record<string, unknown>, secretKeys: readonly string[], found: { count: number }): Record<string, unknown> {
    const mark = (v: unknown): unknown => {
        if (isHarnessSecret(v)) {
            found.count++;
            return plaintextSecret(v);
        }
        if (Array.isArray(v)) return v.map(mark);
        if (v && typeof v === "object") return Object.fromEntries(Object.entries(v).map(([k, x]) => [k, mark(x)]));
        return v;
    };
    return Object.fromEntries(
        Object.entries(props).map(([k, v]) => {
            if (v !== undefined && v !== null && secretKeys.includes(k)) {
                found.count++;
                return [k, plaintextSecret(v)];
            }
            return [k, mark(v)];
        }),
    );
}

export function toDeployment(rec: RecordedState, target: Target): Deployment {
    const stack = stackUrn(target);
    const provider = defaultProviderUrn(target);
    const providerRef = `${provider}::${target.providerId ?? crypto.randomUUID()}`;
    const secrets = { count: 0 };
    const made = new Map<string, string>();
    const providerConfig = () =>
        Object.fromEntries(
            Object.entries(target.config ?? {}).map(([k, c]) => {
                if (!c.secret) return [k, c.value];
                secrets.count++;
                return [k, plaintextSecret(c.value)];
            }),
        );
    const resources: DeploymentResource[] = [
        { urn: stack, custom: false, type: STACK_TYPE },
        {
            urn: provider,
            custom: true,
            id: providerRef.split("::").pop()!,
            type: NODEJS_PROVIDER_TYPE,
            inputs: providerConfig(),
            outputs: providerConfig(),
        },
    ];
    for (const r of rec.resources) {
        const declared = UPGRADE_RESOURCES.find((x) => x.name === r.name && x.type === r.type);
        if (!declared) throw new Error(`${r.name} (${r.type}) is not a resource of the upgrade scenario (test/upgrade/scenario.ts)`);
        const type = typeOf(declared.type);
        const dependencies = (declared.dependsOn ?? []).map((d) => {
            const u = made.get(d);
            if (!u) throw new Error(`${r.name} depends on ${d}, which the record does not hold before it`);
            return u;
        });
        const secretKeys = SECRET_KEYS[declared.type];
        const res: DeploymentResource = {
            urn: urn(target, type, r.name),
            custom: true,
            id: r.id,
            type,
            inputs: withSecrets(r.inputs, secretKeys, secrets),
            outputs: withSecrets(r.outs, secretKeys, secrets),
            parent: stack,
            provider: providerRef,
            dependencies,
            additionalSecretOutputs: [...secretKeys],
        };
        resources.push(res);
        made.set(r.name, res.urn);
    }
    if (secrets.count > 0 && !target.secretsProviders)
        throw new Error(
            `the deployment would hold ${secrets.count} secret(s): give the stack's secrets provider, or the CLI can't encrypt them`,
        );
    // The CLI checks the magic cookie on import: the SHA-256 of the manifest's version (pkg/resource/deploy/manifest.go).
    const version = `test/upgrade/toDeployment.ts, from a record of ${rec.version}`;
    return {
        version: 3,
        deployment: {
            manifest: { time: new Date().toISOString(), magic: crypto.createHash("sha256").update(version).digest("hex"), version },
            ...(target.secretsProviders ? { secrets_providers: target.secretsProviders } : {}),
            resources,
        },
    };
}
