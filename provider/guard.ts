// What leaves the provider: secrets sealed, errors redacted. Every call the
// shims make goes through guarded().
import { SECRET_FIELDS, secretsOf, type Connection } from "./connection";
import { LibvirtError, redact } from "./errors";
import { initFailure, isInitFailure } from "./failures";
import { stackSecrets } from "./stackConfig";

type Methods = Record<string, (...args: never[]) => Promise<unknown>>;

// Pulumi's wire marker for a secret value (the SDK's specialSigKey / specialSecretSig).
const SECRET_SIG_KEY = "4dabf18193072939515e22adb298388d";
const SECRET_SIG = "1b47061264138c4ac30d75fd1eb44270";

/**
 * Outputs carry the connection, because delete and refresh get nothing else.
 * Its password and keys leave the provider only wrapped as Pulumi secrets, so
 * the engine keeps them encrypted in state whatever the program passed in.
 */
function sealSecrets(v: unknown): unknown {
    if (Array.isArray(v)) return v.map(sealSecrets);
    if (!v || typeof v !== "object" || SECRET_SIG_KEY in v) return v;
    const out: Record<string, unknown> = {};
    for (const [k, x] of Object.entries(v)) {
        out[k] =
            (SECRET_FIELDS as readonly string[]).includes(k) && typeof x === "string"
                ? { [SECRET_SIG_KEY]: SECRET_SIG, value: x }
                : sealSecrets(x);
    }
    return out;
}

/** The engine strips secret markers before calling a provider that doesn't accept secrets; do the same for any that reach us. */
function openSecrets(v: unknown): unknown {
    if (Array.isArray(v)) return v.map(openSecrets);
    if (!v || typeof v !== "object") return v;
    const o = v as Record<string, unknown>;
    if (o[SECRET_SIG_KEY] === SECRET_SIG) return openSecrets(o.value);
    const out: Record<string, unknown> = {};
    for (const [k, x] of Object.entries(o)) out[k] = openSecrets(x);
    return out;
}

/** Whatever goes wrong, no password or key text leaves the provider in an error. */
export function guarded<T extends Methods>(impl: T): T {
    const out: Methods = {};
    for (const [name, fn] of Object.entries(impl)) {
        out[name] = async (...raw: unknown[]) => {
            const args = raw.map(openSecrets);
            try {
                // The wrapper only passes through what the server gave it.
                const result = (await (fn as (...a: unknown[]) => Promise<unknown>)(...args)) as Record<string, unknown> | undefined;
                if (result && typeof result === "object") {
                    for (const key of ["outs", "props", "inputs"]) if (key in result) result[key] = sealSecrets(result[key]);
                }
                return result;
            } catch (e) {
                const secrets = args
                    .flatMap((a) => {
                        const c = (a && typeof a === "object" ? (a as { connection?: unknown }).connection : undefined) as
                            Connection | undefined;
                        const targets =
                            (a && typeof a === "object" ? (a as { targets?: Array<{ connection?: Connection }> }).targets : undefined) ??
                            [];
                        return [
                            ...secretsOf(typeof c === "object" ? c : undefined),
                            ...(Array.isArray(targets) ? targets.flatMap((t) => secretsOf(t?.connection)) : []),
                        ];
                    })
                    .concat(stackSecrets());
                // Always a fresh Error without a numeric `code`: the dynamic-provider server
                // turns such a code into the gRPC status, and a non-Error is never answered.
                const message = redact(e instanceof Error ? e.message : String(e), secrets);
                const clean = e instanceof LibvirtError ? new LibvirtError(e.kind, message) : new Error(message);
                if (e instanceof Error) clean.name = e.name;
                // A create that may have half-happened reports what exists (an init failure), so the next up converges.
                // The dynamic-provider server adds the provider's text (__provider) to the outputs of a success
                // but stores an init failure's properties as they are; without it the next destroy or
                // replacement of that resource can't load the provider. So it is carried along here.
                if (isInitFailure(e)) {
                    const providerText = args
                        .map((a) => (a && typeof a === "object" ? (a as { __provider?: unknown }).__provider : undefined))
                        .reverse()
                        .find((p): p is string => typeof p === "string");
                    const properties = {
                        ...(sealSecrets(e.properties) as Record<string, unknown>),
                        ...(providerText ? { __provider: providerText } : {}),
                    };
                    initFailure(clean, { id: e.id, properties, reasons: e.reasons.map((r) => redact(r, secrets)) });
                }
                throw clean;
            }
        };
    }
    return out as T;
}
