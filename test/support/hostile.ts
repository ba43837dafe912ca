// Helpers of the hostile-input suite: how strings look after gRPC, the shape
// of the XML libvirt reports back, hostile-named domains, and the virsh
// wrapper whose log shows every argument vector the provider gave virsh.
import * as assert from "node:assert/strict";
import * as crypto from "node:crypto";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { createRequire } from "node:module";
import { XMLParser } from "fast-xml-parser";
import type { DomainSnapshotProvider } from "pulumi-libvirt-snapshots";
import { domainXml, loadLab, ownerAlive, ownerTag, qemuImgInfo, run, sleep, virshLocal, virshOk as virshOnce } from "./lab";

const lab = loadLab();
export type Provider = typeof DomainSnapshotProvider;

// What a string is once it crossed gRPC, encoded by the very protobuf library the
// SDK uses: google-protobuf drops a high surrogate that has no partner, and passes
// a lone low surrogate through (as CESU-8), which Node later writes as U+FFFD.
const structpb = createRequire(require.resolve("@pulumi/pulumi/package.json"))(
    "google-protobuf/google/protobuf/struct_pb",
) as typeof import("google-protobuf/google/protobuf/struct_pb");
export const wire = (s: string): string =>
    structpb.Struct.deserializeBinary(structpb.Struct.fromJavaScript({ v: s }).serializeBinary()).toJavaScript().v as string;

export const show = (s: string): string => JSON.stringify(s.length > 60 ? `${s.slice(0, 57)}...` : s);

// ---- small helpers -----------------------------------------------------------------

export const lines = (out: string) => out.split("\n").filter((l) => l !== "");

/** The suite's own virsh reads, patient with a libvirtd that another test run is restarting. */
export async function virshOk(args: readonly string[]): Promise<string> {
    for (let attempt = 0; ; attempt++) {
        try {
            return await virshOnce(args);
        } catch (e) {
            if (attempt >= 20 || !/failed to connect to the hypervisor/.test((e as Error).message)) throw e;
            await sleep(500);
        }
    }
}

export async function snapshotList(domain: string): Promise<string[]> {
    return lines(await virshOk(["snapshot-list", "--domain", domain, "--name"])).sort();
}
export async function checkpointList(domain: string): Promise<string[]> {
    return lines(await virshOk(["checkpoint-list", "--domain", domain, "--name"])).sort();
}
export async function qcow2Snapshots(disk: string): Promise<string[]> {
    return ((await qemuImgInfo(disk)).snapshots ?? []).map((s) => s.name).sort();
}

const ordered = new XMLParser({
    ignoreAttributes: false,
    attributeNamePrefix: "",
    preserveOrder: true,
    parseTagValue: false,
    parseAttributeValue: false,
    trimValues: false,
});
type XNode = Record<string, unknown>;
const tagOf = (n: XNode) => Object.keys(n).find((k) => k !== ":@")!;
const attrsOf = (n: XNode) => (n[":@"] ?? {}) as Record<string, string>;
const kids = (n: XNode) => (n[tagOf(n)] as XNode[]) ?? [];
const elements = (n: XNode) => kids(n).filter((k) => tagOf(k) !== "#text");
const textOf = (n: XNode) =>
    kids(n)
        .filter((k) => tagOf(k) === "#text")
        .map((k) => String(k["#text"]))
        .join("");

function rootOf(xml: string, tag: string): XNode {
    const doc = (ordered.parse(xml) as XNode[]).filter((n) => tagOf(n) !== "#text" && tagOf(n) !== "?xml");
    assert.equal(doc.length, 1, "one root element");
    assert.equal(tagOf(doc[0]!), tag);
    return doc[0]!;
}

/** Problems with a structure: stray text, unexpected elements or attributes. */
function structural(node: XNode, where: string, allowed: Record<string, [number, number]>, attrs: string[]): string[] {
    const out: string[] = [];
    for (const k of kids(node))
        if (tagOf(k) === "#text" && String(k["#text"]).trim() !== "") out.push(`${where}: stray text ${show(String(k["#text"]))}`);
    const counts = new Map<string, number>();
    for (const e of elements(node)) counts.set(tagOf(e), (counts.get(tagOf(e)) ?? 0) + 1);
    for (const [tag, n] of counts) if (!(tag in allowed)) out.push(`${where}: unexpected element <${tag}> (x${n})`);
    for (const [tag, [min, max]] of Object.entries(allowed)) {
        const n = counts.get(tag) ?? 0;
        if (n < min || n > max) out.push(`${where}: <${tag}> appears ${n} times, expected ${min === max ? min : `${min}..${max}`}`);
    }
    for (const a of Object.keys(attrsOf(node)))
        if (!attrs.includes(a)) out.push(`${where}: unexpected attribute ${a}=${show(attrsOf(node)[a]!)}`);
    return out;
}

