// From Pulumi inputs to validated values: the shared zod pieces every resource
// uses, and the conversion of zod issues into check failures that name the
// property. Unknown values (preview) are set aside before validation.
import * as path from "node:path";
import { z } from "zod";
import { LONE_SURROGATE, NOT_UNICODE, UNKNOWN } from "./connection";
import type { MakerMark } from "./host/xml";

export interface CheckFailure {
    property: string;
    reason: string;
    /** What the input names isn't on the host (yet): another resource of the same run may be about to make it. */
    absent?: true;
}

/**
 * The inputs whose values came from other resources (Outputs or Promises when the program declared them), as the
 * constructors record them. At `pulumi preview` the engine gives a resource it is about to create its inputs as known
 * outputs, so a DomainSnapshot's `snapshotName` names a snapshot that doesn't exist yet: check can't refuse its
 * absence. Kept apart from the declared inputs.
 */
export const FROM_RESOURCES = "__fromResources";

/**
 * The resource's URN, as the constructors record it: a snapshot or checkpoint carries it in its copy of the domain's
 * metadata (moments/maker.ts), so a create cut off before the engine recorded it is known again. Kept apart from the
 * declared inputs.
 */
export const MAKER = "__maker";

/** The maker's mark for a snapshot or checkpoint of this name, from the inputs; none where the URN wasn't recorded. */
export function makerMark(news: Record<string, unknown>, name: string): MakerMark | undefined {
    const resource = news[MAKER];
    return typeof resource === "string" && resource ? { resource, name } : undefined;
}

const NO_CONTROL = /[\u0000-\u001f\u007f]/;
// XML 1.0 can't carry most control characters; tab and LF are fine. CR is a
// character, but every XML parser turns it into LF, so it can't round-trip.
const XML_FORBIDDEN = /[\u0000-\u0008\u000b\u000c\u000e-\u001f\ufffe\uffff]/;
/** U+FFFE and U+FFFF are not XML characters: libvirt's parser rejects the whole document. */
const XML_NONCHARACTER = /[\ufffe\uffff]/;
/** What virsh's domain lookup reads as a domain ID (strtol, base 10, leading blanks and '+' allowed) before it tries names. */
const DOMAIN_ID = /^ *\+?[0-9]+$/;

/**
 * A snapshot or checkpoint name. libvirt accepts some names and then breaks
 * on them (measured on libvirt 9.0): '"' and '\' corrupt a running domain's snapshot, and
 * names over 247 bytes leave an orphan qcow2 snapshot behind.
 */
export function momentName(what: string) {
    return z
        .string({ error: `must be a string (the ${what} name)` })
        .min(1, { error: "must not be empty" })
        .refine((s) => Buffer.byteLength(s, "utf8") <= 247, {
            error: "must be at most 247 bytes long: libvirt 9.0 leaves an orphan qcow2 snapshot behind for longer names",
        })
        .refine((s) => !s.includes("/"), { error: "must not contain '/': libvirt keeps its metadata in a file named after it" })
        .refine((s) => !/["\\]/.test(s), {
            error:
                "must not contain '\"' or '\\': libvirt accepts them but saves no data into qcow2 on a " +
                "running domain, and a later revert kills the VM",
        })
        .refine((s) => !s.startsWith("-"), { error: "must not start with '-': virsh would read it as an option" })
        .refine((s) => !NO_CONTROL.test(s), { error: "must not contain control characters (newlines, tabs, NUL)" })
        .refine((s) => !LONE_SURROGATE.test(s), { error: NOT_UNICODE })
        .refine((s) => !XML_NONCHARACTER.test(s), {
            error: "must not contain U+FFFE or U+FFFF: they are not XML characters, and libvirt rejects the snapshot XML",
        })
        .refine((s) => s !== "." && s !== "..", { error: "must not be '.' or '..'" })
        .refine((s) => s.trim() === s, { error: "must not start or end with whitespace" });
}

