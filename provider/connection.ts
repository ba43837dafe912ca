// The `connection` input: where virsh runs and how to reach it. Modelled on
// @pulumi/command's remote.Connection, plus libvirtUri and sudo. The zod schema
// is the single source of truth for its type and its validation.
import { createHash } from "node:crypto";
import { z } from "zod";

/** Unknown values at preview arrive as this string (the engine's marker for "not known yet"). */
export const UNKNOWN = "04da6b54-80e4-46f7-96ec-b56ff0331ba9";

/** The stack-config namespace: `pulumi config set libvirt-snapshots:host kvm1`. */
export const CONFIG_NAMESPACE = "libvirt-snapshots";

const noControl = (s: string) => !/[\u0000-\u001f\u007f]/.test(s);

/** An unpaired UTF-16 surrogate has no UTF-8 form: Node writes it as U+FFFD, so the host would get another string. */
export const LONE_SURROGATE = /\p{Cs}/u;
export const NOT_UNICODE =
    "must be valid Unicode: it holds an unpaired surrogate (U+D800 to U+DFFF), which has no " +
    "UTF-8 form, so it would reach the host as U+FFFD";
const validUnicode = (s: string) => !LONE_SURROGATE.test(s);

const hostName = z
    .string()
    .min(1, { error: "must not be empty" })
    .refine(noControl, { error: "must not contain control characters" })
    .refine(validUnicode, { error: NOT_UNICODE })
    .refine((s) => !/\s/.test(s), { error: "must not contain whitespace" })
    .refine((s) => !s.startsWith("-"), { error: "must not start with '-'" })
    .refine((s) => !/[@/]/.test(s), { error: "must be a host name or address, without user@ or a path" });

const userName = z
    .string()
    .min(1, { error: "must not be empty" })
    .max(64, { error: "must be at most 64 characters" })
    .regex(/^[A-Za-z0-9_][A-Za-z0-9_.-]*\$?$/, {
        error: "must be a POSIX user name (letters, digits, '_', '.', '-', not starting with '-')",
    });

const secretText = z
    .string()
    .refine((s) => !s.includes("\u0000"), { error: "must not contain NUL" })
    .refine(validUnicode, { error: NOT_UNICODE });
const localPath = z
    .string()
    .min(1)
    .refine(noControl, { error: "must not contain control characters" })
    .refine(validUnicode, { error: NOT_UNICODE });

/** A fingerprint, or a public key line: its type, the base64 key, and an optional comment. */
const HOST_KEY_LINE = new RegExp(
    "^(SHA256:[A-Za-z0-9+/]{43}=?|" +
        "(ssh-(ed25519|rsa|dss)|ecdsa-sha2-nistp(256|384|521)|sk-[a-z0-9@.-]+) [A-Za-z0-9+/]+={0,2}( [^\\n]*)?)$",
);

const hostKeyText = z
    .string()
    .trim()
    .regex(HOST_KEY_LINE, {
        error:
            "must be the server's public key line ('ssh-ed25519 AAAA...', as in ssh-keyscan output) or " + "its fingerprint ('SHA256:...')",
    });

const port = z
    .number()
    .int({ error: "must be an integer" })
    .min(1, { error: "must be between 1 and 65535" })
    .max(65535, { error: "must be between 1 and 65535" });

/** Fields that reach an SSH server: the target itself and any jump host. */
const sshFields = {
    host: hostName,
    port: port.optional(),
    user: userName.optional(),
    password: secretText.optional(),
    privateKey: secretText.optional(),
    privateKeyPassword: secretText.optional(),
    agentSocketPath: localPath.optional(),
    hostKey: hostKeyText.optional(),
    knownHostsPath: localPath.optional(),
    insecureIgnoreHostKey: z.boolean().optional(),
    dialErrorLimit: z.number().int().min(1, { error: "must be at least 1" }).max(100, { error: "must be at most 100" }).optional(),
    perDialTimeout: z
        .number()
        .int()
        .min(1, { error: "must be at least 1 (seconds)" })
        .max(600, { error: "must be at most 600 (seconds)" })
        .optional(),
};

export const ProxySchema = z.strictObject(sshFields);
export type Proxy = z.infer<typeof ProxySchema>;

export const ConnectionSchema = z.strictObject({
    ...sshFields,
    // Without a host, virsh runs on the machine that runs Pulumi.
    host: hostName.optional(),
    proxy: ProxySchema.optional(),
    libvirtUri: z
        .string()
        .regex(/^[A-Za-z][A-Za-z0-9+.-]*:\/\/[^\s]*$/, { error: "must be a libvirt URI such as qemu:///system or qemu+ssh://host/system" })
        .refine(noControl, { error: "must not contain control characters" })
        .refine(validUnicode, { error: NOT_UNICODE })
        .optional(),
    sudo: z.boolean().optional(),
});
export type Connection = z.infer<typeof ConnectionSchema>;