interface SnapshotShape {
    name: string;
    description?: string;
    domainName: string;
    memory: { snapshot: string; file?: string };
    disks: Array<{ name: string; snapshot: string; file?: string }>;
}

/** The snapshot XML libvirt reports has exactly the declared structure, and the declared strings, literally. */
export function snapshotShapeProblems(xml: string, want: SnapshotShape): string[] {
    const root = rootOf(xml, "domainsnapshot");
    const out = structural(
        root,
        "<domainsnapshot>",
        {
            name: [1, 1],
            description: want.description === undefined ? [0, 0] : [1, 1],
            state: [1, 1],
            parent: [0, 1],
            creationTime: [1, 1],
            memory: [1, 1],
            disks: [1, 1],
            domain: [1, 1],
            active: [0, 1],
            cookie: [0, 1],
            inactiveDomain: [0, 1],
        },
        [],
    );
    const el = (tag: string) => elements(root).find((e) => tagOf(e) === tag);
    if (el("name") && textOf(el("name")!) !== want.name) out.push(`<name> is ${show(textOf(el("name")!))}, declared ${show(want.name)}`);
    if (want.description !== undefined && el("description") && textOf(el("description")!) !== want.description) {
        out.push(`<description> is ${show(textOf(el("description")!))}, declared ${show(want.description)}`);
    }
    const memory = el("memory");
    if (memory) {
        out.push(...structural(memory, "<memory>", {}, ["snapshot", "file"]));
        if (attrsOf(memory).snapshot !== want.memory.snapshot)
            out.push(`<memory snapshot=${show(attrsOf(memory).snapshot ?? "")}>, declared ${want.memory.snapshot}`);
        if (attrsOf(memory).file !== want.memory.file)
            out.push(`<memory file=${show(attrsOf(memory).file ?? "(none)")}>, declared ${show(want.memory.file ?? "(none)")}`);
    }
    const disks = el("disks");
    if (disks) {
        out.push(...structural(disks, "<disks>", { disk: [want.disks.length, want.disks.length] }, []));
        for (const d of elements(disks)) {
            const a = attrsOf(d);
            const w = want.disks.find((x) => x.name === a.name);
            if (!w) {
                out.push(`<disk name=${show(a.name ?? "")}> was not declared`);
                continue;
            }
            out.push(...structural(d, `<disk ${a.name}>`, { driver: [0, 1], source: [0, 1] }, ["name", "snapshot", "type"]));
            if (a.snapshot !== w.snapshot) out.push(`<disk ${a.name}> snapshot=${a.snapshot}, declared ${w.snapshot}`);
            const source = elements(d).find((e) => tagOf(e) === "source");
            if (w.file !== undefined && attrsOf(source ?? {}).file !== w.file)
                out.push(`<disk ${a.name}> source file ${show(attrsOf(source ?? {}).file ?? "(none)")}, declared ${show(w.file)}`);
        }
    }
    const domain = el("domain");
    const domainName = domain && elements(domain).find((e) => tagOf(e) === "name");
    if (!domainName || textOf(domainName) !== want.domainName)
        out.push(`<domain><name> is ${show(domainName ? textOf(domainName) : "(none)")}, expected ${show(want.domainName)}`);
    return out;
}

export function checkpointShapeProblems(xml: string, want: { name: string; description?: string; bitmap: string }): string[] {
    const root = rootOf(xml, "domaincheckpoint");
    const out = structural(
        root,
        "<domaincheckpoint>",
        {
            name: [1, 1],
            description: want.description === undefined ? [0, 0] : [1, 1],
            parent: [0, 1],
            creationTime: [1, 1],
            disks: [1, 1],
            domain: [0, 0],
        },
        [],
    );
    const el = (tag: string) => elements(root).find((e) => tagOf(e) === tag);
    if (el("name") && textOf(el("name")!) !== want.name) out.push(`<name> is ${show(textOf(el("name")!))}, declared ${show(want.name)}`);
    if (want.description !== undefined && el("description") && textOf(el("description")!) !== want.description) {
        out.push(`<description> is ${show(textOf(el("description")!))}, declared ${show(want.description)}`);
    }
    const disks = el("disks");
    if (disks) {
        out.push(...structural(disks, "<disks>", { disk: [1, 1] }, []));
        const d = elements(disks)[0];
        if (d) {
            out.push(...structural(d, "<disk>", {}, ["name", "checkpoint", "bitmap", "size"]));
            const a = attrsOf(d);
            if (a.name !== "vda" || a.checkpoint !== "bitmap" || a.bitmap !== want.bitmap)
                out.push(`<disk> is ${JSON.stringify(a)}, expected vda with bitmap ${show(want.bitmap)}`);
        }
    }
    return out;
}

