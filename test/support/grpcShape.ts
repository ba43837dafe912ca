// The shape of a call to a resource provider: its method, and the fields of its request and response with the
// property names they carry, never a value (the engine's calls carry decrypted inputs, the private key among them).
// One form for both sides of issue #22's comparison: the calls the real engine made (a PULUMI_DEBUG_GRPC log,
// whose messages are protojson) and the calls test/harness/engine.ts made (google-protobuf messages).

/** One call to the provider, as its shape. */
export interface CallShape {
    /** The method's short name: "Check", "Diff", ... */
    method: string;
    /** The request's fields, see shapeOf(). */
    request: string[];
    /** The response's fields, or "error" (no text: an error may quote inputs). */
    response: string[] | "error";
}

/** One line per call: `Method request-fields -> response-fields`. */
export function formatCall(c: CallShape): string {
    return `${c.method} ${c.request.join(" ")} -> ${c.response === "error" ? "error" : c.response.join(" ")}`;
}

/** The field a shapeOf() entry is about. */
export function fieldOf(entry: string): string {
    return /^[^{[=]*/.exec(entry)![0];
}

/** Fields whose value is a list of property names, shown in full: no input's value is in them. */
const NAME_LISTS = new Set(["replaces", "diffs", "stables", "ignorechanges"]);

/**
 * The keys in a value, at every depth, never a value: `{a,b{c},d[{e}]}` for { a: 1, b: { c: "x" }, d: [{ e: true }] }
 * (a list shows each distinct shape of its items), "" for a string, number, boolean or null.
 */
function keysOf(v: unknown): string {
    if (Array.isArray(v)) return `[${[...new Set(v.map(keysOf))].join("|")}]`;
    if (v && typeof v === "object")
        return `{${Object.keys(v)
            .sort()
            .map((k) => k + keysOf((v as Record<string, unknown>)[k]))
            .join(",")}}`;
    return "";
}

/**
 * The shape of one message in protojson form: its fields sorted, each as `name` (a string, number or bytes: no
 * value), `name=true` (a boolean, or the enum `changes`), `name{a,b{c}}` (a property map or map field: its keys at
 * every depth, see keysOf()), `name[a,b]` (a list of property names) or `name[n]` (another list: its length). Field
 * names are lower-cased: protojson writes `randomSeed` where google-protobuf's toObject() writes `randomseed`.
 */
export function shapeOf(msg: Record<string, unknown> | undefined): string[] {
    if (!msg) return [];
    const fields = Object.keys(msg).map((k) => {
        const name = k.toLowerCase();
        const v = msg[k];
        if (typeof v === "boolean" || name === "changes") return `${name}=${String(v)}`;
        if (Array.isArray(v)) return NAME_LISTS.has(name) ? `${name}[${v.join(",")}]` : `${name}[${v.length}]`;
        if (v && typeof v === "object") return name + keysOf(v);
        return name;
    });
    return fields.sort();
}

/** An entry of a PULUMI_DEBUG_GRPC log (sdk/go/pulumi-internal/rpcdebug/logformat.go). */
interface DebugLogEntry {
    method?: string;
    request?: Record<string, unknown>;
    response?: Record<string, unknown>;
    errors?: unknown;
}

/**
 * The calls to resource providers in a PULUMI_DEBUG_GRPC log, in the order they ended (each is logged when it starts,
 * without a response, and again when it ends). The language runtime's and the engine's own calls are left out.
 */
export function callsOfDebugLog(text: string): CallShape[] {
    const calls: CallShape[] = [];
    for (const line of text.split("\n")) {
        if (!line.trim()) continue;
        let e: DebugLogEntry;
        try {
            e = JSON.parse(line) as DebugLogEntry;
        } catch {
            continue;
        }
        if (!e.method?.startsWith("/pulumirpc.ResourceProvider/")) continue;
        if (e.response === undefined && e.errors === undefined) continue;
        calls.push({
            method: e.method.slice(e.method.lastIndexOf("/") + 1),
            request: shapeOf(e.request),
            response: e.errors ? "error" : shapeOf(e.response),
        });
    }
    return calls;
}

/** A google-protobuf message, as far as protoJson() needs it. */
interface JspbMessage {
    toObject(): Record<string, unknown>;
}

/**
 * A google-protobuf message in the form protojson gives it (the PULUMI_DEBUG_GRPC log's), as far as a shape tells:
 * fields at their zero value ("", 0, false, an empty list or map, an unset message) left out, a Struct as the object
 * it holds, a map field as an object, toObject()'s `List`/`Map` suffixes dropped, and an enum field named in `enums`
 * by its value's name.
 */
export function protoJson(msg: JspbMessage, enums: Record<string, Record<string, number>> = {}): Record<string, unknown> {
    const out: Record<string, unknown> = {};
    for (const [k, v] of Object.entries(msg.toObject())) {
        if (v === undefined || v === null || v === "" || v === 0 || v === false) continue;
        if (Array.isArray(v) && v.length === 0) continue;
        if (k.endsWith("Map") && Array.isArray(v)) {
            out[k.slice(0, -3)] = Object.fromEntries(v as Array<[string, unknown]>);
        } else if (k.endsWith("List") && Array.isArray(v)) {
            out[k.slice(0, -4)] = v;
        } else if (isStruct(v)) {
            out[k] = fromStruct(v);
        } else if (typeof v === "number" && enums[k]) {
            out[k] = Object.entries(enums[k]).find(([, n]) => n === v)?.[0] ?? v;
        } else {
            out[k] = v;
        }
    }
    return out;
}

/** A google.protobuf.Struct or Value as toObject() gives it. */
interface StructObject {
    fieldsMap: Array<[string, ValueObject]>;
}
interface ValueObject {
    structValue?: StructObject;
    listValue?: { valuesList: ValueObject[] };
    stringValue?: string;
    numberValue?: number;
    boolValue?: boolean;
}

function isStruct(v: unknown): v is StructObject {
    return typeof v === "object" && v !== null && Array.isArray((v as { fieldsMap?: unknown }).fieldsMap);
}

/** A Struct's toObject() form as the JavaScript value it holds; the scalars as such, for a shape only tells their keys. */
function fromStruct(s: StructObject): Record<string, unknown> {
    const value = (v: ValueObject): unknown =>
        v.structValue
            ? fromStruct(v.structValue)
            : v.listValue
              ? v.listValue.valuesList.map(value)
              : ((v.stringValue || v.numberValue || v.boolValue) ?? null);
    return Object.fromEntries(s.fieldsMap.map(([k, v]) => [k, value(v)]));
}