export const DEFAULTS = {
    port: 22,
    user: "root",
    libvirtUri: "qemu:///system",
    dialErrorLimit: 10,
    perDialTimeout: 15,
} as const;

/** Field names that hold secrets: kept out of logs, errors and plain outputs. */
export const SECRET_FIELDS = ["password", "privateKey", "privateKeyPassword"] as const;

/** Fields whose change means "another place", so a snapshot there is another snapshot. */
const TARGET_FIELDS = ["host", "port", "libvirtUri"] as const;

export function secretsOf(c: Connection | undefined): string[] {
    if (!c) return [];
    const out: string[] = [];
    for (const f of SECRET_FIELDS) if (c[f]) out.push(c[f] as string);
    if (c.proxy) for (const f of SECRET_FIELDS) if (c.proxy[f]) out.push(c.proxy[f] as string);
    return out;
}

/** Where the snapshot lives; a change here means another snapshot. */
export function targetOf(c: Connection | undefined): string {
    const t: Record<string, unknown> = {};
    for (const f of TARGET_FIELDS) t[f] = c?.[f] ?? (f === "host" ? null : DEFAULTS[f as "port" | "libvirtUri"]);
    return JSON.stringify(t);
}

/** A key that tells SSH connections apart, with the credentials hashed. */
export function poolKeyOf(c: Connection): string {
    const h = createHash("sha256");
    h.update(
        JSON.stringify([
            c.host,
            c.port ?? DEFAULTS.port,
            c.user ?? DEFAULTS.user,
            c.password,
            c.privateKey,
            c.privateKeyPassword,
            c.agentSocketPath,
            c.hostKey,
            c.knownHostsPath,
            c.insecureIgnoreHostKey,
            c.proxy ?? null,
        ]),
    );
    return `${c.user ?? DEFAULTS.user}@${c.host}:${c.port ?? DEFAULTS.port}#${h.digest("hex").slice(0, 16)}`;
}

export function describeTarget(c: Connection | undefined): string {
    if (!c?.host) return `local virsh (${c?.libvirtUri ?? DEFAULTS.libvirtUri})`;
    return (
        `${c.user ?? DEFAULTS.user}@${c.host}:${c.port ?? DEFAULTS.port}` +
        (c.proxy ? ` via ${c.proxy.user ?? DEFAULTS.user}@${c.proxy.host}:${c.proxy.port ?? DEFAULTS.port}` : "") +
        ` (${c.libvirtUri ?? DEFAULTS.libvirtUri})`
    );
}

// ---- stack configuration -------------------------------------------------

const NUMBER_KEYS = new Set(["port", "dialErrorLimit", "perDialTimeout"]);
const BOOLEAN_KEYS = new Set(["insecureIgnoreHostKey", "sudo"]);
const CONFIG_KEYS = [...Object.keys(ConnectionSchema.shape)];

/**
 * The default connection from stack config (`libvirt-snapshots:host` and so
 * on). The engine sends every value as a string; numbers, booleans and the
 * proxy object (JSON) are converted here, then validated by the same schema.
 */
export function connectionFromConfig(get: (key: string) => string | undefined): { connection?: Connection; errors: string[] } {
    const raw: Record<string, unknown> = {};
    const errors: string[] = [];
    for (const key of CONFIG_KEYS) {
        const v = get(`${CONFIG_NAMESPACE}:${key}`);
        if (v === undefined || v === "") continue;
        if (NUMBER_KEYS.has(key)) raw[key] = /^\d+$/.test(v) ? Number(v) : v;
        else if (BOOLEAN_KEYS.has(key)) raw[key] = v === "true" ? true : v === "false" ? false : v;
        else if (key === "proxy") {
            try {
                raw[key] = JSON.parse(v);
            } catch {
                errors.push(`${CONFIG_NAMESPACE}:proxy must be a JSON object`);
            }
        } else raw[key] = v;
    }
    if (Object.keys(raw).length === 0) return { errors };
    const parsed = ConnectionSchema.safeParse(raw);
    if (!parsed.success) {
        for (const i of parsed.error.issues) errors.push(`${CONFIG_NAMESPACE}:${i.path.join(".")}: ${i.message}`);
        return { errors };
    }
    return { connection: parsed.data, errors };
}

/** A resource's own connection replaces the stack default as a whole, so a key
 * or host-key pin meant for one host never leaks to another. */
export function effectiveConnection(own: Connection | undefined, stackDefault: Connection | undefined): Connection {
    return own ?? stackDefault ?? {};
}