/** The first disk's source file, as the domain XML says now. */
export async function diskSource(domain: string, inactive: boolean): Promise<string> {
    const root = rootOf(await virshOk(["dumpxml", "--domain", domain, ...(inactive ? ["--inactive"] : [])]), "domain");
    const devices = elements(root).find((e) => tagOf(e) === "devices")!;
    const disk = elements(devices).find((e) => tagOf(e) === "disk")!;
    return attrsOf(elements(disk).find((e) => tagOf(e) === "source")!).file!;
}

/**
 * Domain names are global on the host, so two runs of this suite (two checkouts,
 * two sessions) can't both define the hostile-named domains: the second waits.
 */
const RUN_LOCK = path.join(os.tmpdir(), "pulumi-libvirt-hostile.lock");

export async function takeRunLock(maxWaitMs: number): Promise<void> {
    const deadline = Date.now() + maxWaitMs;
    for (;;) {
        try {
            fs.writeFileSync(RUN_LOCK, ownerTag() + "\n", { flag: "wx" });
            return;
        } catch (e) {
            if ((e as NodeJS.ErrnoException).code !== "EEXIST") throw e;
            let holder = "";
            try {
                holder = fs.readFileSync(RUN_LOCK, "utf8");
            } catch {
                continue;
            }
            if (!ownerAlive(holder)) {
                fs.rmSync(RUN_LOCK, { force: true });
                continue;
            }
            if (Date.now() > deadline) throw new Error(`another run of the hostile suite (${holder.trim()}) holds ${RUN_LOCK}`);
            await sleep(2000);
        }
    }
}

export function dropRunLock(): void {
    try {
        if (fs.readFileSync(RUN_LOCK, "utf8").trim() === ownerTag()) fs.rmSync(RUN_LOCK, { force: true });
    } catch {
        /* not ours or gone */
    }
}

// Hostile-named domains get their own title, so the lab's cleanup (which goes by
// name) never hands one of these names to virsh.
const HOSTILE_TITLE = "pulumi-libvirt-hostile-tmp";

export interface HostileDomain {
    name: string;
    uuid: string;
    dir: string;
    disk: string;
}

export async function defineHostileDomain(value: string): Promise<HostileDomain | undefined> {
    const name = wire(value);
    if (name === "" || name.includes("\u0000")) return undefined;
    const dir = path.join(lab.tmpDiskDir, `labtmp-hostiledom-${crypto.randomBytes(4).toString("hex")}`);
    fs.mkdirSync(dir, { recursive: true });
    fs.writeFileSync(path.join(dir, "owner"), ownerTag() + "\n");
    const disk = path.join(dir, "disk.qcow2");
    const cleanup = () => fs.rmSync(dir, { recursive: true, force: true });
    const made = await run("/usr/bin/qemu-img", ["create", "-q", "-f", "qcow2", disk, "16M"]);
    if (made.code !== 0) {
        cleanup();
        throw new Error(`qemu-img create: ${made.stderr}`);
    }
    const uuid = crypto.randomUUID();
    // The first raw "</name>" closes the element: the name itself is escaped.
    const xml = domainXml({ name, title: `${HOSTILE_TITLE} ${ownerTag()}`, virtType: lab.virtType, disk, format: "qcow2" }).replace(
        "</name>",
        `</name>\n  <uuid>${uuid}</uuid>`,
    );
    const file = path.join(dir, "domain.xml");
    fs.writeFileSync(file, xml);
    const r = await virshLocal(["define", "--file", file]);
    if (r.code !== 0) {
        cleanup();
        return undefined;
    } // libvirt won't take this name: the provider must refuse it too
    const got = textOf(elements(rootOf(await virshOk(["dumpxml", "--domain", uuid]), "domain")).find((e) => tagOf(e) === "name")!);
    if (got !== name) {
        await undefineByUuid(uuid);
        cleanup();
        return undefined;
    }
    return { name, uuid, dir, disk };
}