/** A domain, by name or UUID. */
export const domainRef = z
    .string({ error: "must be a string (a domain name or UUID)" })
    .min(1, { error: "must not be empty" })
    .max(1024, { error: "must be at most 1024 characters" })
    .refine((s) => !s.includes("/"), { error: "must not contain '/'" })
    .refine((s) => !s.startsWith("-"), { error: "must not start with '-': virsh would read it as an option" })
    .refine((s) => !NO_CONTROL.test(s), { error: "must not contain control characters" })
    .refine((s) => !LONE_SURROGATE.test(s), { error: NOT_UNICODE })
    .refine((s) => !DOMAIN_ID.test(s), {
        error:
            "must not be a number: virsh looks a number up as a domain ID first, so it may find " +
            "another, running domain. Give the domain's UUID instead",
    });

/** A flag. */
export const trueOrFalse = z.boolean({ error: "must be true or false" });

export const description = z
    .string({ error: "must be a string" })
    .min(1, { error: "must not be empty: libvirt keeps no empty description; leave description unset instead" })
    .max(65536, { error: "must be at most 64 KiB" })
    .refine((s) => !XML_FORBIDDEN.test(s), {
        error: "must not contain control characters other than tab and newline: XML cannot carry them",
    })
    .refine((s) => !s.includes("\r"), {
        error:
            "must not contain carriage returns (CR): XML turns every CR into a newline, so libvirt " +
            "would keep a different description. Use \\n line breaks",
    })
    .refine((s) => !LONE_SURROGATE.test(s), { error: NOT_UNICODE });

/** A path on the libvirt host: absolute and already normal, so '..' can't walk anywhere. */
function absoluteHostPath(what: "file" | "folder") {
    return (
        z
            .string({ error: "must be a string (an absolute path on the libvirt host)" })
            .min(1, { error: "must not be empty" })
            .max(4096, { error: "must be at most 4096 bytes" })
            .refine((s) => !NO_CONTROL.test(s), { error: "must not contain control characters" })
            .refine((s) => !LONE_SURROGATE.test(s), { error: NOT_UNICODE })
            .refine((s) => !XML_NONCHARACTER.test(s), {
                error:
                    "must not contain U+FFFE or U+FFFF: they are not XML characters, and libvirt rejects the " +
                    `${what === "file" ? "snapshot" : "backup"} XML`,
            })
            .refine((s) => s.startsWith("/"), { error: "must be an absolute path on the libvirt host" })
            .refine((s) => path.posix.normalize(s) === s && !s.split("/").includes(".."), {
                error: "must be a normal absolute path, without '..', '.' or '//' segments",
            })
            .refine((s) => s === "/" || !s.endsWith("/"), {
                error: what === "file" ? "must name a file, not a directory" : "must not end with '/'",
            })
            .refine((s) => s.split("/").every((seg) => Buffer.byteLength(seg, "utf8") <= 255), {
                error: "must not have a path component longer than 255 bytes (the file system's limit for a name)",
            })
            // libvirt 9.0 escapes ',' as ',,' for qemu's option syntax, then passes an offline overlay's path to
            // qemu-img create as a plain file name: the overlay lands at another path, and the domain points at a missing file.
            .refine((s) => !s.includes(","), {
                error:
                    what === "file"
                        ? "must not contain ',': libvirt 9.0 creates an offline overlay at the path with every ',' " +
                          "doubled and then points the domain at the path as given, which does not exist"
                        : "must not contain ',': libvirt doubles every ',' in a path it hands to qemu, so files in it may land elsewhere",
            })
    );
}

/** A file on the libvirt host. */
export const hostPath = absoluteHostPath("file").refine((s) => s !== "/", { error: "must name a file, not a directory" });

/** A folder on the libvirt host. */
export const hostFolder = absoluteHostPath("folder");

