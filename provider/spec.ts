// A resource's spec: each input declared once, with its schema (which carries its default), its doc and what a
// change of it does. The zod object, the key lists check and diff use, and the docs the Args interfaces and the
// README are checked against (test/unit/spec.test.ts) all come from it.
import { z } from "zod";
import { ConnectionSchema } from "./connection";
import { domainRef, timeoutSeconds } from "./inputs";

/**
 * What a change of a declared input does:
 * - `replace`: a new one takes its place (deleted first when it would have the same name on the same domain);
 * - `update`: the same one, changed in place (or only recorded, for inputs that act at the next operation);
 * - `place`: the connection: another host, port or URI replaces, new credentials are only recorded;
 * - `members`: RestorePoint's domains: members are added or removed in place, the others stay.
 */
export type OnChange = "replace" | "update" | "place" | "members";

export interface Field<S extends z.ZodType = z.ZodType> {
    readonly schema: S;
    readonly onChange: OnChange;
    /** check asks the host about it, so at preview it waits until the value is known. */
    readonly checked: boolean;
    /** What the user reads: the Args interface's doc comment says the same, word for word. */
    readonly doc: string;
}

export function field<S extends z.ZodType>(onChange: OnChange, schema: S, doc: string, opts: { checked?: boolean } = {}): Field<S> {
    return { schema, onChange, checked: opts.checked ?? onChange === "replace", doc };
}

type Shape<F extends Record<string, Field>> = { [K in keyof F]: F[K]["schema"] };

export interface Spec<F extends Record<string, Field>> {
    readonly fields: F;
    /** The inputs as one strict object; a resource adds its cross-field rules with superRefine. */
    readonly object: z.ZodObject<Shape<F>, z.core.$strict>;
    /** Keys whose change replaces the resource. */
    readonly replaceKeys: ReadonlyArray<keyof F & string>;
    /** Keys whose change updates it in place. */
    readonly updateKeys: ReadonlyArray<keyof F & string>;
    /** Keys check waits on at preview: the host is asked about them. */
    readonly checkedKeys: ReadonlyArray<keyof F & string>;
    /** Keys whose change makes something new on the host, so check asks the host again. */
    readonly createKeys: ReadonlyArray<keyof F & string>;
}

export function spec<F extends Record<string, Field>>(fields: F): Spec<F> {
    const names = Object.keys(fields) as Array<keyof F & string>;
    const where = (test: (f: Field) => boolean) => names.filter((k) => test(fields[k]!));
    const shape = Object.fromEntries(names.map((k) => [k, fields[k]!.schema])) as Shape<F>;
    return {
        fields,
        object: z.strictObject(shape),
        replaceKeys: where((f) => f.onChange === "replace"),
        updateKeys: where((f) => f.onChange === "update"),
        checkedKeys: where((f) => f.checked && f.onChange !== "place"),
        createKeys: where((f) => f.onChange === "replace" || f.onChange === "members"),
    };
}

/** The fields most resources declare alike, with the same words. */
export const common = {
    /** The connection of a resource on one domain. */
    connection: field("place", ConnectionSchema.optional(), "Where the domain lives. Default: the stack config."),
    domain: field("replace", domainRef, "The domain's name or UUID."),
    /** The bound of each virsh command (DomainBackup's bounds its whole job instead). */
    timeoutSeconds: field("update", timeoutSeconds.optional(), "The time limit for each virsh command. Default 300."),
};