export async function undefineByUuid(uuid: string): Promise<void> {
    await virshLocal(["destroy", "--domain", uuid]);
    await virshLocal(["undefine", "--domain", uuid, "--snapshots-metadata", "--checkpoints-metadata"]);
}

/** Hostile-named domains of runs that died before their cleanup. */
export async function removeStaleHostileDomains(): Promise<void> {
    for (const uuid of lines(await virshOk(["list", "--all", "--uuid"]))) {
        const r = await virshLocal(["dumpxml", "--domain", uuid.trim()]);
        if (r.code !== 0) continue;
        const root = rootOf(r.stdout, "domain");
        const title = textOf(elements(root).find((e) => tagOf(e) === "title") ?? {});
        if (!title.startsWith(`${HOSTILE_TITLE} `) || ownerAlive(title)) continue;
        await undefineByUuid(uuid.trim());
    }
    for (const name of fs.existsSync(lab.tmpDiskDir) ? fs.readdirSync(lab.tmpDiskDir) : []) {
        if (!name.startsWith("labtmp-hostiledom-")) continue;
        let tag = "";
        try {
            tag = fs.readFileSync(path.join(lab.tmpDiskDir, name, "owner"), "utf8");
        } catch {
            /* none */
        }
        if (!ownerAlive(tag)) fs.rmSync(path.join(lab.tmpDiskDir, name), { recursive: true, force: true });
    }
}

// ---- the virsh wrapper: every argument vector the provider gives virsh ----------

/** The wrapper's text (test/support/virshWrapper.ts installs it); DIR, quoted for the shell, gets its logs. */
export const virshWrapper = (dir: string) => `#!/bin/sh
# Logs its argument vector (NUL-separated, count first), then runs the real virsh.
# Without a command (only -c URI) virsh is a shell reading commands from stdin:
# those lines are logged too.
exec 3>>${dir}/$$
printf '%s\\0' "$#" "$@" >&3
exec 3>&-
if [ "$#" -le 2 ]; then
  tee -a ${dir}/$$.stdin | /usr/bin/virsh "$@"
  exit $?
fi
exec /usr/bin/virsh "$@"
`;

// --from: snapshot-list of an internal snapshot's external descendants (asked on libvirt 9.9 to 10.x only).
// --path: a disk target (blockjob --info, asked before refusing to delete an external snapshot outside the current chain).
const VALUE_OPTIONS = new Set(["--domain", "--snapshotname", "--checkpointname", "--xmlfile", "--from", "--path"]);
/** The flags each command may get in this suite (deletion is always "delete", so never --metadata). */
const FLAGS: Record<string, string[]> = {
    version: [],
    domcapabilities: [],
    capabilities: [],
    dumpxml: ["--inactive", "--security-info"],
    domstate: ["--reason"],
    "snapshot-create": ["--atomic", "--disk-only", "--redefine", "--current"],
    "snapshot-delete": [],
    "snapshot-dumpxml": ["--security-info"],
    "snapshot-info": [],
    "snapshot-list": ["--name", "--descendants", "--external"],
    // Deleting an external snapshot asks whether it is the current one or an ancestor of it.
    "snapshot-current": ["--name"],
    "snapshot-parent": [],
    "snapshot-revert": [],
    "checkpoint-create": ["--redefine", "--redefine-validate"],
    "checkpoint-delete": [],
    "checkpoint-dumpxml": ["--size", "--no-domain"],
    "checkpoint-info": [],
    "checkpoint-list": ["--name"],
    suspend: [],
    resume: [],
    domid: [],
    domjobinfo: [],
    blockjob: ["--info"],
};

/** Every command virsh ran: argument vectors of processes, and the commands of its shell sessions. */
export function readVirshLog(dir: string): { processes: string[][]; sessions: string[][]; sessionLines: number } {
    const processes = readArgvLog(dir).filter((a) => a.length > 2);
    const sessions: string[][] = [];
    let sessionLines = 0;
    for (const f of fs.readdirSync(dir).filter((x) => x.endsWith(".stdin"))) {
        for (const line of fs.readFileSync(path.join(dir, f), "utf8").split("\n")) {
            if (line === "") continue;
            sessionLines++;
            sessions.push(...virshShellCommands(line));
        }
    }
    return { processes, sessions, sessionLines };
}

/**
 * A line of virsh's shell split into commands the way virsh's tokenizer does it
 * (libvirt 9.0 vshCommandStringGetArg): blanks separate arguments, an unquoted
 * ';' separates commands, '...' is literal, "..." and a backslash escape.
 */