export const timeoutSeconds = z
    .number({ error: "must be a number of seconds" })
    .int({ error: "must be a whole number of seconds" })
    .min(1, { error: "must be at least 1" })
    .max(86400, { error: "must be at most 86400 (a day)" });

/** The room check asks for beside each overlay a snapshot makes; see DEFAULT_SPACE_MARGIN_MIB in snapshot/space.ts. */
export const spaceMarginMiB = z
    .number({ error: "must be a number of MiB: the free space preview asks for beside each overlay file" })
    .int({ error: "must be a whole number of MiB" })
    .min(0, { error: "must be at least 0 (0 asks for no room beyond what the overlay itself needs)" })
    .max(1024 * 1024, { error: "must be at most 1048576 (1 TiB)" });

/** Drop unknown values (preview) so the known part can still be validated. */
export function withoutUnknowns(v: unknown): { value: unknown; unknownPaths: string[] } {
    const unknownPaths: string[] = [];
    const walk = (x: unknown, at: PropertyKey[]): unknown => {
        if (x === UNKNOWN) {
            unknownPaths.push(propertyPath(at));
            return undefined;
        }
        if (Array.isArray(x)) return x.map((e, i) => walk(e, [...at, i]));
        if (x && typeof x === "object") {
            const o: Record<string, unknown> = {};
            for (const [k, val] of Object.entries(x)) {
                const w = walk(val, [...at, k]);
                if (w !== undefined) o[k] = w;
            }
            return o;
        }
        return x;
    };
    return { value: walk(v, []), unknownPaths };
}

function propertyPath(p: readonly PropertyKey[]): string {
    let out = "";
    for (const seg of p) out += typeof seg === "number" ? `[${seg}]` : out ? `.${String(seg)}` : String(seg);
    return out;
}

export function failuresOf(error: z.ZodError): CheckFailure[] {
    return error.issues.map((i) => {
        if (i.code === "unrecognized_keys") {
            const where = propertyPath(i.path);
            const names = i.keys.map((k) => `'${k}'`).join(", ");
            return {
                property: where || i.keys[0]!,
                reason: `unknown propert${i.keys.length > 1 ? "ies" : "y"} ${names}${where ? ` in ${where}` : ""}`,
            };
        }
        return { property: propertyPath(i.path), reason: i.message };
    });
}

/** Remove the engine's bookkeeping keys before validation. */
export function userInputs(news: Record<string, unknown>): Record<string, unknown> {
    const { __provider: _p, [FROM_RESOURCES]: _f, [MAKER]: _m, ...rest } = news;
    return rest;
}

export type Parsed<T> = { ok: true; value: T; hasUnknowns: boolean } | { ok: false; failures: CheckFailure[]; hasUnknowns: boolean };

export function parseInputs<S extends z.ZodType>(
    schema: S,
    news: Record<string, unknown>,
    opts: { allowUnknowns: boolean },
): Parsed<z.infer<S>> {
    const { value, unknownPaths } = opts.allowUnknowns ? withoutUnknowns(userInputs(news)) : { value: userInputs(news), unknownPaths: [] };
    const hasUnknowns = unknownPaths.length > 0;
    const r = schema.safeParse(value);
    if (!r.success) {
        // At preview a value may just be unknown yet: don't report what we can't see.
        const failures = failuresOf(r.error).filter(
            (f) => !unknownPaths.some((u) => f.property === u || f.property.startsWith(`${u}.`) || f.property.startsWith(`${u}[`)),
        );
        return { ok: false, failures, hasUnknowns };
    }
    return { ok: true, value: r.data as z.infer<S>, hasUnknowns };
}

/** Throw a validation failure as a single clear error (create/update/delete paths). */
export class InputError extends Error {
    constructor(readonly failures: CheckFailure[]) {
        super(failures.map((f) => (f.property ? `${f.property}: ${f.reason}` : f.reason)).join("; "));
        this.name = "InvalidInputError";
    }
}
