// The stack's default connection (`pulumi config set libvirt-snapshots:host ...`),
// set by configure() and used by every resource that names no connection of its own.
import { type Connection, connectionFromConfig, effectiveConnection, secretsOf } from "./connection";
import { InputError } from "./inputs";

let stackDefault: { connection?: Connection; errors: string[] } = { errors: [] };

export function setStackConfig(get: (key: string) => string | undefined): void {
    stackDefault = connectionFromConfig(get);
}

/** The connection a resource uses: its own, else the stack's default. */
export function resolveConnection(own: Connection | undefined): Connection {
    if (!own && stackDefault.errors.length) {
        // configure() must not throw (the server would keep an unconfigured provider), so bad stack config surfaces here.
        throw new InputError(stackDefault.errors.map((reason) => ({ property: "connection", reason: `from stack config: ${reason}` })));
    }
    return effectiveConnection(own, stackDefault.connection);
}

export function stackSecrets(): string[] {
    return secretsOf(stackDefault.connection);
}