function virshShellCommands(line: string): string[][] {
    const commands: string[][] = [];
    let cmd: string[] = [];
    let i = 0;
    while (i < line.length) {
        while (line[i] === " " || line[i] === "\t") i++;
        if (i >= line.length) break;
        if (line[i] === ";") {
            commands.push(cmd);
            cmd = [];
            i++;
            continue;
        }
        if (line[i] === "#") break;
        let tok = "",
            single = false,
            double = false;
        while (i < line.length) {
            const c = line[i]!;
            if (!single && !double && (c === " " || c === "\t" || c === ";")) break;
            if (!double && c === "'") {
                single = !single;
                i++;
                continue;
            }
            if (!single && c === "\\") {
                tok += line[i + 1] ?? "";
                i += 2;
                continue;
            }
            if (!single && c === '"') {
                double = !double;
                i++;
                continue;
            }
            tok += c;
            i++;
        }
        cmd.push(tok);
    }
    if (cmd.length) commands.push(cmd);
    // The session's own handshake (every printable character, echoed) and markers: echo [--err] --xml '<S|E|P><nonce>x<n><'
    return commands.filter(
        (c) =>
            !(
                c[0] === "echo" &&
                (/^(--err --xml|--xml) [SEP][0-9a-f]+x\d+<$/.test(c.slice(1).join(" ")) || (c.length === 2 && c[1] === PRINTABLE))
            ),
    );
}

function readArgvLog(dir: string): string[][] {
    const out: string[][] = [];
    for (const f of fs.readdirSync(dir).filter((x) => !x.endsWith(".stdin"))) {
        const parts = fs.readFileSync(path.join(dir, f), "utf8").split("\0");
        parts.pop(); // after the last NUL
        for (let i = 0; i < parts.length;) {
            const n = Number(parts[i]);
            out.push(parts.slice(i + 1, i + 1 + n));
            i += 1 + n;
        }
    }
    return out;
}

const PRINTABLE = Array.from({ length: 95 }, (_, i) => String.fromCharCode(32 + i)).join("");
/**
 * The writes the provider runs in its virsh shells too (provider/host/virshSessions.ts SESSION_WRITES and
 * XML_WRITES): the deletes, and the creates, whose XML a file on the host carries.
 */
export const SESSION_WRITES = new Set(["snapshot-delete", "checkpoint-delete", "snapshot-create", "checkpoint-create"]);
/** The only files a create's --xmlfile may name: stdin (a process), or a file in the folder mktemp made (provider/host/hostShell.ts). */
const XML_FILE = /^(\/dev\/stdin|\/tmp\/libvirt-snapshots-xml\.[A-Za-z0-9]{10}\/xml\.[0-9]+)$/;
export const SESSION_READ_ONLY = new Set([
    "dumpxml",
    "domstate",
    "dominfo",
    "domuuid",
    "domname",
    "domid",
    "domjobinfo",
    "version",
    "domcapabilities",
    "capabilities",
    "snapshot-dumpxml",
    "snapshot-info",
    "snapshot-list",
    "snapshot-parent",
    "checkpoint-dumpxml",
    "checkpoint-info",
    "checkpoint-list",
    "checkpoint-parent",
]);

export function argvProblems(argv: string[], declared: { uris: Set<string>; domains: Set<string>; names: Set<string> }): string[] {
    const where = `virsh ${argv.map((a) => show(a)).join(" ")}`;
    if (argv[0] !== "-c" || !declared.uris.has(argv[1] ?? "")) return [`${where}: does not start with -c and a declared URI`];
    const cmd = argv[2] ?? "";
    const flags = FLAGS[cmd];
    if (!flags) return [`${where}: command ${show(cmd)} is not one the provider runs`];
    const out: string[] = [];
    for (let i = 3; i < argv.length; i++) {
        const a = argv[i]!;
        if (VALUE_OPTIONS.has(a)) {
            const v = argv[++i];
            if (v === undefined) {
                out.push(`${where}: ${a} without a value`);
                continue;
            }
            if (v.startsWith("-")) out.push(`${where}: the value of ${a} starts with '-'`);
            const ok =
                a === "--xmlfile"
                    ? XML_FILE.test(v)
                    : a === "--domain"
                      ? declared.domains.has(v)
                      : a === "--path"
                        ? /^[a-z]{2,4}$/.test(v)
                        : declared.names.has(v);
            if (!ok) out.push(`${where}: ${a} ${show(v)} was never declared`);
        } else if (!flags.includes(a)) {
            out.push(`${where}: ${show(a)} is not an option ${cmd} is meant to get here`);
        }
    }
    return out;
}
