// Host-key trust: a pinned key or fingerprint, else the user's known_hosts.
// The check is on by default and fails closed.
import { createHash, createHmac } from "node:crypto";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";

export function fingerprint(blob: Buffer): string {
    return "SHA256:" + createHash("sha256").update(blob).digest("base64").replace(/=+$/, "");
}

/** The key type inside an SSH public-key blob (its first length-prefixed string). */
export function keyType(blob: Buffer): string {
    if (blob.length < 4) return "unknown";
    const n = blob.readUInt32BE(0);
    return blob.subarray(4, 4 + n).toString("latin1");
}

export type Verdict = { ok: true } | { ok: false; reason: "mismatch" | "unknown" | "revoked"; message: string };

interface KnownHostsEntry {
    marker?: string;
    patterns: string;
    type: string;
    blob: Buffer;
}

function parseKnownHosts(text: string): KnownHostsEntry[] {
    const out: KnownHostsEntry[] = [];
    for (const rawLine of text.split(/\r?\n/)) {
        const line = rawLine.trim();
        if (!line || line.startsWith("#")) continue;
        const f = line.split(/\s+/);
        let marker: string | undefined;
        if (f[0]?.startsWith("@")) marker = f.shift();
        if (f.length < 3) continue;
        out.push({ marker, patterns: f[0]!, type: f[1]!, blob: Buffer.from(f[2]!, "base64") });
    }
    return out;
}

function globToRegExp(glob: string): RegExp {
    const esc = glob
        .replace(/[.+^${}()|[\]\\]/g, "\\$&")
        .replace(/\*/g, ".*")
        .replace(/\?/g, ".");
    return new RegExp(`^${esc}$`, "i");
}

/** Does a known_hosts host field match this host? Handles hashed names, globs and negation. */
function hostMatches(patterns: string, hostField: string): boolean {
    if (patterns.startsWith("|1|")) {
        const [, , salt, hash] = patterns.split("|");
        if (!salt || !hash) return false;
        const mac = createHmac("sha1", Buffer.from(salt, "base64")).update(hostField).digest("base64");
        return mac === hash;
    }
    let matched = false;
    for (const p of patterns.split(",")) {
        if (p.startsWith("!")) {
            if (globToRegExp(p.slice(1)).test(hostField)) return false;
        } else if (globToRegExp(p).test(hostField)) matched = true;
    }
    return matched;
}

export interface TrustSettings {
    host: string;
    port: number;
    hostKey?: string;
    knownHostsPath?: string;
    insecureIgnoreHostKey?: boolean;
}

export function defaultKnownHostsPath(): string {
    return path.join(os.homedir(), ".ssh", "known_hosts");
}

/** Decide whether to trust the key the server presented. */
export function verifyHostKey(t: TrustSettings, blob: Buffer): Verdict {
    if (t.insecureIgnoreHostKey) return { ok: true };
    const presented = `${keyType(blob)} key ${fingerprint(blob)}`;
    const where = `${t.host}:${t.port}`;
    if (t.hostKey) {
        const pin = t.hostKey.trim();
        const ok = pin.startsWith("SHA256:")
            ? pin.replace(/=+$/, "") === fingerprint(blob)
            : Buffer.from(pin.split(/\s+/)[1] ?? "", "base64").equals(blob);
        if (ok) return { ok: true };
        const pinned = pin.startsWith("SHA256:") ? pin : fingerprint(Buffer.from(pin.split(/\s+/)[1] ?? "", "base64"));
        return {
            ok: false,
            reason: "mismatch",
            message:
                `host key verification failed for ${where}: the server presented ${presented}, ` +
                `but connection.hostKey pins ${pinned}. If the host was reinstalled, check the new key out of band ` +
                `(ssh-keyscan -p ${t.port} ${t.host}) and update connection.hostKey.`,
        };
    }
    const file = t.knownHostsPath ?? defaultKnownHostsPath();
    let text = "";
    try {
        text = fs.readFileSync(file, "utf8");
    } catch {
        /* a missing file means no entry */
    }
    const hostField = t.port === 22 ? t.host : `[${t.host}]:${t.port}`;
    const entries = parseKnownHosts(text).filter((e) => hostMatches(e.patterns, hostField));
    if (entries.some((e) => e.marker === "@revoked" && e.blob.equals(blob))) {
        return {
            ok: false,
            reason: "revoked",
            message: `host key verification failed for ${where}: ${presented} is marked @revoked in ${file}.`,
        };
    }
    const plain = entries.filter((e) => !e.marker);
    if (plain.some((e) => e.blob.equals(blob))) return { ok: true };
    if (plain.length > 0) {
        return {
            ok: false,
            reason: "mismatch",
            message:
                `host key verification failed for ${where}: the server presented ${presented}, which does not match ` +
                `the key recorded for ${hostField} in ${file} (${plain.map((e) => `${e.type} ${fingerprint(e.blob)}`).join(", ")}). ` +
                `The host key has changed: someone may be intercepting the connection, or the host was reinstalled. ` +
                `Check the new key out of band, then fix ${file} (ssh-keygen -R '${hostField}').`,
        };
    }
    return {
        ok: false,
        reason: "unknown",
        message:
            `host key verification failed for ${where}: ${hostField} is not in ${file} and connection.hostKey is not set ` +
            `(the server presented ${presented}). Pin it with connection.hostKey (the line from ssh-keyscan -p ${t.port} ${t.host}), ` +
            `or add it to ${file}. Only for throwaway test hosts: insecureIgnoreHostKey: true.`,
    };
}
